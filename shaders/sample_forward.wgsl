// Next-token choice from logits rows [B, V]: greedy (first maximum) or a seeded draw from softmax(x / T) restricted
// to the top-k tokens, then to the top-p nucleus (Hugging Face's TopK/TopP warper rules). One workgroup per row.
//
// Nothing is sorted. Logits map to order-preserving u32 keys; each threshold is found by bisection over the 32 key
// bits, every bisection pass a strided sweep of the row plus a tree reduction:
//   top-k: the k-th largest key kth (keep key >= kth: tokens tied with the k-th value stay, as in HF);
//   top-p: in the order (logit descending, index ascending) HF keeps a token while the mass strictly before it is
//          < P (the first always). That kept prefix ends inside the tied run of one key `lower`: the smallest key
//          whose strictly-greater mass is < P·total; of the tokens with key == lower, the first r by index stay.
// The draw then scans the kept mass in index order: thread t owns the contiguous index chunk t, thread 0 scans the
// 256 chunk sums sequentially (a monotone prefix, so the chunks partition [0, total)), and the chosen chunk's owner
// walks it to the first token whose cumulative mass exceeds u·total, u from the counter-based hash of
// (seed, step, row) that `samplingUniform` in src/ops/sample.ts mirrors.
// Loop trips per invocation: about (2·32 + 4)·(V/256 + 8) + 2·256; the op bounds V so this stays far below
// lavapipe's silent cut at 65,535.

const WG: u32 = 256u;
const NONE: u32 = 0xffffffffu;

struct Params {
  vocab: u32,           // V
  skip: u32,            // element index of this dispatch's first row within the bound logits range
  stride: u32,          // elements between consecutive rows
  row0: u32,            // global row of this dispatch's first row (outputs and the draw's counter)
  greedy: u32,          // 1: argmax only
  inv_temperature: f32, // 1 / T
  top_k: u32,           // keep tokens >= the k-th largest; 0: off
  top_p: f32,           // nucleus mass; >= 1: off
  seed: u32,
  step: u32,            // the draw's counter: tokens sampled before this one
  column: u32,          // column of `history` to write
  history_cols: u32,    // N, the row length of `history`
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read_write> ids: array<i32>;
@group(0) @binding(3) var<storage, read_write> history: array<i32>;

var<workgroup> red_u: array<u32, WG>;
var<workgroup> red_i: array<u32, WG>;
var<workgroup> red_f: array<f32, WG>;
var<workgroup> pick_chunk: u32;
var<workgroup> pick_prefix: f32;
var<workgroup> pick_target: f32;

/** Order-preserving key of a float (-0 counts as +0, as float comparison does; NaN sorts above +inf). */
fn order_key(x: f32) -> u32 {
  let b = bitcast<u32>(x);
  if (b == 0x80000000u) { return 0x80000000u; }
  return select(b | 0x80000000u, ~b, (b & 0x80000000u) != 0u);
}

fn key_value(k: u32) -> f32 {
  return bitcast<f32>(select(~k, k & 0x7fffffffu, (k & 0x80000000u) != 0u));
}

/** PCG3D (Jarzynski & Olano 2020), x lane: a counter-based hash, so every draw is a pure function of its inputs. */
fn draw(seed: u32, step: u32, row: u32) -> f32 {
  var v = vec3u(seed, step, row) * 1664525u + 1013904223u;
  v.x += v.y * v.z;
  v.y += v.z * v.x;
  v.z += v.x * v.y;
  v ^= v >> vec3u(16u);
  v.x += v.y * v.z;
  return f32(v.x >> 8u) * (1.0 / 16777216.0);
}

fn sum_f(v: f32, lid: u32) -> f32 {
  red_f[lid] = v;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (lid < s) { red_f[lid] += red_f[lid + s]; }
    workgroupBarrier();
  }
  let r = red_f[0];
  workgroupBarrier();
  return r;
}

fn sum_u(v: u32, lid: u32) -> u32 {
  red_u[lid] = v;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (lid < s) { red_u[lid] += red_u[lid + s]; }
    workgroupBarrier();
  }
  let r = red_u[0];
  workgroupBarrier();
  return r;
}

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3u) {
  let V = p.vocab;
  let base = p.skip + wid.x * p.stride;
  let row = p.row0 + wid.x;

  // Maximum key, first index among equals (torch.argmax's tie rule).
  var best_key = 0u;
  var best_idx = NONE;
  for (var j = lid; j < V; j += WG) {
    let k = order_key(logits[base + j]);
    if (best_idx == NONE || k > best_key) { best_key = k; best_idx = j; }
  }
  red_u[lid] = best_key;
  red_i[lid] = best_idx;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (lid < s) {
      let ko = red_u[lid + s];
      let io = red_i[lid + s];
      if (ko > red_u[lid] || (ko == red_u[lid] && io < red_i[lid])) { red_u[lid] = ko; red_i[lid] = io; }
    }
    workgroupBarrier();
  }
  let argmax = red_i[0];
  let max_value = key_value(red_u[0]);
  workgroupBarrier();
  if (p.greedy != 0u) {
    if (lid == 0u) {
      ids[row] = i32(argmax);
      history[row * p.history_cols + p.column] = i32(argmax);
    }
    return;
  }

  // Top-k: the largest key with at least k keys >= it.
  var kth = 0u;
  if (p.top_k > 0u && p.top_k < V) {
    for (var bit = 0u; bit < 32u; bit++) {
      let cand = kth | (0x80000000u >> bit);
      var c = 0u;
      for (var j = lid; j < V; j += WG) { c += select(0u, 1u, order_key(logits[base + j]) >= cand); }
      if (sum_u(c, lid) >= p.top_k) { kth = cand; }
    }
  }

  // Top-p: `lower` and the number r of its tied tokens kept. Without top-p every token >= kth stays.
  var lower = kth;
  var ties_kept = NONE;
  if (p.top_p < 1.0) {
    var total = 0.0;
    for (var j = lid; j < V; j += WG) {
      let x = logits[base + j];
      if (order_key(x) >= kth) { total += exp((x - max_value) * p.inv_temperature); }
    }
    let mass_target = p.top_p * sum_f(total, lid);
    // Largest key whose strictly-greater mass is still >= P·total (mass sums are monotone in the key even in f32).
    var below = 0u;
    for (var bit = 0u; bit < 32u; bit++) {
      let cand = below | (0x80000000u >> bit);
      var m = 0.0;
      for (var j = lid; j < V; j += WG) {
        let x = logits[base + j];
        let k = order_key(x);
        if (k >= kth && k > cand) { m += exp((x - max_value) * p.inv_temperature); }
      }
      if (sum_f(m, lid) >= mass_target) { below = cand; }
    }
    lower = below + 1u;
    var above = 0.0;
    var ties = 0u;
    for (var j = lid; j < V; j += WG) {
      let x = logits[base + j];
      let k = order_key(x);
      if (k > lower) { above += exp((x - max_value) * p.inv_temperature); }
      ties += select(0u, 1u, k == lower);
    }
    let mass_above = sum_f(above, lid);
    let tie_count = sum_u(ties, lid);
    let w = exp((key_value(lower) - max_value) * p.inv_temperature);
    // HF keeps the t-th tied token (t from 0) while mass_above + t·w < P·total; clamped in f32 first, as a float
    // outside the u32 range has no defined conversion.
    ties_kept = u32(clamp(ceil((mass_target - mass_above) / w), 1.0, f32(tie_count)));
  }

  // Kept mass per index chunk; tied tokens of key `lower` stay by rank in index order.
  let chunk = (V + WG - 1u) / WG;
  let j0 = min(lid * chunk, V);
  let j1 = min(j0 + chunk, V);
  var own_ties = 0u;
  for (var j = j0; j < j1; j++) { own_ties += select(0u, 1u, order_key(logits[base + j]) == lower); }
  red_u[lid] = own_ties;
  workgroupBarrier();
  if (lid == 0u) {
    var acc = 0u;
    for (var t = 0u; t < WG; t++) {
      let n = red_u[t];
      red_u[t] = acc;
      acc += n;
    }
  }
  workgroupBarrier();
  let tie_base = red_u[lid];
  var own_mass = 0.0;
  var rank = tie_base;
  for (var j = j0; j < j1; j++) {
    let x = logits[base + j];
    let k = order_key(x);
    if (k > lower || (k == lower && rank < ties_kept)) { own_mass += exp((x - max_value) * p.inv_temperature); }
    rank += select(0u, 1u, k == lower);
  }
  red_f[lid] = own_mass;
  workgroupBarrier();
  if (lid == 0u) {
    var acc = 0.0;
    for (var t = 0u; t < WG; t++) {
      acc += red_f[t];
      red_f[t] = acc;
    }
    // No finite distribution (all logits −inf, or NaN/+inf among them): the argmax, as a greedy step would pick.
    if (!(acc > 0.0)) {
      ids[row] = i32(argmax);
      history[row * p.history_cols + p.column] = i32(argmax);
    }
    let goal = draw(p.seed, p.step, row) * acc;
    // First chunk whose inclusive prefix exceeds the target; if rounding put u·total at total, the last non-empty one.
    var chosen = NONE;
    var last = 0u;
    var prev = 0.0;
    for (var t = 0u; t < WG; t++) {
      if (red_f[t] > prev) {
        last = t;
        if (chosen == NONE && red_f[t] > goal) { chosen = t; }
      }
      prev = red_f[t];
    }
    if (chosen == NONE) { chosen = last; }
    pick_chunk = select(NONE, chosen, acc > 0.0);
    pick_prefix = select(0.0, red_f[max(chosen, 1u) - 1u], chosen > 0u);
    pick_target = goal;
  }
  workgroupBarrier();
  if (lid != pick_chunk) { return; }
  var acc = pick_prefix;
  var token = NONE;
  var last_kept = j0;
  rank = tie_base;
  for (var j = j0; j < j1; j++) {
    let x = logits[base + j];
    let k = order_key(x);
    if (k > lower || (k == lower && rank < ties_kept)) {
      let next = acc + exp((x - max_value) * p.inv_temperature);
      last_kept = j;
      if (next > pick_target) { token = j; break; }
      acc = next;
    }
    rank += select(0u, 1u, k == lower);
  }
  if (token == NONE) { token = last_kept; }
  ids[row] = i32(token);
  history[row * p.history_cols + p.column] = i32(token);
}
