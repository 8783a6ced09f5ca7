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

/**
 * Reference outputs: y [B,S,H], final state [NS,B,H], and per step the states beyond y and the raw gates i, f, z, o
 * [NS+3,B,S,H] (the kernel's `saved`).
 */
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
  const saved = new Float64Array((ns + 3) * B * S * H);
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
          for (let g = 0; g < 4; g++) saved[((ns - 1 + g) * B + b) * S * H + t * H + j] = raw[g];
        }
      }
      state.set(y.subarray((b * S + t) * H, (b * S + t + 1) * H), b * H);
    }
  }
  return { y, state, saved };
}

/** Reference gradients: d wx [B,S,4H] (= d raw gates), dR [NH,4DH,DH], d bias [4H], d initial state [NS,B,H]. */
export interface SlstmGradients {
  dwx: Float64Array;
  dR: Float64Array;
  db: Float64Array;
  dState: Float64Array;
}

/**
 * Gradients of `Σ y·dy + Σ finalState·dFinal` through {@linkcode slstmForwardRef}, derived by hand.
 *
 * sLSTM: with m held constant the pointwise backward is (spec B1) `dc += dy·o/n`, `dn −= dy·y/n`,
 * `dĩ = i·(z·dc + dn)`, `dlfm = f·(dc·c₋ + dn·n₋)`, `df̃ = dlfm·σ(−f̃)`, `dz̃ = dc·i·(1−z²)`, `dõ = dy·(c/n)·o(1−o)`,
 * carries `f·dc`, `f·dn`. That is the exact derivative wherever the clamps min(·,1) are inactive, because every y is
 * invariant under the shift (c, n, m) → (c·e^{−δ}, n·e^{−δ}, m + δ). Two things break the invariance and are added
 * on top:
 * - a gradient on the final m: μ = dm − c·dc − n·dn (the derivative along the shift) flows back through m, to ĩ or
 *   to lfm whichever the max picked, and on to m₋ while lfm is picked;
 * - an element with n₋ = 0 takes m = ĩ and can clamp f = 1 (when lfm > ĩ): f is then constant, so its m-constant
 *   share moves from lfm to ĩ, and μ₋ = dlfm − f·(dc·c₋ + dn·n₋) picks up the difference.
 * The gradient of m₋ is dlfm; at the start that is μ + c₀·dc + n₀·dn. Exact ties (ĩ == lfm) are not special-cased.
 */
export function slstmBackwardRef(
  wx: ArrayLike<number>,
  r: ArrayLike<number>,
  bias: ArrayLike<number>,
  state0: ArrayLike<number> | null,
  dy: ArrayLike<number>,
  dFinal: ArrayLike<number> | null,
  dims: SlstmDims,
): SlstmGradients {
  const { batch: B, seq: S, hidden: H, numHeads: NH, fn } = dims;
  const DH = H / NH;
  const ns = fn === "lstm" ? 2 : 4;
  const fwd = slstmForwardRef(wx, r, bias, state0, dims);
  const s0 = state0 ?? new Float64Array(ns * B * H);
  // Component s (0 y, 1 c, 2 n, 3 m) of the state before step t.
  const prev = (s: number, b: number, t: number, j: number): number => {
    if (t === 0) return s0[(s * B + b) * H + j];
    const at = (b * S + t - 1) * H + j;
    return s === 0 ? fwd.y[at] : fwd.saved[((s - 1) * B) * S * H + at];
  };
  const carry = dFinal ? Float64Array.from(dFinal) : new Float64Array(ns * B * H); // (dy_rec, dc, dn, dm → μ)
  const P = B * H;
  if (fn === "slstm") {
    for (let b = 0; b < B; b++) {
      for (let j = 0; j < H; j++) {
        const k = b * H + j;
        carry[3 * P + k] -= prev(1, b, S, j) * carry[P + k] + prev(2, b, S, j) * carry[2 * P + k];
      }
    }
  }
  const dwx = new Float64Array(B * S * 4 * H);
  const dR = new Float64Array(NH * 4 * DH * DH);
  const db = new Float64Array(4 * H);
  const raw = new Float64Array(4);
  const draw = new Float64Array(4 * H);
  for (let t = S - 1; t >= 0; t--) {
    for (let b = 0; b < B; b++) {
      for (let j = 0; j < H; j++) {
        const h = Math.floor(j / DH), d = j % DH;
        for (let g = 0; g < 4; g++) {
          let ry = 0;
          for (let k = 0; k < DH; k++) ry += prev(0, b, t, h * DH + k) * r[(h * 4 * DH + g * DH + d) * DH + k];
          raw[g] = wx[(b * S + t) * 4 * H + g * H + j] + ry + bias[g * H + j];
        }
        const [ir, fr, zr, or] = raw;
        const k = b * H + j;
        const dyt = dy[(b * S + t) * H + j] + carry[k];
        const cPrev = prev(1, b, t, j);
        const z = Math.tanh(zr), o = sigmoid(or);
        let dc = carry[P + k];
        let di: number, df: number, dz: number, dout: number, f: number;
        if (fn === "lstm") {
          const i = sigmoid(ir);
          f = sigmoid(fr);
          const tc = Math.tanh(f * cPrev + i * z);
          dc += dyt * o * (1 - tc * tc);
          di = dc * z * i * (1 - i);
          df = dc * cPrev * f * (1 - f);
          dz = dc * i * (1 - z * z);
          dout = dyt * tc * o * (1 - o);
        } else {
          const nPrev = prev(2, b, t, j), mPrev = prev(3, b, t, j);
          const lfm = mPrev + logSigmoid(fr);
          const zeroN = nPrev === 0;
          const m = zeroN ? ir : Math.max(ir, lfm);
          const i = Math.min(Math.exp(ir - m), 1);
          f = Math.min(Math.exp(lfm - m), 1);
          const c = f * cPrev + i * z, n = f * nPrev + i;
          let dn = carry[2 * P + k];
          dc += dyt * o / n;
          dn -= dyt * o * c / (n * n);
          const gf = dc * cPrev + dn * nPrev;
          di = i * (z * dc + dn);
          let dl = f * gf;
          if (zeroN && lfm > ir) { // f clamped to 1
            di += dl;
            dl = 0;
          }
          const mu = carry[3 * P + k];
          if (!zeroN && lfm > ir) dl += mu;
          else di += mu;
          carry[3 * P + k] = dl - f * gf;
          carry[2 * P + k] = f * dn;
          df = dl * sigmoid(-fr);
          dz = dc * i * (1 - z * z);
          dout = dyt * (c / n) * o * (1 - o);
        }
        carry[P + k] = f * dc;
        [di, df, dz, dout].forEach((v, g) => {
          draw[g * H + j] = v;
          dwx[(b * S + t) * 4 * H + g * H + j] = v;
          db[g * H + j] += v;
        });
      }
      for (let h = 0; h < NH; h++) {
        for (let k = 0; k < DH; k++) {
          let acc = 0;
          for (let g = 0; g < 4; g++) {
            for (let d = 0; d < DH; d++) {
              const w = (h * 4 * DH + g * DH + d) * DH + k;
              acc += r[w] * draw[g * H + h * DH + d];
              dR[w] += draw[g * H + h * DH + d] * prev(0, b, t, h * DH + k);
            }
          }
          carry[b * H + h * DH + k] = acc;
        }
      }
    }
  }
  if (fn === "slstm") {
    for (let b = 0; b < B; b++) {
      for (let j = 0; j < H; j++) {
        const k = b * H + j;
        carry[3 * P + k] += prev(1, b, 0, j) * carry[P + k] + prev(2, b, 0, j) * carry[2 * P + k];
      }
    }
  }
  return { dwx, dR, db, dState: carry };
}
