// mLSTM parallel stabilized forward (spec A4.1; B2.2 is the same math), in three passes over one group of
// (batch, head) pairs. The op splits B·NH into groups so that each group's score matrix fits one storage binding.
//
//   gates:  one invocation per pair scans t: F_t = Σ_{u≤t} logsigmoid(f̃_u) and m_t = F_t + max_{s≤t}(ĩ_s − F_s),
//           which equals the row max of logD[t,s] = F_t − F_s + ĩ_s without building the row.
//   scores: one invocation per (pair, t, s): C[t,s] = (q_t·k_s)·scale·exp(F_t − F_s + ĩ_s − m_t) for s ≤ t, else 0.
//   output: one invocation per (pair, t, j): n_t = max(|Σ_s C[t,s]|, exp(−m_t)), h[t,j] = Σ_s C[t,s]·v[s,j] / (n_t + eps).
//
// Loops run S trips (gates, output) or DHQK trips (scores); the op keeps both far below lavapipe's 65,535 limit.
// Element (r, c) of an input or output view is x[x_base + r·x_stride + c], with r counted from the group's first
// batch (the op binds ranges aligned down to minStorageBufferOffsetAlignment, so the bases absorb the remainder).
// Head h owns columns [h·DH, (h+1)·DH). C, F, m and n are [pair, t(, s)] within the group.

struct Params {
  seq: u32, // S
  heads: u32, // NH, all heads
  group_heads: u32, // heads per batch in this group
  head0: u32, // first head of this group
  pairs: u32, // (batch, head) pairs in this group
  dqk: u32,
  dv: u32,
  q_base: u32,
  q_stride: u32,
  k_base: u32,
  k_stride: u32,
  v_base: u32,
  v_stride: u32,
  i_base: u32,
  i_stride: u32,
  f_base: u32,
  f_stride: u32,
  h_base: u32,
  h_stride: u32,
  c_base: u32,
  lf_base: u32,
  m_base: u32,
  n_base: u32,
  scale: f32, // DHQK^(-1/2)
  eps: f32,
}

@group(0) @binding(0) var<uniform> p: Params;

fn invocation(gid: vec3u, nwg: vec3u) -> u32 {
  return gid.x + gid.y * nwg.x * 64u;
}

// View row of time step t of the group's pair `pair`.
fn row(pair: u32, t: u32) -> u32 {
  return (pair / p.group_heads) * p.seq + t;
}

fn head(pair: u32) -> u32 {
  return p.head0 + pair % p.group_heads;
}

// log(1 + z) for z in [0, 1] as 2·atanh(z / (2 + z)): only multiplies and one divide, so it stays accurate where
// log(1 + z) would round 1 + z (and where GPU log() is only accurate to an absolute 2^-21 near 1).
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

// ---- gates

@group(0) @binding(1) var<storage, read> g_igate: array<f32>;
@group(0) @binding(2) var<storage, read> g_fgate: array<f32>;
@group(0) @binding(3) var<storage, read_write> g_lf: array<f32>;
@group(0) @binding(4) var<storage, read_write> g_m: array<f32>;

@compute @workgroup_size(64)
fn gates(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let pair = invocation(gid, nwg);
  if (pair >= p.pairs) { return; }
  let h = head(pair);
  var cum = 0.0;
  var best = 0.0;
  for (var t = 0u; t < p.seq; t++) {
    let r = row(pair, t);
    cum += logsigmoid(g_fgate[p.f_base + r * p.f_stride + h]);
    let a = g_igate[p.i_base + r * p.i_stride + h] - cum;
    best = select(max(best, a), a, t == 0u);
    g_lf[p.lf_base + pair * p.seq + t] = cum;
    g_m[p.m_base + pair * p.seq + t] = cum + best;
  }
}

// ---- scores

@group(0) @binding(1) var<storage, read> s_q: array<f32>;
@group(0) @binding(2) var<storage, read> s_k: array<f32>;
@group(0) @binding(3) var<storage, read> s_igate: array<f32>;
@group(0) @binding(4) var<storage, read> s_lf: array<f32>;
@group(0) @binding(5) var<storage, read> s_m: array<f32>;
@group(0) @binding(6) var<storage, read_write> s_c: array<f32>;

@compute @workgroup_size(64)
fn scores(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let idx = invocation(gid, nwg);
  let per_pair = p.seq * p.seq;
  if (idx >= p.pairs * per_pair) { return; }
  let pair = idx / per_pair;
  let t = (idx / p.seq) % p.seq;
  let s = idx % p.seq;
  var c = 0.0;
  if (s <= t) {
    let h = head(pair);
    let qa = p.q_base + row(pair, t) * p.q_stride + h * p.dqk;
    let ka = p.k_base + row(pair, s) * p.k_stride + h * p.dqk;
    var dot = 0.0;
    for (var d = 0u; d < p.dqk; d++) {
      dot += s_q[qa + d] * s_k[ka + d];
    }
    let at = pair * p.seq;
    let log_d = s_lf[p.lf_base + at + t] - s_lf[p.lf_base + at + s] +
      s_igate[p.i_base + row(pair, s) * p.i_stride + h] - s_m[p.m_base + at + t];
    c = dot * p.scale * exp(log_d);
  }
  s_c[p.c_base + idx] = c;
}

// ---- output

@group(0) @binding(1) var<storage, read> o_v: array<f32>;
@group(0) @binding(2) var<storage, read> o_c: array<f32>;
@group(0) @binding(3) var<storage, read> o_m: array<f32>;
@group(0) @binding(4) var<storage, read_write> o_n: array<f32>;
@group(0) @binding(5) var<storage, read_write> o_h: array<f32>;

@compute @workgroup_size(64)
fn output(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let idx = invocation(gid, nwg);
  if (idx >= p.pairs * p.seq * p.dv) { return; }
  let j = idx % p.dv;
  let t = (idx / p.dv) % p.seq;
  let pair = idx / (p.dv * p.seq);
  let h = head(pair);
  let c_row = p.c_base + (pair * p.seq + t) * p.seq;
  let v_col = p.v_base + h * p.dv + j;
  var sum = 0.0;
  var acc = 0.0;
  for (var s = 0u; s <= t; s++) {
    let c = o_c[c_row + s];
    sum += c;
    acc += c * o_v[v_col + row(pair, s) * p.v_stride];
  }
  let n = max(abs(sum), exp(-o_m[p.m_base + pair * p.seq + t]));
  if (j == 0u) { o_n[p.n_base + pair * p.seq + t] = n; }
  o_h[p.h_base + row(pair, t) * p.h_stride + h * p.dv + j] = acc / (n + p.eps);
}
