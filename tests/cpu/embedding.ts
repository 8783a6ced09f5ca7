/** Float64 reference for `embedding`: row lookup, with NaN rows for ids outside the vocabulary. */

/** `out[n, e] = weight[ids[n], e]` for weight `[V, E]`; a row of NaN where `ids[n]` is not in `[0, V)`. */
export function embeddingRef(ids: ArrayLike<number>, weight: Float64Array, dim: number): Float64Array {
  const vocab = weight.length / dim;
  const out = new Float64Array(ids.length * dim);
  for (let n = 0; n < ids.length; n++) {
    const id = ids[n];
    const row = id >= 0 && id < vocab ? weight.subarray(id * dim, (id + 1) * dim) : new Float64Array(dim).fill(NaN);
    out.set(row, n * dim);
  }
  return out;
}

/**
 * Gradient of `embeddingRef` with respect to the weight: `dweight[v, e] = Σ_{n: ids[n] = v} dOut[n, e]` for
 * `dOut [N, E]`; ids outside `[0, vocab)` contribute nothing.
 */
export function embeddingBackwardRef(
  ids: ArrayLike<number>,
  dOut: ArrayLike<number>,
  vocab: number,
  dim: number,
): Float64Array {
  const dWeight = new Float64Array(vocab * dim);
  for (let n = 0; n < ids.length; n++) {
    const id = ids[n];
    if (id < 0 || id >= vocab) continue;
    for (let e = 0; e < dim; e++) dWeight[id * dim + e] += dOut[n * dim + e];
  }
  return dWeight;
}
