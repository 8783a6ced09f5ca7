// Shared by the two matmul kernels (matmul.wgsl, register-blocked, and matmul_gemv.wgsl, for few rows of C): the
// parameters and bindings, operand loads, the inference fusions and the epilogue. The op prepends this file (after
// B's element alias and the accurate math), so both kernels compute a fused result the same way.
//
// C = op(A)·op(B) (+ bias broadcast over rows) (+ C when accumulating), accumulated in f32. B's element type is the
// alias BW: f32, or f16 for half-precision weights (with `enable f16;`, on adapters with shader-f16); B's elements
// become f32 as they are loaded; everything else is f32.
//
// Layouts are runtime strides, so one pipeline serves every transpose: element (m, k) of op(A) is
// a[a_off + m·a_row + k·a_k] and element (k, n) of op(B) is b[b_off + k·b_k + n·b_col]. C[m, n] is
// c[c_off + m·ldc + n]. Offsets are relative to the bound ranges, which the op aligns down to
// minStorageBufferOffsetAlignment when it splits large operands.
//
// Batches run along the grid's z: workgroup z = o·batch_inner + i multiplies the matrices that start
// o·x_bo + i·x_bi elements after x_off (two levels, so that a (batch, head) pair can address a head's column slice
// inside a [B·S, NH·DH] buffer).
//
// A and B are vec4 arrays. Where an operand's contiguous dimension is vec4-aligned (stride and first element
// multiples of 4 elements) the op picks a mode that loads whole vec4s along it:
//   mode 0: scalar loads; mode 1: vec4 along K (needs K % 4 == 0); mode 2: vec4 along M (A) or N (B).
// Steps past K (K % 4 != 0) clamp k and zero A's columns (mask_k), so B is only read inside its rows.
//
// Inference fusions (override constants, each off by default; the op checks their preconditions):
//   A_NORM: RMSNorm of op(A)'s rows folded in: while loading, Σa² per row accumulates and A's column k is scaled by
//           norm_w[k]; the products are scaled by rsqrt(Σa²/K + eps) before the bias (needs one pass over K).
//   A_GLU:  op(A)[m, k] = silu(A[m, k]) · A[m, k + glu_off] (SwiGLU read from a [gate | z] projection).
//   C_CAP:  C = cap · tanh(C / cap) after the bias (the logit soft cap; one pass over K, no accumulation).
//   DUAL:   workgroups x ≥ split_x compute a second product with the same A: B from b2, bias from bias2, written to
//           the n2 columns of C after the first product's n (two projections of one input in one dispatch).
// The pointwise math is accurate_math.wgsl's on V = vec4f (prepended by the op), so a fused result is computed as
// the separate kernels compute it.

// Override constants, not uniforms: choosing the loads at run time inside the K loop costs 3× on lavapipe.
override A_MODE: u32 = 0u;
override B_MODE: u32 = 0u;
override A_NORM: u32 = 0u;
override A_GLU: u32 = 0u;
override C_CAP: u32 = 0u;
override DUAL: u32 = 0u;

struct Params {
  m: u32,
  n: u32,
  k: u32,
  a_row: u32,
  a_k: u32,
  b_k: u32,
  b_col: u32,
  ldc: u32,
  a_off: u32,
  b_off: u32,
  c_off: u32,
  bias_off: u32,
  has_bias: u32,
  accumulate: u32, // 1: add to the existing C (K passes after the first)
  wg_y_log2: u32, // matmul.wgsl: log2 of the workgroup's invocations along M
  batch_inner: u32, // inner batch count
  a_bo: u32, // batch strides (outer, inner) of A, B and C in elements
  a_bi: u32,
  b_bo: u32,
  b_bi: u32,
  c_bo: u32,
  c_bi: u32,
  tri_shift: i32, // matmul.wgsl's TRIANGLE: block row r meets the diagonal at column r + tri_shift
  norm_eps: f32, // A_NORM
  glu_off: u32, // A_GLU: element offset of z from the gate
  cap: f32, // C_CAP
  split_x: u32, // DUAL: the first product's workgroups along x, then the second's
  n2: u32, // DUAL: the second product's columns, its B (k and column strides, offset) and bias
  b2_k: u32,
  b2_col: u32,
  b2_off: u32,
  bias2_off: u32,
  has_bias2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<vec4f>;
@group(0) @binding(2) var<storage, read> b: array<vec4<BW>>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> c: array<f32>;
@group(0) @binding(5) var<storage, read> norm_w: array<f32>;
@group(0) @binding(6) var<storage, read> b2: array<vec4<BW>>;
@group(0) @binding(7) var<storage, read> bias2: array<f32>;

// Never true (the op dispatches no empty product): the optional bindings are used here so that the automatic layout
// keeps them where the override constants switch their real uses off. Each entry point calls this first.
fn keep_optional_bindings() {
  if (p.m == 0u) { c[0] = norm_w[0] + f32(b2[0].x) + bias2[0]; }
}

// What differs between the products of a DUAL dispatch (the first product's values otherwise).
struct Product {
  n: u32,
  b_k: u32,
  b_col: u32,
  b_off: u32,
  bias_off: u32,
  has_bias: u32,
  c_off: u32,
}
var<private> prod: Product;
var<private> second: bool;

// Selects the product of workgroup x (`prod`, `second`) and returns x counted within that product.
fn select_product(wx: u32) -> u32 {
  prod = Product(p.n, p.b_k, p.b_col, p.b_off, p.bias_off, p.has_bias, p.c_off);
  second = DUAL == 1u && wx >= p.split_x;
  if (!second) { return wx; }
  prod = Product(p.n2, p.b2_k, p.b2_col, p.b2_off, p.bias2_off, p.has_bias2, p.c_off + p.n);
  return wx - p.split_x;
}

// The first elements of A, B and C of batch product z.
fn batch_offsets(z: u32) -> vec3u {
  let bo = z / p.batch_inner;
  let bi = z % p.batch_inner;
  return vec3u(p.a_off + bo * p.a_bo + bi * p.a_bi, prod.b_off + bo * p.b_bo + bi * p.b_bi,
    prod.c_off + bo * p.c_bo + bi * p.c_bi);
}

fn a_at(i: u32) -> f32 { return a[i >> 2u][i & 3u]; }
fn b4(i: u32) -> vec4f {
  if (DUAL == 1u && second) { return vec4f(b2[i]); }
  return vec4f(b[i]);
}
fn b_at(i: u32) -> f32 {
  if (DUAL == 1u && second) { return f32(b2[i >> 2u][i & 3u]); }
  return f32(b[i >> 2u][i & 3u]);
}
fn bias_at(i: u32) -> f32 {
  if (DUAL == 1u && second) { return bias2[i]; }
  return bias[i];
}

// op(A)[row, k0 + t] for t = 0..3 (A_MODE 0 or 1): `row` indexes the row's element at k = 0, ks[t] is the offset of
// k = k0 + t.
fn a_vec(row: u32, ks: vec4u) -> vec4f {
  if (A_MODE == 1u) { return a[(row >> 2u) + (ks.x >> 2u)]; } // ks are consecutive
  return vec4f(a_at(row + ks.x), a_at(row + ks.y), a_at(row + ks.z), a_at(row + ks.w));
}

// A 4×4 block of op(A): rows[r] indexes row r's element at k = 0, ks[t] is the offset of k = k0 + t. Column t of
// the result holds k = k0 + t, so that block_a · block_b is a 4×4 block of C.
fn block_a(rows: vec4u, ks: vec4u) -> mat4x4f {
  if (A_MODE == 2u) { // rows are consecutive: one vec4 per k
    return mat4x4f(a[(rows.x + ks.x) >> 2u], a[(rows.x + ks.y) >> 2u], a[(rows.x + ks.z) >> 2u], a[(rows.x + ks.w) >> 2u]);
  }
  return transpose(mat4x4f(a_vec(rows.x, ks), a_vec(rows.y, ks), a_vec(rows.z, ks), a_vec(rows.w, ks)));
}

// A 4×4 block of op(B): cols[s] indexes column s's element at k = 0, ks[t] the offset of k = k0 + t. Column s of
// the result holds column s.
fn block_b(cols: vec4u, ks: vec4u) -> mat4x4f {
  if (B_MODE == 1u) { // ks are consecutive: one vec4 per column
    let k4 = ks.x >> 2u;
    return mat4x4f(b4((cols.x >> 2u) + k4), b4((cols.y >> 2u) + k4), b4((cols.z >> 2u) + k4), b4((cols.w >> 2u) + k4));
  }
  if (B_MODE == 2u) { // columns are consecutive: one vec4 per k
    return transpose(mat4x4f(b4((cols.x + ks.x) >> 2u), b4((cols.x + ks.y) >> 2u), b4((cols.x + ks.z) >> 2u), b4((cols.x + ks.w) >> 2u)));
  }
  return mat4x4f(
    vec4f(b_at(cols.x + ks.x), b_at(cols.x + ks.y), b_at(cols.x + ks.z), b_at(cols.x + ks.w)),
    vec4f(b_at(cols.y + ks.x), b_at(cols.y + ks.y), b_at(cols.y + ks.z), b_at(cols.y + ks.w)),
    vec4f(b_at(cols.z + ks.x), b_at(cols.z + ks.y), b_at(cols.z + ks.z), b_at(cols.z + ks.w)),
    vec4f(b_at(cols.w + ks.x), b_at(cols.w + ks.y), b_at(cols.w + ks.z), b_at(cols.w + ks.w)),
  );
}

// op(A)'s block: block_a, or with A_GLU silu(gate) ⊙ z, z glu_off elements after the gate.
fn load_a(rows: vec4u, ks: vec4u) -> mat4x4f {
  let g = block_a(rows, ks);
  if (A_GLU == 0u) { return g; }
  let z = block_a(rows, ks + vec4u(p.glu_off));
  return mat4x4f(silu(g[0]) * z[0], silu(g[1]) * z[1], silu(g[2]) * z[2], silu(g[3]) * z[3]);
}

// One row of op(A) at k0..k0 + 3 (A_MODE 0 or 1), with A_GLU as in load_a.
fn load_a_row(row: u32, ks: vec4u) -> vec4f {
  let g = a_vec(row, ks);
  if (A_GLU == 0u) { return g; }
  return silu(g) * a_vec(row, ks + vec4u(p.glu_off));
}

// The A_NORM weights of k = kc.
fn norm_w4(kc: vec4u) -> vec4f {
  return vec4f(norm_w[kc.x], norm_w[kc.y], norm_w[kc.z], norm_w[kc.w]);
}

// Column t of an A block (k = k0 + t) times w[t]: the norm weight of A_NORM.
fn scale_k(blk: mat4x4f, w: vec4f) -> mat4x4f {
  return mat4x4f(blk[0] * w.x, blk[1] * w.y, blk[2] * w.z, blk[3] * w.w);
}

// Σ over k of a block's squares, per row (A_NORM's statistics).
fn square_sum(blk: mat4x4f) -> vec4f {
  return blk[0] * blk[0] + blk[1] * blk[1] + blk[2] * blk[2] + blk[3] * blk[3];
}

// A_NORM's scale of rows whose Σa² over K is ss.
fn rms_scale(ss: vec4f) -> vec4f {
  return inverseSqrt(ss / f32(p.k) + p.norm_eps);
}

// Zeroes the columns of an A block that lie past K (the last step when K % 4 != 0). Select, not multiply: an
// infinite A[.., K - 1] must not turn into NaN.
fn mask_k(blk: mat4x4f, k: vec4u) -> mat4x4f {
  let z = vec4f();
  return mat4x4f(blk[0], select(z, blk[1], k.y < p.k), select(z, blk[2], k.z < p.k), select(z, blk[3], k.w < p.k));
}

// Writes a 4×4 block of the C starting at c_off (column s of `blk` is column col + s), row r scaled by scale[r]
// (A_NORM), adding bias, capping and adding the old C as asked. Constant indices only: llvmpipe turns a run-time
// index into a matrix or vector into a per-lane spill and gather, which made this epilogue cost as much as 100 K
// steps.
fn store(c_off: u32, row: u32, col: u32, blk: mat4x4f, scale: vec4f) {
  if (row >= p.m || col >= prod.n) { return; }
  var extra = vec4f();
  if (prod.has_bias != 0u) {
    let last = prod.bias_off + prod.n - 1u; // clamped: columns past N are not stored
    let at = prod.bias_off + col;
    extra = vec4f(bias_at(at), bias_at(min(at + 1u, last)), bias_at(min(at + 2u, last)), bias_at(min(at + 3u, last)));
  }
  var rows = transpose(blk);
  if (A_NORM == 1u) { rows = mat4x4f(rows[0] * scale.x, rows[1] * scale.y, rows[2] * scale.z, rows[3] * scale.w); }
  let idx = c_off + row * p.ldc + col;
  store_row(idx, col, rows[0] + extra);
  if (row + 1u < p.m) { store_row(idx + p.ldc, col, rows[1] + extra); }
  if (row + 2u < p.m) { store_row(idx + 2u * p.ldc, col, rows[2] + extra); }
  if (row + 3u < p.m) { store_row(idx + 3u * p.ldc, col, rows[3] + extra); }
}

// Writes columns col.. of one row of C (at idx) from v, those before N only.
fn store_row(idx: u32, col: u32, v: vec4f) {
  var w = v;
  if (C_CAP == 1u) { w = p.cap * tanh_accurate(w / p.cap); }
  if (p.accumulate != 0u) {
    w += vec4f(c[idx], c_at(idx, col, 1u), c_at(idx, col, 2u), c_at(idx, col, 3u));
  }
  c[idx] = w.x;
  if (col + 1u < prod.n) { c[idx + 1u] = w.y; }
  if (col + 2u < prod.n) { c[idx + 2u] = w.z; }
  if (col + 3u < prod.n) { c[idx + 3u] = w.w; }
}

// C at column col + s of the row at idx, or 0 past N.
fn c_at(idx: u32, col: u32, s: u32) -> f32 {
  return select(0.0, c[idx + s], col + s < prod.n);
}
