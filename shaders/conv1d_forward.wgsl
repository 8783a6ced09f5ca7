// Depthwise causal conv1d (spec A3.3) and its step window. Both entry points read frames of the same virtual
// sequence per batch b: history[b] (H frames, zeros when H = 0) followed by x's S frames, with time 0 at x's first.
//   main:         out[b,t,f] = bias[f] + Σ_{k<KS} weight[f,0,k] · frame(b, t − (KS−1) + k, f), optional swish
//   state_update: out[b,k,f] = frame(b, S − KS + k, f), the last KS frames (the step's rolled window)
// x is a strided matrix view: row b·S + t at x[x_offset + (b·S + t)·x_stride + f]. history and out are contiguous.
//
// The op prepends the element type and the time block:
//   alias V; const W: u32;  f32 (W 1) or vec4<f32> (W 4: F, x's offset and stride are multiples of 4), so one unit
//                           is W consecutive features; weight stays scalar (its features are KS apart)
//   const T: u32;           main: consecutive times per invocation, sharing each tap's weights
//   fn tap(f: u32, k: u32) -> V;  tap k of the W features of unit f (weight is [F, 1, KS], so they are KS apart)
// Features, offsets and strides below are in units of V (except weight's, in scalars). The grid may spill into y.
// Loop trips per invocation: about KS · (2T + 1) + 3T (main) or none (state_update); the op bounds KS.

struct Params {
  total: u32, // invocations: B · ⌈S / T⌉ · F (main) or B · KS · F (state_update), F in units
  seq: u32, // S: frames of x per batch
  features: u32, // F, in units
  taps: u32, // KS
  x_offset: u32,
  x_stride: u32,
  hist_frames: u32, // H; 0 means zeros before time 0
  has_bias: u32,
  swish: u32, // apply y · sigmoid(y) to the output
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<V>;
@group(0) @binding(2) var<storage, read> history: array<V>;
@group(0) @binding(3) var<storage, read_write> out: array<V>;
@group(0) @binding(4) var<storage, read> weight: array<f32>;
@group(0) @binding(5) var<storage, read> bias: array<V>;

fn index(gid: vec3u, nwg: vec3u) -> u32 {
  return gid.x + gid.y * nwg.x * 64u;
}

// Feature unit f of frame t (may be negative) of batch b's history-then-x sequence.
fn frame(b: u32, t: i32, f: u32) -> V {
  if (t >= 0) {
    return x[p.x_offset + (b * p.seq + u32(t)) * p.x_stride + f];
  }
  let h = i32(p.hist_frames) + t;
  if (h < 0) {
    return V(0.0);
  }
  return history[(b * p.hist_frames + u32(h)) * p.features + f];
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = index(gid, nwg);
  if (i >= p.total) {
    return;
  }
  let blocks = (p.seq + T - 1u) / T;
  let f = i % p.features;
  let bt = i / p.features;
  let b = bt / blocks;
  let t0 = (bt - b * blocks) * T;
  var acc: array<V, T>;
  if (p.has_bias != 0u) {
    let bias_f = bias[f];
    for (var t = 0u; t < T; t++) {
      acc[t] = bias_f;
    }
  }
  // Tap-major, so each tap's weights are loaded once and every output sums its taps in order k = 0, 1, …; the
  // T frames tap k reads are a window that moves one frame per tap, so each frame is loaded once.
  let first = i32(t0) - i32(p.taps) + 1; // time of the window's first frame at tap 0
  let last = i32(p.seq) - 1; // times past S (the last block's tail) read frame S − 1, never stored
  var window: array<V, T>;
  for (var t = 0u; t < T; t++) {
    window[t] = frame(b, min(first + i32(t), last), f);
  }
  for (var k = 0u; k < p.taps; k++) {
    let w = tap(f, k);
    for (var t = 0u; t < T; t++) {
      acc[t] += w * window[t];
    }
    if (k + 1u < p.taps) {
      for (var t = 0u; t + 1u < T; t++) {
        window[t] = window[t + 1u];
      }
      window[T - 1u] = frame(b, min(first + i32(k + T), last), f);
    }
  }
  for (var t = 0u; t < T; t++) {
    if (t0 + t < p.seq) {
      var y = acc[t];
      if (p.swish != 0u) {
        y = y / (1.0 + exp(-y));
      }
      out[((b * p.seq) + t0 + t) * p.features + f] = y;
    }
  }
}

@compute @workgroup_size(64)
fn state_update(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = index(gid, nwg);
  if (i >= p.total) {
    return;
  }
  let f = i % p.features;
  let bk = i / p.features;
  let k = bk % p.taps;
  let b = bk / p.taps;
  out[i] = frame(b, i32(p.seq) - i32(p.taps) + i32(k), f);
}
