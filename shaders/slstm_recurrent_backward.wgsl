// Fused sLSTM / LSTM recurrence with block-diagonal (per-head) recurrent weights, backward pass. The op prepends
// slstm_recurrent_common.wgsl (tiling, R, quad I/O, cell math: read its header first) and the
// quad accessors of its vec4 bindings (read_saved, read_dy and write_dwx; src/ops/slstm.ts quadAccessors).
// Two entry points:
//
// `main` mirrors slstm_recurrent_forward.wgsl (same tiling) and runs `p.steps` time steps backwards, from
// p.t0 + p.steps − 1 down to p.t0; the op runs the dispatches from the end of the sequence to the start and `carry`
// holds the gradient carries between them. Each step reads the raw gates the forward saved, applies the pointwise
// backward, writes d raw (= d wx) and propagates dy_rec = R_hᵀ·d raw to step t − 1 through workgroup memory.
// `shift` writes y_{t-1} for every (b, t) row, the right-hand operand of dR = Σ d rawᵀ·y_{t-1} (a gemm in the op).
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
//   state0  [NS, B, H]    initial state (y, c, n, m) / (y, c), read when p.has_state != 0
//   saved   [NS + 3, B, S, H] the forward's per-step (c, n, m) / (c) and raw gates i, f, z, o
//   dy      [B, S, H]     gradient of the outputs
//   carry   [NS, B, H]    gradient w.r.t. the state at the dispatch boundary: (dy_rec, dc, dn, dm). Between
//                         dispatches the m slot holds μ = dm − c·dc − n·dn instead (converted at both ends).
//   dwx     [B, S, 4H]    d raw, gate-major
//   shift:  y [B, S, H] → y_prev [B, S, H]

struct Params {
  batch: u32, // B
  seq: u32, // S
  hidden: u32, // H
  t0: u32, // main: first (earliest) step of this dispatch
  steps: u32, // main: steps in this dispatch
  has_state: u32, // 1: state0 holds the initial state; 0: it is zeros
}

@group(0) @binding(0) var<uniform> p: Params;
// binding 1: R (r_src, in the common part)
@group(0) @binding(2) var<storage, read> state0: array<f32>;
@group(0) @binding(3) var<storage, read> saved: array<vec4f>;
@group(0) @binding(4) var<storage, read> dy: array<vec4f>;
@group(0) @binding(5) var<storage, read_write> carry: array<f32>;
@group(0) @binding(6) var<storage, read_write> dwx: array<vec4f>;

// `shift`'s own bindings (WGSL allows a binding number per entry point).
@group(0) @binding(1) var<storage, read> sh_y: array<f32>;
@group(0) @binding(2) var<storage, read> sh_state0: array<f32>;
@group(0) @binding(3) var<storage, read_write> sh_out: array<f32>;

// d raw of the step, [slot][gate][quad]. Between the Rᵀ pass and the next step's pointwise part the gate-i plane
// holds dy_rec = R_hᵀ·d raw of the later step instead (a separate array would halve the sequences per workgroup at
// DH 64 on 32 KiB of workgroup memory).
var<workgroup> d_wg: array<vec4f, 4u * SLOTS * DQ>;
// Carries [slot][quad], each touched only by its owning invocation: no barriers needed.
var<workgroup> dc_wg: array<vec4f, SLOTS * DQ>;
var<workgroup> dn_wg: array<vec4f, SLOTS * DQ>;
var<workgroup> mu_wg: array<vec4f, SLOTS * DQ>; // μ, see the header

// dy_rec of 16 columns j0 .. j0+15 (column c of the result holds j0 + 4c .. +3) += Σ_g d raw_g[quad dq]ᵀ · R_g
// for slot `slot`; w0 .. w3 are the blocks of columns j0, j0 + 4, j0 + 8, j0 + 12.
fn tmac(acc: mat4x4f, w0: Block, w1: Block, w2: Block, w3: Block, slot: u32, dq: u32) -> mat4x4f {
  let at = slot * 4u * DQ + dq;
  let di = d_wg[at];
  let df = d_wg[at + DQ];
  let dz = d_wg[at + 2u * DQ];
  let d_o = d_wg[at + 3u * DQ];
  return acc + mat4x4f(
    di * w0.i + df * w0.f + dz * w0.z + d_o * w0.o,
    di * w1.i + df * w1.f + dz * w1.z + d_o * w1.o,
    di * w2.i + df * w2.f + dz * w2.z + d_o * w2.o,
    di * w3.i + df * w3.f + dz * w3.z + d_o * w3.o,
  );
}

// Where dy_rec of quad dq of slot `slot` lives: the gate-i plane of d_wg.
fn dyr_at(slot: u32, dq: u32) -> u32 {
  return slot * 4u * DQ + dq;
}

// Stores column c of a tmac accumulator as dy_rec of quad 4·jg + c, for the quads the head has.
fn put_dyr(slot: u32, jg: u32, acc: mat4x4f) {
  let at = dyr_at(slot, 4u * jg);
  d_wg[at] = acc[0];
  if (4u * jg + 1u < DQ) { d_wg[at + 1u] = acc[1]; }
  if (4u * jg + 2u < DQ) { d_wg[at + 2u] = acc[2]; }
  if (4u * jg + 3u < DQ) { d_wg[at + 3u] = acc[3]; }
}

// Scalar quads of [NS, B, H] arrays, read and written once per dispatch.
fn read_state0(s: u32, b: u32, dq: u32) -> vec4f {
  if (p.has_state == 0u) {
    return vec4f();
  }
  let n = quad_len(dq);
  let i = elements((s * p.batch + b) * p.hidden + head * DH + 4u * dq, n);
  return select(vec4f(), vec4f(state0[i.x], state0[i.y], state0[i.z], state0[i.w]), real(n));
}

fn read_carry(s: u32, b: u32, dq: u32) -> vec4f {
  let n = quad_len(dq);
  let i = elements((s * p.batch + b) * p.hidden + head * DH + 4u * dq, n);
  return select(vec4f(), vec4f(carry[i.x], carry[i.y], carry[i.z], carry[i.w]), real(n));
}

fn write_carry(s: u32, b: u32, dq: u32, v: vec4f) {
  let n = quad_len(dq);
  let i = (s * p.batch + b) * p.hidden + head * DH + 4u * dq;
  carry[i] = v.x;
  if (n > 1u) { carry[i + 1u] = v.y; }
  if (n > 2u) { carry[i + 2u] = v.z; }
  if (n > 3u) { carry[i + 3u] = v.w; }
}

// Component s (1 c, 2 n, 3 m) of the state before step t ≥ 0 of sequence b at quad dq.
fn state_before(s: u32, t: u32, b: u32, dq: u32) -> vec4f {
  if (t == 0u) {
    return read_state0(s, b, dq);
  }
  let at = (b * p.seq + t - 1u) * p.hidden + head * DH + 4u * dq;
  return read_saved((s - 1u) * p.batch * p.seq * p.hidden + at, quad_len(dq));
}

// The pointwise backward of step t for slot `slot` (sequence b) at quad dq: d raw into d_wg and dwx, carries updated.
fn cell_backward(slot: u32, b: u32, dq: u32, t: u32) {
  let H = p.hidden;
  let n = quad_len(dq);
  let j = head * DH + 4u * dq;
  let row = b * p.seq + t;
  let plane = p.batch * p.seq * H;
  let gates = saved_states() * plane + row * H + j;
  let raw = mat4x4f(
    read_saved(gates, n),
    read_saved(gates + plane, n),
    read_saved(gates + 2u * plane, n),
    read_saved(gates + 3u * plane, n),
  );
  let w = slot * DQ + dq;
  let c_prev = state_before(1u, t, b, dq);
  let dy_t = read_dy(row * H + j, n) + d_wg[dyr_at(slot, dq)]; // read before put_draw overwrites it
  let z = tanh_safe(raw[2]);
  let o = sigmoid(raw[3]);
  var dc = dc_wg[w];
  var f_g: vec4f;
  var draw: mat4x4f;
  if (LSTM) {
    let i_g = sigmoid(raw[0]);
    f_g = sigmoid(raw[1]);
    let tc = tanh_safe(f_g * c_prev + i_g * z);
    dc += dy_t * o * (1.0 - tc * tc);
    draw = mat4x4f(dc * z * i_g * (1.0 - i_g), dc * c_prev * f_g * (1.0 - f_g), dc * i_g * (1.0 - z * z),
      dy_t * tc * o * (1.0 - o));
  } else {
    let n_prev = state_before(2u, t, b, dq);
    let lfm = state_before(3u, t, b, dq) + log_sigmoid(raw[1]);
    let zero_n = n_prev == vec4f();
    let m_new = select(max(raw[0], lfm), raw[0], zero_n);
    let i_g = min(exp(raw[0] - m_new), vec4f(1.0));
    f_g = min(exp(lfm - m_new), vec4f(1.0));
    let c_new = f_g * c_prev + i_g * z;
    let n_new = f_g * n_prev + i_g;
    let y_over_o = c_new / n_new;
    var dn = dn_wg[w];
    dc += dy_t * o / n_new;
    dn -= dy_t * o * y_over_o / n_new;
    let gf = dc * c_prev + dn * n_prev;
    var di = i_g * (z * dc + dn);
    var dl = f_g * gf;
    let lfm_wins = lfm > raw[0];
    // f clamped to 1: constant, so its share goes to ĩ through m = ĩ
    let clamped = zero_n & lfm_wins;
    di = select(di, di + dl, clamped);
    dl = select(dl, vec4f(), clamped);
    let mu = mu_wg[w];
    let to_lfm = !zero_n & lfm_wins;
    dl = select(dl, dl + mu, to_lfm);
    di = select(di + mu, di, to_lfm);
    mu_wg[w] = dl - f_g * gf;
    dn_wg[w] = f_g * dn;
    draw = mat4x4f(di, dl * sigmoid(-raw[1]), dc * i_g * (1.0 - z * z), dy_t * y_over_o * o * (1.0 - o));
  }
  dc_wg[w] = f_g * dc;
  // Padding dims stay exactly zero: they meet R's zero rows in the Rᵀ pass.
  let x = row * 4u * H + j;
  let r = real(n);
  put_draw(slot, dq, 0u, x, n, select(vec4f(), draw[0], r));
  put_draw(slot, dq, 1u, x + H, n, select(vec4f(), draw[1], r));
  put_draw(slot, dq, 2u, x + 2u * H, n, select(vec4f(), draw[2], r));
  put_draw(slot, dq, 3u, x + 3u * H, n, select(vec4f(), draw[3], r));
}

// d raw of gate g: to workgroup memory for the Rᵀ pass and out to dwx (element e).
fn put_draw(slot: u32, dq: u32, g: u32, e: u32, n: u32, v: vec4f) {
  d_wg[(slot * 4u + g) * DQ + dq] = v;
  write_dwx(e, n, v);
}

@compute @workgroup_size(LANES * GROUPS)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
  head = wid.x;
  tile = wid.y;
  group = lid / LANES;
  let lane = lid % LANES;
  let t_end = p.t0 + p.steps;

  stage_r(lid); // visible after the first step's first barrier
  for (var k = 0u; k < K; k++) {
    let dq = lane + k * LANES;
    for (var q = 0u; q < NB; q++) {
      let slot = group * NB + q;
      let b = tile * SLOTS + slot;
      if (dq < DQ && b < p.batch) {
        let w = slot * DQ + dq;
        d_wg[dyr_at(slot, dq)] = read_carry(0u, b, dq);
        dc_wg[w] = read_carry(1u, b, dq);
        if (!LSTM) {
          dn_wg[w] = read_carry(2u, b, dq);
          var mu = read_carry(3u, b, dq);
          if (t_end == p.seq) { // the gradient on the final m becomes μ
            mu -= state_before(1u, t_end, b, dq) * dc_wg[w] + state_before(2u, t_end, b, dq) * dn_wg[w];
          }
          mu_wg[w] = mu;
        }
      }
    }
  }

  for (var s = 0u; s < p.steps; s++) {
    let t = t_end - 1u - s;
    for (var k = 0u; k < K; k++) {
      let dq = lane + k * LANES;
      for (var q = 0u; q < NB; q++) {
        let slot = group * NB + q;
        let b = tile * SLOTS + slot;
        if (dq < DQ && b < p.batch) {
          cell_backward(slot, b, dq, t);
        }
      }
    }
    workgroupBarrier(); // d raw (and staged R) visible

    // dy_rec, 16 columns of one sequence group per invocation: per quad dq it loads 16 blocks of R and NB·4
    // vectors of d raw for 256·NB FMAs, twice the FMAs per load of one column quad per invocation (the Rᵀ product
    // sums over 4·DH, so d raw is 4× the data y_{t-1} is in the forward). Only the first GROUPS·DQ4 invocations
    // take part (the op checks that DQ4 ≤ LANES): on lavapipe the others' SIMD batches skip it.
    let rt_lane = lid < GROUPS * DQ4;
    let jg = lid % DQ4;
    let s0 = (lid / DQ4) * NB; // the group's first slot
    // One accumulator per slot, unrolled by hand as in the forward.
    var a0 = mat4x4f();
    var a1 = mat4x4f();
    var a2 = mat4x4f();
    var a3 = mat4x4f();
    var a4 = mat4x4f();
    var a5 = mat4x4f();
    var a6 = mat4x4f();
    var a7 = mat4x4f();
    if (rt_lane) {
      for (var dq = 0u; dq < DQ; dq++) {
        let w0 = block(16u * jg, dq);
        let w1 = block(16u * jg + 4u, dq);
        let w2 = block(16u * jg + 8u, dq);
        let w3 = block(16u * jg + 12u, dq);
        a0 = tmac(a0, w0, w1, w2, w3, s0, dq);
        if (NB > 1u) { a1 = tmac(a1, w0, w1, w2, w3, s0 + 1u, dq); }
        if (NB > 2u) { a2 = tmac(a2, w0, w1, w2, w3, s0 + 2u, dq); }
        if (NB > 3u) { a3 = tmac(a3, w0, w1, w2, w3, s0 + 3u, dq); }
        if (NB > 4u) { a4 = tmac(a4, w0, w1, w2, w3, s0 + 4u, dq); }
        if (NB > 5u) { a5 = tmac(a5, w0, w1, w2, w3, s0 + 5u, dq); }
        if (NB > 6u) { a6 = tmac(a6, w0, w1, w2, w3, s0 + 6u, dq); }
        if (NB > 7u) { a7 = tmac(a7, w0, w1, w2, w3, s0 + 7u, dq); }
      }
    }
    workgroupBarrier(); // every read of d raw done: dy_rec takes over its gate-i plane
    if (rt_lane) {
      put_dyr(s0, jg, a0);
      if (NB > 1u) { put_dyr(s0 + 1u, jg, a1); }
      if (NB > 2u) { put_dyr(s0 + 2u, jg, a2); }
      if (NB > 3u) { put_dyr(s0 + 3u, jg, a3); }
      if (NB > 4u) { put_dyr(s0 + 4u, jg, a4); }
      if (NB > 5u) { put_dyr(s0 + 5u, jg, a5); }
      if (NB > 6u) { put_dyr(s0 + 6u, jg, a6); }
      if (NB > 7u) { put_dyr(s0 + 7u, jg, a7); }
    }
    workgroupBarrier(); // dy_rec visible to the next step's pointwise part
  }

  for (var k = 0u; k < K; k++) {
    let dq = lane + k * LANES;
    for (var q = 0u; q < NB; q++) {
      let slot = group * NB + q;
      let b = tile * SLOTS + slot;
      if (dq < DQ && b < p.batch) {
        let w = slot * DQ + dq;
        write_carry(0u, b, dq, d_wg[dyr_at(slot, dq)]);
        write_carry(1u, b, dq, dc_wg[w]);
        if (!LSTM) {
          write_carry(2u, b, dq, dn_wg[w]);
          var mu = mu_wg[w];
          if (p.t0 == 0u) { // μ becomes the gradient on the initial m
            mu += state_before(1u, 0u, b, dq) * dc_wg[w] + state_before(2u, 0u, b, dq) * dn_wg[w];
          }
          write_carry(3u, b, dq, mu);
        }
      }
    }
  }
}

// y_prev[b, t] = y[b, t − 1], or the initial y (zeros without one) at t = 0: one invocation per element.
@compute @workgroup_size(64)
fn shift(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = gid.x + gid.y * nwg.x * 64u;
  if (i >= p.batch * p.seq * p.hidden) {
    return;
  }
  let row = i / p.hidden;
  if (row % p.seq != 0u) {
    sh_out[i] = sh_y[i - p.hidden];
  } else if (p.has_state != 0u) {
    sh_out[i] = sh_state0[(row / p.seq) * p.hidden + i % p.hidden];
  } else {
    sh_out[i] = 0.0;
  }
}
