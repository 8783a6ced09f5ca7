/** Float64 references for `AdamW` (PyTorch's update, written from its documented algorithm) and `clipGradNorm`. */

/** One parameter's float64 AdamW state. */
export interface AdamWRefState {
  param: Float64Array;
  m: Float64Array;
  v: Float64Array;
  step: number;
}

/** Hyper-parameters of {@linkcode adamwRefStep}. */
export interface AdamWRefOptions {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
}

/** One AdamW step in place: decoupled decay, moment updates, bias-corrected update. */
export function adamwRefStep(s: AdamWRefState, grad: ArrayLike<number>, o: AdamWRefOptions): void {
  s.step++;
  const bc1 = 1 - o.beta1 ** s.step, bc2 = 1 - o.beta2 ** s.step;
  for (let i = 0; i < s.param.length; i++) {
    const g = grad[i];
    s.param[i] *= 1 - o.lr * o.weightDecay;
    s.m[i] = o.beta1 * s.m[i] + (1 - o.beta1) * g;
    s.v[i] = o.beta2 * s.v[i] + (1 - o.beta2) * g * g;
    const mHat = s.m[i] / bc1, vHat = s.v[i] / bc2;
    s.param[i] -= (o.lr * mHat) / (Math.sqrt(vHat) + o.eps);
  }
}

/** Global L2 norm of `grads` and the clipped copies: each scaled by `min(1, maxNorm / (norm + 1e-6))`. */
export function clipGradNormRef(
  grads: ArrayLike<number>[],
  maxNorm: number,
): { norm: number; clipped: Float64Array[] } {
  let sq = 0;
  for (const g of grads) for (let i = 0; i < g.length; i++) sq += g[i] * g[i];
  const norm = Math.sqrt(sq);
  const factor = Math.min(1, maxNorm / (norm + 1e-6));
  return { norm, clipped: grads.map((g) => Float64Array.from(g, (x) => x * factor)) };
}
