// Pointwise ops over strided matrix views: out[r, c] = f(in0[r, c], in1[r, c], …), one invocation per element.
// View k's element (r, c) is at in_k[off_k + r * stride_k + c]; stride 0 broadcasts one row over all rows (a [D]
// vector such as the mLSTM learnable skip). The op splits rows across dispatches when a view exceeds one storage
// binding, so offsets are relative to the bound range. Straight-line code: no loops.
//
// Bindings count up from `out`, so an entry point with k inputs uses exactly bindings 0..k+1 (layout "auto" drops
// unused ones, and the runtime numbers storage bindings consecutively).
// gated_activation_forward.wgsl is appended to this file and reuses its indexing and math.

struct Params {
  rows: u32,
  cols: u32,
  out_off: u32,
  out_stride: u32,
  in0_off: u32,
  in0_stride: u32,
  in1_off: u32,
  in1_stride: u32,
  in2_off: u32,
  in2_stride: u32,
  in3_off: u32,
  in3_stride: u32,
  scalar: f32, // soft_cap: the cap c
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<storage, read> in0: array<f32>;
@group(0) @binding(3) var<storage, read> in1: array<f32>;
@group(0) @binding(4) var<storage, read> in2: array<f32>;
@group(0) @binding(5) var<storage, read> in3: array<f32>;

// (row, col) of this invocation's element; z = 0 past the end.
fn element(gid: vec3u, nwg: vec3u) -> vec3u {
  let i = gid.x + gid.y * nwg.x * 256u;
  let r = i / max(p.cols, 1u);
  return vec3u(r, i - r * p.cols, u32(i < p.rows * p.cols));
}

fn at(off: u32, stride: u32, e: vec3u) -> u32 {
  return off + e.x * stride + e.y;
}

// ---- Accurate f32 math. Vendor exp/tanh lose relative accuracy (lavapipe: exp 4e-6 near |x| = 87 because it
// computes exp2(x·log2 e); tanh 1 % near 0 because it computes (eˣ − e⁻ˣ)/(eˣ + e⁻ˣ)), so these reduce the
// argument exactly and use short series.

const LN2_HI: f32 = 0.693145751953125; // ln 2 to 16 bits: n · LN2_HI is exact for |n| < 256
const LN2_LO: f32 = 1.42860682030941723e-6; // ln 2 − LN2_HI
const F32_MAX: f32 = 3.40282347e38;

// eʳ − 1 for |r| ≤ ln(2)/2 + small: Taylor to r⁸ (truncation < 1e-9 relative).
fn expm1_reduced(r: f32) -> f32 {
  let q = 1.0 / 5040.0 + r * (1.0 / 40320.0);
  let s = 1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * q));
  return r * (1.0 + r * (0.5 + r * (1.0 / 6.0 + r * s)));
}

// e^(hi + lo) for hi + lo ≤ 0 with |lo| ≪ |hi|: the argument is reduced before hi and lo are added, so an exact
// hi keeps all its bits (Cody–Waite reduction, then a power-of-two scale).
fn exp_sum(hi: f32, lo: f32) -> f32 {
  let a = hi + lo;
  if (a < -104.0) {
    return 0.0;
  }
  let n = round(a * 1.44269504088896341);
  let r = (hi - n * LN2_HI) - n * LN2_LO + lo;
  return ldexp(1.0 + expm1_reduced(r), i32(n));
}

// eˣ − 1 for x ≤ 0, accurate near 0.
fn expm1_neg(x: f32) -> f32 {
  if (x > -0.34657359) {
    return expm1_reduced(x);
  }
  return exp_sum(x, 0.0) - 1.0;
}

// tanh as −expm1(−2|y|) / (2 + expm1(−2|y|)): relative accuracy near 0, exactly ±1 (never NaN) for large |y|.
fn tanh_accurate(y: f32) -> f32 {
  let e = expm1_neg(-2.0 * min(abs(y), F32_MAX / 4.0));
  let t = -e / (2.0 + e);
  return select(t, -t, y < 0.0);
}

// 1 / (1 + e⁻ˣ), from e^−|x| so that nothing overflows and small results keep their relative accuracy.
fn sigmoid(x: f32) -> f32 {
  let e = exp_sum(-min(abs(x), F32_MAX), 0.0);
  return select(e, 1.0, x >= 0.0) / (1.0 + e);
}

fn silu(x: f32) -> f32 {
  return x * sigmoid(x);
}

// ---- Entry points.

// c · tanh(x / c) (xlstm_large gate and logit soft caps).
@compute @workgroup_size(256)
fn soft_cap(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let e = element(gid, nwg);
  if (e.z == 0u) {
    return;
  }
  out[at(p.out_off, p.out_stride, e)] = p.scalar * tanh_accurate(in0[at(p.in0_off, p.in0_stride, e)] / p.scalar);
}

// sigmoid(o) ⊙ h (xlstm_large mLSTM output gate): in0 = o, in1 = h.
@compute @workgroup_size(256)
fn sigmoid_gate(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let e = element(gid, nwg);
  if (e.z == 0u) {
    return;
  }
  let o = in0[at(p.in0_off, p.in0_stride, e)];
  out[at(p.out_off, p.out_stride, e)] = sigmoid(o) * in1[at(p.in1_off, p.in1_stride, e)];
}

// (h_n + skip ⊙ x_c) ⊙ silu(z) (NeurIPS mLSTM layer, spec A4 steps 5–6): in0 = h_n, in1 = skip (stride 0),
// in2 = x_c, in3 = z.
@compute @workgroup_size(256)
fn mlstm_output_gate(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let e = element(gid, nwg);
  if (e.z == 0u) {
    return;
  }
  let h = in0[at(p.in0_off, p.in0_stride, e)] + in1[at(p.in1_off, p.in1_stride, e)] * in2[at(p.in2_off, p.in2_stride, e)];
  out[at(p.out_off, p.out_stride, e)] = h * silu(in3[at(p.in3_off, p.in3_stride, e)]);
}
