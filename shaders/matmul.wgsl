// The register-blocked matmul (see matmul_common.wgsl, which the op prepends, for the operands, strides, load
// modes and fusions).
//
// Register-blocked without workgroup memory: each invocation owns an 8×16 block of C and walks K four at a time,
// loading an 8×4 slice of op(A) and a 4×16 slice of op(B) into registers as 4×4 matrices and multiplying them
// (512 FMAs per step). On lavapipe this beats shared-memory tiling several times over (no barriers); on a real GPU
// the repeated loads hit L1. With few rows of C (decoding) the op runs matmul_gemv.wgsl instead.
//
// Rows and columns past the edge of C are clamped to the last valid one in mode 0 and 1; mode 2 reads past the edge
// (in bounds of the binding or clamped by WebGPU's robust access). Either way those values only reach the rows and
// columns of C that are not stored, so the inner loop has no edge branches. The K loop runs ceil(K / 4) trips per
// invocation; the op bounds K per dispatch (lavapipe ends loops after 65,535 trips) and splits larger K into
// accumulating passes.

// Triangular structure (the op's `triangular` option). In this dispatch's block, row r meets the diagonal at column
// r + tri_shift. 1: op(A) is zero right of the diagonal, so an invocation's K loop stops after its last row's
// diagonal (rounded up to a whole step: the zeros read there must be real zeros); 2: only C on or left of the
// diagonal is wanted, so invocations whose block lies wholly right of it return at once.
override TRIANGLE: u32 = 0u;

const TM = 8u; // rows of C per invocation
const TN = 16u; // columns of C per invocation
const WG = 64u; // invocations per workgroup, arranged as (64 >> wg_y_log2) × (1 << wg_y_log2)

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
  keep_optional_bindings();
  let wx = select_product(wid.x);
  let offs = batch_offsets(wid.z);
  let a_off = offs.x;
  let b_off = offs.y;
  let c_off = offs.z;
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
      let w = norm_w4(kc);
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
    s0 = rms_scale(ss0);
    s1 = rms_scale(ss1);
  }
  store(c_off, row0, col0, c00, s0); store(c_off, row0, col0 + 4u, c01, s0); store(c_off, row0, col0 + 8u, c02, s0);
  store(c_off, row0, col0 + 12u, c03, s0); store(c_off, row0 + 4u, col0, c10, s1);
  store(c_off, row0 + 4u, col0 + 4u, c11, s1); store(c_off, row0 + 4u, col0 + 8u, c12, s1);
  store(c_off, row0 + 4u, col0 + 12u, c13, s1);
}
