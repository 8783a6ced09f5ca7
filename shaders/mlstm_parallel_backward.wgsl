// mLSTM parallel stabilized backward (spec A4.1 differentiated as PyTorch autograd does, B2.5 `*_autograd`): the
// normaliser n_t = max(|Σ_s C[t,s]|, exp(−m_t)) and the row max m_t carry gradient too. Per group of (batch, head)
// pairs, around four batched gemms the op records (G = dH·Vᵀ and dV = Wᵀ·dH before, dQ = dS·K and dK = dSᵀ·Q
// after), with W = C / (n + eps) the forward's cached weights:
//
//   rows:    one invocation per (pair, t). From G[t,s] = dH_t·v_s (the gradient of W) it forms dot_t = Σ_s G·W
//            = dH_t·h_t, so dn_t = −dot_t / (n_t + eps). The gradient of C is dC[t,s] = G[t,s] / (n_t + eps) + a_t,
//            a_t = dn_t·sign(Σ_s C) where the |Σ| side of the max is active, else 0; that side instead sends
//            b_t = −exp(−m_t)·dn_t to m_t. The row max gets dm_t = b_t − Σ_s dC·C, which simplifies exactly to
//            −dot_t·eps / (n_t + eps) on both sides of the max (computing it as that difference would cancel),
//            and goes to the argmax s*_t of ĩ_s − F_s (s ≤ t; the first one, as torch.max). Since shifting F_t
//            moves the whole row of log D and m_t together, the row sum of d logD is b_t alone. Writes
//            (n_t + eps, a_t, dm_t, b_t) and s*_t per row, and zeroes G above the diagonal (dQ's gemm reads it).
//   columns: one invocation per (pair, quad of 4 columns s) runs down t ≥ s: d logD[t,s] = dC·C =
//            G·W + a_t·(n_t + eps)·W (+ dm_t where s = s*_t) summed over t is dĩ_s, and G[t,s] becomes
//            dS[t,s] = dC[t,s]·D[t,s]·DHQK^(-1/2), the gradient of the raw scores q_t·k_s, in place.
//   gates:   one invocation per pair: dF_t = b_t − dĩ_t (F_t as the row's, −dĩ_t as the column's), and
//            d f̃_u = sigmoid(−f̃_u)·Σ_{t≥u} dF_t (a reverse scan).
//
// Layouts as in mlstm_parallel_forward.wgsl: rows of G and W hold LD floats (S rounded up to 4), and every bound
// range starts 4-float aligned, so both move as vec4s. Element (r, c) of a gate view (and of the [B·S, NH] dĩ and
// d f̃ outputs) is x[base + r·stride + c] with r counted from the group's first batch; head h owns column h.
// Loop trips: rows about 1.25·S, columns and gates S; the op keeps S far below lavapipe's 65,535 limit.

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
  g_base: u32, // a multiple of 4
  w_base: u32, // a multiple of 4
  lf_base: u32,
  m_base: u32,
  n_base: u32,
  di_base: u32,
  di_stride: u32,
  df_base: u32,
  df_stride: u32,
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

// ---- rows

@group(0) @binding(1) var<storage, read> r_igate: array<f32>;
@group(0) @binding(2) var<storage, read> r_lf: array<f32>;
@group(0) @binding(3) var<storage, read> r_m: array<f32>;
@group(0) @binding(4) var<storage, read> r_n: array<f32>;
@group(0) @binding(5) var<storage, read> r_w: array<vec4f>;
@group(0) @binding(6) var<storage, read_write> r_g: array<vec4f>;
@group(0) @binding(7) var<storage, read_write> r_info: array<vec4f>;
@group(0) @binding(8) var<storage, read_write> r_argmax: array<u32>;

@compute @workgroup_size(64)
fn rows(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let idx = invocation(gid, nwg);
  if (idx >= p.pairs * p.seq) { return; }
  let pair = idx / p.seq;
  let t = idx % p.seq;
  let quads = p.ld / 4u;
  let last = t / 4u; // the quad holding s = t
  let w_row = p.w_base / 4u + idx * quads;
  let g_row = p.g_base / 4u + idx * quads;
  let lane = vec4u(0u, 1u, 2u, 3u);
  var dot_gw = 0.0;
  var sum_w = 0.0;
  for (var j = 0u; j <= last; j++) {
    let w = r_w[w_row + j];
    // G above the diagonal may be unwritten (the gemm skips those blocks): select, as 0·NaN is NaN.
    let gw = select(vec4f(), r_g[g_row + j] * w, j * 4u + lane <= vec4u(t));
    dot_gw += gw.x + gw.y + gw.z + gw.w;
    sum_w += w.x + w.y + w.z + w.w;
  }
  // dS·K (the dQ gemm) reads past the diagonal: those entries must be zeros.
  r_g[g_row + last] = select(vec4f(), r_g[g_row + last], last * 4u + lane <= vec4u(t));
  for (var j = last + 1u; j < quads; j++) {
    r_g[g_row + j] = vec4f();
  }

  let r = row(pair, 0u);
  let h = head(pair);
  var best = 0.0;
  var arg = 0u;
  for (var s = 0u; s <= t; s++) {
    let score = r_igate[p.i_base + (r + s) * p.i_stride + h] - r_lf[p.lf_base + pair * p.seq + s];
    if (s == 0u || score > best) {
      best = score;
      arg = s;
    }
  }

  let n = r_n[p.n_base + idx];
  let den = n + p.eps;
  let dn = -dot_gw / den;
  let e = exp(-r_m[p.m_base + idx]);
  // Which side of max(|Σ C|, exp(−m)) the forward took; Σ C = (Σ W)·(n + eps). Only near-ties are ambiguous.
  let abs_side = abs(sum_w * den) > e;
  let a = select(0.0, dn * sign(sum_w), abs_side);
  let b = select(-e * dn, 0.0, abs_side);
  r_info[idx] = vec4f(den, a, -dot_gw * p.eps / den, b);
  r_argmax[idx] = arg;
}

// ---- columns

@group(0) @binding(1) var<storage, read> c_igate: array<f32>;
@group(0) @binding(2) var<storage, read> c_lf: array<f32>;
@group(0) @binding(3) var<storage, read> c_m: array<f32>;
@group(0) @binding(4) var<storage, read> c_w: array<vec4f>;
@group(0) @binding(5) var<storage, read> c_info: array<vec4f>;
@group(0) @binding(6) var<storage, read> c_argmax: array<u32>;
@group(0) @binding(7) var<storage, read_write> c_g: array<vec4f>;
@group(0) @binding(8) var<storage, read_write> c_di: array<f32>;

@compute @workgroup_size(64)
fn columns(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let quads = p.ld / 4u;
  let idx = invocation(gid, nwg);
  if (idx >= p.pairs * quads) { return; }
  let pair = idx / quads;
  let j = idx % quads;
  let s = j * 4u + vec4u(0u, 1u, 2u, 3u);
  let valid = s < vec4u(p.seq);
  let r = row(pair, 0u);
  let h = head(pair);
  var i_s = vec4f();
  var f_s = vec4f();
  for (var l = 0u; l < 4u; l++) {
    let sl = min(s[l], p.seq - 1u); // padding lanes (s ≥ S) read a real column and are never used
    i_s[l] = c_igate[p.i_base + (r + sl) * p.i_stride + h];
    f_s[l] = c_lf[p.lf_base + pair * p.seq + sl];
  }
  var di = vec4f();
  for (var t = j * 4u; t < p.seq; t++) {
    let at = pair * p.seq + t;
    let info = c_info[at]; // (n + eps, a, dm, b)
    let f_t = c_lf[p.lf_base + at];
    let m_t = c_m[p.m_base + at];
    let cell = at * quads + j;
    let g = c_g[p.g_base / 4u + cell];
    let w = c_w[p.w_base / 4u + cell];
    let on = s <= vec4u(t);
    var dlog = select(vec4f(), g * w + info.y * info.x * w, on);
    dlog += select(vec4f(), vec4f(info.z), s == vec4u(c_argmax[at]));
    di += dlog;
    // Same order of operations as the forward's log D − m.
    let d = exp(f_t - f_s + i_s - m_t);
    c_g[p.g_base / 4u + cell] = select(g, (g / info.x + info.y) * d * p.scale, on);
  }
  for (var l = 0u; l < 4u; l++) {
    if (valid[l]) {
      c_di[p.di_base + (r + s[l]) * p.di_stride + h] = di[l];
    }
  }
}

// ---- gates

@group(0) @binding(1) var<storage, read> s_fgate: array<f32>;
@group(0) @binding(2) var<storage, read> s_info: array<vec4f>;
@group(0) @binding(3) var<storage, read> s_di: array<f32>;
@group(0) @binding(4) var<storage, read_write> s_df: array<f32>;

@compute @workgroup_size(64)
fn gates(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let pair = invocation(gid, nwg);
  if (pair >= p.pairs) { return; }
  let h = head(pair);
  var acc = 0.0;
  for (var u = p.seq; u > 0u; u--) {
    let t = u - 1u;
    let r = row(pair, t);
    acc += s_info[pair * p.seq + t].w - s_di[p.di_base + r * p.di_stride + h];
    // sigmoid(−f̃) = 1 / (1 + exp(f̃)); exp overflowing to inf gives the right 0.
    s_df[p.df_base + r * p.df_stride + h] = acc / (1.0 + exp(s_fgate[p.f_base + r * p.f_stride + h]));
  }
}
