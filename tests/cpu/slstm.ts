/**
 * Float64 reference of the sLSTM / LSTM cell recurrence (spec A5.1), written for clarity, not speed.
 * Layouts are those of `slstmRecurrentForward`: wx [B,S,4H] gate-major, R [NH,4DH,DH] (row g·DH+d_out, column
 * d_in), bias [4H] gate-major, state [NS,B,H], y [B,S,H].
 */

/** Sizes and function of a reference run. */
export interface SlstmDims {
  batch: number;
  seq: number;
  hidden: number;
  numHeads: number;
  fn: "slstm" | "lstm";
}

/** Reference outputs: y [B,S,H], final state [NS,B,H], and per-step states beyond y [NS-1,B,S,H]. */
export interface SlstmReference {
  y: Float64Array;
  state: Float64Array;
  saved: Float64Array;
}

const sigmoid = (x: number): number => 1 / (1 + Math.exp(-x));
const logSigmoid = (x: number): number => Math.min(x, 0) - Math.log1p(Math.exp(-Math.abs(x)));

/**
 * Runs the recurrence. The "n == 0 → m = ĩ" test is per element, as the GPU kernel does (equal to the vanilla
 * batch-global test for zero states and states with every n ≠ 0).
 */
export function slstmForwardRef(
  wx: ArrayLike<number>,
  r: ArrayLike<number>,
  bias: ArrayLike<number>,
  state0: ArrayLike<number> | null,
  dims: SlstmDims,
): SlstmReference {
  const { batch: B, seq: S, hidden: H, numHeads: NH, fn } = dims;
  const DH = H / NH;
  const ns = fn === "lstm" ? 2 : 4;
  const state = state0 ? Float64Array.from(state0) : new Float64Array(ns * B * H);
  const y = new Float64Array(B * S * H);
  const saved = new Float64Array((ns - 1) * B * S * H);
  const at = (s: number, b: number, j: number): number => (s * B + b) * H + j;
  const raw = new Float64Array(4);
  for (let t = 0; t < S; t++) {
    for (let b = 0; b < B; b++) {
      const yPrev = state.slice(b * H, (b + 1) * H);
      for (let h = 0; h < NH; h++) {
        for (let d = 0; d < DH; d++) {
          const j = h * DH + d;
          for (let g = 0; g < 4; g++) {
            let ry = 0;
            for (let k = 0; k < DH; k++) ry += yPrev[h * DH + k] * r[(h * 4 * DH + g * DH + d) * DH + k];
            raw[g] = wx[(b * S + t) * 4 * H + g * H + j] + ry + bias[g * H + j];
          }
          const [ir, fr, zr, or] = raw;
          const cPrev = state[at(1, b, j)];
          let c: number, yNew: number;
          if (fn === "lstm") {
            c = sigmoid(fr) * cPrev + sigmoid(ir) * Math.tanh(zr);
            yNew = sigmoid(or) * Math.tanh(c);
          } else {
            const nPrev = state[at(2, b, j)], mPrev = state[at(3, b, j)];
            const lfm = mPrev + logSigmoid(fr);
            const m = nPrev === 0 ? ir : Math.max(ir, lfm);
            const i = Math.min(Math.exp(ir - m), 1), f = Math.min(Math.exp(lfm - m), 1);
            c = f * cPrev + i * Math.tanh(zr);
            const n = f * nPrev + i;
            yNew = sigmoid(or) * c / n;
            state[at(2, b, j)] = n;
            state[at(3, b, j)] = m;
          }
          state[at(1, b, j)] = c;
          y[(b * S + t) * H + j] = yNew;
          for (let s = 1; s < ns; s++) saved[((s - 1) * B + b) * S * H + t * H + j] = state[at(s, b, j)];
        }
      }
      state.set(y.subarray((b * S + t) * H, (b * S + t + 1) * H), b * H);
    }
  }
  return { y, state, saved };
}
