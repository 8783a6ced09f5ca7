// Fused sLSTM / LSTM recurrence with block-diagonal (per-head) recurrent weights, backward pass. Two entry points:
//
// `main` mirrors slstm_recurrent_forward.wgsl: one workgroup per (head, batch) runs `p.steps` time steps backwards,
// from p.t0 + p.steps − 1 down to p.t0; the op runs the dispatches from the end of the sequence to the start and
// `carry` holds the gradient carries between them. Each step recomputes the raw gates
// raw = wx_t + R_h·y_{t-1} + b with the forward's code and order (so i, f, z, o match it), applies the pointwise
// backward, writes d raw (= d wx) and propagates dy_rec = R_hᵀ·d raw to step t − 1.
// `weight_grad` sums d raw ⊗ y_{t-1} over one chunk of (b, t) rows per invocation into partials of dR.
//
// sLSTM pointwise backward (spec B1; derivation in tests/cpu/slstm.ts): with m held constant
//   dy = dy_out + dy_rec, dc += dy·o/n, dn −= dy·y/n, dĩ = i·(z·dc + dn), dlfm = f·(dc·c₋ + dn·n₋),
//   df̃ = dlfm·σ(−f̃), dz̃ = dc·i·(1 − z²), dõ = dy·(c/n)·o·(1 − o), carries dc₋ = f·dc, dn₋ = f·dn.
// That is the exact derivative (what autograd gives through the vanilla cell) while the min(·, 1) clamps are idle,
// since y is invariant under (c, n, m) → (c·e^{−δ}, n·e^{−δ}, m + δ). Two corrections make it exact everywhere:
// μ, the derivative along that shift, is carried in the m slot (nonzero only from a gradient on the final m), and an
// element starting from n₋ = 0 whose f clamps to 1 moves its m-constant forget share to ĩ (then m = ĩ).
//
// Layouts (H = NH·DH, G = 4 gates i, f, z, o):
//   wx, dwx [B, S, 4H]    gate-major: g·H + h·DH + d
//   r       [NH, 4DH, DH] vanilla layout: row g·DH + d_out, column d_in
//   bias    [4H]          gate-major
//   state0  [NS, B, H]    initial state (y, c, n, m) / (y, c), read when p.has_state != 0
//   y, dy   [B, S, H]     forward outputs and their gradient
//   saved   [NS-1, B, S, H] per-step (c, n, m) / (c) from the forward
//   carry   [NS, B, H]    gradient w.r.t. the state at the dispatch boundary: (dy_rec, dc, dn, dm). Between
//                         dispatches the m slot holds μ = dm − c·dc − n·dn instead (converted at both ends).
//   partial [chunks, NH, 4DH, DH] per-chunk sums of d raw ⊗ y_{t-1}

struct Params {
  batch: u32, // B
  seq: u32, // S
  hidden: u32, // H
  t0: u32, // main: first (earliest) step of this dispatch
  steps: u32, // main: steps in this dispatch
  has_state: u32, // 1: state0 holds the initial state; 0: it is zeros
  chunk_rows: u32, // weight_grad: (b, t) rows per chunk
}

override DH: u32; // head dim
override WG: u32; // threads per workgroup (main: ≤ DH)
override LSTM: bool = false; // plain LSTM pointwise (2 states) instead of sLSTM (4 states)
override R_WG_LEN: u32 = 1u; // DH·DH when the head's R block is staged in workgroup memory, else 1
override R_IN_WG: bool = R_WG_LEN > 1u;
override K: u32 = (DH + WG - 1u) / WG; // dims per thread

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> wx: array<f32>;
@group(0) @binding(2) var<storage, read> r: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read> state0: array<f32>;
@group(0) @binding(5) var<storage, read> y: array<f32>;
@group(0) @binding(6) var<storage, read> saved: array<f32>;
@group(0) @binding(7) var<storage, read> dy: array<f32>;
@group(0) @binding(8) var<storage, read_write> carry: array<f32>;
@group(0) @binding(9) var<storage, read_write> dwx: array<f32>;

// weight_grad's own bindings (WGSL allows a binding number per entry point).
@group(0) @binding(1) var<storage, read> g_draw: array<f32>;
@group(0) @binding(2) var<storage, read> g_y: array<f32>;
@group(0) @binding(3) var<storage, read> g_state0: array<f32>;
@group(0) @binding(4) var<storage, read_write> partial: array<f32>;

var<workgroup> y_wg: array<f32, DH>; // y_{t-1} of the head
var<workgroup> d_wg: array<vec4f, DH>; // d raw of the step, gates (i, f, z, o) per d_out
// Carries, each touched only by its owning thread: no barriers needed.
var<workgroup> dyr_wg: array<f32, DH>; // dy_rec = R_hᵀ·d raw of the later step
var<workgroup> dc_wg: array<f32, DH>;
var<workgroup> dn_wg: array<f32, DH>;
var<workgroup> mu_wg: array<f32, DH>; // μ, see the header
// R staged as [d_in][d_out] of vec4 (gates i, f, z, o), as in the forward.
var<workgroup> r_wg: array<vec4f, R_WG_LEN>;

// Weights of y_{t-1}[d_in] in the four gate rows g·DH + d_out of head h, from global memory.
fn weights_global(h: u32, d_out: u32, d_in: u32) -> vec4f {
  let at = (h * 4u * DH + d_out) * DH + d_in;
  let gate = DH * DH; // distance between gate blocks of rows
  return vec4f(r[at], r[at + gate], r[at + 2u * gate], r[at + 3u * gate]);
}

// The same weights from wherever this pipeline variant keeps them.
fn weights(h: u32, d_out: u32, d_in: u32) -> vec4f {
  if (R_IN_WG) {
    return r_wg[d_in * DH + d_out];
  }
  return weights_global(h, d_out, d_in);
}

fn sigmoid(x: f32) -> f32 {
  return 1.0 / (1.0 + exp(-x));
}

// log σ(x) = min(x, 0) − log(1 + e^{−|x|}), finite for every x.
fn log_sigmoid(x: f32) -> f32 {
  return min(x, 0.0) - log(1.0 + exp(-abs(x)));
}

// As in the forward: tanh saturates in f32 beyond |x| = 10 (so its derivative 1 − tanh² is 0 there too).
fn tanh_safe(x: f32) -> f32 {
  return tanh(clamp(x, -10.0, 10.0));
}

// Component s (0 y, 1 c, 2 n, 3 m) of the state before step t ≥ 0 at (b, j = h·DH + d).
fn state_before(s: u32, t: u32, b: u32, j: u32) -> f32 {
  if (t == 0u) {
    if (p.has_state == 0u) {
      return 0.0;
    }
    return state0[(s * p.batch + b) * p.hidden + j];
  }
  let at = (b * p.seq + t - 1u) * p.hidden + j;
  if (s == 0u) {
    return y[at];
  }
  return saved[(s - 1u) * p.batch * p.seq * p.hidden + at];
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
  let h = wid.x;
  let b = wid.y;
  let H = p.hidden;
  let plane = p.batch * H; // one state component [B, H]
  let base = b * H + h * DH;
  let t_end = p.t0 + p.steps;

  if (R_IN_WG) {
    for (var e = lid; e < DH * DH; e += WG) {
      let d_out = e / DH;
      let d_in = e % DH;
      r_wg[d_in * DH + d_out] = weights_global(h, d_out, d_in);
    }
  }
  for (var k = 0u; k < K; k++) {
    let d = lid + k * WG;
    if (d < DH) {
      dyr_wg[d] = carry[base + d];
      dc_wg[d] = carry[plane + base + d];
      if (!LSTM) {
        dn_wg[d] = carry[2u * plane + base + d];
        var mu = carry[3u * plane + base + d];
        if (t_end == p.seq) { // the gradient on the final m becomes μ
          let j = h * DH + d;
          mu -= state_before(1u, t_end, b, j) * dc_wg[d] + state_before(2u, t_end, b, j) * dn_wg[d];
        }
        mu_wg[d] = mu;
      }
    }
  }

  for (var s = 0u; s < p.steps; s++) {
    let t = t_end - 1u - s;
    for (var k = 0u; k < K; k++) {
      let d = lid + k * WG;
      if (d < DH) {
        y_wg[d] = state_before(0u, t, b, h * DH + d);
      }
    }
    workgroupBarrier(); // y_{t-1} (and staged R) visible; the previous step's reads of d_wg done

    let wx_row = (b * p.seq + t) * 4u * H + h * DH;
    for (var k = 0u; k < K; k++) {
      let d = lid + k * WG;
      if (d < DH) {
        // raw gates = Wx_t + R_h · y_{t-1} + b, in the forward's order
        var raw = vec4f(0.0);
        for (var j = 0u; j < DH; j++) {
          raw += y_wg[j] * weights(h, d, j);
        }
        let x = wx_row + d;
        let bh = h * DH + d;
        raw += vec4f(wx[x], wx[x + H], wx[x + 2u * H], wx[x + 3u * H]);
        raw += vec4f(bias[bh], bias[bh + H], bias[bh + 2u * H], bias[bh + 3u * H]);

        let c_prev = state_before(1u, t, b, bh);
        let dy_t = dy[(b * p.seq + t) * H + bh] + dyr_wg[d];
        let z = tanh_safe(raw.z);
        let o = sigmoid(raw.w);
        var dc = dc_wg[d];
        var f_g: f32;
        var draw: vec4f;
        if (LSTM) {
          let i_g = sigmoid(raw.x);
          f_g = sigmoid(raw.y);
          let tc = tanh_safe(f_g * c_prev + i_g * z);
          dc += dy_t * o * (1.0 - tc * tc);
          draw = vec4f(dc * z * i_g * (1.0 - i_g), dc * c_prev * f_g * (1.0 - f_g), dc * i_g * (1.0 - z * z),
            dy_t * tc * o * (1.0 - o));
        } else {
          let n_prev = state_before(2u, t, b, bh);
          let lfm = state_before(3u, t, b, bh) + log_sigmoid(raw.y);
          let zero_n = n_prev == 0.0;
          let m_new = select(max(raw.x, lfm), raw.x, zero_n);
          let i_g = min(exp(raw.x - m_new), 1.0);
          f_g = min(exp(lfm - m_new), 1.0);
          let c_new = f_g * c_prev + i_g * z;
          let n_new = f_g * n_prev + i_g;
          let y_over_o = c_new / n_new;
          var dn = dn_wg[d];
          dc += dy_t * o / n_new;
          dn -= dy_t * o * y_over_o / n_new;
          let gf = dc * c_prev + dn * n_prev;
          var di = i_g * (z * dc + dn);
          var dl = f_g * gf;
          let lfm_wins = lfm > raw.x;
          if (zero_n && lfm_wins) { // f clamped to 1: constant, so its share goes to ĩ through m = ĩ
            di += dl;
            dl = 0.0;
          }
          let mu = mu_wg[d];
          if (!zero_n && lfm_wins) {
            dl += mu;
          } else {
            di += mu;
          }
          mu_wg[d] = dl - f_g * gf;
          dn_wg[d] = f_g * dn;
          draw = vec4f(di, dl * sigmoid(-raw.y), dc * i_g * (1.0 - z * z), dy_t * y_over_o * o * (1.0 - o));
        }
        dc_wg[d] = f_g * dc;
        d_wg[d] = draw;
        dwx[x] = draw.x;
        dwx[x + H] = draw.y;
        dwx[x + 2u * H] = draw.z;
        dwx[x + 3u * H] = draw.w;
      }
    }
    workgroupBarrier(); // d raw visible; every read of y_wg done

    // dy_rec[j] = Σ_{g, d_out} R[g·DH + d_out, j] · d raw[g, d_out]
    for (var k = 0u; k < K; k++) {
      let j = lid + k * WG;
      if (j < DH) {
        var acc = 0.0;
        for (var d = 0u; d < DH; d++) {
          acc += dot(weights(h, d, j), d_wg[d]);
        }
        dyr_wg[j] = acc;
      }
    }
  }

  for (var k = 0u; k < K; k++) {
    let d = lid + k * WG;
    if (d < DH) {
      carry[base + d] = dyr_wg[d];
      carry[plane + base + d] = dc_wg[d];
      if (!LSTM) {
        carry[2u * plane + base + d] = dn_wg[d];
        var mu = mu_wg[d];
        if (p.t0 == 0u) { // μ becomes the gradient on the initial m
          let j = h * DH + d;
          mu += state_before(1u, 0u, b, j) * dc_wg[d] + state_before(2u, 0u, b, j) * dn_wg[d];
        }
        carry[3u * plane + base + d] = mu;
      }
    }
  }
}

// y_{t-1}[j] for (b, t) row `row` = b·S + t.
fn y_before(row: u32, j: u32) -> f32 {
  if (row % p.seq != 0u) {
    return g_y[(row - 1u) * p.hidden + j];
  }
  if (p.has_state == 0u) {
    return 0.0;
  }
  return g_state0[(row / p.seq) * p.hidden + j];
}

// Invocation (chunk, h, d_out, d_in) sums d raw[g, h, d_out] · y_{t-1}[h, d_in] over its chunk's rows, all 4 gates.
@compute @workgroup_size(WG)
fn weight_grad(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = gid.x + gid.y * nwg.x * WG;
  let H = p.hidden;
  let per_chunk = H * DH; // NH · DH · DH
  let rows = p.batch * p.seq;
  let chunks = (rows + p.chunk_rows - 1u) / p.chunk_rows;
  if (i >= chunks * per_chunk) {
    return;
  }
  let chunk = i / per_chunk;
  let e = i % per_chunk;
  let d_in = e % DH;
  let hd = e / DH; // h · DH + d_out
  let h = hd / DH;
  let d_out = hd % DH;
  let r0 = chunk * p.chunk_rows;
  let r1 = min(r0 + p.chunk_rows, rows);
  var acc = vec4f(0.0);
  for (var row = r0; row < r1; row++) {
    let at = row * 4u * H + hd;
    acc += vec4f(g_draw[at], g_draw[at + H], g_draw[at + 2u * H], g_draw[at + 3u * H]) * y_before(row, h * DH + d_in);
  }
  let out = ((chunk * H / DH + h) * 4u * DH + d_out) * DH + d_in;
  let gate = DH * DH;
  partial[out] = acc.x;
  partial[out + gate] = acc.y;
  partial[out + 2u * gate] = acc.z;
  partial[out + 3u * gate] = acc.w;
}
