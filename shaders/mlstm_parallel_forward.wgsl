// mLSTM parallel stabilized forward (spec A4.1; B2.2 is the same math), in four passes over one group of
// (batch, head) pairs. The op splits B·NH into groups so that each group's score matrix fits one storage binding.
//
//   gates:   one invocation per pair scans t: F_t = Σ_{u≤t} logsigmoid(f̃_u) and m_t = F_t + max_{s≤t}(ĩ_s − F_s),
//            which equals the row max of logD[t,s] = F_t − F_s + ĩ_s without building the row. It also copies F and
//            ĩ into rows of LD floats per pair (`fi`), which the weight pass reads four at a time.
//   (gemm)   S_raw = Q·Kᵀ per pair into [S, LD] score rows, by the batched matmul kernel (shaders/matmul.wgsl),
//            which skips blocks above the diagonal.
//   weights: one invocation per (pair, t) rewrites row t in place: C[t,s] = S_raw[t,s]·scale·exp(F_t − F_s + ĩ_s
//            − m_t) for s ≤ t, n_t = max(|Σ_s C[t,s]|, exp(−m_t)), then W[t,s] = C[t,s] / (n_t + eps), 0 for s > t.
//   (gemm)   h = W·V per pair, each row's sum stopping at the diagonal, written straight into the [B, S, NH·DHV]
//            output.
//
// LD is S rounded up to a multiple of 4, and the op aligns every score and `fi` row to 4 floats, so the weight pass
// moves whole vec4s: llvmpipe loads and stores per lane, and a vec4 costs about what one f32 does. Its loops run
// about S / 2 trips (the gate scan S); the op keeps both far below lavapipe's 65,535 limit.
// Element (r, c) of a gate view is x[x_base + r·x_stride + c], with r counted from the group's first batch (the op
// binds ranges aligned down to minStorageBufferOffsetAlignment, so the bases absorb the remainder). Head h owns
// column h. F, m and n are [pair, t], the scores [pair, t, LD] and `fi` [pair, 2, LD] within the group.

struct Params {
  seq: u32, // S
  ld: u32, // LD
  group_heads: u32, // heads per batch in this group
  head0: u32, // first head of this group
  pairs: u32, // (batch, head) pairs in this group
  i_base: u32,
  i_stride: u32,
  f_base: u32,
  f_stride: u32,
  c_base: u32, // a multiple of 4
  fi_base: u32, // a multiple of 4
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
@group(0) @binding(5) var<storage, read_write> g_fi: array<f32>;

@compute @workgroup_size(64)
fn gates(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let pair = invocation(gid, nwg);
  if (pair >= p.pairs) { return; }
  let h = head(pair);
  let fi = p.fi_base + pair * 2u * p.ld;
  var cum = 0.0;
  var best = 0.0;
  for (var t = 0u; t < p.seq; t++) {
    let r = row(pair, t);
    cum += logsigmoid(g_fgate[p.f_base + r * p.f_stride + h]);
    let i = g_igate[p.i_base + r * p.i_stride + h];
    let a = i - cum;
    best = select(max(best, a), a, t == 0u);
    g_lf[p.lf_base + pair * p.seq + t] = cum;
    g_m[p.m_base + pair * p.seq + t] = cum + best;
    g_fi[fi + t] = cum;
    g_fi[fi + p.ld + t] = i;
  }
}

// ---- weights

@group(0) @binding(1) var<storage, read> w_fi: array<vec4f>;
@group(0) @binding(2) var<storage, read> w_m: array<f32>;
@group(0) @binding(3) var<storage, read_write> w_c: array<vec4f>;
@group(0) @binding(4) var<storage, read_write> w_n: array<f32>;

@compute @workgroup_size(64)
fn weights(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let idx = invocation(gid, nwg);
  if (idx >= p.pairs * p.seq) { return; }
  let pair = idx / p.seq;
  let t = idx % p.seq;
  let quads = p.ld / 4u;
  let f = p.fi_base / 4u + pair * 2u * quads; // F in [f, f + quads), ĩ in [f + quads, f + 2·quads)
  let c_row = p.c_base / 4u + idx * quads;
  let f_t = w_fi[f + t / 4u][t % 4u];
  let m_t = w_m[p.m_base + idx];
  let last = t / 4u; // the quad holding s = t
  let lane = vec4u(0u, 1u, 2u, 3u);
  var sum = 0.0;
  for (var j = 0u; j <= last; j++) {
    let log_d = f_t - w_fi[f + j] + w_fi[f + quads + j] - m_t;
    // s > t (in the last quad) is 0; select, because exp and the unwritten scores there may be inf or NaN.
    let c = select(vec4f(), w_c[c_row + j] * p.scale * exp(log_d), j * 4u + lane <= vec4u(t));
    w_c[c_row + j] = c;
    sum += c.x;
    sum += c.y;
    sum += c.z;
    sum += c.w;
  }
  let n = max(abs(sum), exp(-m_t));
  w_n[p.n_base + idx] = n;
  // Divide, not multiply by 1 / (n + eps): one rounding, as the reference's C / (n + eps).
  let den = n + p.eps;
  for (var j = 0u; j <= last; j++) {
    w_c[c_row + j] = w_c[c_row + j] / den;
  }
  // The product W·V reads past s = t: the causal half must hold zeros, not raw scores.
  for (var j = last + 1u; j < quads; j++) {
    w_c[c_row + j] = vec4f();
  }
}
