/** Float64 references for the depthwise causal conv1d of spec A3.3: the full forward and the recurrent step. */

/** Options of {@linkcode causalConv1dRef}. */
export interface Conv1dRefOptions {
  /** Apply `y · sigmoid(y)` to the output. */
  swish?: boolean;
  /** `[B, H, F]`: its last frames precede time 0 (zeros when absent). */
  history?: { frames: number; values: Float64Array } | null;
}

/**
 * `y[b,t,f] = bias[f] + Σ_k weight[f,0,k] · x[b, t − (KS−1) + k, f]` for x `[B, S, F]`, weight `[F, 1, KS]`.
 */
export function causalConv1dRef(
  x: Float64Array,
  batch: number,
  features: number,
  weight: Float64Array,
  bias: Float64Array | null,
  options: Conv1dRefOptions = {},
): Float64Array {
  const seq = x.length / batch / features, taps = weight.length / features;
  const h = options.history;
  const at = (b: number, t: number, f: number): number => {
    if (t >= 0) return x[(b * seq + t) * features + f];
    return h ? h.values[(b * h.frames + h.frames + t) * features + f] : 0;
  };
  const y = new Float64Array(x.length);
  for (let b = 0; b < batch; b++) {
    for (let t = 0; t < seq; t++) {
      for (let f = 0; f < features; f++) {
        let v = bias ? bias[f] : 0;
        for (let k = 0; k < taps; k++) v += weight[f * taps + k] * at(b, t - (taps - 1) + k, f);
        y[(b * seq + t) * features + f] = options.swish ? v / (1 + Math.exp(-v)) : v;
      }
    }
  }
  return y;
}

/**
 * The reference's `step`: roll the window `state [B, KS, F]` left by one, write `x [B, F]` into the last slot, then
 * `y = Σ_k state[:, k, :] · W[k, :] + bias` with `W = weight[:, 0, :]ᵀ`. Returns the new state and y `[B, F]`.
 */
export function conv1dStepRef(
  state: Float64Array,
  x: Float64Array,
  weight: Float64Array,
  bias: Float64Array | null,
  taps: number,
): { state: Float64Array; y: Float64Array } {
  const features = weight.length / taps, batch = x.length / features;
  const next = new Float64Array(state.length);
  for (let b = 0; b < batch; b++) {
    const base = b * taps * features;
    next.set(state.subarray(base + features, base + taps * features), base);
    next.set(x.subarray(b * features, (b + 1) * features), base + (taps - 1) * features);
  }
  const y = new Float64Array(x.length);
  for (let b = 0; b < batch; b++) {
    for (let f = 0; f < features; f++) {
      let v = bias ? bias[f] : 0;
      for (let k = 0; k < taps; k++) v += next[(b * taps + k) * features + f] * weight[f * taps + k];
      y[b * features + f] = v;
    }
  }
  return { state: next, y };
}
