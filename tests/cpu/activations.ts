/**
 * Float64 references for the gated activations and the pointwise ops (spec A3.5, A4 steps 5–6, C2). JavaScript has
 * no erf, so this file carries its own: a positive-term series below 2 and a continued fraction above (both to about
 * 1e-14 relative; `gated_activation_test.ts` checks them against tabulated values).
 */

const TWO_OVER_SQRT_PI = 2 / Math.sqrt(Math.PI);

/** erf(z) for 0 ≤ z < 2: (2/√π)·e^(−z²)·Σₙ 2ⁿ z^(2n+1) / (1·3·…·(2n+1)), all terms positive (no cancellation). */
function erfSeries(z: number): number {
  let term = z, sum = z;
  for (let n = 1; term > 1e-18 * sum; n++) {
    term *= (2 * z * z) / (2 * n + 1);
    sum += term;
  }
  return TWO_OVER_SQRT_PI * Math.exp(-z * z) * sum;
}

/** erfc(z) for z ≥ 2: e^(−z²)/√π / (z + (1/2)/(z + 1/(z + (3/2)/(z + …)))), evaluated from the 300th level up. */
function erfcFraction(z: number): number {
  let f = z;
  for (let k = 300; k >= 1; k--) f = z + k / 2 / f;
  return Math.exp(-z * z) / (Math.sqrt(Math.PI) * f);
}

/** The complementary error function, relatively accurate in both tails. */
export function erfc(z: number): number {
  if (Number.isNaN(z)) return NaN;
  if (z < 0) return 2 - erfc(-z);
  return z < 2 ? 1 - erfSeries(z) : erfcFraction(z);
}

/** The error function. */
export function erf(z: number): number {
  if (z < 0) return -erf(-z);
  return z < 2 ? erfSeries(z) : 1 - erfcFraction(z);
}

/** Exact GELU, x·Φ(x) = x/2·erfc(−x/√2) (PyTorch's approximate='none'). */
export function gelu(x: number): number {
  return 0.5 * x * erfc(-x / Math.SQRT2);
}

/** Logistic sigmoid. */
export function sigmoid(x: number): number {
  return x >= 0 ? 1 / (1 + Math.exp(-x)) : Math.exp(x) / (1 + Math.exp(x));
}

/** PyTorch's selu constants. */
const SELU_ALPHA = 1.6732632423543772, SELU_SCALE = 1.0507009873554805;

/** The activations of the reference's `act_fn` registry, by name. */
export const ACTIVATIONS: Record<string, (x: number) => number> = {
  gelu,
  relu: (x) => Math.max(x, 0),
  "relu^2": (x) => Math.max(x, 0) ** 2,
  sigmoid,
  swish: (x) => x * sigmoid(x),
  selu: (x) => SELU_SCALE * (x > 0 ? x : SELU_ALPHA * Math.expm1(x)),
};

/** `act(x[r, :P]) ⊙ x[r, P:]` over rows of width 2P; returns rows of width P. */
export function gatedActivationRef(x: ArrayLike<number>, width: number, activation: string): Float64Array {
  const act = ACTIVATIONS[activation], p = width / 2, rows = x.length / width;
  const out = new Float64Array(rows * p);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < p; c++) out[r * p + c] = act(x[r * width + c]) * x[r * width + p + c];
  }
  return out;
}

/** `cap · tanh(x / cap)`. */
export function softCapRef(x: ArrayLike<number>, cap: number): Float64Array {
  return Float64Array.from(x, (v) => cap * Math.tanh(v / cap));
}

/** `sigmoid(o) ⊙ h`. */
export function sigmoidGateRef(o: ArrayLike<number>, h: ArrayLike<number>): Float64Array {
  return Float64Array.from(o, (v, i) => sigmoid(v) * h[i]);
}

/**
 * `(hNorm + skip ⊙ xConv) ⊙ silu(z)` over rows of D = skip.length; z is read at `z[zOffset + r · zStride + c]`.
 */
export function mlstmOutputGateRef(
  hNorm: ArrayLike<number>,
  skip: ArrayLike<number>,
  xConv: ArrayLike<number>,
  z: ArrayLike<number>,
  zOffset: number,
  zStride: number,
): Float64Array {
  const d = skip.length, out = new Float64Array(hNorm.length);
  for (let i = 0; i < out.length; i++) {
    const r = Math.floor(i / d), c = i % d;
    const zv = z[zOffset + r * zStride + c];
    out[i] = (hNorm[i] + skip[c] * xConv[i]) * zv * sigmoid(zv);
  }
  return out;
}

// ---- Gradients (derived by hand; the tests check each against central differences of the forwards above).

/** Standard normal density φ(x). */
function normalPdf(x: number): number {
  return Math.exp(-0.5 * x * x) / Math.sqrt(2 * Math.PI);
}

/** Derivatives of {@linkcode ACTIVATIONS}: PyTorch's values at the kinks (relu, relu² 0 at 0; selu scale·α at 0). */
export const ACTIVATION_DERIVATIVES: Record<string, (x: number) => number> = {
  gelu: (x) => 0.5 * erfc(-x / Math.SQRT2) + x * normalPdf(x),
  relu: (x) => (x > 0 ? 1 : 0),
  "relu^2": (x) => 2 * Math.max(x, 0),
  sigmoid: (x) => sigmoid(x) * sigmoid(-x),
  swish: (x) => sigmoid(x) * (1 + x * sigmoid(-x)),
  selu: (x) => SELU_SCALE * (x > 0 ? 1 : SELU_ALPHA * Math.exp(x)),
};

/** Gradient of {@linkcode gatedActivationRef} for upstream `dy` (rows of P): rows of 2P, `[dy·up·act'(g) | dy·act(g)]`. */
export function gatedActivationBackwardRef(
  dy: ArrayLike<number>,
  x: ArrayLike<number>,
  width: number,
  activation: string,
): Float64Array {
  const act = ACTIVATIONS[activation], d = ACTIVATION_DERIVATIVES[activation], p = width / 2;
  const dx = new Float64Array(x.length);
  for (let r = 0; r < x.length / width; r++) {
    for (let c = 0; c < p; c++) {
      const g = x[r * width + c], up = x[r * width + p + c], u = dy[r * p + c];
      dx[r * width + c] = u * up * d(g);
      dx[r * width + p + c] = u * act(g);
    }
  }
  return dx;
}

/** Gradient of {@linkcode softCapRef}: `dy · (1 − tanh²(x / cap))`. */
export function softCapBackwardRef(dy: ArrayLike<number>, x: ArrayLike<number>, cap: number): Float64Array {
  return Float64Array.from(x, (v, i) => dy[i] / Math.cosh(v / cap) ** 2);
}

/** Gradients of {@linkcode sigmoidGateRef}: `do = dy·h·σ(o)·σ(−o)`, `dh = dy·σ(o)`. */
export function sigmoidGateBackwardRef(
  dy: ArrayLike<number>,
  o: ArrayLike<number>,
  h: ArrayLike<number>,
): { do: Float64Array; dh: Float64Array } {
  return {
    do: Float64Array.from(o, (v, i) => dy[i] * h[i] * sigmoid(v) * sigmoid(-v)),
    dh: Float64Array.from(o, (v, i) => dy[i] * sigmoid(v)),
  };
}

/** Gradients of {@linkcode mlstmOutputGateRef} (z read as there); dz is contiguous rows of D. */
export function mlstmOutputGateBackwardRef(
  dy: ArrayLike<number>,
  hNorm: ArrayLike<number>,
  skip: ArrayLike<number>,
  xConv: ArrayLike<number>,
  z: ArrayLike<number>,
  zOffset: number,
  zStride: number,
): { dhNorm: Float64Array; dskip: Float64Array; dxConv: Float64Array; dz: Float64Array } {
  const d = skip.length, n = hNorm.length;
  const dhNorm = new Float64Array(n), dxConv = new Float64Array(n), dz = new Float64Array(n);
  const dskip = new Float64Array(d);
  for (let i = 0; i < n; i++) {
    const r = Math.floor(i / d), c = i % d;
    const zv = z[zOffset + r * zStride + c], s = sigmoid(zv);
    dhNorm[i] = dy[i] * zv * s;
    dxConv[i] = dhNorm[i] * skip[c];
    dskip[c] += dhNorm[i] * xConv[i];
    dz[i] = dy[i] * (hNorm[i] + skip[c] * xConv[i]) * s * (1 + zv * (1 - s));
  }
  return { dhNorm, dskip, dxConv, dz };
}

/**
 * Central differences `(L(x + h·eᵢ) − L(x − h·eᵢ)) / 2h` of a scalar function for every element of `x` (restored
 * afterwards). Shared by the backward tests to check the hand-derived gradients above and in the other references.
 */
export function centralDifferences(loss: (x: Float64Array) => number, x: Float64Array, h = 1e-6): Float64Array {
  const grad = new Float64Array(x.length);
  for (let i = 0; i < x.length; i++) {
    const v = x[i];
    x[i] = v + h;
    const up = loss(x);
    x[i] = v - h;
    const down = loss(x);
    x[i] = v;
    grad[i] = (up - down) / (2 * h);
  }
  return grad;
}

/** `Σ a · b`: the scalar loss whose gradient with respect to an output is the upstream `a`. */
export function dot(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * b[i];
  return s;
}
