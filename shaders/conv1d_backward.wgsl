// Gradients of the depthwise causal conv1d (conv1d_forward.wgsl, spec A3.3) without history:
//   pre[b,t,f] = bias[f] + Σ_{k<KS} weight[f,0,k] · x[b, t − (KS−1) + k, f],  y = pre or swish(pre)
//   g[b,t,f]   = dy[b,t,f] · act'(pre[b,t,f])  (act' = 1 without activation; the op recomputes pre with the forward)
//   input_grad:  dx[b,s,f]      = Σ_k weight[f,0,k] · g[b, s + (KS−1) − k, f]   (g = 0 past S)
//   weight_grad: dweight[f,0,k] = Σ_{b,t} g[b,t,f] · x[b, t − (KS−1) + k, f],  dbias[f] = Σ_{b,t} g[b,t,f]
// weight_grad writes one row of partial sums per chunk of times of one batch (the op sums the rows with a split column
// sum: no float atomics, and no invocation loops over all of B·S). dy, pre and dx are contiguous [B, S, F]; x is a
// strided matrix view (row b·S + t at x[x_offset + (b·S + t)·x_stride + f]).
//
// The op prepends the element type and the blocking:
//   alias V; const W: u32;  f32 (W 1) or vec4<f32> (W 4: F, x's offset and stride are multiples of 4)
//   const T: u32;           input_grad: consecutive times per invocation, sharing each tap's weights
//   const KB: u32;          weight_grad: taps per invocation (each g load serves KB taps)
//   fn tap(f: u32, k: u32) -> V;  tap k of the W features of unit f (weight [F, 1, KS]: they are KS apart)
//   fn lane(v: V, i: u32) -> f32; lane i of v
// Features, offsets and strides below are in units of V (weight and dweight in scalars). The grid may spill into y.
// Loop trips per invocation: about KS · (2T + 1) + 2T (input_grad; the op bounds KS · T) and
// chunk_times · (2·KB + 2) + 2·KB (weight_grad; the op bounds chunk_times).
//
// Each entry point binds 1 dy, 2 pre (dy again, never read, without activation), then its own: input_grad 3 weight,
// 4 dx; weight_grad 3 x, 4 dweight partials [chunks, F·KS], 5 dbias partials [chunks, F]. Variables of the two share
// binding numbers (WGSL allows it when no entry point uses both).

struct Params {
  total: u32, // invocations
  seq: u32, // S
  features: u32, // F, in units
  taps: u32, // KS
  x_offset: u32,
  x_stride: u32,
  swish: u32, // 1: y = swish(pre), so g = dy · swish'(pre)
  chunk_times: u32, // weight_grad: times per chunk
  chunks_per_batch: u32, // weight_grad: ⌈S / chunk_times⌉
  tap_blocks: u32, // weight_grad: ⌈KS / KB⌉
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> dy: array<V>;
@group(0) @binding(2) var<storage, read> pre: array<V>;
@group(0) @binding(3) var<storage, read> weight: array<f32>;
@group(0) @binding(4) var<storage, read_write> dx: array<V>;
@group(0) @binding(3) var<storage, read> x: array<V>;
@group(0) @binding(4) var<storage, read_write> dweight: array<f32>;
@group(0) @binding(5) var<storage, read_write> dbias: array<V>;

fn index(gid: vec3u, nwg: vec3u) -> u32 {
  return gid.x + gid.y * nwg.x * 64u;
}

// g at time t (≥ 0) of batch b, feature unit f; 0 past the sequence's end. swish'(u) = σ(u) · (1 + u · σ(−u)), from
// e^−|u| so that nothing overflows.
fn grad_pre(b: u32, t: u32, f: u32) -> V {
  if (t >= p.seq) {
    return V(0.0);
  }
  let i = (b * p.seq + t) * p.features + f;
  let g = dy[i];
  if (p.swish == 0u) {
    return g;
  }
  let u = pre[i];
  let e = exp(-abs(u));
  let s_abs = 1.0 / (1.0 + e); // σ(|u|)
  let s_neg = e * s_abs; // σ(−|u|)
  let positive = u >= V(0.0);
  return g * select(s_neg, s_abs, positive) * (1.0 + u * select(s_abs, s_neg, positive));
}

// x at time t (may be negative: zeros before the sequence) of batch b; t is at most S − 1.
fn frame(b: u32, t: i32, f: u32) -> V {
  if (t < 0) {
    return V(0.0);
  }
  return x[p.x_offset + (b * p.seq + u32(t)) * p.x_stride + f];
}

@compute @workgroup_size(64)
fn input_grad(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = index(gid, nwg);
  if (i >= p.total) {
    return;
  }
  let blocks = (p.seq + T - 1u) / T;
  let f = i % p.features;
  let bt = i / p.features;
  let b = bt / blocks;
  let s0 = (bt - b * blocks) * T;
  // Step j uses tap k = KS − 1 − j on g at times s0 + t + j: a window of T times that moves one time per step, so
  // each g is loaded once and each tap's weights once.
  var window: array<V, T>;
  for (var t = 0u; t < T; t++) {
    window[t] = grad_pre(b, s0 + t, f);
  }
  var acc: array<V, T>;
  for (var j = 0u; j < p.taps; j++) {
    let w = tap(f, p.taps - 1u - j);
    for (var t = 0u; t < T; t++) {
      acc[t] += w * window[t];
    }
    if (j + 1u < p.taps) {
      for (var t = 0u; t + 1u < T; t++) {
        window[t] = window[t + 1u];
      }
      window[T - 1u] = grad_pre(b, s0 + T + j, f);
    }
  }
  for (var t = 0u; t < T; t++) {
    if (s0 + t < p.seq) {
      dx[(b * p.seq + s0 + t) * p.features + f] = acc[t];
    }
  }
}

@compute @workgroup_size(64)
fn weight_grad(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = index(gid, nwg);
  if (i >= p.total) {
    return;
  }
  let f = i % p.features;
  let rest = i / p.features;
  let kb = rest % p.tap_blocks;
  let chunk = rest / p.tap_blocks; // = b · chunks_per_batch + the chunk within batch b
  let b = chunk / p.chunks_per_batch;
  let t0 = (chunk - b * p.chunks_per_batch) * p.chunk_times;
  let t1 = min(t0 + p.chunk_times, p.seq);
  let k0 = kb * KB;
  // window[j] = x at time t − (KS−1) + k0 + j, for the current t; it moves one time per step. Taps past KS (a partial
  // last block) read clamped times and are never stored.
  let lag = i32(k0) - i32(p.taps) + 1;
  let last = i32(p.seq) - 1;
  var window: array<V, KB>;
  for (var j = 0u; j < KB; j++) {
    window[j] = frame(b, min(i32(t0) + lag + i32(j), last), f);
  }
  var acc: array<V, KB>;
  var bias_acc = V(0.0);
  for (var t = t0; t < t1; t++) {
    let g = grad_pre(b, t, f);
    bias_acc += g;
    for (var j = 0u; j < KB; j++) {
      acc[j] += g * window[j];
    }
    for (var j = 0u; j + 1u < KB; j++) {
      window[j] = window[j + 1u];
    }
    window[KB - 1u] = frame(b, min(i32(t + KB) + lag, last), f);
  }
  // dweight partials: row `chunk` of [chunks, F · KS], element (f·W + lane)·KS + k.
  let row = chunk * p.features * W * p.taps;
  for (var j = 0u; j < KB; j++) {
    if (k0 + j < p.taps) {
      for (var l = 0u; l < W; l++) {
        dweight[row + (f * W + l) * p.taps + k0 + j] = lane(acc[j], l);
      }
    }
  }
  if (kb == 0u) {
    dbias[chunk * p.features + f] = bias_acc;
  }
}
