// Accurate f32 math on the element alias V (f32 or vec4f, with integer companions VI and VU), which the including op
// declares. Shared by the pointwise kernels and by kernels that fuse a pointwise step into their loads or stores
// (src/ops/wgsl_math.ts), so a fused result is computed exactly as the separate kernel computes it.
//
// Vendor exp/tanh lose relative accuracy (lavapipe: exp 4e-6 near |x| = 87 because it
// computes exp2(x·log2 e); tanh 1 % near 0 because it computes (eˣ − e⁻ˣ)/(eˣ + e⁻ˣ)), so these reduce the
// argument exactly and use short series.

const LN2_HI: f32 = 0.693145751953125; // ln 2 to 16 bits: n · LN2_HI is exact for |n| < 256
const LN2_LO: f32 = 1.42860682030941723e-6; // ln 2 − LN2_HI
const F32_MAX: f32 = 3.40282347e38;

// eʳ − 1 for |r| ≤ ln(2)/2 + small: Taylor to r⁸ (truncation < 1e-9 relative).
fn expm1_reduced(r: V) -> V {
  let q = 1.0 / 5040.0 + r * (1.0 / 40320.0);
  let s = 1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * q));
  return r * (1.0 + r * (0.5 + r * (1.0 / 6.0 + r * s)));
}

// e^(hi + lo) for hi + lo ≤ 0 with |lo| ≪ |hi|: the argument is reduced before hi and lo are added, so an exact
// hi keeps all its bits (Cody–Waite reduction, then a power-of-two scale). 0 below −104.
fn exp_sum(hi: V, lo: V) -> V {
  let a = hi + lo;
  let n = round(max(a, V(-105.0)) * 1.44269504088896341);
  let r = (hi - n * LN2_HI) - n * LN2_LO + lo;
  return select(ldexp(1.0 + expm1_reduced(r), VI(n)), V(0.0), a < V(-104.0));
}

// eˣ − 1 for x ≤ 0, accurate near 0.
fn expm1_neg(x: V) -> V {
  return select(exp_sum(x, V(0.0)) - 1.0, expm1_reduced(x), x > V(-0.34657359));
}

// tanh as −expm1(−2|y|) / (2 + expm1(−2|y|)): relative accuracy near 0, exactly ±1 (never NaN) for large |y|.
fn tanh_accurate(y: V) -> V {
  let e = expm1_neg(-2.0 * min(abs(y), V(F32_MAX / 4.0)));
  let t = -e / (2.0 + e);
  return select(t, -t, y < V(0.0));
}

// 1 / (1 + e⁻ˣ), from e^−|x| so that nothing overflows and small results keep their relative accuracy.
fn sigmoid(x: V) -> V {
  let e = exp_sum(-min(abs(x), V(F32_MAX)), V(0.0));
  return select(e, V(1.0), x >= V(0.0)) / (1.0 + e);
}

fn silu(x: V) -> V {
  return x * sigmoid(x);
}
