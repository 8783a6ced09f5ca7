// Shared part of the fused sLSTM / LSTM kernels, prepended by the op to slstm_recurrent_forward.wgsl and
// slstm_recurrent_backward.wgsl: the tiling constants, access to R, quad helpers, the cell's math, and the `pack`
// entry point. Each of those files declares its own `Params` (with `hidden` = H = NH·DH) at binding 0.
//
// Tiling: a workgroup per (head, tile of SLOTS sequences). A head's DH dims are taken four at a time ("quads", DQ of
// them; a head whose DH is not a multiple of 4 is padded with dims that stay zero). GROUPS sequence groups of LANES
// invocations each; an invocation owns quads dq = lane + k·LANES (k < K) of NB sequences ("slots" group·NB + q),
// so that every block of R it loads serves NB sequences: on lavapipe the loads, not the FMAs, bound the recurrent
// loops (a load costs about as much as 20 FMAs per invocation; a 4×4 block of R is 4 vec4 loads for 16·NB FMAs).
//
// R: the vanilla layout [NH, 4·DH, DH] (row g·DH + d, column j) is repacked as [NH, 4, DP, DQ] vec4s, element
// (h, g, j, dq) = R[h][g·DH + 4dq .. 4dq+3][j], zero where j ≥ DH or d ≥ DH (DP = DH rounded up to a multiple of
// 16, the columns the backward's Rᵀ pass takes at once): a 4×4 block is 4 vec4 loads, neighbouring invocations
// (quads) read neighbouring vec4s. When it fits, each workgroup stages its head's packed block in workgroup memory
// straight from the vanilla R (binding 1 holds the vanilla R); otherwise binding 1 holds the packed R that `pack`
// wrote, read from global memory.
//
// Quad I/O: when DH % 4 == 0 (ALIGNED) a quad of any [.., H] or [.., 4H] array is one vec4. Otherwise element e
// lives at [e / 4][e % 4], and only the first min(4, DH − 4·dq) elements of a quad are real (the op binds whole
// vec4s). WGSL cannot pass storage pointers to functions, so each array has its own helper.

override DH: u32; // head dim
override LANES: u32 = 1u; // invocations per sequence group, one quad each per pass (≤ DQ)
override GROUPS: u32 = 1u; // sequence groups per workgroup
override NB: u32 = 1u; // sequences per invocation, 1 to 8
override LSTM: bool = false; // plain LSTM pointwise (2 states) instead of sLSTM (4 states)
override R_WG_LEN: u32 = 1u; // vec4s of one head's packed R (4·DP·DQ) when staged in workgroup memory, else 1
override R_IN_WG: bool = R_WG_LEN > 1u;
override DQ: u32 = (DH + 3u) / 4u; // quads per head
override DQ4: u32 = (DQ + 3u) / 4u; // groups of 16 columns
override DP: u32 = 16u * DQ4; // columns j of packed R
override ALIGNED: bool = DH % 4u == 0u;
override K: u32 = (DQ + LANES - 1u) / LANES; // passes over a sequence group's quads
override SLOTS: u32 = GROUPS * NB; // sequences per workgroup

// R: vanilla when staged in workgroup memory (and for `pack`), else packed.
@group(0) @binding(1) var<storage, read> r_src: array<vec4f>;
// `pack`'s output (WGSL allows a binding number per entry point).
@group(0) @binding(2) var<storage, read_write> pk_out: array<vec4f>;

var<workgroup> r_wg: array<vec4f, R_WG_LEN>; // the head's packed R

// The invocation's place, set once at the start of `main`.
var<private> head: u32;
var<private> group: u32; // sequence group within the workgroup
var<private> tile: u32; // tile of SLOTS sequences

// vec4 i of the packed R (all heads), from the vanilla R in r_src.
fn pack_quad(i: u32) -> vec4f {
  let dq = i % DQ;
  let j = (i / DQ) % DP;
  let hg = i / (DQ * DP); // h·4 + g
  let n = quad_len(dq);
  let e = (hg * DH + 4u * dq + min(vec4u(0u, 1u, 2u, 3u), vec4u(n - 1u))) * DH + min(j, DH - 1u);
  let v = vec4f(
    r_src[e.x / 4u][e.x % 4u],
    r_src[e.y / 4u][e.y % 4u],
    r_src[e.z / 4u][e.z % 4u],
    r_src[e.w / 4u][e.w % 4u],
  );
  return select(vec4f(), v, real(n) & vec4<bool>(j < DH));
}

// Stages the head's packed R in workgroup memory (when R_IN_WG); the caller's barrier makes it visible.
fn stage_r(lid: u32) {
  if (R_IN_WG) {
    for (var e = lid; e < R_WG_LEN; e += LANES * GROUPS) {
      r_wg[e] = pack_quad(head * R_WG_LEN + e);
    }
  }
}

// Columns j .. j+3 of the four gates' rows 4dq .. 4dq+3 of the head's R, as 4×4 blocks (column c = j + c).
struct Block {
  i: mat4x4f,
  f: mat4x4f,
  z: mat4x4f,
  o: mat4x4f,
}

fn packed(at: u32) -> vec4f {
  if (R_IN_WG) {
    return r_wg[at];
  }
  return r_src[head * 4u * DP * DQ + at];
}

fn gate_block(g: u32, j: u32, dq: u32) -> mat4x4f {
  let at = (g * DP + j) * DQ + dq;
  return mat4x4f(packed(at), packed(at + DQ), packed(at + 2u * DQ), packed(at + 3u * DQ));
}

fn block(j: u32, dq: u32) -> Block {
  return Block(gate_block(0u, j, dq), gate_block(1u, j, dq), gate_block(2u, j, dq), gate_block(3u, j, dq));
}

// Real elements of quad dq, and which of its four lanes they are.
fn quad_len(dq: u32) -> u32 {
  return min(4u, DH - 4u * dq);
}

fn real(n: u32) -> vec4<bool> {
  return vec4u(0u, 1u, 2u, 3u) < vec4u(n);
}

// Element indices of a quad starting at element e with n real elements (the rest repeat the last real one).
fn elements(e: u32, n: u32) -> vec4u {
  return e + min(vec4u(0u, 1u, 2u, 3u), vec4u(n - 1u));
}

// States saved per step besides y: c, n, m for sLSTM, c for LSTM.
fn saved_states() -> u32 {
  if (LSTM) {
    return 1u;
  }
  return 3u;
}

fn sigmoid(x: vec4f) -> vec4f {
  return 1.0 / (1.0 + exp(-x));
}

// log σ(x) = min(x, 0) − log(1 + e^{−|x|}), finite for every x.
fn log_sigmoid(x: vec4f) -> vec4f {
  return min(x, vec4f()) - log(1.0 + exp(-abs(x)));
}

// tanh saturates to ±1 in f32 beyond |x| = 10 (so its derivative 1 − tanh² is 0 there too); the clamp keeps drivers
// that expand tanh through exp(2x) finite.
fn tanh_safe(x: vec4f) -> vec4f {
  return tanh(clamp(x, vec4f(-10.0), vec4f(10.0)));
}

// Packs the vanilla R (binding 1) into pk_out: one invocation per vec4.
@compute @workgroup_size(64)
fn pack(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = gid.x + gid.y * nwg.x * 64u;
  if (i < (p.hidden / DH) * 4u * DP * DQ) {
    pk_out[i] = pack_quad(i);
  }
}
