// Gradients of the block-diagonal ("headwise") linear y[r, h·dout + o] = Σ_d x[r, h·din + d] · weight[h, o, d] + bias
// (linear_headwise_forward.wgsl, spec A3.4). dx = dy · weightᵀ per head runs on the forward kernel with the weight
// transposed by `transpose`; dbias is a column sum of dy. This file holds the two passes of its own:
//   transpose:   weight_t[h, d, o] = weight[h, o, d]
//   weight_grad: partial[c, h, o, d] = Σ_{r in chunk c} dy[r, h·dout + o] · x[r, h·din + d], one row of partial sums
//                per chunk of rows (the op adds the rows with a split column sum: no float atomics, and no invocation
//                loops over all rows)
// Each weight_grad invocation computes a register tile of KO outputs × KD units of d of one head and chunk: per row
// it loads KO scalars of dy and KD units of x for KO·KD·W multiply-adds.
//
// The op prepends the tile constants and the element type:
//   alias V; const W: u32;    f32 (W 1) or vec4<f32> (W 4: din and x's offset and stride are multiples of 4)
//   const KO: u32; const KD: u32;
// x offsets, strides and din are in units of V; dy (read as scalars) and dout in scalars. dy and x are strided
// matrix views, offsets relative to the bound ranges. Loop trips per invocation: about
// chunk_rows · (1 + KO + KD + KO·KD) + KO + KD (the op bounds chunk_rows).
// Bindings: transpose 1 weight, 2 weight_t; weight_grad 1 dy, 2 x, 3 partials (the two share binding numbers, which
// WGSL allows when no entry point uses both).

struct Params {
  rows: u32, // weight_grad: rows of this dispatch; transpose: total elements
  heads: u32,
  din: u32, // in V units (transpose: scalars)
  dout: u32,
  dy_off: u32,
  dy_stride: u32,
  x_off: u32,
  x_stride: u32,
  chunk_rows: u32,
  chunk0: u32, // first partial row of this dispatch
  out_tiles: u32, // ⌈dout / KO⌉
  in_tiles: u32, // ⌈din / KD⌉ (din in units)
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> weight: array<f32>;
@group(0) @binding(2) var<storage, read_write> weight_t: array<f32>;
@group(0) @binding(1) var<storage, read> dy: array<f32>;
@group(0) @binding(2) var<storage, read> x: array<V>;
@group(0) @binding(3) var<storage, read_write> partial: array<V>;

fn index(gid: vec3u, nwg: vec3u) -> u32 {
  return gid.x + gid.y * nwg.x * 64u;
}

@compute @workgroup_size(64)
fn transpose(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = index(gid, nwg); // element (h, d, o) of weight_t
  if (i >= p.rows) {
    return;
  }
  let o = i % p.dout;
  let hd = i / p.dout;
  let d = hd % p.din;
  let h = hd / p.din;
  weight_t[i] = weight[(h * p.dout + o) * p.din + d];
}

@compute @workgroup_size(64)
fn weight_grad(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = index(gid, nwg);
  let per_chunk = p.heads * p.out_tiles * p.in_tiles;
  let chunk = i / per_chunk;
  let r0 = chunk * p.chunk_rows;
  if (r0 >= p.rows) {
    return;
  }
  let rest = i - chunk * per_chunk;
  let h = rest / (p.out_tiles * p.in_tiles);
  let tile = rest - h * p.out_tiles * p.in_tiles;
  let o0 = (tile / p.in_tiles) * KO;
  let d0 = (tile % p.in_tiles) * KD;
  // Outputs past dout and units past din read the last valid ones (their sums are never stored).
  var dyc: array<u32, KO>;
  for (var k = 0u; k < KO; k++) {
    dyc[k] = p.dy_off + h * p.dout + min(o0 + k, p.dout - 1u);
  }
  var xc: array<u32, KD>;
  for (var j = 0u; j < KD; j++) {
    xc[j] = p.x_off + h * p.din + min(d0 + j, p.din - 1u);
  }
  var acc: array<array<V, KD>, KO>;
  let r1 = min(r0 + p.chunk_rows, p.rows);
  for (var r = r0; r < r1; r++) {
    var xv: array<V, KD>;
    for (var j = 0u; j < KD; j++) {
      xv[j] = x[xc[j] + r * p.x_stride];
    }
    for (var k = 0u; k < KO; k++) {
      let g = dy[dyc[k] + r * p.dy_stride];
      for (var j = 0u; j < KD; j++) {
        acc[k][j] += g * xv[j];
      }
    }
  }
  // Row chunk0 + chunk of the partials [chunks, heads · dout · din], element ((h·dout + o)·din + d) in units.
  let base = (p.chunk0 + chunk) * p.heads * p.dout * p.din;
  for (var k = 0u; k < KO; k++) {
    if (o0 + k < p.dout) {
      for (var j = 0u; j < KD; j++) {
        if (d0 + j < p.din) {
          partial[base + (h * p.dout + o0 + k) * p.din + d0 + j] = acc[k][j];
        }
      }
    }
  }
}
