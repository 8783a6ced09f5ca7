// C = op(A)·op(B) (+ bias broadcast over rows) (+ C when accumulating), accumulated in f32.
//
// B's element type is the alias BW, which the op prepends: f32, or f16 for half-precision weights (with
// `enable f16;`, on adapters with shader-f16). B's elements become f32 as they are loaded; everything else is f32.
//
// Register-blocked without workgroup memory: each invocation owns an 8×16 block of C and walks K four at a time,
// loading an 8×4 slice of op(A) and a 4×16 slice of op(B) into registers as 4×4 matrices and multiplying them
// (512 FMAs per step). On lavapipe this beats shared-memory tiling several times over (no barriers); on a real GPU
// the repeated loads hit L1.
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
// Rows and columns past the edge of C are clamped to the last valid one in mode 0 and 1; mode 2 reads past the edge
// (in bounds of the binding or clamped by WebGPU's robust access). Either way those values only reach the rows and
// columns of C that are not stored, so the inner loop has no edge branches. Steps past K (K % 4 != 0) clamp k and
// zero A's columns. The K loop runs ceil(K / 4) trips per invocation; the op bounds K per dispatch (lavapipe ends
// loops after 65,535 trips) and splits larger K into accumulating passes.
//
// Inference fusions (override constants, each off by default; the op checks their preconditions):
//   A_NORM: RMSNorm of op(A)'s rows folded in: while loading, Σa² per row accumulates and A's column k is scaled by
//           norm_w[k]; the products are scaled by rsqrt(Σa²/K + eps) before the bias (needs one pass over K).
//   A_GLU:  op(A)[m, k] = silu(A[m, k]) · A[m, k + glu_off] (SwiGLU read from a [gate | z] projection).
//   C_CAP:  C = cap · tanh(C / cap) after the bias (the logit soft cap; one pass over K, no accumulation).
//   DUAL:   workgroups x ≥ split_x compute a second product with the same A: B from b2, bias from bias2, written to
//           the n2 columns of C after the first product's n (two projections of one input in one dispatch).
// The pointwise math is pointwise_forward.wgsl's accurate f32 section on V = vec4f (prepended by the op), so a fused
// result is computed as the separate kernels compute it.

// Override constants, not uniforms: choosing the loads at run time inside the K loop costs 3× on lavapipe.
override A_MODE: u32 = 0u;
override B_MODE: u32 = 0u;
// Triangular structure (the op's `triangular` option). In this dispatch's block, row r meets the diagonal at column
// r + tri_shift. 1: op(A) is zero right of the diagonal, so an invocation's K loop stops after its last row's
// diagonal (rounded up to a whole step: the zeros read there must be real zeros); 2: only C on or left of the
// diagonal is wanted, so invocations whose block lies wholly right of it return at once.
override TRIANGLE: u32 = 0u;
override A_NORM: u32 = 0u;
override A_GLU: u32 = 0u;
override C_CAP: u32 = 0u;
override DUAL: u32 = 0u;

const TM = 8u; // rows of C per invocation
const TN = 16u; // columns of C per invocation
const WG = 64u; // invocations per workgroup, arranged as (64 >> wg_y_log2) × (1 << wg_y_log2)

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
  wg_y_log2: u32, // log2 of the workgroup's invocations along M
  batch_inner: u32, // inner batch count
  a_bo: u32, // batch strides (outer, inner) of A, B and C in elements
  a_bi: u32,
  b_bo: u32,
  b_bi: u32,
  c_bo: u32,
  c_bi: u32,
  tri_shift: i32, // diagonal offset for TRIANGLE: block row r meets the diagonal at column r + tri_shift
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

// A 4×4 block of op(A): rows[r] indexes row r's element at k = 0, ks[t] is the offset of k = k0 + t. Column t of
// the result holds k = k0 + t, so that block_a · block_b is a 4×4 block of C.
fn block_a(rows: vec4u, ks: vec4u) -> mat4x4f {
  if (A_MODE == 1u) { // ks are consecutive: one vec4 per row
    let k4 = ks.x >> 2u;
    return transpose(mat4x4f(a[(rows.x >> 2u) + k4], a[(rows.y >> 2u) + k4], a[(rows.z >> 2u) + k4], a[(rows.w >> 2u) + k4]));
  }
  if (A_MODE == 2u) { // rows are consecutive: one vec4 per k
    return mat4x4f(a[(rows.x + ks.x) >> 2u], a[(rows.x + ks.y) >> 2u], a[(rows.x + ks.z) >> 2u], a[(rows.x + ks.w) >> 2u]);
  }
  return mat4x4f(
    vec4f(a_at(rows.x + ks.x), a_at(rows.y + ks.x), a_at(rows.z + ks.x), a_at(rows.w + ks.x)),
    vec4f(a_at(rows.x + ks.y), a_at(rows.y + ks.y), a_at(rows.z + ks.y), a_at(rows.w + ks.y)),
    vec4f(a_at(rows.x + ks.z), a_at(rows.y + ks.z), a_at(rows.z + ks.z), a_at(rows.w + ks.z)),
    vec4f(a_at(rows.x + ks.w), a_at(rows.y + ks.w), a_at(rows.z + ks.w), a_at(rows.w + ks.w)),
  );
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

// Column t of an A block (k = k0 + t) times w[t]: the norm weight of A_NORM.
fn scale_k(blk: mat4x4f, w: vec4f) -> mat4x4f {
  return mat4x4f(blk[0] * w.x, blk[1] * w.y, blk[2] * w.z, blk[3] * w.w);
}

// Σ over k of a block's squares, per row (A_NORM's statistics).
fn square_sum(blk: mat4x4f) -> vec4f {
  return blk[0] * blk[0] + blk[1] * blk[1] + blk[2] * blk[2] + blk[3] * blk[3];
}

// Zeroes the columns of an A block that lie past K (the last step when K % 4 != 0). Select, not multiply: an
// infinite A[.., K - 1] must not turn into NaN.
fn mask_k(blk: mat4x4f, k: vec4u) -> mat4x4f {
  let z = vec4f();
  return mat4x4f(blk[0], select(z, blk[1], k.y < p.k), select(z, blk[2], k.z < p.k), select(z, blk[3], k.w < p.k));
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
  // Never true (the op dispatches no empty product): the optional bindings are used here so that the automatic
  // layout keeps them where the override constants switch their real uses off.
  if (p.m == 0u) { c[0] = norm_w[0] + f32(b2[0].x) + bias2[0]; }
  prod = Product(p.n, p.b_k, p.b_col, p.b_off, p.bias_off, p.has_bias, p.c_off);
  second = DUAL == 1u && wid.x >= p.split_x;
  var wx = wid.x;
  if (second) {
    prod = Product(p.n2, p.b2_k, p.b2_col, p.b2_off, p.bias2_off, p.has_bias2, p.c_off + p.n);
    wx -= p.split_x;
  }
  let bo = wid.z / p.batch_inner;
  let bi = wid.z % p.batch_inner;
  let a_off = p.a_off + bo * p.a_bo + bi * p.a_bi;
  let b_off = prod.b_off + bo * p.b_bo + bi * p.b_bi;
  let c_off = prod.c_off + bo * p.c_bo + bi * p.c_bi;
  // Invocations along N vary fastest: on lavapipe one SIMD batch then shares its rows of A.
  let wg_x_log2 = 6u - p.wg_y_log2;
  let tx = lid & ((1u << wg_x_log2) - 1u);
  let ty = lid >> wg_x_log2;
  let row0 = ((wid.y << p.wg_y_log2) + ty) * TM;
  let col0 = ((wx << wg_x_log2) + tx) * TN;
  if (row0 >= p.m || col0 >= prod.n) { return; }
  if (TRIANGLE == 2u && i32(col0) > i32(row0 + TM - 1u) + p.tri_shift) { return; }
  let lane = vec4u(0u, 1u, 2u, 3u);
  let ra0 = a_off + min(row0 + lane, vec4u(p.m - 1u)) * p.a_row;
  let ra1 = a_off + min(row0 + 4u + lane, vec4u(p.m - 1u)) * p.a_row;
  let cb0 = b_off + min(col0 + lane, vec4u(prod.n - 1u)) * prod.b_col;
  let cb1 = b_off + min(col0 + 4u + lane, vec4u(prod.n - 1u)) * prod.b_col;
  let cb2 = b_off + min(col0 + 8u + lane, vec4u(prod.n - 1u)) * prod.b_col;
  let cb3 = b_off + min(col0 + 12u + lane, vec4u(prod.n - 1u)) * prod.b_col;

  var c00 = mat4x4f(); var c01 = mat4x4f(); var c02 = mat4x4f(); var c03 = mat4x4f();
  var c10 = mat4x4f(); var c11 = mat4x4f(); var c12 = mat4x4f(); var c13 = mat4x4f();
  var ss0 = vec4f(); var ss1 = vec4f(); // A_NORM: Σa² of rows row0.. and row0 + 4..
  var steps = (p.k + 3u) / 4u;
  if (TRIANGLE == 1u) { steps = (u32(clamp(i32(row0 + TM) + p.tri_shift, 0, i32(p.k))) + 3u) / 4u; }
  for (var step = 0u; step < steps; step++) {
    let k = step * 4u + lane;
    let kc = min(k, vec4u(p.k - 1u));
    let ka = kc * p.a_k;
    let kb = kc * prod.b_k;
    var a0 = load_a(ra0, ka);
    var a1 = load_a(ra1, ka);
    if (k.w >= p.k) {
      a0 = mask_k(a0, k);
      a1 = mask_k(a1, k);
    }
    if (A_NORM == 1u) {
      ss0 += square_sum(a0);
      ss1 += square_sum(a1);
      let w = vec4f(norm_w[kc.x], norm_w[kc.y], norm_w[kc.z], norm_w[kc.w]);
      a0 = scale_k(a0, w);
      a1 = scale_k(a1, w);
    }
    let b0 = block_b(cb0, kb);
    c00 += a0 * b0; c10 += a1 * b0;
    let b1 = block_b(cb1, kb);
    c01 += a0 * b1; c11 += a1 * b1;
    let b2 = block_b(cb2, kb);
    c02 += a0 * b2; c12 += a1 * b2;
    let b3 = block_b(cb3, kb);
    c03 += a0 * b3; c13 += a1 * b3;
  }
  var s0 = vec4f(1.0); var s1 = vec4f(1.0); // per-row scales of the products
  if (A_NORM == 1u) {
    s0 = inverseSqrt(ss0 / f32(p.k) + p.norm_eps);
    s1 = inverseSqrt(ss1 / f32(p.k) + p.norm_eps);
  }
  store(c_off, row0, col0, c00, s0); store(c_off, row0, col0 + 4u, c01, s0); store(c_off, row0, col0 + 8u, c02, s0);
  store(c_off, row0, col0 + 12u, c03, s0); store(c_off, row0 + 4u, col0, c10, s1);
  store(c_off, row0 + 4u, col0 + 4u, c11, s1); store(c_off, row0 + 4u, col0 + 8u, c12, s1);
  store(c_off, row0 + 4u, col0 + 12u, c13, s1);
}

// Writes a 4×4 block of the C starting at c_off (column s of `blk` is column col + s), row r scaled by scale[r],
// adding bias, capping and adding the old C as asked. Constant indices only: llvmpipe turns a run-time index into a matrix or vector into a per-lane
// spill and gather, which made this epilogue cost as much as 100 K steps.
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
