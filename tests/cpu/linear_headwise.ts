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

/**
 * Gradients of `Σ dy · linearHeadwiseRef(x, ...)` (dy contiguous `[rows, heads·dout]`), derived by hand:
 * `dx[r, h·din + d] = Σ_o dy[r, h·dout + o] · w[h, o, d]`, `dweight[h, o, d] = Σ_r dy[r, h·dout + o] · x[r, h·din + d]`,
 * `dbias = Σ_r dy`.
 */
export function linearHeadwiseBackwardRef(
  dy: ArrayLike<number>,
  x: ArrayLike<number>,
  rows: number,
  weight: ArrayLike<number>,
  heads: number,
  dout: number,
  din: number,
): { dx: Float64Array; dweight: Float64Array; dbias: Float64Array } {
  const dx = new Float64Array(rows * heads * din), dweight = new Float64Array(heads * dout * din);
  const dbias = new Float64Array(heads * dout);
  for (let r = 0; r < rows; r++) {
    for (let h = 0; h < heads; h++) {
      for (let o = 0; o < dout; o++) {
        const g = dy[r * heads * dout + h * dout + o];
        dbias[h * dout + o] += g;
        for (let d = 0; d < din; d++) {
          const xi = r * heads * din + h * din + d, wi = (h * dout + o) * din + d;
          dx[xi] += g * weight[wi];
          dweight[wi] += g * x[xi];
        }
      }
    }
  }
  return { dx, dweight, dbias };
}
