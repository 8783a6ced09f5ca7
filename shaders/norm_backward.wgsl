// Backward of norm_forward.wgsl: the input gradient of layer / RMS norm over contiguous channel groups, plus
// dy · x̂ per element, which the op sums over rows into the weight gradient (the bias gradient is Σ_rows dy).
// x and dy are [units, G] with units = rows × groups; unit u is group (u % groups) of row (u / groups), so its
// channels are c = (u % groups) * G + j. With x̂ = (x − mean) · r (RMS norm: x̂ = x · r), r = rsqrt(var + eps) and
// g = dy · (weight_offset + weight[c]) (g = dy without a weight):
//   layer: dx = r · (g − mean(g) − x̂ · mean(g · x̂))        rms: dx = r · (g − x̂ · mean(g · x̂))
//
// One invocation per unit walks its channels twice, with no workgroup memory and no barriers (the forward's
// per_unit path; it suits lavapipe, and training always has rows × groups in the thousands):
//   pass 1 sums d, d², g and g · d with d = x − x[first channel] (layer; RMS norm: d = x). Moments about a value
//          inside the data keep the variance accurate when |mean| ≫ std, and mean(g · x̂) = r · (Σ g·d − m Σ g) / G
//          with m = mean(d) needs no second pass over x.
//   pass 2 writes dx and dy · x̂.
// Channels go in chunks of 4 (scalar loads: no 16-byte alignment when G % 4 ≠ 0); the lanes of a last partial chunk
// past the unit are masked. Loop trips per invocation: 2 · ceil(G / 4) + 4; the op checks the bound.

struct Params {
  units: u32,         // rows × groups
  group_size: u32,    // G: channels per group
  groups: u32,        // groups per row
  center: u32,        // 1: subtract the mean (layer norm); 0: RMS norm
  has_weight: u32,    // 1: scale by weight_offset + weight[c] and write dy · x̂
  eps: f32,
  weight_offset: f32, // scale = weight_offset + weight[c]
}

override WG: u32 = 64u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> dy: array<f32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read> weight: array<f32>;
@group(0) @binding(4) var<storage, read_write> dx: array<f32>;
@group(0) @binding(5) var<storage, read_write> dy_xhat: array<f32>; // written only when has_weight

// Lanes of chunk k that lie inside the unit.
fn valid(k: u32) -> vec4<bool> {
  return vec4u(4u * k) + vec4u(0u, 1u, 2u, 3u) < vec4u(p.group_size);
}

fn load_x(i: u32) -> vec4f {
  return vec4f(x[i], x[i + 1u], x[i + 2u], x[i + 3u]);
}

fn load_dy(i: u32) -> vec4f {
  return vec4f(dy[i], dy[i + 1u], dy[i + 2u], dy[i + 3u]);
}

// The effective scale of channels c … c + 3.
fn scale(c: u32) -> vec4f {
  if (p.has_weight == 0u) { return vec4f(1.0); }
  return p.weight_offset + vec4f(weight[c], weight[c + 1u], weight[c + 2u], weight[c + 3u]);
}

fn store(i: u32, ok: vec4<bool>, dxv: vec4f, dyx: vec4f) {
  for (var l = 0u; l < 4u; l++) {
    if (ok[l]) {
      dx[i + l] = dxv[l];
      if (p.has_weight != 0u) { dy_xhat[i + l] = dyx[l]; }
    }
  }
}

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let u = gid.x + gid.y * nwg.x * WG;
  if (u >= p.units) { return; }
  let base = u * p.group_size;
  let channel0 = (u % p.groups) * p.group_size;
  let chunks = (p.group_size + 3u) / 4u;
  let shift = select(0.0, x[base], p.center != 0u);

  var sd = vec4f(0.0);
  var sdd = vec4f(0.0);
  var sg = vec4f(0.0);
  var sgd = vec4f(0.0);
  for (var k = 0u; k < chunks; k++) {
    let ok = valid(k);
    let d = select(vec4f(0.0), load_x(base + 4u * k) - shift, ok);
    let g = select(vec4f(0.0), load_dy(base + 4u * k) * scale(channel0 + 4u * k), ok);
    sd += d;
    sdd += d * d;
    sg += g;
    sgd += g * d;
  }
  let n = f32(p.group_size);
  let ones = vec4f(1.0);
  let m = select(0.0, dot(sd, ones) / n, p.center != 0u); // mean of d (RMS norm: 0, no centring)
  let r = inverseSqrt(max(dot(sdd, ones) / n - m * m, 0.0) + p.eps);
  let sum_g = dot(sg, ones);
  let mean_g = select(0.0, sum_g / n, p.center != 0u);
  let mean_gx = r * (dot(sgd, ones) - m * sum_g) / n;

  for (var k = 0u; k < chunks; k++) {
    let i = base + 4u * k;
    let ok = valid(k);
    let dyv = load_dy(i);
    let xhat = (load_x(i) - shift - m) * r;
    let g = dyv * scale(channel0 + 4u * k);
    let dxv = r * (g - mean_g - xhat * mean_gx);
    if (all(ok)) {
      dx[i] = dxv.x;
      dx[i + 1u] = dxv.y;
      dx[i + 2u] = dxv.z;
      dx[i + 3u] = dxv.w;
      if (p.has_weight != 0u) {
        let dyx = dyv * xhat;
        dy_xhat[i] = dyx.x;
        dy_xhat[i + 1u] = dyx.y;
        dy_xhat[i + 2u] = dyx.z;
        dy_xhat[i + 3u] = dyx.w;
      }
    } else {
      store(i, ok, dxv, dyv * xhat);
    }
  }
}
