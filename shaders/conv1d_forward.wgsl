// Depthwise causal conv1d (spec A3.3) and its step window. Both entry points read frames of the same virtual
// sequence per batch b: history[b] (H frames, zeros when H = 0) followed by x's S frames, with time 0 at x's first.
//   main:         out[b,t,f] = bias[f] + Σ_{k<KS} weight[f,0,k] · frame(b, t − (KS−1) + k, f), optional swish
//   state_update: out[b,k,f] = frame(b, S − KS + k, f), the last KS frames (the step's rolled window)
// x is a strided matrix view: row b·S + t at x[x_offset + (b·S + t)·x_stride + f]. history and out are contiguous.
// One invocation per output element (the grid may spill into y); loop trips per invocation: KS (bounded by the op).

struct Params {
  total: u32,       // output elements
  seq: u32,         // S: frames of x per batch
  features: u32,    // F
  taps: u32,        // KS
  x_offset: u32,
  x_stride: u32,
  hist_frames: u32, // H; 0 means zeros before time 0
  has_bias: u32,
  swish: u32,       // apply y · sigmoid(y) to the output
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> history: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<storage, read> weight: array<f32>;
@group(0) @binding(5) var<storage, read> bias: array<f32>;

fn index(gid: vec3u, nwg: vec3u) -> u32 {
  return gid.x + gid.y * nwg.x * 256u;
}

// Feature f of frame t (may be negative) of batch b's history-then-x sequence.
fn frame(b: u32, t: i32, f: u32) -> f32 {
  if (t >= 0) { return x[p.x_offset + (b * p.seq + u32(t)) * p.x_stride + f]; }
  let h = i32(p.hist_frames) + t;
  if (h < 0) { return 0.0; }
  return history[(b * p.hist_frames + u32(h)) * p.features + f];
}

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = index(gid, nwg);
  if (i >= p.total) { return; }
  let f = i % p.features;
  let bt = i / p.features;
  let t0 = i32(bt % p.seq) - i32(p.taps) + 1;
  let b = bt / p.seq;
  var y = 0.0;
  if (p.has_bias != 0u) { y = bias[f]; }
  for (var k = 0u; k < p.taps; k++) {
    y += weight[f * p.taps + k] * frame(b, t0 + i32(k), f);
  }
  if (p.swish != 0u) { y = y / (1.0 + exp(-y)); }
  out[i] = y;
}

@compute @workgroup_size(256)
fn state_update(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = index(gid, nwg);
  if (i >= p.total) { return; }
  let f = i % p.features;
  let bk = i / p.features;
  let k = bk % p.taps;
  let b = bk / p.taps;
  out[i] = frame(b, i32(p.seq) - i32(p.taps) + i32(k), f);
}
