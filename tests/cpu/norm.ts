/**
 * Float64 reference for `norm` (spec A3.1, A3.2, C2): per-group layer or RMS normalisation of each row, then the
 * per-channel affine.
 */

/** Options of {@linkcode normRef}, mirroring `NormOptions`. */
export interface NormRefOptions {
  /** Layer norm (mean and biased variance) or RMS norm. */
  kind: "layer" | "rms";
  /** Contiguous channel groups per row (default 1). */
  groups?: number;
  /** Added under the square root. */
  eps: number;
  /** Scale is `weightOffset + weight[c]` (default 0). */
  weightOffset?: number;
}

/** Normalises `x`, rows of `channels` values; a null weight means scale 1, a null bias no shift. */
export function normRef(
  x: Float64Array,
  channels: number,
  weight: Float64Array | null,
  bias: Float64Array | null,
  options: NormRefOptions,
): Float64Array {
  const { kind, groups = 1, eps, weightOffset = 0 } = options;
  const size = channels / groups;
  const out = new Float64Array(x.length);
  for (let start = 0; start < x.length; start += size) {
    let mean = 0;
    if (kind === "layer") {
      for (let j = 0; j < size; j++) mean += x[start + j];
      mean /= size;
    }
    let variance = 0;
    for (let j = 0; j < size; j++) variance += (x[start + j] - mean) ** 2;
    variance /= size;
    const inv = 1 / Math.sqrt(variance + eps);
    for (let j = 0; j < size; j++) {
      const c = (start + j) % channels;
      let y = (x[start + j] - mean) * inv;
      if (weight) y *= weightOffset + weight[c];
      if (bias) y += bias[c];
      out[start + j] = y;
    }
  }
  return out;
}
