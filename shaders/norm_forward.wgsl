// Layer norm / RMS norm over contiguous channel groups, then a per-channel affine.
// x is [units, G] with units = rows × groups: unit u is group (u % groups) of row (u / groups), so its channels are
// c = (u % groups) * G + j.
//   layer: y = (x − mean) · rsqrt(biased var + eps)      rms: y = x · rsqrt(mean(x²) + eps)
//   then y · (weight_offset + weight[c]) + bias[c]       (either factor skipped when absent)
//   then, with an output gate o (xlstm_large's mLSTM layer), sigmoid(o[row, c]) · y, o a strided matrix view;
//   sigmoid is pointwise_forward.wgsl's accurate one (prepended by the op, on V = vec4f)
//
// Two entry points share the per-unit arithmetic and differ only in who walks a unit's channels:
//   per_unit:    one invocation per unit walks all of them; no workgroup memory and no barriers, which suits many
//                short units (llvmpipe runs barriers by switching between SIMD batches, which costs far more than
//                the arithmetic). Loop trips per invocation: 3 · ceil(G / 4) + 3.
//   cooperative: one workgroup per unit (the grid may spill into y), threads stride over the unit's channels and
//                combine partial sums in workgroup memory; for few long units.
//                Trips: 3 · ceil(G / 4WG) + 3 + 2 · log2 WG.
// Channels go in chunks of 4 (four scalar loads: x carries no 16-byte alignment when G % 4 ≠ 0). A last partial chunk
// is masked: in the sums the invocation that walks chunk 0 takes it, in the write pass it is stored lane by lane.
// The op checks the trip bound.
//
// Statistics: pass 1 sums x and x² (RMS norm needs nothing more); layer norm then sums d = x − m and d² about that
// rough mean m and corrects it (mean = m + Σd/G, var = Σd²/G − (Σd/G)²), so the variance stays accurate when
// |mean| ≫ std and the f32 rounding of m cancels out. Pass 3 writes the output.

struct Params {
  units: u32,        // rows × groups
  group_size: u32,   // G: channels per group
  groups: u32,       // groups per row
  center: u32,       // 1: subtract the mean (layer norm); 0: RMS norm
  has_weight: u32,
  has_bias: u32,
  eps: f32,
  weight_offset: f32, // scale = weight_offset + weight[c]: 1 for the NeurIPS "1 + w" convention, else 0
  has_gate: u32,
  gate_off: u32, // element (row, c) of the output gate is gate[gate_off + row · gate_stride + c]
  gate_stride: u32,
}

override WG: u32 = 256u; // invocations per workgroup; a power of two for the cooperative entry point

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> weight: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;
@group(0) @binding(5) var<storage, read> gate: array<f32>;

var<workgroup> partial: array<vec2f, WG>;

// Lanes of chunk k that lie inside the unit.
fn valid(k: u32) -> vec4<bool> {
  return vec4u(4u * k) + vec4u(0u, 1u, 2u, 3u) < vec4u(p.group_size);
}

fn load(base: u32, k: u32) -> vec4f {
  let i = base + 4u * k;
  return vec4f(x[i], x[i + 1u], x[i + 2u], x[i + 3u]);
}

// (Σ d, Σ d²) with d = x − shift over chunks first, first + step, …, plus the masked tail chunk when first is 0.
fn moments(base: u32, first: u32, step: u32, shift: f32) -> vec2f {
  let full = p.group_size / 4u;
  var s = vec4f(0.0);
  var ss = vec4f(0.0);
  for (var k = first; k < full; k += step) {
    let d = load(base, k) - shift;
    s += d;
    ss += d * d;
  }
  if (first == 0u && 4u * full < p.group_size) {
    let d = select(vec4f(0.0), load(base, full) - shift, valid(full));
    s += d;
    ss += d * d;
  }
  return vec2f(dot(s, vec4f(1.0)), dot(ss, vec4f(1.0)));
}

struct Stats { mean: f32, inv: f32 }

// (mean, 1 / std) from a unit's moments m about `rough`; RMS norm passes rough = 0 and m.x = 0 (no centring).
fn finish_stats(rough: f32, m: vec2f) -> Stats {
  let n = f32(p.group_size);
  let shift = m.x / n;
  return Stats(rough + shift, inverseSqrt(max(m.y / n - shift * shift, 0.0) + p.eps));
}

fn write(u: u32, base: u32, first: u32, step: u32, st: Stats) {
  let full = (p.group_size + 3u) / 4u; // the tail chunk is written lane by lane below
  let channel0 = (u % p.groups) * p.group_size;
  for (var k = first; k < full; k += step) {
    let ok = valid(k);
    var y = (load(base, k) - st.mean) * st.inv;
    let c = channel0 + 4u * k;
    if (p.has_weight != 0u) {
      y *= p.weight_offset + vec4f(weight[c], weight[c + 1u], weight[c + 2u], weight[c + 3u]);
    }
    if (p.has_bias != 0u) { y += vec4f(bias[c], bias[c + 1u], bias[c + 2u], bias[c + 3u]); }
    if (p.has_gate != 0u) {
      let g = p.gate_off + (u / p.groups) * p.gate_stride + c;
      y *= sigmoid(vec4f(gate[g], gate[g + 1u], gate[g + 2u], gate[g + 3u]));
    }
    let i = base + 4u * k;
    if (all(ok)) {
      out[i] = y.x;
      out[i + 1u] = y.y;
      out[i + 2u] = y.z;
      out[i + 3u] = y.w;
    } else {
      for (var l = 0u; l < 3u; l++) { if (ok[l]) { out[i + l] = y[l]; } }
    }
  }
}

@compute @workgroup_size(WG)
fn per_unit(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let u = gid.x + gid.y * nwg.x * WG;
  if (u >= p.units) { return; }
  let base = u * p.group_size;
  let m1 = moments(base, 0u, 1u, 0.0);
  var st = finish_stats(0.0, vec2f(0.0, m1.y));
  if (p.center != 0u) {
    let rough = m1.x / f32(p.group_size);
    st = finish_stats(rough, moments(base, 0u, 1u, rough));
  }
  write(u, base, 0u, 1u, st);
}

// Workgroup tree sum of one vec2 per thread; every thread gets the total.
fn workgroup_sum(l: u32, v: vec2f) -> vec2f {
  partial[l] = v;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (l < s) { partial[l] += partial[l + s]; }
    workgroupBarrier();
  }
  let total = partial[0];
  workgroupBarrier(); // partial is reused by the next call
  return total;
}

@compute @workgroup_size(WG)
fn cooperative(
  @builtin(workgroup_id) wid: vec3u,
  @builtin(num_workgroups) nwg: vec3u,
  @builtin(local_invocation_index) l: u32,
) {
  let u = wid.x + wid.y * nwg.x;
  if (u >= p.units) { return; }
  let base = u * p.group_size;
  let m1 = workgroup_sum(l, moments(base, l, WG, 0.0));
  var st = finish_stats(0.0, vec2f(0.0, m1.y));
  if (p.center != 0u) {
    let rough = m1.x / f32(p.group_size);
    st = finish_stats(rough, workgroup_sum(l, moments(base, l, WG, rough)));
  }
  write(u, base, l, WG, st);
}
