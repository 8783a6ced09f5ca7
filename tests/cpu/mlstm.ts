/**
 * Float64 CPU references for the mLSTM cell forward, transcribed from the spec: the parallel stabilized form
 * (A4.1) and the recurrent step with keys scaled in the state (A4.2) or queries scaled on reading (B2.4).
 * Layout as in the reference: q, k [B,NH,S,DHQK], v [B,NH,S,DHV], gates [B,NH,S].
 */

/** Sizes of an mLSTM cell call. */
export interface MlstmDims {
  batch: number;
  heads: number;
  seq: number;
  dqk: number;
  dv: number;
}

/** logsigmoid(x) = −softplus(−x). */
export function logSigmoid(x: number): number {
  return Math.min(x, 0) - Math.log1p(Math.exp(-Math.abs(x)));
}

/** Results of {@linkcode mlstmParallelRef}: h [B,NH,S,DHV], C [B,NH,S,S], F, m, n [B,NH,S]. */
export interface MlstmParallelRef {
  h: Float64Array;
  scores: Float64Array;
  logForget: Float64Array;
  m: Float64Array;
  n: Float64Array;
}

/** `parallel_stabilized_simple` (A4.1) with eps added to the normaliser. */
export function mlstmParallelRef(
  q: ArrayLike<number>,
  k: ArrayLike<number>,
  v: ArrayLike<number>,
  igate: ArrayLike<number>,
  fgate: ArrayLike<number>,
  d: MlstmDims,
  eps = 1e-6,
): MlstmParallelRef {
  const { seq: S, dqk, dv } = d;
  const pairs = d.batch * d.heads;
  const out: MlstmParallelRef = {
    h: new Float64Array(pairs * S * dv),
    scores: new Float64Array(pairs * S * S),
    logForget: new Float64Array(pairs * S),
    m: new Float64Array(pairs * S),
    n: new Float64Array(pairs * S),
  };
  for (let p = 0; p < pairs; p++) {
    const F = new Float64Array(S);
    for (let t = 0, sum = 0; t < S; t++) F[t] = sum += logSigmoid(fgate[p * S + t]);
    for (let t = 0; t < S; t++) {
      const logD = new Float64Array(t + 1);
      let m = -Infinity;
      for (let s = 0; s <= t; s++) {
        logD[s] = F[t] - F[s] + igate[p * S + s];
        m = Math.max(m, logD[s]);
      }
      const C = new Float64Array(t + 1);
      let rowSum = 0;
      for (let s = 0; s <= t; s++) {
        let dot = 0;
        for (let e = 0; e < dqk; e++) dot += q[(p * S + t) * dqk + e] * k[(p * S + s) * dqk + e];
        C[s] = (dot / Math.sqrt(dqk)) * Math.exp(logD[s] - m);
        rowSum += C[s];
        out.scores[(p * S + t) * S + s] = C[s];
      }
      const n = Math.max(Math.abs(rowSum), Math.exp(-m));
      for (let j = 0; j < dv; j++) {
        let acc = 0;
        for (let s = 0; s <= t; s++) acc += (C[s] / (n + eps)) * v[(p * S + s) * dv + j];
        out.h[(p * S + t) * dv + j] = acc;
      }
      out.logForget[p * S + t] = F[t];
      out.m[p * S + t] = m;
      out.n[p * S + t] = n;
    }
  }
  return out;
}

/** A recurrent state: c [B,NH,DHQK,DHV], n [B,NH,DHQK], m [B,NH]. */
export interface MlstmStateRef {
  c: Float64Array;
  n: Float64Array;
  m: Float64Array;
}

/** Results of {@linkcode mlstmStepRef}: h [B,NH,DHV], the new state, and the normaliser max(|q·n'|, e^{−m'}). */
export interface MlstmStepRef extends MlstmStateRef {
  h: Float64Array;
  den: Float64Array;
}

/**
 * One recurrent step from q, k [B,NH,DHQK], v [B,NH,DHV] and gates [B,NH]: A4.2 when `keyScaledState` (k/√DHQK
 * enters the state), B2.4 otherwise (k unscaled, q·DHQK^(-1/2) reads it). A null state is zeros, m included.
 */
export function mlstmStepRef(
  q: ArrayLike<number>,
  k: ArrayLike<number>,
  v: ArrayLike<number>,
  igate: ArrayLike<number>,
  fgate: ArrayLike<number>,
  state: MlstmStateRef | null,
  d: Omit<MlstmDims, "seq">,
  keyScaledState: boolean,
  eps = 1e-6,
): MlstmStepRef {
  const { dqk, dv } = d;
  const pairs = d.batch * d.heads;
  const prev = state ?? {
    c: new Float64Array(pairs * dqk * dv),
    n: new Float64Array(pairs * dqk),
    m: new Float64Array(pairs),
  };
  const out = {
    h: new Float64Array(pairs * dv),
    c: new Float64Array(pairs * dqk * dv),
    n: new Float64Array(pairs * dqk),
    m: new Float64Array(pairs),
    den: new Float64Array(pairs),
  };
  const scale = 1 / Math.sqrt(dqk);
  for (let p = 0; p < pairs; p++) {
    const lf = logSigmoid(fgate[p]);
    const m = Math.max(lf + prev.m[p], igate[p]);
    const fa = Math.exp(lf + prev.m[p] - m);
    const ia = Math.exp(igate[p] - m);
    const kk = (e: number): number => keyScaledState ? k[p * dqk + e] * scale : k[p * dqk + e];
    const qq = (e: number): number => keyScaledState ? q[p * dqk + e] : q[p * dqk + e] * scale;
    for (let e = 0; e < dqk; e++) {
      for (let j = 0; j < dv; j++) {
        const at = (p * dqk + e) * dv + j;
        out.c[at] = fa * prev.c[at] + ia * kk(e) * v[p * dv + j];
      }
      out.n[p * dqk + e] = fa * prev.n[p * dqk + e] + ia * kk(e);
    }
    let qn = 0;
    for (let e = 0; e < dqk; e++) qn += qq(e) * out.n[p * dqk + e];
    out.den[p] = Math.max(Math.abs(qn), Math.exp(-m));
    const denom = out.den[p] + eps;
    for (let j = 0; j < dv; j++) {
      let qc = 0;
      for (let e = 0; e < dqk; e++) qc += qq(e) * out.c[(p * dqk + e) * dv + j];
      out.h[p * dv + j] = qc / denom;
    }
    out.m[p] = m;
  }
  return out;
}

/** Gradients of {@linkcode mlstmParallelBackwardRef}, head-major like its inputs. */
export interface MlstmParallelGrads {
  dq: Float64Array;
  dk: Float64Array;
  dv: Float64Array;
  digate: Float64Array;
  dfgate: Float64Array;
}

/**
 * Reverse-mode gradient of {@linkcode mlstmParallelRef}'s h for an upstream gradient `dh` [B,NH,S,DHV], through
 * every operation of `parallel_stabilized_simple` as PyTorch autograd sees it (spec A4.1, B2.5 `*_autograd`): the
 * normaliser n_t = max(|Σ_s C[t,s]|, exp(−m_t)) (torch.maximum: the larger side gets the gradient, a tie half each;
 * abs: sign(Σ)), the row max m_t (torch.max: all of it to the first argmax) and the cumsum F of logsigmoid(f̃).
 * Each step below is one node of that graph, differentiated on its own.
 *
 * With `magnitudes`, every sum of the backward instead adds the absolute values of its terms (the forward unchanged),
 * so that the result bounds the cancellation in each gradient: computed in floating point with unit roundoff u, a
 * gradient errs by about γ·u times its magnitude, γ counting the roundings along the chain. (Two sums that cancel
 * exactly are taken in closed form; see below.)
 */
export function mlstmParallelBackwardRef(
  q: ArrayLike<number>,
  k: ArrayLike<number>,
  v: ArrayLike<number>,
  igate: ArrayLike<number>,
  fgate: ArrayLike<number>,
  dh: ArrayLike<number>,
  d: MlstmDims,
  eps = 1e-6,
  magnitudes = false,
): MlstmParallelGrads {
  const { seq: S, dqk, dv: DV } = d;
  const pairs = d.batch * d.heads;
  const scale = 1 / Math.sqrt(dqk);
  const A = (x: number): number => magnitudes ? Math.abs(x) : x;
  const minus = magnitudes ? 1 : -1;
  const out: MlstmParallelGrads = {
    dq: new Float64Array(pairs * S * dqk),
    dk: new Float64Array(pairs * S * dqk),
    dv: new Float64Array(pairs * S * DV),
    digate: new Float64Array(pairs * S),
    dfgate: new Float64Array(pairs * S),
  };
  for (let p = 0; p < pairs; p++) {
    const row = (x: ArrayLike<number>, t: number, w: number): ArrayLike<number> =>
      Array.prototype.slice.call(x, (p * S + t) * w, (p * S + t + 1) * w);
    const dot = (a: ArrayLike<number>, b: ArrayLike<number>): number => {
      let s = 0;
      for (let e = 0; e < a.length; e++) s += a[e] * b[e];
      return s;
    };
    const Q = Array.from({ length: S }, (_, t) => row(q, t, dqk));
    const K = Array.from({ length: S }, (_, t) => row(k, t, dqk));
    const V = Array.from({ length: S }, (_, t) => row(v, t, DV));
    const dH = Array.from({ length: S }, (_, t) => row(dh, t, DV));
    const ig = Array.prototype.slice.call(igate, p * S, (p + 1) * S) as number[];
    const fg = Array.prototype.slice.call(fgate, p * S, (p + 1) * S) as number[];
    // Forward, keeping every intermediate.
    const F = new Float64Array(S);
    for (let t = 0, sum = 0; t < S; t++) F[t] = sum += logSigmoid(fg[t]);
    const dF = new Float64Array(S), dI = new Float64Array(S);
    for (let t = 0; t < S; t++) {
      const logD = new Float64Array(t + 1), D = new Float64Array(t + 1), qk = new Float64Array(t + 1);
      const C = new Float64Array(t + 1);
      let m = -Infinity, argmax = 0;
      for (let s = 0; s <= t; s++) {
        logD[s] = F[t] - F[s] + ig[s];
        if (logD[s] > m) [m, argmax] = [logD[s], s];
      }
      let sum = 0;
      for (let s = 0; s <= t; s++) {
        D[s] = Math.exp(logD[s] - m);
        qk[s] = dot(Q[t], K[s]) * scale;
        C[s] = qk[s] * D[s];
        sum += C[s];
      }
      const expM = Math.exp(-m);
      const n = Math.max(Math.abs(sum), expM);
      // h_t = Σ_s (C[s] / (n + eps)) v_s.
      const dW = new Float64Array(t + 1);
      for (let s = 0; s <= t; s++) {
        for (let j = 0; j < DV; j++) {
          dW[s] += A(dH[t][j] * V[s][j]);
          out.dv[(p * S + s) * DV + j] += A(C[s] / (n + eps)) * A(dH[t][j]);
        }
      }
      // W = C / (n + eps): to C directly and to n.
      const dC = new Float64Array(t + 1);
      let dn = 0;
      for (let s = 0; s <= t; s++) {
        dC[s] = dW[s] / (n + eps);
        dn += minus * (dW[s] * A(C[s])) / (n + eps) ** 2;
      }
      // n = maximum(|sum|, exp(−m)).
      const share = Math.abs(sum) > expM ? 1 : Math.abs(sum) === expM ? 0.5 : 0;
      const dSum = dn * share * A(Math.sign(sum));
      let dm = minus * dn * (1 - share) * expM;
      for (let s = 0; s <= t; s++) dC[s] += dSum;
      // C = qk·D, qk = q·k·scale, D = exp(logD − m), m = max(logD).
      for (let s = 0; s <= t; s++) {
        const dQK = dC[s] * D[s];
        for (let e = 0; e < dqk; e++) {
          out.dq[(p * S + t) * dqk + e] += dQK * A(K[s][e]) * scale;
          out.dk[(p * S + s) * dqk + e] += dQK * A(Q[t][e]) * scale;
        }
      }
      const dLogD = new Float64Array(t + 1);
      for (let s = 0; s <= t; s++) {
        dLogD[s] = dC[s] * A(qk[s]) * D[s];
        dm += minus * dLogD[s];
      }
      // With magnitudes, the max's gradient (which sums to −(dH_t·h_t)·eps/(n_t + eps)) is left out, and the row's
      // sum of d logD counts as the exp(−m) side's term it equals: an implementation forms both in closed form,
      // without the cancellation of this graph.
      if (!magnitudes) dLogD[argmax] += dm;
      // logD[t,s] = F_t − F_s + ĩ_s.
      for (let s = 0; s <= t; s++) {
        dF[s] += minus * dLogD[s];
        dI[s] += dLogD[s];
      }
      dF[t] += magnitudes ? dn * (1 - share) * expM : dLogD.reduce((a, b) => a + b, 0);
    }
    // F = cumsum(logsigmoid(f̃)): d lf_u = Σ_{t≥u} dF_t; logsigmoid'(x) = sigmoid(−x).
    for (let u = S - 1, acc = 0; u >= 0; u--) {
      acc += dF[u];
      out.dfgate[p * S + u] = acc / (1 + Math.exp(fg[u]));
      out.digate[p * S + u] = dI[u];
    }
  }
  return out;
}
