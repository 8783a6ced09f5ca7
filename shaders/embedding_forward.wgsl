// Embedding lookup over one vocabulary range: out[n, e] = weight[ids[n], e] for the ids in [lo, hi). The table's
// element type is the alias W, which the op prepends: f32, or f16 (with `enable f16;`) for half-precision weights.
// The op splits a weight larger than one storage binding into row ranges, one dispatch each; `weight` binds the
// range's bytes from an aligned-down offset, so row lo starts at element `skip`. Each dispatch writes only the rows
// whose id falls in its range; the dispatch with `mark_invalid` also writes NaN to rows whose id is outside
// [0, vocab), so a bad id can never pass for a real embedding. An output larger than one binding is written in
// ranges of positions: `ids` and `out` bind the range's elements from aligned-down offsets (ids_off, out_off).
// One invocation per output element (the grid may spill into y); no loops.

struct Params {
  total: u32,        // output elements of this range of positions: ids × dim
  dim: u32,          // E
  vocab: u32,        // V
  lo: u32,           // first row of this range
  hi: u32,           // one past its last row
  skip: u32,         // elements before row lo in the bound range
  mark_invalid: u32, // write NaN for ids outside [0, vocab)
  nan_bits: u32,     // 0x7fc00000: a quiet NaN (WGSL has no NaN literal)
  ids_off: u32,      // element of the range's first id in the bound ids
  out_off: u32,      // element of its first output in the bound out
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> ids: array<i32>;
@group(0) @binding(2) var<storage, read> weight: array<W>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = gid.x + gid.y * nwg.x * 256u;
  if (i >= p.total) { return; }
  let id = ids[p.ids_off + i / p.dim];
  if (id >= i32(p.lo) && id < i32(p.hi)) {
    out[p.out_off + i] = f32(weight[p.skip + u32(id - i32(p.lo)) * p.dim + i % p.dim]);
  } else if (p.mark_invalid != 0u && (id < 0 || id >= i32(p.vocab))) {
    out[p.out_off + i] = bitcast<f32>(p.nan_bits);
  }
}
