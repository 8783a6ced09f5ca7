// Fused sLSTM / LSTM recurrence with block-diagonal (per-head) recurrent weights, forward pass. The op prepends
// slstm_recurrent_common.wgsl (tiling, R, quad I/O, cell math: read its header first) and the
// quad accessors of its vec4 bindings (read_wx, read_bias, write_y and write_saved; src/ops/slstm.ts quadAccessors).
//
// One workgroup per (head, tile of SLOTS sequences) runs `p.steps` time steps from `p.t0`; the op splits the sequence
// over dispatches (lavapipe's loop limit) and the state buffer carries (y, c, n, m) between them. Per step and quad
// an invocation accumulates the raw gates of its NB sequences in one pass over y_{t-1}, then runs their pointwise
// step. y_{t-1} of every slot lives in workgroup memory, double-buffered by step parity, so one barrier per step
// separates "everyone read y_{t-1}" from the next writes.
//
// Layouts (H = NH·DH, G = 4 gates i, f, z, o):
//   wx     [B, S, 4H]    gate-major: g·H + h·DH + d
//   bias   [4H]          gate-major
//   state  [NS, B, H]    (y, c, n, m) for sLSTM, (y, c) for LSTM; read at the start, written at the end
//   y      [B, S, H]     head-major within H
//   saved  [NS + 3, B, S, H] per step: the states beyond y (c, n, m / c), then the raw gates i, f, z, o
//                        (= wx + R·y_{t-1} + b), when p.save != 0 (for the backward pass)

struct Params {
  batch: u32, // B
  seq: u32, // S
  hidden: u32, // H
  t0: u32, // first step of this dispatch
  steps: u32, // steps in this dispatch
  save: u32, // 1: write per-step states and raw gates to `saved`
}

@group(0) @binding(0) var<uniform> p: Params;
// binding 1: R (r_src, in the common part)
@group(0) @binding(2) var<storage, read> wx: array<vec4f>;
@group(0) @binding(3) var<storage, read> bias: array<vec4f>;
@group(0) @binding(4) var<storage, read_write> state: array<f32>;
@group(0) @binding(5) var<storage, read_write> y: array<vec4f>;
@group(0) @binding(6) var<storage, read_write> saved: array<vec4f>;

var<workgroup> y_wg: array<vec4f, 2u * SLOTS * DQ>; // y_{t-1} at parity t & 1, [slot][quad]
// c, n, m [slot][quad] are only touched by their owning invocation: no barriers needed.
var<workgroup> c_wg: array<vec4f, SLOTS * DQ>;
var<workgroup> n_wg: array<vec4f, SLOTS * DQ>;
var<workgroup> m_wg: array<vec4f, SLOTS * DQ>;

// Raw gates (columns i, f, z, o of 4 dims) += R block · y_{t-1}[j .. j+3].
fn mac(acc: mat4x4f, w: Block, yq: vec4f) -> mat4x4f {
  return acc + mat4x4f(w.i * yq, w.f * yq, w.z * yq, w.o * yq);
}

// Component s of the state (0 y, 1 c, 2 n, 3 m) of sequence b at quad dq: once per dispatch, as scalars; zero
// for the tail of the last tile.
fn read_state(s: u32, b: u32, dq: u32) -> vec4f {
  if (b >= p.batch) {
    return vec4f();
  }
  let n = quad_len(dq);
  let i = elements((s * p.batch + b) * p.hidden + head * DH + 4u * dq, n);
  return select(vec4f(), vec4f(state[i.x], state[i.y], state[i.z], state[i.w]), real(n));
}

fn write_state(s: u32, b: u32, dq: u32, v: vec4f) {
  if (b >= p.batch) {
    return;
  }
  let n = quad_len(dq);
  let i = (s * p.batch + b) * p.hidden + head * DH + 4u * dq;
  state[i] = v.x;
  if (n > 1u) { state[i + 1u] = v.y; }
  if (n > 2u) { state[i + 2u] = v.z; }
  if (n > 3u) { state[i + 3u] = v.w; }
}

// The pointwise step of slot q (of this invocation) at quad dq: raw gates = acc (R·y_{t-1}) + wx_t + bq (the bias),
// new states, y_t into y_wg[next + ..] and the outputs.
fn cell(q: u32, dq: u32, t: u32, next: u32, acc: mat4x4f, bq: mat4x4f) {
  let slot = group * NB + q;
  let b = tile * SLOTS + slot;
  if (b >= p.batch) { // the tail of the last tile
    return;
  }
  let H = p.hidden;
  let n = quad_len(dq);
  let j = head * DH + 4u * dq; // the quad's first element within H
  let row = b * p.seq + t;
  let x = row * 4u * H + j;
  let raw = acc + mat4x4f(read_wx(x, n), read_wx(x + H, n), read_wx(x + 2u * H, n), read_wx(x + 3u * H, n)) + bq;
  let w = slot * DQ + dq;
  let c_prev = c_wg[w];
  var c_new: vec4f;
  var y_new: vec4f;
  if (LSTM) {
    c_new = sigmoid(raw[1]) * c_prev + sigmoid(raw[0]) * tanh_safe(raw[2]);
    y_new = sigmoid(raw[3]) * tanh_safe(c_new);
  } else {
    let n_prev = n_wg[w];
    let lfm = m_wg[w] + log_sigmoid(raw[1]);
    // The "n == 0 → m = ĩ" test is per element (as the CUDA kernel does). The vanilla reference tests the
    // whole (B, H) state at once; both agree from a zero state or one with every n > 0 (spec A5.1, G4).
    let m_new = select(max(raw[0], lfm), raw[0], n_prev == vec4f());
    let i_g = min(exp(raw[0] - m_new), vec4f(1.0));
    let f_g = min(exp(lfm - m_new), vec4f(1.0));
    c_new = f_g * c_prev + i_g * tanh_safe(raw[2]);
    let n_new = f_g * n_prev + i_g;
    y_new = sigmoid(raw[3]) * c_new / n_new;
    n_wg[w] = n_new;
    m_wg[w] = m_new;
  }
  c_wg[w] = c_new;
  // Padding dims stay exactly zero: they meet R's zero columns in the next step.
  y_new = select(vec4f(), y_new, real(n));
  y_wg[next + w] = y_new;
  let out = row * H + j;
  write_y(out, n, y_new);
  if (p.save != 0u) {
    let plane = p.batch * p.seq * H;
    write_saved(out, n, c_new);
    if (!LSTM) {
      write_saved(plane + out, n, n_wg[w]);
      write_saved(2u * plane + out, n, m_wg[w]);
    }
    let gates = saved_states() * plane + out;
    write_saved(gates, n, raw[0]);
    write_saved(gates + plane, n, raw[1]);
    write_saved(gates + 2u * plane, n, raw[2]);
    write_saved(gates + 3u * plane, n, raw[3]);
  }
}

@compute @workgroup_size(LANES * GROUPS)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
  head = wid.x;
  tile = wid.y;
  group = lid / LANES;
  let lane = lid % LANES;

  stage_r(lid);
  let first = (p.t0 & 1u) * SLOTS * DQ;
  for (var k = 0u; k < K; k++) {
    let dq = lane + k * LANES;
    if (dq < DQ) {
      for (var q = 0u; q < NB; q++) {
        let slot = group * NB + q;
        let b = tile * SLOTS + slot;
        let w = slot * DQ + dq;
        y_wg[first + w] = read_state(0u, b, dq);
        c_wg[w] = read_state(1u, b, dq);
        if (!LSTM) {
          n_wg[w] = read_state(2u, b, dq);
          m_wg[w] = read_state(3u, b, dq);
        }
      }
    }
  }
  workgroupBarrier();

  for (var s = 0u; s < p.steps; s++) {
    let t = p.t0 + s;
    let prev = (t & 1u) * SLOTS * DQ;
    let next = SLOTS * DQ - prev;
    let ys = prev + group * NB * DQ; // y_{t-1} of the invocation's first slot
    for (var k = 0u; k < K; k++) {
      let dq = lane + k * LANES;
      if (dq < DQ) {
        // One accumulator per slot, unrolled by hand: an array indexed in a loop lands in scratch memory on
        // lavapipe (measured 3× slower). NB is an override constant, so the unused slots compile away.
        var a0 = mat4x4f();
        var a1 = mat4x4f();
        var a2 = mat4x4f();
        var a3 = mat4x4f();
        var a4 = mat4x4f();
        var a5 = mat4x4f();
        var a6 = mat4x4f();
        var a7 = mat4x4f();
        for (var jq = 0u; jq < DQ; jq++) {
          let w = block(4u * jq, dq);
          a0 = mac(a0, w, y_wg[ys + jq]);
          if (NB > 1u) { a1 = mac(a1, w, y_wg[ys + DQ + jq]); }
          if (NB > 2u) { a2 = mac(a2, w, y_wg[ys + 2u * DQ + jq]); }
          if (NB > 3u) { a3 = mac(a3, w, y_wg[ys + 3u * DQ + jq]); }
          if (NB > 4u) { a4 = mac(a4, w, y_wg[ys + 4u * DQ + jq]); }
          if (NB > 5u) { a5 = mac(a5, w, y_wg[ys + 5u * DQ + jq]); }
          if (NB > 6u) { a6 = mac(a6, w, y_wg[ys + 6u * DQ + jq]); }
          if (NB > 7u) { a7 = mac(a7, w, y_wg[ys + 7u * DQ + jq]); }
        }
        // One copy of the pointwise code (eight inlined copies take seconds more to compile on lavapipe).
        let j = head * DH + 4u * dq;
        let n = quad_len(dq);
        let H = p.hidden;
        let bq = mat4x4f(read_bias(j, n), read_bias(j + H, n), read_bias(j + 2u * H, n), read_bias(j + 3u * H, n));
        for (var q = 0u; q < NB; q++) {
          var acc: mat4x4f;
          switch (q) {
            case 0u: { acc = a0; }
            case 1u: { acc = a1; }
            case 2u: { acc = a2; }
            case 3u: { acc = a3; }
            case 4u: { acc = a4; }
            case 5u: { acc = a5; }
            case 6u: { acc = a6; }
            default: { acc = a7; }
          }
          cell(q, dq, t, next, acc, bq);
        }
      }
    }
    workgroupBarrier();
  }

  let last = ((p.t0 + p.steps) & 1u) * SLOTS * DQ;
  for (var k = 0u; k < K; k++) {
    let dq = lane + k * LANES;
    if (dq < DQ) {
      for (var q = 0u; q < NB; q++) {
        let slot = group * NB + q;
        let b = tile * SLOTS + slot;
        let w = slot * DQ + dq;
        write_state(0u, b, dq, y_wg[last + w]);
        write_state(1u, b, dq, c_wg[w]);
        if (!LSTM) {
          write_state(2u, b, dq, n_wg[w]);
          write_state(3u, b, dq, m_wg[w]);
        }
      }
    }
  }
}
