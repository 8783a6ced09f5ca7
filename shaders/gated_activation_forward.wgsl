// Gated activation: out[r, c] = act(gate[r, c]) · up[r, c] (spec A3.5 GatedFeedForward, C2 SwiGLU), with in0 the
// gate half and in1 the up half of one [rows, 2P] projection (two column views of the same buffer).
// Appended to pointwise_forward.wgsl, whose bindings, unit indexing, element type V and accurate exp/expm1/sigmoid it
// uses; like them, branch-free so that V may be a vector.

// The activation, fixed per pipeline: 0 gelu (exact, erf-based), 1 relu, 2 relu², 3 sigmoid, 4 swish (silu),
// 5 selu.
override ACTIVATION: u32;

const SELU_ALPHA: f32 = 1.6732632423543772;
const SELU_SCALE: f32 = 1.0507009873554805;

// Φ(x) = ½(1 + erf(x/√2)), the standard normal CDF, to about 3e-7 relative everywhere (f32 has no erf, and
// 1 + erf(x/√2) would cancel for negative x). Coefficients: relative-error-weighted Chebyshev least-squares fits
// (float64) of
//   |x| < 0.75:      erf(x/√2)/x as a polynomial in x²                      (fit error 2e-11)
//   0.75 ≤ |x| < 3:  R(t) = Φ(−t)·e^(t²/2) in u = (t − 1.875)/1.125 ∈ [−1, 1]  (fit error 6e-9)
//   |x| ≥ 3:         t·R(t) in w = 6/t − 1 ∈ [−1, 1]                       (fit error 1e-9)
// where t = |x|; the upper tail is Φ(t) = 1 − Φ(−t), which never cancels badly (Φ(−t) ≤ 0.23).
fn normal_cdf(x: V) -> V {
  let t = abs(x);
  let s = x * x;
  let q = 0.0002295552078694216 + s * -1.677573588727933e-05;
  let e = x * (0.7978845607836049 + s * (-0.13298075769521597 + s * (0.01994706371990049 +
    s * (-0.002374275183355418 + s * q))));
  let central = 0.5 + 0.5 * e;
  // e^(−t²/2) with t² split exactly: th keeps 12 significant bits, so th² is exact in f32.
  let th = bitcast<V>(bitcast<VU>(t) & VU(0xfffff000u));
  let gauss = exp_sum(-0.5 * th * th, -0.5 * (t - th) * (t + th));
  let u = (t - 1.875) * (1.0 / 1.125);
  let hi = -0.0012134997672027705 + u * (0.000369954813327029 + u * (-0.00010616263566755797 +
    u * (2.9963233585768086e-05 + u * (-9.691567550143832e-06 + u * 2.3920945646303138e-06))));
  let r = 0.17629089153437183 + u * (-0.07694647251098584 + u * (0.030404595638781076 +
    u * (-0.011083429786235804 + u * (0.003775407656896369 + u * hi))));
  let v = 1.0 / t;
  let w = 6.0 * v - 1.0;
  let hi3 = -0.00015901252445093162 + w * (5.070452352587107e-05 + w * (7.631580865228363e-07 +
    w * (-6.545927344353964e-06 + w * (1.633923710345631e-06 + w * 2.0586155369317326e-07))));
  let q3 = 0.3886758859033827 + w * (-0.019085689242803423 + w * (-0.006962170903564165 +
    w * (0.002042087343434944 + w * (-1.601679033596983e-05 + w * hi3))));
  let tail = select(gauss * q3 * v, gauss * r, t < V(3.0));
  let negative = x < V(0.0);
  let phi = select(select(1.0 - tail, tail, negative), central, t < V(0.75));
  // Φ(−14) ≈ 8e-45: below the smallest f32
  return select(phi, select(V(1.0), V(0.0), negative), t > V(14.0));
}

fn activation(x: V) -> V {
  switch ACTIVATION {
    case 0u: {
      return x * normal_cdf(x);
    }
    case 1u: {
      return max(x, V(0.0));
    }
    case 2u: {
      let r = max(x, V(0.0));
      return r * r;
    }
    case 3u: {
      return sigmoid(x);
    }
    case 4u: {
      return silu(x);
    }
    default: {
      return SELU_SCALE * select(SELU_ALPHA * expm1_neg(min(x, V(0.0))), x, x > V(0.0));
    }
  }
}

@compute @workgroup_size(256)
fn gated_activation(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let e = units(gid, nwg);
  for (var c = e.begin; c < e.end; c++) {
    let gate = in0[at(p.in0_off, p.in0_stride, e.row, c)];
    out[at(p.out_off, p.out_stride, e.row, c)] = activation(gate) * in1[at(p.in1_off, p.in1_stride, e.row, c)];
  }
}
