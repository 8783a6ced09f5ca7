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

// The accurate math (exp, tanh, sigmoid, silu on V) is shaders/accurate_math.wgsl, which the op prepends.

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
