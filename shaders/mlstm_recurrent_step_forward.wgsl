// One mLSTM recurrent step (spec A4.2 / B2.4) for every (batch, head), from state (C, n, m) to fresh (C', n', m'):
//   lf = logsigmoid(f̃);  m' = max(lf + m, ĩ);  fa = exp(lf + m − m');  ia = exp(ĩ − m')
//   C' = fa·C + ia·(k_scale·k) vᵀ;  n' = fa·n + ia·k_scale·k
//   h = (q_scale·q)ᵀC' / (max(|(q_scale·q)·n'|, exp(−m')) + eps)
// k_scale = DHQK^(-1/2), q_scale = 1 is the NeurIPS convention (A4.2, keys scaled in the state); k_scale = 1,
// q_scale = DHQK^(-1/2) the mlstm_kernels one (B2.4). The outputs agree; the C and n states differ by √DHQK.
//
// One invocation per (batch, head, value column j) owns column j of C' and walks the DHQK rows (the op bounds
// DHQK well below lavapipe's 65,535 loop trips); each recomputes n' for its dot product and the j = 0 one stores
// n' and m'. Input element (b, c) of a view is x[x_base + b·x_stride + c]; head h owns columns [h·DH, (h+1)·DH).
// States are dense: C [B, NH, DHQK, DHV], n [B, NH, DHQK], m [B, NH]; h is [B, NH·DHV].
// With gate_cap > 0 the gate pre-activations are soft-capped as they are loaded (xlstm_large: ĩ, f̃ =
// cap·tanh(x / cap)), with pointwise_forward.wgsl's accurate tanh (prepended by the op, on V = f32).

struct Params {
  heads: u32,
  dqk: u32,
  dv: u32,
  total: u32, // B·NH·DHV invocations
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
  q_scale: f32,
  k_scale: f32,
  eps: f32,
  gate_cap: f32, // 0: no soft cap
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read> k: array<f32>;
@group(0) @binding(3) var<storage, read> v: array<f32>;
@group(0) @binding(4) var<storage, read> igate: array<f32>;
@group(0) @binding(5) var<storage, read> fgate: array<f32>;
@group(0) @binding(6) var<storage, read> c_in: array<f32>;
@group(0) @binding(7) var<storage, read> n_in: array<f32>;
@group(0) @binding(8) var<storage, read> m_in: array<f32>;
@group(0) @binding(9) var<storage, read_write> h_out: array<f32>;
@group(0) @binding(10) var<storage, read_write> c_out: array<f32>;
@group(0) @binding(11) var<storage, read_write> n_out: array<f32>;
@group(0) @binding(12) var<storage, read_write> m_out: array<f32>;

// log(1 + z) for z in [0, 1] as 2·atanh(z / (2 + z)) (as in mlstm_parallel_forward.wgsl): accurate where
// log(1 + z) would round 1 + z, and independent of the GPU's log() accuracy near 1.
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

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let idx = gid.x + gid.y * nwg.x * 64u;
  if (idx >= p.total) { return; }
  let j = idx % p.dv;
  let bh = idx / p.dv; // b·NH + h
  let b = bh / p.heads;
  let h = bh % p.heads;

  let lf = logsigmoid(gate_in(fgate[p.f_base + b * p.f_stride + h]));
  let i = gate_in(igate[p.i_base + b * p.i_stride + h]);
  let m = m_in[bh];
  let m_new = max(lf + m, i);
  let fa = exp(lf + m - m_new);
  let ia = exp(i - m_new);

  let qa = p.q_base + b * p.q_stride + h * p.dqk;
  let ka = p.k_base + b * p.k_stride + h * p.dqk;
  let iv = ia * v[p.v_base + b * p.v_stride + h * p.dv + j];
  var num = 0.0;
  var den = 0.0;
  for (var d = 0u; d < p.dqk; d++) {
    let kd = p.k_scale * k[ka + d];
    let qd = p.q_scale * q[qa + d];
    let at = (bh * p.dqk + d) * p.dv + j;
    let c = fa * c_in[at] + kd * iv;
    c_out[at] = c;
    num += qd * c;
    let n = fa * n_in[bh * p.dqk + d] + ia * kd;
    den += qd * n;
    if (j == 0u) { n_out[bh * p.dqk + d] = n; }
  }
  if (j == 0u) { m_out[bh] = m_new; }
  h_out[bh * p.dv + j] = num / (max(abs(den), exp(-m_new)) + p.eps);
}
