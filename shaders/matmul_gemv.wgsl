// The matmul for few rows of C (M ≤ ROWS ≤ 8: decoding, where a product streams a large weight B once per token).
// Operands, strides, load modes and fusions are matmul_common.wgsl's, which the op prepends.
//
// matmul.wgsl gives each invocation an 8×16 block of C and the whole of K, so with M = 1 a product with N columns
// keeps only N / 16 invocations busy, each streaming 16 rows of B alone: a few SMs' bandwidth on a large GPU.
// Here a workgroup owns COLS columns of C for all its M rows (op(B) stored as [N, K]: B_MODE 1 loads along K), and
// N / COLS workgroups keep every SM streaming B. Its WG invocations split K into rounds of WG·UNROLL steps of four
// k: in a round, invocation t takes the UNROLL steps from t·UNROLL on, so the workgroup reads a contiguous stretch
// of each of its rows of B (on a GPU a warp's loads meet in L1), an invocation's loads in a round are independent
// (no guard inside a round), and on lavapipe each SIMD lane streams 128 contiguous bytes of f32 weights (steps
// dealt one by one measured 1.5–2× slower there, runs of 4 steps 1.2×). The last, partial round keeps the runs,
// with a guard. Per invocation that is K / (4·UNROLL·WG) rounds (≤ 32 for the op's K ≤ 65,536 per dispatch) and at
// most UNROLL more steps.
//
// Each invocation keeps its partial sums in registers; a tree reduction in workgroup memory adds them up (with the
// RMSNorm's Σa² of the rows, A_NORM), and one invocation per 4×4 block of C runs the shared epilogue (one call
// site: two inlined copies of the soft cap's epilogue made lavapipe's code 4× slower).

// Rows of C per workgroup: 1 (a vector of A: no work on clamped rows), 4 or 8 (one or two 4×4 blocks of A).
override ROWS: u32 = 1u;

const COLS = 8u; // columns of C per workgroup: two 4×4 blocks of B per step
const WG = 64u; // invocations per workgroup, splitting K
const UNROLL = 8u; // consecutive steps per invocation and round

// Partial sums per invocation, as vec4s: the products (ROWS = 1: a row of four columns per block of B; else a
// vec4 of rows per column and block of A), then A_NORM's Σa² (a vec4 of rows per block of A).
override BLOCKS: u32 = select(2u, 1u, ROWS <= 4u);
override DATA_SLOTS: u32 = select(COLS * BLOCKS, 2u, ROWS == 1u);
override SLOTS: u32 = DATA_SLOTS + A_NORM * BLOCKS;
var<workgroup> partial: array<vec4f, SLOTS * WG>;

// Slot s of invocation t, and the reduced slot s (four consecutive slots as a matrix). Through functions: after the
// override constants are substituted, a constant index past the array's end (in a branch that never runs, for this
// ROWS) would fail pipeline validation.
fn put(s: u32, t: u32, v: vec4f) { partial[s * WG + t] = v; }
fn put4(s: u32, t: u32, v: mat4x4f) { put(s, t, v[0]); put(s + 1u, t, v[1]); put(s + 2u, t, v[2]); put(s + 3u, t, v[3]); }
fn sum(s: u32) -> vec4f { return partial[s * WG]; }
fn sum4(s: u32) -> mat4x4f { return mat4x4f(sum(s), sum(s + 1u), sum(s + 2u), sum(s + 3u)); }

// The invocation's partial sums: row0/row1 (ROWS = 1) hold C[0, col0 + s] and C[0, col0 + 4 + s] in component s;
// cRB (ROWS > 1) holds column s of block B of columns in its column s, over block R of rows. Explicit names, not
// arrays: llvmpipe spills run-time indexed registers (see store in matmul_common.wgsl).
var<private> row0: vec4f;
var<private> row1: vec4f;
var<private> c00: mat4x4f;
var<private> c01: mat4x4f;
var<private> c10: mat4x4f;
var<private> c11: mat4x4f;
var<private> ss0: vec4f; // A_NORM: Σa² of rows 0..3 and 4..7
var<private> ss1: vec4f;

// Adds step `step` (k = 4·step..4·step + 3) to the partial sums; ra0 and ra1 index rows 0..3 and 4..7 of op(A)
// at k = 0, cb0 and cb1 the workgroup's columns of op(B).
fn k_step(step: u32, ra0: vec4u, ra1: vec4u, cb0: vec4u, cb1: vec4u) {
  let k = step * 4u + vec4u(0u, 1u, 2u, 3u);
  let kc = min(k, vec4u(p.k - 1u));
  let ka = kc * p.a_k;
  let kb = kc * prod.b_k;
  let b0 = block_b(cb0, kb);
  let b1 = block_b(cb1, kb);
  if (ROWS == 1u) {
    var av = load_a_row(ra0.x, ka);
    if (k.w >= p.k) { av = select(vec4f(), av, k < vec4u(p.k)); } // as mask_k
    if (A_NORM == 1u) {
      ss0.x += dot(av, av);
      av *= norm_w4(kc);
    }
    row0 += av * b0;
    row1 += av * b1;
    return;
  }
  var a0 = load_a(ra0, ka);
  var a1 = mat4x4f();
  if (ROWS == 8u) { a1 = load_a(ra1, ka); }
  if (k.w >= p.k) {
    a0 = mask_k(a0, k);
    a1 = mask_k(a1, k);
  }
  if (A_NORM == 1u) {
    ss0 += square_sum(a0);
    ss1 += square_sum(a1);
    let w = norm_w4(kc);
    a0 = scale_k(a0, w);
    a1 = scale_k(a1, w);
  }
  c00 += a0 * b0;
  c01 += a0 * b1;
  if (ROWS == 8u) {
    c10 += a1 * b0;
    c11 += a1 * b1;
  }
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
  keep_optional_bindings();
  let col0 = select_product(wid.x) * COLS;
  let offs = batch_offsets(wid.z);
  let lane = vec4u(0u, 1u, 2u, 3u);
  let ra0 = offs.x + min(lane, vec4u(p.m - 1u)) * p.a_row;
  let ra1 = offs.x + min(4u + lane, vec4u(p.m - 1u)) * p.a_row;
  let cb0 = offs.y + min(col0 + lane, vec4u(prod.n - 1u)) * prod.b_col;
  let cb1 = offs.y + min(col0 + 4u + lane, vec4u(prod.n - 1u)) * prod.b_col;
  let steps = (p.k + 3u) / 4u;
  let rounds = steps / (WG * UNROLL) * (WG * UNROLL);
  for (var run = lid * UNROLL; run < rounds; run += WG * UNROLL) {
    for (var u = 0u; u < UNROLL; u++) { k_step(run + u, ra0, ra1, cb0, cb1); }
  }
  let run = rounds + lid * UNROLL; // the last, partial round
  for (var u = 0u; u < UNROLL; u++) {
    if (run + u < steps) { k_step(run + u, ra0, ra1, cb0, cb1); }
  }

  // Slots: the products (in the order of their names), then the norm's sums.
  if (ROWS == 1u) {
    put(0u, lid, row0);
    put(1u, lid, row1);
  } else {
    put4(0u, lid, c00);
    put4(4u, lid, c01);
    if (ROWS == 8u) {
      put4(8u, lid, c10);
      put4(12u, lid, c11);
    }
  }
  if (A_NORM == 1u) {
    put(DATA_SLOTS, lid, ss0);
    if (BLOCKS == 2u) { put(DATA_SLOTS + 1u, lid, ss1); }
  }
  workgroupBarrier();
  for (var half = WG / 2u; half > 0u; half >>= 1u) {
    if (lid < half) {
      for (var s = 0u; s < SLOTS; s++) { partial[s * WG + lid] += partial[s * WG + lid + half]; }
    }
    workgroupBarrier();
  }
  // The epilogue: invocation j writes the workgroup's 4×4 block j of C (row block j / 2, column block j % 2).
  if (lid >= select(2u * BLOCKS, 2u, ROWS == 1u)) { return; }
  let rb = lid / 2u;
  var scale = vec4f(1.0); // per-row scales of the products
  if (A_NORM == 1u) { scale = rms_scale(sum(DATA_SLOTS + rb)); }
  var blk: mat4x4f;
  if (ROWS == 1u) {
    let z = vec4f();
    blk = transpose(mat4x4f(sum(lid), z, z, z));
  } else {
    blk = sum4(4u * lid);
  }
  store(offs.z, 4u * rb, col0 + 4u * (lid % 2u), blk, scale);
}
