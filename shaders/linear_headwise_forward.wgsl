// Block-diagonal ("headwise") linear, spec A3.4 LinearHeadwiseExpand:
//   y[r, h·dout + o] = Σ_d x[r, h·din + d] · weight[h, o, d] (+ bias[h·dout + o])
// Each invocation computes a register tile: R rows × K outputs of one head. Every x load serves K outputs and every
// weight load R rows, so an invocation does R·K·W multiply-adds per R + K loads (llvmpipe emulates each load with a
// loop over its SIMD lanes, which dominates when every invocation computes one output).
//
// The op prepends the tile constants and the element type:
//   const R: u32; const K: u32;   rows and outputs per invocation
//   alias V; const W: u32;        f32 (W 1) or vec4<f32> (W 4: din, dout, offsets and strides all multiples of 4)
//   fn dotv(a: V, b: V) -> f32;   Σ a·b over V's lanes
//   fn lanes(a: array<f32, K>, j: u32) -> V;  outputs j·W … j·W + W − 1 of a tile row
// Offsets, strides and din below are in units of V, dout in scalars. x and y are strided matrix views (column slices of wider
// buffers), offsets relative to the bound ranges. The op splits din into [d_begin, d_end) slices of bounded length
// (lavapipe cuts loops after 65,535 trips): the first slice writes, later ones add to y.

struct Params {
  rows: u32,
  heads: u32,
  din: u32, // in V units
  dout: u32, // in scalars: the guard for a partial last tile
  x_off: u32,
  x_stride: u32,
  y_off: u32,
  y_stride: u32,
  d_begin: u32,
  d_end: u32,
  accumulate: u32, // 1: add to y instead of overwriting it
  has_bias: u32, // 1: add bias (bound to weight, never read, when 0)
  tiles: u32, // output tiles per head: ⌈dout / K⌉
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> y: array<V>;
@group(0) @binding(2) var<storage, read> x: array<V>;
@group(0) @binding(3) var<storage, read> weight: array<V>;
@group(0) @binding(4) var<storage, read> bias: array<V>;

struct Tile {
  row: u32, // first row
  h: u32,
  o: u32, // first output within the head
  valid: bool,
}

fn tile(gid: vec3u, nwg: vec3u) -> Tile {
  let i = gid.x + gid.y * nwg.x * 64u;
  let per_block = p.heads * p.tiles;
  let block = i / per_block;
  let rest = i - block * per_block;
  let h = rest / p.tiles;
  return Tile(block * R, h, (rest - h * p.tiles) * K, block * R < p.rows);
}

// The tile's dot products over d ∈ [d_begin, d_end). Rows past the end and outputs past dout read the last valid
// ones (their results are never stored).
fn products(t: Tile) -> array<array<f32, K>, R> {
  var acc: array<array<f32, K>, R>;
  var xb: array<u32, R>;
  for (var r = 0u; r < R; r++) {
    xb[r] = p.x_off + min(t.row + r, p.rows - 1u) * p.x_stride + t.h * p.din;
  }
  var wb: array<u32, K>;
  for (var k = 0u; k < K; k++) {
    wb[k] = (t.h * p.dout + min(t.o + k, p.dout - 1u)) * p.din;
  }
  for (var d = p.d_begin; d < p.d_end; d++) {
    var xv: array<V, R>;
    for (var r = 0u; r < R; r++) {
      xv[r] = x[xb[r] + d];
    }
    for (var k = 0u; k < K; k++) {
      let wv = weight[wb[k] + d];
      for (var r = 0u; r < R; r++) {
        acc[r][k] += dotv(xv[r], wv);
      }
    }
  }
  return acc;
}

@compute @workgroup_size(64)
fn forward(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let t = tile(gid, nwg);
  if (!t.valid) {
    return;
  }
  let acc = products(t);
  let first = (t.h * p.dout + t.o) / W; // the tile's first output unit within a row
  var b: array<V, K / W>;
  if (p.has_bias == 1u) {
    for (var j = 0u; j < K / W; j++) {
      b[j] = bias[first + min(j, (p.dout - t.o - 1u) / W)];
    }
  }
  for (var r = 0u; r < R; r++) {
    if (t.row + r < p.rows) {
      let yb = p.y_off + (t.row + r) * p.y_stride + first;
      for (var j = 0u; j < K / W; j++) {
        if (t.o + j * W < p.dout) {
          var v = lanes(acc[r], j) + b[j];
          if (p.accumulate == 1u) {
            v += y[yb + j];
          }
          y[yb + j] = v;
        }
      }
    }
  }
}
