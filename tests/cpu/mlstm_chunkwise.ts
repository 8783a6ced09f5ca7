/**
 * Float64 CPU reference of the chunkwise mLSTM forward (spec B2.3, mlstm_kernels convention: k unscaled in the
 * state, q scaled by DHQK^(-1/2), m_0 = 0). Layout as in the reference: q, k [B,NH,S,DHQK], v [B,NH,S,DHV], gates
 * [B,NH,S]; states c [B,NH,DHQK,DHV], n [B,NH,DHQK], m [B,NH].
 */

import { logSigmoid, type MlstmDims, type MlstmStateRef } from "./mlstm.ts";

/** h [B,NH,S,DHV] and the final state. */
export interface MlstmChunkwiseRef extends MlstmStateRef {
  h: Float64Array;
}

/** B2.3 with chunks of `chunk` steps, from `state` (null: zeros). */
export function mlstmChunkwiseRef(
  q: ArrayLike<number>,
  k: ArrayLike<number>,
  v: ArrayLike<number>,
  igate: ArrayLike<number>,
  fgate: ArrayLike<number>,
  state: MlstmStateRef | null,
  d: MlstmDims,
  chunk: number,
  eps = 1e-6,
): MlstmChunkwiseRef {
  const { seq: S, dqk, dv } = d;
  const pairs = d.batch * d.heads;
  const s = 1 / Math.sqrt(dqk);
  const out: MlstmChunkwiseRef = {
    h: new Float64Array(pairs * S * dv),
    c: state ? Float64Array.from(state.c) : new Float64Array(pairs * dqk * dv),
    n: state ? Float64Array.from(state.n) : new Float64Array(pairs * dqk),
    m: state ? Float64Array.from(state.m) : new Float64Array(pairs),
  };
  const dot = (a: ArrayLike<number>, ai: number, b: ArrayLike<number>, bi: number): number => {
    let sum = 0;
    for (let e = 0; e < dqk; e++) sum += a[ai + e] * b[bi + e];
    return sum;
  };
  for (let p = 0; p < pairs; p++) {
    const C = out.c.subarray(p * dqk * dv, (p + 1) * dqk * dv), n = out.n.subarray(p * dqk, (p + 1) * dqk);
    for (let t0 = 0; t0 < S; t0 += chunk) {
      const row = (j: number): number => p * S + t0 + j;
      const lf = Array.from({ length: chunk }, (_, j) => logSigmoid(fgate[row(j)]));
      const b = new Float64Array(chunk);
      for (let j = 0, sum = 0; j < chunk; j++) b[j] = sum += lf[j];
      const a = new Float64Array(chunk);
      for (let j = chunk - 1, after = 0; j >= 0; after += lf[j--]) a[j] = after + igate[row(j)];
      const mPrev = out.m[p];
      // Outputs read the state before the chunk.
      for (let j = 0; j < chunk; j++) {
        const logD = Array.from({ length: j + 1 }, (_, l) => b[j] - b[l] + igate[row(l)]);
        const mComb = Math.max(b[j] + mPrev, ...logD);
        const rho = Math.exp(b[j] + mPrev - mComb) * s;
        const w = logD.map((x, l) => Math.exp(x - mComb) * s * dot(q, row(j) * dqk, k, row(l) * dqk));
        let den = rho * dot(q, row(j) * dqk, n, 0) + w.reduce((x, y) => x + y, 0);
        den = Math.max(Math.abs(den), Math.exp(-mComb)) + eps;
        for (let c = 0; c < dv; c++) {
          let num = 0;
          for (let e = 0; e < dqk; e++) num += q[row(j) * dqk + e] * C[e * dv + c];
          num *= rho;
          for (let l = 0; l <= j; l++) num += w[l] * v[row(l) * dv + c];
          out.h[row(j) * dv + c] = num / den;
        }
      }
      const g = b[chunk - 1];
      const m = Math.max(g + mPrev, ...a);
      const decay = Math.exp(g + mPrev - m);
      for (let e = 0; e < dqk; e++) {
        for (let c = 0; c < dv; c++) {
          let sum = decay * C[e * dv + c];
          for (let j = 0; j < chunk; j++) sum += Math.exp(a[j] - m) * k[row(j) * dqk + e] * v[row(j) * dv + c];
          C[e * dv + c] = sum;
        }
        let sum = decay * n[e];
        for (let j = 0; j < chunk; j++) sum += Math.exp(a[j] - m) * k[row(j) * dqk + e];
        n[e] = sum;
      }
      out.m[p] = m;
    }
  }
  return out;
}
