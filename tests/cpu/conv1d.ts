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

/** Gradients of {@linkcode causalConv1dRef} (no history). */
export interface Conv1dGradRef {
  /** `[B, S, F]`. */
  dx: Float64Array;
  /** `[F, 1, KS]`. */
  dweight: Float64Array;
  /** `[F]`. */
  dbias: Float64Array;
}

/**
 * Gradients of `Σ dy · causalConv1dRef(x, ...)`, derived by hand: with pre = the convolution plus bias and
 * g = dy · act'(pre) (swish' = σ(pre)·(1 + pre·(1 − σ(pre)))),
 * `dx[b,s,f] = Σ_k w[f,k] · g[b, s + KS−1−k, f]`, `dweight[f,k] = Σ_{b,t} g[b,t,f] · x[b, t−(KS−1)+k, f]`,
 * `dbias[f] = Σ_{b,t} g[b,t,f]`.
 */
export function causalConv1dBackwardRef(
  dy: Float64Array,
  x: Float64Array,
  batch: number,
  features: number,
  weight: Float64Array,
  bias: Float64Array | null,
  swish: boolean,
): Conv1dGradRef {
  const seq = x.length / batch / features, taps = weight.length / features;
  const pre = causalConv1dRef(x, batch, features, weight, bias);
  const g = dy.map((v, i) => {
    if (!swish) return v;
    const s = 1 / (1 + Math.exp(-pre[i]));
    return v * s * (1 + pre[i] * (1 - s));
  });
  const dx = new Float64Array(x.length), dweight = new Float64Array(weight.length);
  const dbias = new Float64Array(features);
  for (let b = 0; b < batch; b++) {
    for (let t = 0; t < seq; t++) {
      for (let f = 0; f < features; f++) {
        const gv = g[(b * seq + t) * features + f];
        dbias[f] += gv;
        for (let k = 0; k < taps; k++) {
          const s = t - (taps - 1) + k; // the input time tap k reads for output t
          if (s < 0) continue;
          dx[(b * seq + s) * features + f] += weight[f * taps + k] * gv;
          dweight[f * taps + k] += gv * x[(b * seq + s) * features + f];
        }
      }
    }
  }
  return { dx, dweight, dbias };
}
