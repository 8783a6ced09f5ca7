/** Float64 reference of `LinearHeadwiseExpand` (spec A3.4): a block-diagonal linear, one block per head. */

/**
 * `y[r, h·dout + o] = Σ_d x[r, h·din + d] · weight[h, o, d] + bias[h·dout + o]` for x of `rows` rows of `heads·din`
 * (contiguous) and weight `[heads, dout, din]`; returns `[rows, heads·dout]`.
 */
export function linearHeadwiseRef(
  x: ArrayLike<number>,
  rows: number,
  weight: ArrayLike<number>,
  heads: number,
  dout: number,
  din: number,
  bias: ArrayLike<number> | null,
): Float64Array {
  const cols = heads * dout, y = new Float64Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    for (let h = 0; h < heads; h++) {
      for (let o = 0; o < dout; o++) {
        let acc = bias ? bias[h * dout + o] : 0;
        for (let d = 0; d < din; d++) acc += x[r * heads * din + h * din + d] * weight[(h * dout + o) * din + d];
        y[r * cols + h * dout + o] = acc;
      }
    }
  }
  return y;
}
