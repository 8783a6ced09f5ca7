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

/** Gradients of {@linkcode normRef}; `dweight` / `dbias` are null when the weight / bias is. */
export interface NormGradRef {
  /** Gradient of x. */
  dx: Float64Array;
  /** Gradient of the stored weight (the same for either weightOffset). */
  dweight: Float64Array | null;
  /** Gradient of the bias. */
  dbias: Float64Array | null;
}

/**
 * Gradients of `Σ dy · normRef(x, ...)`, derived by hand. Per group of G values with x̂ = (x − mean) · r
 * (layer; RMS norm: x̂ = x · r), r = 1 / sqrt(var + eps), and g = dy · scale:
 * layer: dx = r · (g − mean(g) − x̂ · mean(g · x̂)); RMS: dx = r · (g − x̂ · mean(g · x̂)).
 * dweight = Σ_rows dy · x̂, dbias = Σ_rows dy.
 */
export function normBackwardRef(
  dy: Float64Array,
  x: Float64Array,
  channels: number,
  weight: Float64Array | null,
  bias: Float64Array | null,
  options: NormRefOptions,
): NormGradRef {
  const { kind, groups = 1, eps, weightOffset = 0 } = options;
  const size = channels / groups;
  const dx = new Float64Array(x.length);
  const dweight = weight ? new Float64Array(channels) : null;
  const dbias = bias ? new Float64Array(channels) : null;
  const xhat = new Float64Array(size), g = new Float64Array(size);
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
    let meanG = 0, meanGX = 0;
    for (let j = 0; j < size; j++) {
      const c = (start + j) % channels;
      xhat[j] = (x[start + j] - mean) * inv;
      g[j] = dy[start + j] * (weight ? weightOffset + weight[c] : 1);
      meanG += g[j] / size;
      meanGX += g[j] * xhat[j] / size;
      if (dweight) dweight[c] += dy[start + j] * xhat[j];
      if (dbias) dbias[c] += dy[start + j];
    }
    if (kind === "rms") meanG = 0;
    for (let j = 0; j < size; j++) dx[start + j] = inv * (g[j] - meanG - xhat[j] * meanGX);
  }
  return { dx, dweight, dbias };
}
