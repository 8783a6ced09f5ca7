// Column sums of a strided [rows, cols] matrix, one chunk of rows at a time: invocation i sums column (i % cols) over
// rows [chunk · chunk_rows, (chunk + 1) · chunk_rows) with chunk = i / cols, and writes row (chunk0 + chunk) of the
// partials [chunks, cols]. The op repeats this on the partials until one row is left, so no invocation loops more
// than chunk_rows times (lavapipe silently cuts loops at 65,535 trips) and no float atomics are needed.
// Adjacent invocations read adjacent columns of a row, so the loads coalesce on a GPU. Four rows per loop trip
// (four partial sums) cut the loop overhead, about 15 % of the time on lavapipe.

struct Params {
  rows: u32,       // rows of this dispatch's block
  cols: u32,
  offset: u32,     // element (0, 0) within the bound range of x
  stride: u32,     // elements between consecutive rows of x
  chunk_rows: u32, // rows summed per invocation
  chunk0: u32,     // first output row of this block
}

override WG: u32 = 64u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = gid.x + gid.y * nwg.x * WG;
  let chunks = (p.rows + p.chunk_rows - 1u) / p.chunk_rows;
  if (i >= chunks * p.cols) { return; }
  let chunk = i / p.cols;
  let c = i % p.cols;
  let r0 = chunk * p.chunk_rows;
  let r1 = min(r0 + p.chunk_rows, p.rows);
  var s = vec4f(0.0);
  var at = p.offset + r0 * p.stride + c;
  let step4 = 4u * p.stride;
  var r = r0;
  for (; r + 4u <= r1; r += 4u) {
    s += vec4f(x[at], x[at + p.stride], x[at + 2u * p.stride], x[at + 3u * p.stride]);
    at += step4;
  }
  for (; r < r1; r++) {
    s.x += x[at];
    at += p.stride;
  }
  out[(p.chunk0 + chunk) * p.cols + c] = dot(s, vec4f(1.0));
}
