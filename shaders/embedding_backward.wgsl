// Embedding backward: dweight[v, e] = Σ over positions n with ids[n] = v of dout[n, e], deterministically (no float
// atomics, every sum in position order).
//
// Positions are cut into blocks of `block` consecutive positions. Within a block, the positions holding one id form a
// chain, and the first of them (the block's leader for that id) sums the chain; the leaders of all blocks are then
// combined per vocabulary row in block order. Three entry points, dispatched in this order by the op:
//   links:      one invocation per position n: next[n] = the next position of the block with the same id (or -1);
//               when n is the first position of its block with that id, slot[b · vocab + id] = n + 1 (slot is
//               cleared beforehand, so 0 means "id absent from block b"). Scans only n's block: ≤ block trips.
//   block_sums: one invocation per (position, 16 columns): a leader walks its chain (≤ block trips) and writes the
//               block's partial sum to partial[n, cols]; other positions return at once.
//   gather:     one invocation per (vocabulary row, 16 columns): sums partial rows named by slot over the blocks
//               (≤ blocks trips) and writes dweight, zero for ids that never occur.
// Ids outside [0, vocab) never lead and are never reached by a chain, so they contribute nothing.
// Columns go in slices of 16 per invocation, as 4 vec4 lanes masked at the end of a row (E need not be a multiple of
// 4). Sixteen rather than 4: a chain step's loads depend on the previous step, so each step should carry several
// independent loads (on lavapipe this made the parity-sized case 3× faster).

struct Params {
  positions: u32, // N
  dim: u32,       // E
  vocab: u32,     // V
  block: u32,     // positions per block
  blocks: u32,    // ceil(N / block)
  slices: u32,    // ceil(E / 16): column slices per row
}

@group(0) @binding(0) var<uniform> p: Params;

const SLICE = 4u; // vec4s per column slice

fn index(gid: vec3u, nwg: vec3u) -> u32 {
  return gid.x + gid.y * nwg.x * 64u;
}

fn valid_id(id: i32) -> bool {
  return id >= 0 && id < i32(p.vocab);
}

// Lanes of the vec4 starting at column c that lie inside a row.
fn lanes(c: u32) -> vec4<bool> {
  return vec4u(c) + vec4u(0u, 1u, 2u, 3u) < vec4u(p.dim);
}

// Element indices of the vec4 at column c of the row starting at `row`; masked lanes repeat the first element, so
// no load runs past the row.
fn lane_index(row: u32, c: u32) -> vec4u {
  return select(vec4u(row + c), vec4u(row + c) + vec4u(0u, 1u, 2u, 3u), lanes(c));
}

@group(0) @binding(1) var<storage, read> l_ids: array<i32>;
@group(0) @binding(2) var<storage, read_write> l_next: array<i32>;
@group(0) @binding(3) var<storage, read_write> l_slot: array<u32>;

@compute @workgroup_size(64)
fn links(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let n = index(gid, nwg);
  if (n >= p.positions) { return; }
  let id = l_ids[n];
  var next = -1;
  if (valid_id(id)) {
    let b = n / p.block;
    let start = b * p.block;
    let end = min(start + p.block, p.positions);
    for (var m = n + 1u; m < end; m++) {
      if (l_ids[m] == id) {
        next = i32(m);
        break;
      }
    }
    var leader = true;
    for (var m = n; m > start; m--) {
      if (l_ids[m - 1u] == id) {
        leader = false;
        break;
      }
    }
    if (leader) { l_slot[b * p.vocab + u32(id)] = n + 1u; }
  }
  l_next[n] = next;
}

@group(0) @binding(1) var<storage, read> s_ids: array<i32>;
@group(0) @binding(2) var<storage, read> s_next: array<i32>;
@group(0) @binding(3) var<storage, read> s_slot: array<u32>;
@group(0) @binding(4) var<storage, read> s_dout: array<f32>;
@group(0) @binding(5) var<storage, read_write> s_partial: array<f32>;

@compute @workgroup_size(64)
fn block_sums(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = index(gid, nwg);
  if (i >= p.positions * p.slices) { return; }
  let n = i / p.slices;
  let c0 = (i % p.slices) * 4u * SLICE;
  let id = s_ids[n];
  if (!valid_id(id) || s_slot[(n / p.block) * p.vocab + u32(id)] != n + 1u) { return; }
  var acc: array<vec4f, SLICE>;
  var m = i32(n);
  // A chain stays inside one block, so this runs at most `block` times.
  for (var k = 0u; k < p.block && m >= 0; k++) {
    let row = u32(m) * p.dim;
    for (var j = 0u; j < SLICE; j++) {
      let c = c0 + 4u * j;
      let e = lane_index(row, c);
      acc[j] += select(vec4f(0.0), vec4f(s_dout[e.x], s_dout[e.y], s_dout[e.z], s_dout[e.w]), lanes(c));
    }
    m = s_next[m];
  }
  for (var j = 0u; j < SLICE; j++) {
    let c = c0 + 4u * j;
    for (var q = 0u; q < 4u; q++) {
      if (c + q < p.dim) { s_partial[n * p.dim + c + q] = acc[j][q]; }
    }
  }
}

@group(0) @binding(1) var<storage, read> g_slot: array<u32>;
@group(0) @binding(2) var<storage, read> g_partial: array<f32>;
@group(0) @binding(3) var<storage, read_write> g_dweight: array<f32>;

@compute @workgroup_size(64)
fn gather(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = index(gid, nwg);
  if (i >= p.vocab * p.slices) { return; }
  let v = i / p.slices;
  let c0 = (i % p.slices) * 4u * SLICE;
  var acc: array<vec4f, SLICE>;
  for (var b = 0u; b < p.blocks; b++) {
    let s = g_slot[b * p.vocab + v];
    if (s != 0u) {
      let row = (s - 1u) * p.dim;
      for (var j = 0u; j < SLICE; j++) {
        let c = c0 + 4u * j;
        let e = lane_index(row, c);
        acc[j] += select(vec4f(0.0), vec4f(g_partial[e.x], g_partial[e.y], g_partial[e.z], g_partial[e.w]), lanes(c));
      }
    }
  }
  for (var j = 0u; j < SLICE; j++) {
    let c = c0 + 4u * j;
    for (var q = 0u; q < 4u; q++) {
      if (c + q < p.dim) { g_dweight[v * p.dim + c + q] = acc[j][q]; }
    }
  }
}
