// Fused sLSTM / LSTM recurrence with block-diagonal (per-head) recurrent weights, forward pass.
// One workgroup per (head, batch) runs `p.steps` time steps from `p.t0`; the op splits the sequence over dispatches
// (lavapipe's loop limit) and the state buffer carries (y, c, n, m) from one dispatch to the next.
// Each thread owns the output dims d = lid + k·WG (k < K). y_{t-1} of the head lives in workgroup memory,
// double-buffered by step parity, so one barrier per step separates "everyone read y_{t-1}" from the next writes.
//
// Layouts (H = NH·DH, G = 4 gates i, f, z, o):
//   wx     [B, S, 4H]   gate-major: g·H + h·DH + d
//   r      [NH, 4DH, DH] vanilla layout: row g·DH + d_out, column d_in
//   bias   [4H]         gate-major
//   state  [NS, B, H]   (y, c, n, m) for sLSTM, (y, c) for LSTM; read at the start, written at the end
//   y      [B, S, H]    head-major within H
//   saved  [NS-1, B, S, H] per-step (c, n, m) / (c) when p.save != 0 (for a backward pass)

struct Params {
  batch: u32, // B
  seq: u32, // S
  hidden: u32, // H
  t0: u32, // first step of this dispatch
  steps: u32, // steps in this dispatch
  save: u32, // 1: write per-step states to `saved`
}

override DH: u32; // head dim
override WG: u32; // threads per workgroup (≤ DH)
override LSTM: bool = false; // plain LSTM pointwise (2 states) instead of sLSTM (4 states)
override R_WG_LEN: u32 = 1u; // DH·DH when the head's R block is staged in workgroup memory, else 1
override R_IN_WG: bool = R_WG_LEN > 1u;
override K: u32 = (DH + WG - 1u) / WG; // dims per thread

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> wx: array<f32>;
@group(0) @binding(2) var<storage, read> r: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> state: array<f32>;
@group(0) @binding(5) var<storage, read_write> y: array<f32>;
@group(0) @binding(6) var<storage, read_write> saved: array<f32>;

var<workgroup> y_wg: array<f32, 2u * DH>; // y_{t-1} at parity t & 1
var<workgroup> c_wg: array<f32, DH>; // c, n, m are only touched by their owning thread: no barriers needed
var<workgroup> n_wg: array<f32, DH>;
var<workgroup> m_wg: array<f32, DH>;
// R staged as [d_in][d_out] of vec4 (gates i, f, z, o): one 16-byte load per step of the R·y loop, and neighbouring
// threads (d_out) read neighbouring elements.
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

// tanh saturates to ±1 in f32 beyond |x| = 10; the clamp keeps drivers that expand tanh through exp(2x) finite.
fn tanh_safe(x: f32) -> f32 {
  return tanh(clamp(x, -10.0, 10.0));
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
  let h = wid.x;
  let b = wid.y;
  let H = p.hidden;
  let plane = p.batch * H; // one state component [B, H]
  let base = b * H + h * DH;

  if (R_IN_WG) {
    // Coalesced global reads: consecutive threads take consecutive d_in of one row d_out, all four gates.
    for (var e = lid; e < DH * DH; e += WG) {
      let d_out = e / DH;
      let d_in = e % DH;
      r_wg[d_in * DH + d_out] = weights_global(h, d_out, d_in);
    }
  }
  for (var k = 0u; k < K; k++) {
    let d = lid + k * WG;
    if (d < DH) {
      y_wg[(p.t0 & 1u) * DH + d] = state[base + d];
      c_wg[d] = state[plane + base + d];
      if (!LSTM) {
        n_wg[d] = state[2u * plane + base + d];
        m_wg[d] = state[3u * plane + base + d];
      }
    }
  }
  workgroupBarrier();

  for (var s = 0u; s < p.steps; s++) {
    let t = p.t0 + s;
    let prev = (t & 1u) * DH;
    let next = DH - prev;
    let wx_row = (b * p.seq + t) * 4u * H + h * DH;
    for (var k = 0u; k < K; k++) {
      let d = lid + k * WG;
      if (d < DH) {
        // raw gates = Wx_t + R_h · y_{t-1} + b
        var raw = vec4f(0.0);
        for (var j = 0u; j < DH; j++) {
          raw += y_wg[prev + j] * weights(h, d, j);
        }
        let x = wx_row + d;
        let bh = h * DH + d;
        raw += vec4f(wx[x], wx[x + H], wx[x + 2u * H], wx[x + 3u * H]);
        raw += vec4f(bias[bh], bias[bh + H], bias[bh + 2u * H], bias[bh + 3u * H]);
        let c_prev = c_wg[d];
        var c_new: f32;
        var y_new: f32;
        if (LSTM) {
          c_new = sigmoid(raw.y) * c_prev + sigmoid(raw.x) * tanh_safe(raw.z);
          y_new = sigmoid(raw.w) * tanh_safe(c_new);
        } else {
          let n_prev = n_wg[d];
          let lfm = m_wg[d] + log_sigmoid(raw.y);
          // The "n == 0 → m = ĩ" test is per element (as the CUDA kernel does). The vanilla reference tests the
          // whole (B, H) state at once; both agree from a zero state or one with every n > 0 (spec A5.1, G4).
          let m_new = select(max(raw.x, lfm), raw.x, n_prev == 0.0);
          let i_g = min(exp(raw.x - m_new), 1.0);
          let f_g = min(exp(lfm - m_new), 1.0);
          c_new = f_g * c_prev + i_g * tanh_safe(raw.z);
          let n_new = f_g * n_prev + i_g;
          y_new = sigmoid(raw.w) * c_new / n_new;
          n_wg[d] = n_new;
          m_wg[d] = m_new;
        }
        c_wg[d] = c_new;
        y_wg[next + d] = y_new;
        let out = (b * p.seq + t) * H + h * DH + d;
        y[out] = y_new;
        if (p.save != 0u) {
          let seq_plane = p.batch * p.seq * H;
          saved[out] = c_new;
          if (!LSTM) {
            saved[seq_plane + out] = n_wg[d];
            saved[2u * seq_plane + out] = m_wg[d];
          }
        }
      }
    }
    workgroupBarrier();
  }

  let last = ((p.t0 + p.steps) & 1u) * DH;
  for (var k = 0u; k < K; k++) {
    let d = lid + k * WG;
    if (d < DH) {
      state[base + d] = y_wg[last + d];
      state[plane + base + d] = c_wg[d];
      if (!LSTM) {
        state[2u * plane + base + d] = n_wg[d];
        state[3u * plane + base + d] = m_wg[d];
      }
    }
  }
}
