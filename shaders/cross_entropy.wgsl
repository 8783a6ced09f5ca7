// Cross-entropy of logits [N, V] against int32 labels [N] (PyTorch `cross_entropy(..., ignore_index)` with the mean
// over non-ignored rows), with argmax accuracy and, optionally, the gradient of the mean loss. Four entry points,
// dispatched in this order by the op:
//   segments: one invocation per (row, segment of seg_len columns): the segment's max, Σ exp(x − max) about it, and
//             the first column holding the max. Trips ≤ 2 · seg_len.
//   rows:     one invocation per chunk of rows_per_chunk rows: combines each row's segments into its log-sum-exp
//             (kept for `grad`) and sums the chunk's loss (lse − x[label]), correct argmaxes and counted rows.
//             Trips ≤ rows_per_chunk · (segs + 1).
//   total:    one invocation: sums the chunks' partials in order (trips ≤ chunks) and writes loss = Σ / count (0 when
//             no row counts: PyTorch returns NaN there), correct and count.
//   grad:     one invocation per (row, segment): d loss / d x = upstream · (softmax(x) − onehot(label)) / count,
//             zero on ignored rows. Trips ≤ seg_len.
// A label that is neither ignore_index nor in [0, V) makes the loss and its row of the gradient NaN (PyTorch raises).
// Logits too large for one storage binding are processed in row ranges: `segments` and `grad` are dispatched once
// per range, with `row0` the range's first row and `skip` the elements before it in the bound logits range (its
// offset is aligned down); `rows` reads the logits only at labels and binds a range per chunk range the same way.
// No atomics: every sum runs in a fixed order.

struct Params {
  rows: u32,           // rows in this dispatch (a range of the N rows)
  vocab: u32,          // V
  seg_len: u32,        // columns per segment
  segs: u32,           // ceil(V / seg_len)
  ignore_index: i32,
  rows_per_chunk: u32, // rows per invocation of `rows`
  chunks: u32,         // invocations of `rows` in total (for `total`)
  has_upstream: u32,   // 1: multiply the gradient by upstream[0]
  scale: f32,          // constant factor of the gradient
  row0: u32,           // first row of this dispatch among the N rows
  skip: u32,           // elements before row row0 in the bound logits range
  chunk0: u32,         // first chunk of this dispatch (for `rows`)
  nan_bits: u32,       // 0x7fc00000: a quiet NaN (WGSL has no NaN literal)
}

struct Segment {
  max: f32,
  sum: f32, // Σ exp(x − max) over the segment
  arg: u32, // first column holding max
}

struct Totals {
  loss: f32,
  correct: f32,
  count: f32,
}

@group(0) @binding(0) var<uniform> p: Params;

fn index(gid: vec3u, nwg: vec3u) -> u32 {
  return gid.x + gid.y * nwg.x * 64u;
}

fn nan() -> f32 {
  return bitcast<f32>(p.nan_bits);
}

@group(0) @binding(1) var<storage, read> s_logits: array<f32>;
@group(0) @binding(2) var<storage, read_write> s_segments: array<Segment>;

@compute @workgroup_size(64)
fn segments(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = index(gid, nwg);
  if (i >= p.rows * p.segs) { return; }
  let r = i / p.segs;
  let c0 = (i % p.segs) * p.seg_len;
  let c1 = min(c0 + p.seg_len, p.vocab);
  let base = p.skip + r * p.vocab;
  var best = s_logits[base + c0];
  var arg = c0;
  for (var c = c0 + 1u; c < c1; c++) {
    let x = s_logits[base + c];
    if (x > best) {
      best = x;
      arg = c;
    }
  }
  var sum = 0.0;
  for (var c = c0; c < c1; c++) {
    sum += exp(s_logits[base + c] - best);
  }
  s_segments[(p.row0 + r) * p.segs + i % p.segs] = Segment(best, sum, arg);
}

@group(0) @binding(1) var<storage, read> r_logits: array<f32>;
@group(0) @binding(2) var<storage, read> r_labels: array<i32>;
@group(0) @binding(3) var<storage, read> r_segments: array<Segment>;
@group(0) @binding(4) var<storage, read_write> r_lse: array<f32>;
@group(0) @binding(5) var<storage, read_write> r_partial: array<Totals>;

@compute @workgroup_size(64)
fn rows(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let chunk = index(gid, nwg);
  let r_first = chunk * p.rows_per_chunk;
  if (r_first >= p.rows) { return; }
  var t = Totals(0.0, 0.0, 0.0);
  for (var r = r_first; r < min(r_first + p.rows_per_chunk, p.rows); r++) {
    let row = p.row0 + r;
    var m = r_segments[row * p.segs].max;
    for (var s = 1u; s < p.segs; s++) {
      m = max(m, r_segments[row * p.segs + s].max);
    }
    var sum = 0.0;
    var arg = 0u;
    var found = false;
    for (var s = 0u; s < p.segs; s++) {
      let seg = r_segments[row * p.segs + s];
      sum += seg.sum * exp(seg.max - m);
      if (!found && seg.max == m) {
        arg = seg.arg;
        found = true;
      }
    }
    let lse = m + log(sum);
    r_lse[row] = lse;
    let label = r_labels[row];
    if (label == p.ignore_index) { continue; }
    t.count += 1.0;
    if (label < 0 || label >= i32(p.vocab)) {
      t.loss = nan();
    } else {
      t.loss += lse - r_logits[p.skip + r * p.vocab + u32(label)];
      t.correct += select(0.0, 1.0, arg == u32(label));
    }
  }
  r_partial[p.chunk0 + chunk] = t;
}

@group(0) @binding(1) var<storage, read> t_partial: array<Totals>;
@group(0) @binding(2) var<storage, read_write> t_loss: array<f32>;
@group(0) @binding(3) var<storage, read_write> t_correct: array<f32>;
@group(0) @binding(4) var<storage, read_write> t_count: array<f32>;

@compute @workgroup_size(1)
fn total() {
  var t = Totals(0.0, 0.0, 0.0);
  for (var c = 0u; c < p.chunks; c++) {
    let x = t_partial[c];
    t.loss += x.loss;
    t.correct += x.correct;
    t.count += x.count;
  }
  t_loss[0] = select(0.0, t.loss / t.count, t.count > 0.0);
  t_correct[0] = t.correct;
  t_count[0] = t.count;
}

@group(0) @binding(1) var<storage, read> g_logits: array<f32>;
@group(0) @binding(2) var<storage, read> g_labels: array<i32>;
@group(0) @binding(3) var<storage, read> g_lse: array<f32>;
@group(0) @binding(4) var<storage, read> g_count: array<f32>;
@group(0) @binding(5) var<storage, read> g_upstream: array<f32>;
@group(0) @binding(6) var<storage, read_write> g_dlogits: array<f32>;

@compute @workgroup_size(64)
fn grad(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = index(gid, nwg);
  if (i >= p.rows * p.segs) { return; }
  let r = i / p.segs;
  let row = p.row0 + r;
  let c0 = (i % p.segs) * p.seg_len;
  let c1 = min(c0 + p.seg_len, p.vocab);
  let label = g_labels[row];
  let count = g_count[0];
  var factor = select(0.0, p.scale / count, count > 0.0);
  if (p.has_upstream != 0u) { factor *= g_upstream[0]; }
  if (label == p.ignore_index) {
    factor = 0.0;
  } else if (label < 0 || label >= i32(p.vocab)) {
    factor = nan();
  }
  let lse = g_lse[row];
  let base = p.skip + r * p.vocab;
  for (var c = c0; c < c1; c++) {
    let onehot = select(0.0, 1.0, i32(c) == label);
    g_dlogits[base + c] = (exp(g_logits[base + c] - lse) - onehot) * factor;
  }
}
