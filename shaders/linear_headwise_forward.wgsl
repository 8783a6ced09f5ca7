// Block-diagonal ("headwise") linear, spec A3.4 LinearHeadwiseExpand:
//   y[r, h·dout + o] = Σ_d x[r, h·din + d] · weight[h, o, d] (+ bias[h·dout + o])
// One invocation per output element. x and y are strided matrix views (column slices of wider buffers), offsets
// relative to the bound ranges. The op splits din into [d_begin, d_end) slices of bounded length (lavapipe cuts
// loops after 65,535 trips): the first slice writes, later ones accumulate into y.

struct Params {
  rows: u32,
  heads: u32,
  din: u32,
  dout: u32,
  x_off: u32,
  x_stride: u32,
  y_off: u32,
  y_stride: u32,
  d_begin: u32,
  d_end: u32,
  accumulate: u32, // 1: add to y instead of overwriting it
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read> weight: array<f32>;
@group(0) @binding(4) var<storage, read> bias: array<f32>;

struct Partial {
  at: u32, // index into y
  col: u32, // h·dout + o
  acc: f32, // the dot product over [d_begin, d_end)
  valid: bool,
}

fn partial(gid: vec3u, nwg: vec3u) -> Partial {
  let cols = p.heads * p.dout;
  let i = gid.x + gid.y * nwg.x * 256u;
  if (i >= p.rows * cols) {
    return Partial(0u, 0u, 0.0, false);
  }
  let r = i / cols;
  let col = i - r * cols;
  let h = col / p.dout;
  let xb = p.x_off + r * p.x_stride + h * p.din;
  let wb = col * p.din; // weight[h, o, :] starts at (h·dout + o)·din
  var acc = 0.0;
  for (var d = p.d_begin; d < p.d_end; d++) {
    acc += x[xb + d] * weight[wb + d];
  }
  return Partial(p.y_off + r * p.y_stride + col, col, acc, true);
}

@compute @workgroup_size(256)
fn forward(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let s = partial(gid, nwg);
  if (!s.valid) {
    return;
  }
  y[s.at] = select(0.0, y[s.at], p.accumulate == 1u) + s.acc;
}

@compute @workgroup_size(256)
fn forward_bias(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let s = partial(gid, nwg);
  if (!s.valid) {
    return;
  }
  y[s.at] = select(0.0, y[s.at], p.accumulate == 1u) + s.acc + bias[s.col];
}
