/**
 * Float64 reference for `src/ops/matmul.ts`: C = op(A)·op(B) (+ bias), written as the textbook triple loop.
 *
 * @module
 */

/** Options of {@linkcode matmulRef}, mirroring `MatmulOptions`. */
export interface MatmulRefOptions {
  /** A is stored `[K, M]`. */
  transposeA?: boolean;
  /** B is stored `[N, K]`. */
  transposeB?: boolean;
  /** `[N]`, added to every row. */
  bias?: ArrayLike<number> | null;
}

/** `C[M, N]` (row-major) for A stored `[M, K]` or `[K, M]` and B stored `[K, N]` or `[N, K]`. */
export function matmulRef(
  a: ArrayLike<number>,
  b: ArrayLike<number>,
  m: number,
  n: number,
  k: number,
  options: MatmulRefOptions = {},
): Float64Array {
  const { transposeA = false, transposeB = false, bias = null } = options;
  const out = new Float64Array(m * n);
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) {
      let sum = bias ? bias[j] : 0;
      for (let t = 0; t < k; t++) {
        const av = transposeA ? a[t * m + i] : a[i * k + t];
        const bv = transposeB ? b[j * k + t] : b[t * n + j];
        sum += av * bv;
      }
      out[i * n + j] = sum;
    }
  }
  return out;
}

/** PyTorch `nn.Linear` on flattened rows: x `[rows, K]`, weight `[N, K]`, bias `[N]` → `[rows, N]`. */
export function linearRef(
  x: ArrayLike<number>,
  weight: ArrayLike<number>,
  bias: ArrayLike<number> | null,
  rows: number,
  n: number,
  k: number,
): Float64Array {
  return matmulRef(x, weight, rows, n, k, { transposeB: true, bias });
}
