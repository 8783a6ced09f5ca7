// Pointwise ops over strided matrix views: out[r, c] = f(in0[r, c], in1[r, c], …). View k's element (r, c) is at
// in_k[off_k + r * stride_k + c]; stride 0 broadcasts one row over all rows (a [D] vector such as the mLSTM
// learnable skip, or the trailing-shape operand of add and mul). The op splits rows across dispatches when a view
// exceeds one storage binding, so offsets are relative to the bound range.
//
// Each invocation handles U consecutive units of one row (llvmpipe's cost is per invocation and per load, so one
// invocation per element wastes most of it). The op prepends the element type and the unit count:
//   alias V, VI, VU;  f32, i32, u32 (W 1, U 4) or their vec4 types (W 4, U 1: cols, offsets and strides are all
//   const W: u32;     multiples of 4, so every unit is one aligned 16-byte load)
//   const U: u32;
// Offsets, strides and cols below are in units of V. The math is written for V, branch-free (select), so the same
// source serves both. Loops: at most U trips.
//
// Bindings count up from `out`, so an entry point with k inputs uses exactly bindings 0..k+1 (layout "auto" drops
// unused ones, and the runtime numbers storage bindings consecutively).
// gated_activation_forward.wgsl is appended to this file and reuses its indexing and math.

struct Params {
  rows: u32,
  cols: u32, // in units of V
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
@group(0) @binding(1) var<storage, read_write> out: array<V>;
@group(0) @binding(2) var<storage, read> in0: array<V>;
@group(0) @binding(3) var<storage, read> in1: array<V>;
@group(0) @binding(4) var<storage, read> in2: array<V>;
@group(0) @binding(5) var<storage, read> in3: array<V>;

// This invocation's row and its units [begin, end) of that row; empty past the last row.
struct Units {
  row: u32,
  begin: u32,
  end: u32,
}

fn units(gid: vec3u, nwg: vec3u) -> Units {
  let i = gid.x + gid.y * nwg.x * 256u;
  let per_row = (p.cols + U - 1u) / U;
  let r = i / max(per_row, 1u);
  let begin = (i - r * per_row) * U;
  return Units(r, begin, select(begin, min(begin + U, p.cols), r < p.rows));
}

fn at(off: u32, stride: u32, r: u32, c: u32) -> u32 {
  return off + r * stride + c;
}

// ---- Accurate f32 math. Vendor exp/tanh lose relative accuracy (lavapipe: exp 4e-6 near |x| = 87 because it
// computes exp2(x·log2 e); tanh 1 % near 0 because it computes (eˣ − e⁻ˣ)/(eˣ + e⁻ˣ)), so these reduce the
// argument exactly and use short series.

const LN2_HI: f32 = 0.693145751953125; // ln 2 to 16 bits: n · LN2_HI is exact for |n| < 256
const LN2_LO: f32 = 1.42860682030941723e-6; // ln 2 − LN2_HI
const F32_MAX: f32 = 3.40282347e38;

// eʳ − 1 for |r| ≤ ln(2)/2 + small: Taylor to r⁸ (truncation < 1e-9 relative).
fn expm1_reduced(r: V) -> V {
  let q = 1.0 / 5040.0 + r * (1.0 / 40320.0);
  let s = 1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * q));
  return r * (1.0 + r * (0.5 + r * (1.0 / 6.0 + r * s)));
}

// e^(hi + lo) for hi + lo ≤ 0 with |lo| ≪ |hi|: the argument is reduced before hi and lo are added, so an exact
// hi keeps all its bits (Cody–Waite reduction, then a power-of-two scale). 0 below −104.
fn exp_sum(hi: V, lo: V) -> V {
  let a = hi + lo;
  let n = round(max(a, V(-105.0)) * 1.44269504088896341);
  let r = (hi - n * LN2_HI) - n * LN2_LO + lo;
  return select(ldexp(1.0 + expm1_reduced(r), VI(n)), V(0.0), a < V(-104.0));
}

// eˣ − 1 for x ≤ 0, accurate near 0.
fn expm1_neg(x: V) -> V {
  return select(exp_sum(x, V(0.0)) - 1.0, expm1_reduced(x), x > V(-0.34657359));
}

// tanh as −expm1(−2|y|) / (2 + expm1(−2|y|)): relative accuracy near 0, exactly ±1 (never NaN) for large |y|.
fn tanh_accurate(y: V) -> V {
  let e = expm1_neg(-2.0 * min(abs(y), V(F32_MAX / 4.0)));
  let t = -e / (2.0 + e);
  return select(t, -t, y < V(0.0));
}

// 1 / (1 + e⁻ˣ), from e^−|x| so that nothing overflows and small results keep their relative accuracy.
fn sigmoid(x: V) -> V {
  let e = exp_sum(-min(abs(x), V(F32_MAX)), V(0.0));
  return select(e, V(1.0), x >= V(0.0)) / (1.0 + e);
}

fn silu(x: V) -> V {
  return x * sigmoid(x);
}

// ---- Entry points.

// c · tanh(x / c) (xlstm_large gate and logit soft caps).
@compute @workgroup_size(256)
fn soft_cap(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let e = units(gid, nwg);
  for (var c = e.begin; c < e.end; c++) {
    out[at(p.out_off, p.out_stride, e.row, c)] = p.scalar *
      tanh_accurate(in0[at(p.in0_off, p.in0_stride, e.row, c)] / p.scalar);
  }
}

// sigmoid(o) ⊙ h (xlstm_large mLSTM output gate): in0 = o, in1 = h.
@compute @workgroup_size(256)
fn sigmoid_gate(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let e = units(gid, nwg);
  for (var c = e.begin; c < e.end; c++) {
    let o = in0[at(p.in0_off, p.in0_stride, e.row, c)];
    out[at(p.out_off, p.out_stride, e.row, c)] = sigmoid(o) * in1[at(p.in1_off, p.in1_stride, e.row, c)];
  }
}

// (h_n + skip ⊙ x_c) ⊙ silu(z) (NeurIPS mLSTM layer, spec A4 steps 5–6): in0 = h_n, in1 = skip (stride 0),
// in2 = x_c, in3 = z.
@compute @workgroup_size(256)
fn mlstm_output_gate(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let e = units(gid, nwg);
  for (var c = e.begin; c < e.end; c++) {
    let h = in0[at(p.in0_off, p.in0_stride, e.row, c)] +
      in1[at(p.in1_off, p.in1_stride, e.row, c)] * in2[at(p.in2_off, p.in2_stride, e.row, c)];
    out[at(p.out_off, p.out_stride, e.row, c)] = h * silu(in3[at(p.in3_off, p.in3_stride, e.row, c)]);
  }
}

// a + b and a ⊙ b (residual adds; b is often a stride-0 row): in0 = a, in1 = b.
@compute @workgroup_size(256)
fn add(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let e = units(gid, nwg);
  for (var c = e.begin; c < e.end; c++) {
    out[at(p.out_off, p.out_stride, e.row, c)] = in0[at(p.in0_off, p.in0_stride, e.row, c)] +
      in1[at(p.in1_off, p.in1_stride, e.row, c)];
  }
}

@compute @workgroup_size(256)
fn mul(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let e = units(gid, nwg);
  for (var c = e.begin; c < e.end; c++) {
    out[at(p.out_off, p.out_stride, e.row, c)] = in0[at(p.in0_off, p.in0_stride, e.row, c)] *
      in1[at(p.in1_off, p.in1_stride, e.row, c)];
  }
}
