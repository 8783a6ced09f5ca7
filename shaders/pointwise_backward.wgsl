// Backward entry points of the pointwise ops (and the autograd engine's in-place accumulation), appended to
// pointwise_forward.wgsl, whose Params, bindings, units(), at() and accurate exp/sigmoid they use; branch-free like
// them, so that V may be a vector. gated_activation_backward.wgsl is appended after this file.
//
// Several gradients come out of one invocation (llvmpipe's cost is per invocation and per load): besides `out`, an
// entry point writes "extras", views laid out exactly like out (the op checks it), which it indexes with out's offset
// and stride. Extras are bound after the entry point's k inputs, at bindings k + 2, k + 3, …; they are declared below
// by binding number (x_r<n> read, x_w<n> written), since WGSL lets variables share a binding as long as no entry point
// uses two of them.

@group(0) @binding(4) var<storage, read> x_r4: array<V>;
@group(0) @binding(5) var<storage, read> x_r5: array<V>;
@group(0) @binding(5) var<storage, read_write> x_w5: array<V>;
@group(0) @binding(6) var<storage, read> x_r6: array<V>;
@group(0) @binding(7) var<storage, read_write> x_w7: array<V>;
@group(0) @binding(8) var<storage, read_write> x_w8: array<V>;

// d/dx silu(x) = sigmoid(x) · (1 + x · sigmoid(−x)): no 1 − sigmoid(x) cancellation for large x.
fn silu_derivative(x: V) -> V {
  return sigmoid(x) * (1.0 + x * sigmoid(-x));
}

// out += in0 (the autograd engine's gradient accumulation; out is any strided view, read and written in place).
@compute @workgroup_size(256)
fn add_into(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let e = units(gid, nwg);
  for (var c = e.begin; c < e.end; c++) {
    let o = at(p.out_off, p.out_stride, e.row, c);
    out[o] = out[o] + in0[at(p.in0_off, p.in0_stride, e.row, c)];
  }
}

// dx = dy · sech²(x / c) for y = c · tanh(x / c): in0 = dy, in1 = x, scalar = c. sech²(u) = 4q / (1 + q)² with
// q = e^(−2|u|), relatively accurate in the tails (1 − tanh² would cancel there).
@compute @workgroup_size(256)
fn soft_cap_backward(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let e = units(gid, nwg);
  for (var c = e.begin; c < e.end; c++) {
    let u = in1[at(p.in1_off, p.in1_stride, e.row, c)] / p.scalar;
    let q = exp_sum(-2.0 * min(abs(u), V(F32_MAX / 4.0)), V(0.0));
    out[at(p.out_off, p.out_stride, e.row, c)] = in0[at(p.in0_off, p.in0_stride, e.row, c)] * (4.0 * q) /
      ((1.0 + q) * (1.0 + q));
  }
}

// y = sigmoid(o) ⊙ h: in0 = dy, in1 = o, in2 = h; out = do = dy · h · sigmoid(o) · sigmoid(−o), extra x_w5 = dh =
// dy · sigmoid(o).
@compute @workgroup_size(256)
fn sigmoid_gate_backward(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let e = units(gid, nwg);
  for (var c = e.begin; c < e.end; c++) {
    let o = at(p.out_off, p.out_stride, e.row, c);
    let dy = in0[at(p.in0_off, p.in0_stride, e.row, c)];
    let g = in1[at(p.in1_off, p.in1_stride, e.row, c)];
    let s = sigmoid(g);
    out[o] = dy * in2[at(p.in2_off, p.in2_stride, e.row, c)] * s * sigmoid(-g);
    x_w5[o] = dy * s;
  }
}

// y = a ⊙ b (b possibly a stride-0 row): in0 = dy, in1 = b, in2 = a; out = da = dy · b, extra x_w5 = dy · a (db, or
// its rows when b is broadcast).
@compute @workgroup_size(256)
fn mul_backward(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let e = units(gid, nwg);
  for (var c = e.begin; c < e.end; c++) {
    let o = at(p.out_off, p.out_stride, e.row, c);
    let dy = in0[at(p.in0_off, p.in0_stride, e.row, c)];
    out[o] = dy * in1[at(p.in1_off, p.in1_stride, e.row, c)];
    x_w5[o] = dy * in2[at(p.in2_off, p.in2_stride, e.row, c)];
  }
}

// y = (h_n + skip ⊙ x_c) ⊙ silu(z): in0 = z, in1 = skip (stride 0); extras x_r4 = dy, x_r5 = h_n, x_r6 = x_c.
// out = dz = dy · (h_n + skip · x_c) · silu'(z); extras x_w7 = dh_n = dy · silu(z), x_w8 = dh_n · x_c (the rows the
// op sums into dskip).
@compute @workgroup_size(256)
fn mlstm_output_gate_backward(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let e = units(gid, nwg);
  for (var c = e.begin; c < e.end; c++) {
    let o = at(p.out_off, p.out_stride, e.row, c);
    let z = in0[at(p.in0_off, p.in0_stride, e.row, c)];
    let skip = in1[at(p.in1_off, p.in1_stride, e.row, c)];
    let dy = x_r4[o];
    let x_c = x_r6[o];
    let dh = dy * silu(z);
    out[o] = dy * (x_r5[o] + skip * x_c) * silu_derivative(z);
    x_w7[o] = dh;
    x_w8[o] = dh * x_c;
  }
}
