// Chunkwise mLSTM forward (spec B2.3, mlstm_kernels convention: k unscaled in the state, q·k and q·C scaled by
// s = DHQK^(-1/2); m_0 = 0 when there is no state). The op runs one segment of NC chunks of L steps of a group of
// batch elements at a time:
//   gates: per (pair, chunk) the inclusive cumsum b_j of logsigmoid(f̃), a_j = (Σ_{u>j} logsigmoid f̃_u) + ĩ_j as a
//          reverse cumsum (the stable form), g = b_{L−1} and mloc = max_j a_j.
//   keys:  per (pair, chunk, d) the weighted keys exp(a_j − mloc)·k_j[d] (for the gemm Ĉ = Kwᵀ·V) and their sum n̂[d],
//          stored as column DHV of the augmented chunk state [DHQK, DHV+1].
//   scan:  per (pair, element of the augmented state [C | n]) the inter-chunk recurrence over the segment's chunks,
//          m_k = max(g + m_{k−1}, mloc), X_k = exp(g + m_{k−1} − m_k)·X_{k−1} + exp(mloc − m_k)·X̂_k; it stores the
//          state before every chunk (for the outputs) and the final state.
//   rows:  per (pair, step) with the gemm results Q·[C|n]_{k−1} and the raw scores Q·Kᵀ of the chunk: m_comb, the
//          normaliser, the normalised intra-chunk weights (in place of the scores, zero above the diagonal) and the
//          inter-chunk part of h; the op then adds W·V to h with a gemm.
// Loop trips per invocation: gates 2L, keys L, scan NC, rows 3L + DHV (the op bounds them).
// Layouts: pair p = b·NH + h within the group (the group's first pair is pair0 of the state tensors); scratch is
// pair-major over the segment: gate [pairs, SEG, 3] = (b_j, ĩ_j, a_j), chunk [pairs, NC, 2] = (g, mloc), weighted
// keys [pairs, SEG, DHQK], augmented states [pairs, NC, DHQK, DHV+1], inter products [pairs, SEG, DHV+1], scores
// [pairs, SEG, L]. Inputs and h are rows b·S + t of strided views, bound from the segment's first row on: x_off is
// the element of (group's first batch element, the segment's first step) in the bound range.
// With gate_cap > 0 the gate pre-activations are soft-capped as they are loaded (xlstm_large: ĩ, f̃ =
// cap·tanh(x / cap)), with pointwise_forward.wgsl's accurate tanh (prepended by the op, on V = f32).

struct Params {
  heads: u32,
  chunk: u32, // L
  chunks: u32, // NC in this segment
  seq: u32, // S
  pair0: u32, // the group's first pair in the state tensors
  dqk: u32,
  dv: u32,
  total: u32, // invocations of this dispatch
  k_off: u32,
  k_stride: u32,
  i_off: u32,
  i_stride: u32,
  f_off: u32,
  f_stride: u32,
  h_off: u32,
  h_stride: u32,
  scale: f32, // DHQK^(-1/2)
  eps: f32,
  gate_cap: f32, // 0: no soft cap
}

@group(0) @binding(0) var<uniform> p: Params;

const NEG_BIG = -3.0e38;

fn invocation(gid: vec3u, nwg: vec3u) -> u32 {
  return gid.x + gid.y * nwg.x * 64u;
}

// log(1 + z) for z in [0, 1] as 2·atanh(z / (2 + z)), as in mlstm_parallel_forward.wgsl.
fn log1p_unit(z: f32) -> f32 {
  let w = z / (2.0 + z);
  let w2 = w * w;
  var s = 1.0 / 17.0;
  s = s * w2 + 1.0 / 15.0;
  s = s * w2 + 1.0 / 13.0;
  s = s * w2 + 1.0 / 11.0;
  s = s * w2 + 1.0 / 9.0;
  s = s * w2 + 1.0 / 7.0;
  s = s * w2 + 1.0 / 5.0;
  s = s * w2 + 1.0 / 3.0;
  s = s * w2 + 1.0;
  return 2.0 * w * s;
}

fn logsigmoid(x: f32) -> f32 {
  return min(x, 0.0) - log1p_unit(exp(-abs(x)));
}

fn gate_in(x: f32) -> f32 {
  if (p.gate_cap > 0.0) { return p.gate_cap * tanh_accurate(x / p.gate_cap); }
  return x;
}

// Row of step t (within the segment) of pair `pair` (within the group) in the bound input views.
fn input_row(pair: u32, t: u32) -> u32 {
  return (pair / p.heads) * p.seq + t;
}

@group(0) @binding(1) var<storage, read> g_igate: array<f32>;
@group(0) @binding(2) var<storage, read> g_fgate: array<f32>;
@group(0) @binding(3) var<storage, read_write> g_gate: array<f32>;
@group(0) @binding(4) var<storage, read_write> g_chunk: array<f32>;

@compute @workgroup_size(64)
fn gates(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let idx = invocation(gid, nwg);
  if (idx >= p.total) { return; }
  let pair = idx / p.chunks;
  let first = (idx % p.chunks) * p.chunk;
  let h = pair % p.heads;
  let seg = p.chunks * p.chunk;
  var sum = 0.0;
  for (var j = 0u; j < p.chunk; j++) {
    let r = input_row(pair, first + j);
    sum += logsigmoid(gate_in(g_fgate[p.f_off + r * p.f_stride + h]));
    let at = (pair * seg + first + j) * 3u;
    g_gate[at] = sum;
    g_gate[at + 1u] = gate_in(g_igate[p.i_off + r * p.i_stride + h]);
  }
  // a_j from the sum of logsigmoid f̃ over u > j, accumulated backwards (no difference of two cumsums).
  var after = 0.0;
  var mloc = NEG_BIG;
  for (var jj = 0u; jj < p.chunk; jj++) {
    let j = p.chunk - 1u - jj;
    let at = (pair * seg + first + j) * 3u;
    let a = after + g_gate[at + 1u];
    g_gate[at + 2u] = a;
    mloc = max(mloc, a);
    after += logsigmoid(gate_in(g_fgate[p.f_off + input_row(pair, first + j) * p.f_stride + h]));
  }
  g_chunk[idx * 2u] = sum;
  g_chunk[idx * 2u + 1u] = mloc;
}

@group(0) @binding(1) var<storage, read> k_keys: array<f32>;
@group(0) @binding(2) var<storage, read> k_gate: array<f32>;
@group(0) @binding(3) var<storage, read> k_chunk: array<f32>;
@group(0) @binding(4) var<storage, read_write> k_weighted: array<f32>;
@group(0) @binding(5) var<storage, read_write> k_state: array<f32>;

@compute @workgroup_size(64)
fn keys(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let idx = invocation(gid, nwg);
  if (idx >= p.total) { return; }
  let d = idx % p.dqk;
  let pc = idx / p.dqk; // pair·NC + chunk
  let pair = pc / p.chunks;
  let first = (pc % p.chunks) * p.chunk;
  let seg = p.chunks * p.chunk;
  let mloc = k_chunk[pc * 2u + 1u];
  let col = (pair % p.heads) * p.dqk + d;
  var sum = 0.0;
  for (var j = 0u; j < p.chunk; j++) {
    let t = pair * seg + first + j;
    let w = exp(k_gate[t * 3u + 2u] - mloc) * k_keys[p.k_off + input_row(pair, first + j) * p.k_stride + col];
    k_weighted[t * p.dqk + d] = w;
    sum += w;
  }
  k_state[(pc * p.dqk + d) * (p.dv + 1u) + p.dv] = sum;
}

@group(0) @binding(1) var<storage, read> s_chunk: array<f32>;
@group(0) @binding(2) var<storage, read> s_local: array<f32>;
@group(0) @binding(3) var<storage, read> s_c_in: array<f32>;
@group(0) @binding(4) var<storage, read> s_n_in: array<f32>;
@group(0) @binding(5) var<storage, read> s_m_in: array<f32>;
@group(0) @binding(6) var<storage, read_write> s_before: array<f32>;
@group(0) @binding(7) var<storage, read_write> s_m_before: array<f32>;
@group(0) @binding(8) var<storage, read_write> s_c_out: array<f32>;
@group(0) @binding(9) var<storage, read_write> s_n_out: array<f32>;
@group(0) @binding(10) var<storage, read_write> s_m_out: array<f32>;

@compute @workgroup_size(64)
fn scan(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let idx = invocation(gid, nwg);
  if (idx >= p.total) { return; }
  let width = p.dqk * (p.dv + 1u);
  let pair = idx / width;
  let e = idx % width;
  let d = e / (p.dv + 1u);
  let col = e % (p.dv + 1u);
  let sp = p.pair0 + pair; // in the state tensors
  var x: f32;
  if (col < p.dv) { x = s_c_in[(sp * p.dqk + d) * p.dv + col]; } else { x = s_n_in[sp * p.dqk + d]; }
  var m = s_m_in[sp];
  for (var c = 0u; c < p.chunks; c++) {
    let pc = pair * p.chunks + c;
    s_before[pc * width + e] = x;
    if (e == 0u) { s_m_before[pc] = m; }
    let g = s_chunk[pc * 2u];
    let mloc = s_chunk[pc * 2u + 1u];
    let m_new = max(g + m, mloc);
    x = exp(g + m - m_new) * x + exp(mloc - m_new) * s_local[pc * width + e];
    m = m_new;
  }
  if (col < p.dv) { s_c_out[(sp * p.dqk + d) * p.dv + col] = x; } else { s_n_out[sp * p.dqk + d] = x; }
  if (e == 0u) { s_m_out[sp] = m; }
}

@group(0) @binding(1) var<storage, read> r_gate: array<f32>;
@group(0) @binding(2) var<storage, read> r_m_before: array<f32>;
@group(0) @binding(3) var<storage, read> r_inter: array<f32>;
@group(0) @binding(4) var<storage, read_write> r_scores: array<f32>;
@group(0) @binding(5) var<storage, read_write> r_h: array<f32>;

@compute @workgroup_size(64)
fn rows(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let idx = invocation(gid, nwg);
  if (idx >= p.total) { return; }
  let seg = p.chunks * p.chunk;
  let pair = idx / seg;
  let t = idx % seg;
  let j = t % p.chunk;
  let first = pair * seg + t - j; // step 0 of this chunk, pair-major
  let bj = r_gate[idx * 3u];
  let m_prev = r_m_before[pair * p.chunks + t / p.chunk];
  var m_intra = NEG_BIG;
  for (var l = 0u; l <= j; l++) {
    m_intra = max(m_intra, bj - r_gate[(first + l) * 3u] + r_gate[(first + l) * 3u + 1u]);
  }
  let m_comb = max(bj + m_prev, m_intra);
  let rho = exp(bj + m_prev - m_comb) * p.scale;
  let inter = idx * (p.dv + 1u);
  var den = rho * r_inter[inter + p.dv];
  let srow = idx * p.chunk;
  for (var l = 0u; l < p.chunk; l++) {
    var w = 0.0;
    if (l <= j) {
      let log_d = bj - r_gate[(first + l) * 3u] + r_gate[(first + l) * 3u + 1u];
      w = p.scale * r_scores[srow + l] * exp(log_d - m_comb);
    }
    r_scores[srow + l] = w; // zeros above the diagonal: the W·V gemm reads them
    den += w;
  }
  let inv = 1.0 / (max(abs(den), exp(-m_comb)) + p.eps);
  for (var l = 0u; l <= j; l++) {
    r_scores[srow + l] *= inv;
  }
  let hrow = p.h_off + input_row(pair, t) * p.h_stride + (pair % p.heads) * p.dv;
  for (var col = 0u; col < p.dv; col++) {
    r_h[hrow + col] = rho * inv * r_inter[inter + col];
  }
}
