// Optimizer kernels: the AdamW update and global-norm gradient clipping. Elementwise entry points take a range of one
// tensor (the op splits tensors larger than one storage binding) and give each invocation PER consecutive elements;
// the grid may spill into y.
//   adamw:       PyTorch AdamW (decoupled decay, bias corrections from the host's step count):
//                  p ← p · (1 − lr · wd);  m ← β1 m + (1 − β1) g;  v ← β2 v + (1 − β2) g²;
//                  p ← p − (lr / (1 − β1^t)) · m / (√v / √(1 − β2^t) + eps)
//   sum_squares: out[out0 + i] = Σ x² (or Σ x) over elements [i · chunk, (i + 1) · chunk) of the range, or
//                the square root of that (the last level of the norm); trips ≤ chunk. The op repeats it over the
//                partial sums until one value, the norm, is left: no atomics, a fixed summation order.
//   scale:       x ← x · min(1, max_norm / (norm + 1e-6)), norm read from the GPU (PyTorch clip_grad_norm_).

const PER = 4u; // elements per invocation of the elementwise entry points

fn index(gid: vec3u, nwg: vec3u) -> u32 {
  return gid.x + gid.y * nwg.x * 64u;
}

struct AdamParams {
  n: u32,
  decay: f32,       // 1 − lr · weight_decay
  beta1: f32,
  beta2: f32,
  step_size: f32,   // lr / (1 − β1^t)
  bc2_sqrt: f32,    // √(1 − β2^t)
  eps: f32,
}

@group(0) @binding(0) var<uniform> a: AdamParams;
@group(0) @binding(1) var<storage, read_write> a_param: array<f32>;
@group(0) @binding(2) var<storage, read> a_grad: array<f32>;
@group(0) @binding(3) var<storage, read_write> a_m: array<f32>;
@group(0) @binding(4) var<storage, read_write> a_v: array<f32>;

@compute @workgroup_size(64)
fn adamw(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let first = index(gid, nwg) * PER;
  for (var i = first; i < min(first + PER, a.n); i++) {
    let g = a_grad[i];
    let m = a.beta1 * a_m[i] + (1.0 - a.beta1) * g;
    let v = a.beta2 * a_v[i] + (1.0 - a.beta2) * g * g;
    a_m[i] = m;
    a_v[i] = v;
    a_param[i] = a_param[i] * a.decay - a.step_size * m / (sqrt(v) / a.bc2_sqrt + a.eps);
  }
}

struct SumParams {
  n: u32,      // elements in the bound range
  chunk: u32,  // elements per invocation
  out0: u32,   // index of this range's first output within the bound output range
  square: u32, // 1: sum x², 0: sum x
  root: u32,   // 1: write the square root of the sum
}

@group(0) @binding(0) var<uniform> s: SumParams;
@group(0) @binding(1) var<storage, read> s_x: array<f32>;
@group(0) @binding(2) var<storage, read_write> s_out: array<f32>;

@compute @workgroup_size(64)
fn sum_squares(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = index(gid, nwg);
  let first = i * s.chunk;
  if (first >= s.n) { return; }
  var acc = 0.0;
  for (var j = first; j < min(first + s.chunk, s.n); j++) {
    let x = s_x[j];
    acc += select(x, x * x, s.square != 0u);
  }
  s_out[s.out0 + i] = select(acc, sqrt(acc), s.root != 0u);
}

struct ScaleParams {
  n: u32,
  max_norm: f32,
}

@group(0) @binding(0) var<uniform> c: ScaleParams;
@group(0) @binding(1) var<storage, read> c_norm: array<f32>;
@group(0) @binding(2) var<storage, read_write> c_x: array<f32>;

@compute @workgroup_size(64)
fn scale(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let first = index(gid, nwg) * PER;
  let factor = min(1.0, c.max_norm / (c_norm[0] + 1e-6));
  for (var i = first; i < min(first + PER, c.n); i++) {
    c_x[i] *= factor;
  }
}
