// C = op(A)·op(B) (+ bias broadcast over rows) (+ C when accumulating), all f32.
//
// Register-blocked without workgroup memory: each invocation owns a TM×TN block of C and walks K four at a time,
// loading a TM×4 slice of op(A) and a 4×TN slice of op(B) into registers and doing TM·TN·4 FMAs on them. On
// lavapipe this beats shared-memory tiling several times over (no barriers, no coroutine switches); on a real GPU
// the repeated loads hit L1/L2.
//
// Element (m, k) of op(A) is a[a_off + m·lda + k], or a[a_off + k·lda + m] with TRANS_A; element (k, n) of op(B) is
// b[b_off + k·ldb + n], or b[b_off + n·ldb + k] with TRANS_B; C[m, n] is c[c_off + m·ldc + n]. Offsets are relative
// to the bound ranges, which the op aligns down to minStorageBufferOffsetAlignment when it splits large operands.
//
// Rows and columns past the edge are clamped to the last valid one (loads stay in bounds, results are discarded),
// so the inner loop has no branches. The K loop runs ceil(K / 4) trips per invocation; the op bounds K per
// dispatch (lavapipe stops loops after 65,535 trips) and splits larger K into accumulating passes.

override TRANS_A: bool = false;
override TRANS_B: bool = false;
override WG_X: u32 = 8u; // invocations along N
override WG_Y: u32 = 8u; // invocations along M

const TM = 8u; // rows of C per invocation
const TN = 16u; // columns of C per invocation
const TN4 = TN / 4u;

struct Params {
  m: u32,
  n: u32,
  k: u32,
  lda: u32,
  ldb: u32,
  ldc: u32,
  a_off: u32,
  b_off: u32,
  c_off: u32,
  bias_off: u32,
  has_bias: u32,
  accumulate: u32, // 1: add to the existing C (later K passes)
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> c: array<f32>;

var<private> acc: array<vec4f, TM * TN4>;
var<private> a_base: array<u32, TM>; // index of op(A)[row i, k = 0]
var<private> b_base: array<u32, TN>; // index of op(B)[k = 0, column j]

// One K step of four: k0..k0+3; with `tail`, steps at k ≥ K contribute zero (A is masked, B clamped in bounds).
fn step(k0: u32, tail: bool) {
  var kk: array<u32, 4>;
  var live: array<f32, 4>;
  for (var t = 0u; t < 4u; t++) {
    kk[t] = k0 + t;
    live[t] = 1.0;
    if (tail) {
      live[t] = select(0.0, 1.0, k0 + t < p.k);
      kk[t] = min(k0 + t, p.k - 1u);
    }
  }
  var av: array<vec4f, TM>; // av[i][t] = op(A)[row i, k0 + t]
  for (var i = 0u; i < TM; i++) {
    for (var t = 0u; t < 4u; t++) {
      let idx = select(a_base[i] + kk[t], a_base[i] + kk[t] * p.lda, TRANS_A);
      av[i][t] = a[idx] * live[t];
    }
  }
  var bv: array<vec4f, 4 * TN4>; // bv[t * TN4 + j] = op(B)[k0 + t, columns 4j..4j+3]
  for (var t = 0u; t < 4u; t++) {
    for (var j = 0u; j < TN4; j++) {
      for (var u = 0u; u < 4u; u++) {
        let idx = select(b_base[4u * j + u] + kk[t] * p.ldb, b_base[4u * j + u] + kk[t], TRANS_B);
        bv[t * TN4 + j][u] = b[idx];
      }
    }
  }
  for (var i = 0u; i < TM; i++) {
    for (var t = 0u; t < 4u; t++) {
      for (var j = 0u; j < TN4; j++) {
        acc[i * TN4 + j] = fma(vec4f(av[i][t]), bv[t * TN4 + j], acc[i * TN4 + j]);
      }
    }
  }
}

@compute @workgroup_size(WG_X, WG_Y)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let row0 = gid.y * TM;
  let col0 = gid.x * TN;
  if (row0 >= p.m || col0 >= p.n) { return; }
  for (var i = 0u; i < TM; i++) {
    let r = min(row0 + i, p.m - 1u);
    a_base[i] = p.a_off + select(r * p.lda, r, TRANS_A);
  }
  for (var j = 0u; j < TN; j++) {
    let cc = min(col0 + j, p.n - 1u);
    b_base[j] = p.b_off + select(cc, cc * p.ldb, TRANS_B);
  }
  let k_full = p.k & ~3u;
  for (var k0 = 0u; k0 < k_full; k0 += 4u) {
    step(k0, false);
  }
  if (k_full < p.k) { step(k_full, true); }

  for (var i = 0u; i < TM; i++) {
    let r = row0 + i;
    if (r >= p.m) { break; }
    for (var j = 0u; j < TN4; j++) {
      for (var u = 0u; u < 4u; u++) {
        let cc = col0 + 4u * j + u;
        if (cc < p.n) {
          var v = acc[i * TN4 + j][u];
          if (p.has_bias != 0u) { v += bias[p.bias_off + cc]; }
          let idx = p.c_off + r * p.ldc + cc;
          if (p.accumulate != 0u) { v += c[idx]; }
          c[idx] = v;
        }
      }
    }
  }
}
