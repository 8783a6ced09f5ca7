import assert from "node:assert/strict";
import type { Gpu } from "../src/gpu/runtime.ts";
import {
  MLSTM_MAX_LOOP,
  mlstmParallelBackward,
  mlstmParallelForward,
  mlstmParallelForwardWithCache,
  mlstmRecurrentStep,
  type MlstmState,
} from "../src/ops/mlstm.ts";
import { readSafetensors } from "../src/safetensors.ts";
import { columns, matrix, type MatrixView, Tensor } from "../src/tensor.ts";
import {
  type MlstmDims,
  mlstmParallelBackwardRef,
  type MlstmParallelRef,
  mlstmParallelRef,
  type MlstmStateRef,
  type MlstmStepRef,
  mlstmStepRef,
} from "./cpu/mlstm.ts";
import { softCapRef } from "./cpu/activations.ts";
import { assertClose, closeTestGpu, freshRng, relativeError, type Rng, testGpu } from "./util.ts";

// Well-conditioned results (F, m, the scores, n, the states) are checked against 1e-5 of their largest value.
// h divides by n_t = |Σ_s C[t,s]| (or by |q·n| in a step), and random q·k of both signs cancel in that sum: the
// f32 error of h_t grows with Σ_s|C[t,s]| / |Σ_s C[t,s]|, which realistic inputs push past 100 (measured: up to
// 5e-4 of max|h| over 30 seeds at S = 64; PyTorch's own float32 run has the same amplification). So h is checked
// element by element against its first-order rounding bound instead (see roundingBound), which is about 1e-5 of
// |h| where nothing cancels and widens only where the reference itself is ill-conditioned.
const TOL = 1e-5;
const U = 2 ** -24; // f32 unit roundoff

/**
 * First-order f32 error bound of h = num / (den + eps), num and den being sums whose terms are computed with
 * `gamma` rounded operations: gamma·u·(Σ|terms of num| + |h|·Σ|terms of den|) / (den + eps). The absolute sums come
 * from running the reference on |q|, |k|, |v| (the gates, hence the decay weights, unchanged): numAbs = hAbs·(denAbs
 * + eps).
 */
function roundingBound(gamma: number, h: number, den: number, hAbs: number, denAbs: number, eps = 1e-6): number {
  return gamma * U * (hAbs * (denAbs + eps) + Math.abs(h) * denAbs) / (den + eps);
}

/** Throws unless |got[i] − want[i]| ≤ bound[i] everywhere, naming the worst element. */
function assertWithinBound(
  got: ArrayLike<number>,
  want: ArrayLike<number>,
  bound: ArrayLike<number>,
  what: string,
): void {
  assert.equal(got.length, want.length, `${what}: length`);
  let worst = 0, at = 0;
  for (let i = 0; i < got.length; i++) {
    const r = Math.abs(got[i] - want[i]) / bound[i];
    if (!(r <= worst)) [worst, at] = [Number.isNaN(r) ? Infinity : r, i];
  }
  if (worst > 1) {
    throw new Error(
      `${what}: element ${at} = ${got[at]}, want ${want[at]}: error ${worst.toFixed(2)}× its rounding bound ${
        bound[at]
      }`,
    );
  }
}

/** abs() of every input value except the gates. */
function absValues(x: Record<Name, Float64Array>): Record<Name, Float64Array> {
  return { ...x, q: x.q.map(Math.abs), k: x.k.map(Math.abs), v: x.v.map(Math.abs) };
}

/**
 * Rounding bound of every parallel h (head-major): per pair, the terms pass through a DHQK-term dot product, an
 * S-term sum and four log-domain operations on values up to Λ = max(|F|, |m|, |ĩ|) (an error u·Λ in an exponent is
 * a relative error u·Λ of its weight), so gamma = DHQK + S + 4Λ.
 */
function parallelBound(x: Record<Name, Float64Array>, d: MlstmDims, ref: MlstmParallelRef): Float64Array {
  const a = absValues(x);
  const abs = mlstmParallelRef(a.q, a.k, a.v, a.igate, a.fgate, d);
  const bound = new Float64Array(ref.h.length);
  for (let p = 0; p < d.batch * d.heads; p++) {
    let lambda = 0;
    for (let t = p * d.seq; t < (p + 1) * d.seq; t++) {
      lambda = Math.max(lambda, Math.abs(ref.logForget[t]), Math.abs(ref.m[t]), Math.abs(x.igate[t]));
    }
    for (let t = p * d.seq; t < (p + 1) * d.seq; t++) {
      for (let i = t * d.dv; i < (t + 1) * d.dv; i++) {
        bound[i] = roundingBound(d.dqk + d.seq + 4 * lambda, ref.h[i], ref.n[t], abs.h[i], abs.n[t]);
      }
    }
  }
  return bound;
}

/** Values of one call in the GPU layout ([B·S, NH·DH] rows) and the views the op receives. */
interface Inputs {
  views: Record<Name, MatrixView>;
  /** Float64 copies of the float32 values, [B·S, cols] row-major. */
  values: Record<Name, Float64Array>;
  tensors: Tensor[];
}

type Name = "q" | "k" | "v" | "igate" | "fgate";

/**
 * How {@linkcode randomValues} draws. By default q, k, v ~ N(0, 1), so the q·k of a row have both signs and cancel
 * in Σ_s C (realistic, and ill-conditioned: see TOL). `aligned`: per (batch, head) a random direction k̄, keys
 * k̄ + 0.3·noise and queries ±k̄ + 0.3·noise with a random sign per row, so that Σ_s C has that sign and little
 * cancels. `quiet`: the input gates of odd (or all) heads shifted by `shift` < 0, so that exp(−m_t) beats |Σ_s C|
 * in most (−3) or practically all (−12) of their rows.
 */
interface Draw {
  aligned?: boolean;
  quiet?: { heads: "odd" | "all"; shift: number };
}

/** Column counts of the five inputs in the [B·S, NH·DH] layout. */
function widths(d: MlstmDims): Record<Name, number> {
  return { q: d.heads * d.dqk, k: d.heads * d.dqk, v: d.heads * d.dv, igate: d.heads, fgate: d.heads };
}

/** Random float32-representable inputs, [B·S, NH·DH] row-major, with realistic gates. */
function randomValues(rng: Rng, d: MlstmDims, draw: Draw = {}): Record<Name, Float64Array> {
  const rows = d.batch * d.seq;
  const cols = widths(d);
  const normals = (n: number, mean: number, std: number): Float64Array =>
    Float64Array.from(rng.normals(n, std), (x) => x + mean);
  const values: Record<Name, Float64Array> = {
    q: normals(rows * cols.q, 0, 1),
    k: normals(rows * cols.k, 0, 1),
    v: normals(rows * cols.v, 0, 1),
    igate: normals(rows * cols.igate, 0, 3),
    fgate: normals(rows * cols.fgate, 3, 2),
  };
  for (let b = 0; b < d.batch; b++) {
    for (let h = 0; h < d.heads; h++) {
      const dir = rng.normals(d.dqk);
      for (let t = 0; t < d.seq; t++) {
        const r = b * d.seq + t;
        if (draw.quiet && (draw.quiet.heads === "all" || h % 2 === 1)) {
          values.igate[r * d.heads + h] += draw.quiet.shift;
        }
        if (!draw.aligned) continue;
        const sign = rng.uniform() < 0.5 ? -1 : 1;
        for (let e = 0; e < d.dqk; e++) {
          const at = r * cols.q + h * d.dqk + e;
          values.q[at] = sign * dir[e] + 0.3 * values.q[at];
          values.k[at] = dir[e] + 0.3 * values.k[at];
        }
      }
    }
  }
  for (const x of Object.values(values)) x.set(Float32Array.from(x));
  return values;
}

/** Random inputs on the GPU (see {@linkcode Draw}); `fused` puts q|k|v in one buffer and igate|fgate in another. */
function makeInputs(gpu: Gpu, rng: Rng, d: MlstmDims, fused: boolean, draw: Draw = {}): Inputs {
  const rows = d.batch * d.seq;
  const cols = widths(d);
  const values = randomValues(rng, d, draw);
  const pack = (names: Name[]): Record<string, MatrixView> => {
    const width = names.reduce((w, n) => w + cols[n], 0);
    const data = new Float32Array(rows * width);
    let at = 0;
    for (const n of names) {
      for (let r = 0; r < rows; r++) {
        for (let c = 0; c < cols[n]; c++) data[r * width + at + c] = values[n][r * cols[n] + c];
      }
      at += cols[n];
    }
    const t = Tensor.fromHost(gpu, { dtype: "float32", shape: [d.batch, d.seq, width], data });
    at = 0;
    return Object.fromEntries(names.map((n) => [n, columns(t, (at += cols[n]) - cols[n], cols[n])]));
  };
  const groups: Name[][] = fused ? [["q", "k", "v"], ["igate", "fgate"]] : [["q"], ["k"], ["v"], ["igate"], ["fgate"]];
  const views = Object.assign({}, ...groups.map(pack)) as Record<Name, MatrixView>;
  return { views, values, tensors: [...new Set(Object.values(views).map((x) => x.tensor))] };
}

/** [B, S, NH, DH] ↔ [B, NH, S, DH]. */
function swapSeqHeads(x: ArrayLike<number>, batch: number, a: number, b: number, dh: number): Float64Array {
  const out = new Float64Array(x.length);
  for (let n = 0; n < batch; n++) {
    for (let i = 0; i < a; i++) {
      for (let j = 0; j < b; j++) {
        for (let e = 0; e < dh; e++) out[((n * b + j) * a + i) * dh + e] = x[((n * a + i) * b + j) * dh + e];
      }
    }
  }
  return out;
}

/** The CPU reference inputs, head-major as the reference takes them. */
function headMajor(d: MlstmDims, values: Record<Name, Float64Array>): Record<Name, Float64Array> {
  const dims: Record<Name, number> = { q: d.dqk, k: d.dqk, v: d.dv, igate: 1, fgate: 1 };
  const out = {} as Record<Name, Float64Array>;
  for (const n of Object.keys(dims) as Name[]) out[n] = swapSeqHeads(values[n], d.batch, d.seq, d.heads, dims[n]);
  return out;
}

/** Rows `b·S + t` for one t: a step's view of a sequence view. */
function stepView(x: MatrixView, seq: number, t: number): MatrixView {
  return { ...x, rows: x.rows / seq, offset: x.offset + t * x.stride, stride: x.stride * seq };
}

/** Elements of time step t of a head-major [B, NH, S, DH] array: [B, NH, DH]. */
function atStep(x: Float64Array, d: MlstmDims, dh: number, t: number): Float64Array {
  const out = new Float64Array(d.batch * d.heads * dh);
  for (let p = 0; p < d.batch * d.heads; p++) {
    out.set(x.subarray((p * d.seq + t) * dh, (p * d.seq + t + 1) * dh), p * dh);
  }
  return out;
}

/** Runs the parallel form on fresh inputs, checks h and the cache, and returns the number of dispatches. */
async function checkParallel(gpu: Gpu, rng: Rng, d: MlstmDims, fused: boolean, what: string): Promise<number> {
  const input = makeInputs(gpu, rng, d, fused);
  const { q, k, v, igate, fgate } = input.views;
  const before = gpu.dispatchCount;
  const { h, cache } = mlstmParallelForwardWithCache(q, k, v, igate, fgate, { batch: d.batch, numHeads: d.heads });
  const dispatches = gpu.dispatchCount - before;
  const [gh, weights, lf, m, n] = await Tensor.toHostAll([h, cache.weights, cache.logForget, cache.m, cache.n]);
  assert.deepEqual(h.shape, [d.batch, d.seq, d.heads * d.dv]);
  const x = headMajor(d, input.values);
  const want = mlstmParallelRef(x.q, x.k, x.v, x.igate, x.fgate, d);
  const got = swapSeqHeads(gh.data as Float32Array, d.batch, d.seq, d.heads, d.dv);
  assertWithinBound(got, want.h, parallelBound(x, d, want), `${what}: h`);
  // The cached weights are C / (n + eps) in rows padded to LD (a multiple of 4), zero above the diagonal and in the
  // padding: the scores C come back as W·(n + eps).
  const ld = Math.ceil(d.seq / 4) * 4, nd = n.data as Float32Array, wd = weights.data as Float32Array;
  assert.deepEqual(weights.shape, [d.batch, d.heads, d.seq, ld]);
  const scores = new Float64Array(want.scores.length);
  for (let row = 0; row < nd.length; row++) {
    for (let s = 0; s < ld; s++) {
      if (s < d.seq) scores[row * d.seq + s] = wd[row * ld + s] * (nd[row] + 1e-6);
      else assert.equal(wd[row * ld + s], 0, `${what}: padding of weight row ${row}`);
    }
  }
  assertClose(scores, want.scores, TOL, `${what}: scores recovered from the weights`);
  assertClose(lf.data as Float32Array, want.logForget, TOL, `${what}: F`);
  assertClose(m.data as Float32Array, want.m, TOL, `${what}: m`);
  assertClose(n.data as Float32Array, want.n, TOL, `${what}: n`);
  for (const t of [h, ...Object.values(cache), ...input.tensors]) t.dispose();
  return dispatches;
}

const dims = (batch: number, heads: number, seq: number, dqk: number, dv: number): MlstmDims => ({
  batch,
  heads,
  seq,
  dqk,
  dv,
});

Deno.test("mlstm parallel forward matches the float64 reference (A4.1)", async () => {
  const gpu = await testGpu();
  const rng = freshRng("mlstm parallel");
  // Several pairs: with one, the single score q·k/2 may cancel below the 1e-5 its checks allow.
  await checkParallel(gpu, rng, dims(2, 3, 1, 4, 4), false, "S=1");
  await checkParallel(gpu, rng, dims(2, 3, 17, 8, 8), false, "B2 NH3 S17 DH8");
  await checkParallel(gpu, rng, dims(1, 2, 33, 12, 5), false, "DHQK 12 ≠ DHV 5");
  await checkParallel(gpu, rng, dims(2, 2, 10, 7, 3), true, "odd DHQK 7: f32 loads, a partial K step");
  assert.equal(await checkParallel(gpu, rng, dims(3, 2, 64, 16, 24), true, "q|k|v column slices, S=64"), 4);
});

Deno.test("mlstm parallel forward splits (batch, head) pairs when the scores exceed a binding", async () => {
  const gpu = await testGpu();
  const rng = freshRng("mlstm parallel split");
  const d = dims(3, 3, 33, 4, 4); // S is odd: group offsets into F, m and n need the aligned-down bases
  const pair = d.seq * 36 * 4; // bytes of one pair's scores, rows padded to 36
  const saved = gpu.maxBinding;
  const room = gpu.limits.minStorageBufferOffsetAlignment + 100;
  try {
    gpu.maxBinding = 2 * pair + room; // heads {0, 1} and {2} of each batch
    assert.equal(await checkParallel(gpu, rng, d, true, "heads split"), 3 * 2 * 4);
    gpu.maxBinding = 2 * d.heads * pair + room; // batches {0, 1} and {2}
    assert.equal(await checkParallel(gpu, rng, d, false, "batches split"), 2 * 4);
  } finally {
    gpu.maxBinding = saved;
  }
});

/** A CPU state and the same state from the reference run on |q|, |k|, |v| (for the rounding bound). */
interface RefStates {
  plain: MlstmStateRef | null;
  abs: MlstmStateRef | null;
}

/**
 * Steps the GPU cell over the first `steps` time steps, checking h (against its rounding bound: a DHQK-term dot
 * product over a state built by 2 rounded operations per step, with gate exponents up to Λ) and the state (against
 * 1e-5) with the CPU step at every t. Returns the GPU outputs and the CPU h.
 */
async function checkSteps(
  input: Inputs,
  d: MlstmDims,
  keyScaledState: boolean,
  initial: { gpu: MlstmState; cpu: MlstmStateRef } | null,
  steps: number = d.seq,
  gateSoftCap?: number,
): Promise<{ got: Float32Array[]; want: Float64Array }> {
  const x = headMajor(d, input.values);
  if (gateSoftCap) [x.igate, x.fgate] = [softCapRef(x.igate, gateSoftCap), softCapRef(x.fgate, gateSoftCap)];
  const xa = absValues(x);
  let state = initial?.gpu ?? null;
  const abs = (s: MlstmStateRef): MlstmStateRef => ({ c: s.c.map(Math.abs), n: s.n.map(Math.abs), m: s.m });
  const cpu: RefStates = { plain: initial?.cpu ?? null, abs: initial ? abs(initial.cpu) : null };
  const outs: Tensor[] = [];
  const wants: Float64Array[] = [];
  const bounds: Float64Array[] = [];
  const lambda = new Float64Array(d.batch * d.heads);
  for (let t = 0; t < steps; t++) {
    const [q, k, v, i, f] = (["q", "k", "v", "igate", "fgate"] as Name[]).map((n) =>
      stepView(input.views[n], d.seq, t)
    );
    const next = mlstmRecurrentStep(q, k, v, i, f, state, { numHeads: d.heads, keyScaledState, gateSoftCap });
    state = { c: next.c, n: next.n, m: next.m };
    const run = (y: Record<Name, Float64Array>, from: MlstmStateRef | null): MlstmStepRef =>
      mlstmStepRef(
        atStep(y.q, d, d.dqk, t),
        atStep(y.k, d, d.dqk, t),
        atStep(y.v, d, d.dv, t),
        atStep(y.igate, d, 1, t),
        atStep(y.fgate, d, 1, t),
        from,
        d,
        keyScaledState,
      );
    const want = run(x, cpu.plain), wantAbs = run(xa, cpu.abs);
    [cpu.plain, cpu.abs] = [want, wantAbs];
    const bound = new Float64Array(want.h.length);
    for (let p = 0; p < lambda.length; p++) {
      lambda[p] = Math.max(lambda[p], Math.abs(want.m[p]), Math.abs(x.igate[p * d.seq + t]));
      for (let j = p * d.dv; j < (p + 1) * d.dv; j++) {
        bound[j] = roundingBound(
          d.dqk + 2 * (t + 1) + 4 * lambda[p],
          want.h[j],
          want.den[p],
          wantAbs.h[j],
          wantAbs.den[p],
        );
      }
    }
    outs.push(next.h, next.c, next.n, next.m);
    wants.push(want.h, want.c, want.n, want.m);
    bounds.push(bound);
  }
  const got = (await Tensor.toHostAll(outs)).map((g) => g.data as Float32Array);
  got.forEach((g, i) => {
    const what = `${keyScaledState ? "key-scaled" : "query-scaled"} step ${i >> 2}: ${["h", "c", "n", "m"][i & 3]}`;
    if (i % 4 === 0) assertWithinBound(g, wants[i], bounds[i / 4], what);
    else assertClose(g, wants[i], TOL, what);
  });
  for (const t of outs) t.dispose();
  return { got, want: Float64Array.from(wants.filter((_, i) => i % 4 === 0).flatMap((w) => [...w])) };
}

Deno.test("mlstm recurrent step matches the float64 step in both key conventions (A4.2, B2.4)", async () => {
  const gpu = await testGpu();
  const rng = freshRng("mlstm step");
  for (const [d, fused] of [[dims(2, 2, 6, 8, 8), true], [dims(3, 3, 4, 12, 5), false]] as const) {
    const input = makeInputs(gpu, rng, d, fused);
    const scaled = await checkSteps(input, d, true, null);
    const unscaled = await checkSteps(input, d, false, null);
    assertClose(unscaled.want, scaled.want, 1e-12, "the reference h does not depend on the key convention");
    const root = Math.sqrt(d.dqk);
    const last = (r: { got: Float32Array[] }, i: number): Float32Array => r.got[r.got.length - 4 + i];
    assertClose(last(unscaled, 1), last(scaled, 1).map((c) => c * root), TOL, "C scales by √DHQK");
    assertClose(last(unscaled, 2), last(scaled, 2).map((n) => n * root), TOL, "n scales by √DHQK");
    assertClose(last(unscaled, 3), last(scaled, 3), TOL, "m does not depend on the key convention");

    // From a non-zero state, which must come back unchanged.
    const pairs = d.batch * d.heads;
    const cpu = {
      c: Float64Array.from(Float32Array.from(rng.normals(pairs * d.dqk * d.dv))),
      n: Float64Array.from(Float32Array.from(rng.normals(pairs * d.dqk))),
      m: Float64Array.from(Float32Array.from(rng.normals(pairs, 2))),
    };
    const up = (a: Float64Array, shape: number[]): Tensor =>
      Tensor.fromHost(gpu, { dtype: "float32", shape, data: Float32Array.from(a) });
    const state = {
      c: up(cpu.c, [d.batch, d.heads, d.dqk, d.dv]),
      n: up(cpu.n, [d.batch, d.heads, d.dqk]),
      m: up(cpu.m, [d.batch, d.heads]),
    };
    await checkSteps(input, d, true, { gpu: state, cpu }, 2);
    // The gate soft cap applied as the gates are loaded (xlstm_large), bending most of them.
    await checkSteps(input, d, false, { gpu: state, cpu }, 2, 1.5);
    const after = await Tensor.toHostAll([state.c, state.n, state.m]);
    after.forEach((a, i) => assert.deepEqual(a.data, Float32Array.from([cpu.c, cpu.n, cpu.m][i]), "input state kept"));
    for (const t of [...Object.values(state), ...input.tensors]) t.dispose();
  }
});

Deno.test("mlstm golden mlstm_cell_fn: parallel output, step outputs and states", async () => {
  const gpu = await testGpu();
  const g = await readSafetensors(new URL("../../shared/golden/mlstm_cell_fn.safetensors", import.meta.url));
  const gold = (name: string): Float32Array => g[name].data as Float32Array;
  const [batch, heads, seq, dh] = g["input.q"].shape;
  const up = (name: string, width: number): MatrixView => {
    const data = Float32Array.from(swapSeqHeads(gold(name), batch, heads, seq, width));
    return matrix(Tensor.fromHost(gpu, { dtype: "float32", shape: [batch, seq, heads * width], data }));
  };
  const [q, k, v] = ["q", "k", "v"].map((n) => up(`input.${n}`, dh));
  const [i, f] = ["igate_preact", "fgate_preact"].map((n) => up(`input.${n}`, 1));
  const h = mlstmParallelForward(q, k, v, i, f, { batch, numHeads: heads });
  const steps: Tensor[] = [];
  let state: MlstmState | null = null;
  for (let t = 0; t < seq; t++) {
    const [qt, kt, vt, it, ft] = [q, k, v, i, f].map((x) => stepView(x, seq, t));
    const next = mlstmRecurrentStep(qt, kt, vt, it, ft, state, { numHeads: heads, keyScaledState: true });
    state = next;
    steps.push(next.h, next.c, next.n, next.m);
  }
  const [gh, ...got] = await Tensor.toHostAll([h, ...steps]);

  // The CPU reference reproduces the golden output (float64 stored as float32), and the GPU lies within the
  // rounding bound of it, widened by the float32 storage of the golden values.
  const x: Record<Name, Float32Array> = {
    q: gold("input.q"),
    k: gold("input.k"),
    v: gold("input.v"),
    igate: gold("input.igate_preact"),
    fgate: gold("input.fgate_preact"),
  };
  const d = dims(batch, heads, seq, dh, dh);
  const values = Object.fromEntries(Object.entries(x).map(([n, a]) => [n, Float64Array.from(a)]));
  const ref = mlstmParallelRef(x.q, x.k, x.v, x.igate, x.fgate, d);
  assertClose(ref.h, gold("output"), 1e-6, "CPU reference vs golden output");
  const bound = parallelBound(values as Record<Name, Float64Array>, d, ref).map((b, j) => b + U * Math.abs(ref.h[j]));
  const output = swapSeqHeads(gh.data as Float32Array, batch, seq, heads, dh);
  assertWithinBound(output, gold("output"), bound, "golden output");
  assertClose(output, gold("output"), 1e-4, "golden output (conformance tolerance)");

  const stepH = new Float64Array(batch * seq * heads * dh);
  got.forEach((y, j) => {
    const t = j >> 2;
    const data = y.data as Float32Array;
    if (j % 4 === 0) {
      // h of step t is [B, NH·DH]: row (b, t) of the [B, S, NH·DH] layout.
      for (let b = 0; b < batch; b++) {
        stepH.set(data.subarray(b * heads * dh, (b + 1) * heads * dh), (b * seq + t) * heads * dh);
      }
      return;
    }
    const name = `recurrent.state_steps.${["", "c", "n", "m"][j % 4]}`;
    assertClose(data, gold(name).subarray(t * data.length, (t + 1) * data.length), TOL, `golden ${name} step ${t}`);
  });
  assertClose(swapSeqHeads(stepH, batch, seq, heads, dh), gold("recurrent.output"), TOL, "golden recurrent.output");
  for (const t of [h, ...steps, q.tensor, k.tensor, v.tensor, i.tensor, f.tensor]) t.dispose();
});

/**
 * f32 error bounds of the GPU's parallel gradients, per element: gamma·u·(the gradient's magnitude: the reference's
 * sums over absolute terms, each row's terms weighted by κ_t). The magnitude covers the gradients' own cancellation,
 * which is common: the |Σ C| side of the normaliser makes h_t invariant to the scale of q_t, so dq_t ⟂ q_t is a
 * difference of large terms (very much so for aligned inputs), and likewise dĩ. gamma counts the roundings along
 * the chain: DHQK- and DHV-term dot products, sums over S in the forward and the backward, and four log-domain
 * operations on values up to Λ = max(|F|, |m|, |ĩ|) of the pair (an error u·Λ in an exponent is a relative error
 * u·Λ of its weight). κ_t ≥ 1 covers the forward's error of n_t = |Σ_s C[t,s]|, through which all of row t's
 * gradient passes: at most gamma·u·Σ_s |q_t|·|k_s|·D[t,s]/√DHQK (as in parallelBound), a relative error gamma·u·κ_t
 * with κ_t that sum over n_t (1 where nothing cancels or exp(−m_t) is the larger side; up to 100–2000 for realistic
 * inputs at S = 64). The backward is linear in dh, so weighting row t's terms is scaling dh_t by κ_t.
 */
function gradientBounds(
  x: Record<Name, Float64Array>,
  dh: Float64Array,
  d: MlstmDims,
  ref: MlstmParallelRef,
): Record<Grad, Float64Array> {
  const a = absValues(x);
  const abs = mlstmParallelRef(a.q, a.k, x.v, x.igate, x.fgate, d);
  const weighted = dh.map((g, i) => g * Math.max(1, abs.n[Math.floor(i / d.dv)] / ref.n[Math.floor(i / d.dv)]));
  const bounds = mlstmParallelBackwardRef(x.q, x.k, x.v, x.igate, x.fgate, weighted, d, 1e-6, true);
  const pairs = d.batch * d.heads;
  for (let p = 0; p < pairs; p++) {
    let lambda = 0;
    for (let t = p * d.seq; t < (p + 1) * d.seq; t++) {
      lambda = Math.max(lambda, Math.abs(ref.logForget[t]), Math.abs(ref.m[t]), Math.abs(x.igate[t]));
    }
    const factor = (d.dqk + d.dv + 2 * d.seq + 4 * lambda) * U;
    for (const n of GRADS) {
      const size = bounds[n].length / pairs;
      for (let i = p * size; i < (p + 1) * size; i++) bounds[n][i] *= factor;
    }
  }
  return bounds;
}

/** Rows of each kind in the references the backward tests ran: the normaliser's side of the max, and Σ_s C's sign. */
interface Coverage {
  exp: number;
  positive: number;
  negative: number;
}

/** Counts the rows of a reference run into `c`. */
function countRows(ref: MlstmParallelRef, d: MlstmDims, c: Coverage): void {
  for (let t = 0; t < ref.n.length; t++) {
    let sum = 0;
    for (let s = 0; s < d.seq; s++) sum += ref.scores[t * d.seq + s];
    if (ref.n[t] === Math.exp(-ref.m[t])) c.exp++;
    else if (sum < 0) c.negative++;
    else c.positive++;
  }
}

const GRADS = ["dq", "dk", "dv", "digate", "dfgate"] as const;
type Grad = typeof GRADS[number];

/**
 * Runs the parallel forward and backward on fresh inputs and an upstream gradient, checks every gradient against
 * the float64 reference, and returns the backward's dispatch count.
 */
async function checkBackward(
  gpu: Gpu,
  rng: Rng,
  d: MlstmDims,
  fused: boolean,
  draw: Draw,
  what: string,
  coverage: Coverage,
): Promise<number> {
  const input = makeInputs(gpu, rng, d, fused, draw);
  const { q, k, v, igate, fgate } = input.views;
  const dhValues = Float64Array.from(Float32Array.from(rng.normals(d.batch * d.seq * d.heads * d.dv)));
  const dh = Tensor.fromHost(gpu, {
    dtype: "float32",
    shape: [d.batch, d.seq, d.heads * d.dv],
    data: Float32Array.from(dhValues),
  });
  const options = { batch: d.batch, numHeads: d.heads };
  const { h, cache } = mlstmParallelForwardWithCache(q, k, v, igate, fgate, options);
  const before = gpu.dispatchCount;
  const grads = mlstmParallelBackward(dh, q, k, v, igate, fgate, cache, options);
  const dispatches = gpu.dispatchCount - before;
  const got = await Tensor.toHostAll(GRADS.map((n) => grads[n]));
  const x = headMajor(d, input.values);
  const dhx = swapSeqHeads(dhValues, d.batch, d.seq, d.heads, d.dv);
  const want = mlstmParallelBackwardRef(x.q, x.k, x.v, x.igate, x.fgate, dhx, d);
  const ref = mlstmParallelRef(x.q, x.k, x.v, x.igate, x.fgate, d);
  countRows(ref, d, coverage);
  const bounds = gradientBounds(x, dhx, d, ref);
  const rows = d.batch * d.seq;
  const cols = { dq: d.dqk, dk: d.dqk, dv: d.dv, digate: 1, dfgate: 1 };
  GRADS.forEach((n, i) => {
    assert.deepEqual(got[i].shape, [rows, d.heads * cols[n]], `${what}: ${n} shape`);
    const g = swapSeqHeads(got[i].data as Float32Array, d.batch, d.seq, d.heads, cols[n]);
    assertWithinBound(g, want[n], bounds[n], `${what}: ${n}`);
  });
  for (const t of [dh, h, ...Object.values(cache), ...Object.values(grads), ...input.tensors]) t.dispose();
  return dispatches;
}

Deno.test("mlstm parallel backward reference matches central finite differences (float64)", () => {
  const rng = freshRng("mlstm backward reference");
  const d = dims(2, 2, 6, 3, 2);
  const x = headMajor(d, randomValues(rng, d, { aligned: true, quiet: { heads: "odd", shift: -6 } }));
  const r = rng.normals(d.batch * d.heads * d.seq * d.dv);
  const loss = (): number =>
    mlstmParallelRef(x.q, x.k, x.v, x.igate, x.fgate, d).h.reduce((a, h, i) => a + h * r[i], 0);
  const grads = mlstmParallelBackwardRef(x.q, x.k, x.v, x.igate, x.fgate, r, d);
  const coverage = { exp: 0, positive: 0, negative: 0 };
  countRows(mlstmParallelRef(x.q, x.k, x.v, x.igate, x.fgate, d), d, coverage);
  assert.ok(coverage.exp > 0 && coverage.positive > 0 && coverage.negative > 0, JSON.stringify(coverage));
  const delta = 3e-5;
  (["q", "k", "v", "igate", "fgate"] as const).forEach((n, j) => {
    const at = (i: number, value: number): number => {
      const saved = x[n][i];
      x[n][i] = value;
      const result = loss();
      x[n][i] = saved;
      return result;
    };
    // Five-point central differences: error δ⁴·f⁽⁵⁾/30 (rows with a small n_t curve sharply) + 1e-16·|loss|/δ.
    const fd = x[n].map((value, i) =>
      (8 * (at(i, value + delta) - at(i, value - delta)) - (at(i, value + 2 * delta) - at(i, value - 2 * delta))) /
      (12 * delta)
    );
    // Measured: at most 3e-9 of the largest gradient over 600 (aligned inputs keep the gradients moderate, so that
    // no stencil crosses a kink of max or abs). Dropping either side of the normaliser's max fails by 1 or more;
    // dropping the row max's gradient (which sums to −(dH_t·h_t)·eps/(n_t + eps) on both sides) by 5e-7 to 1e-5.
    assertClose(grads[GRADS[j]], fd, 1e-7, `${GRADS[j]} vs finite differences`);
  });
});

Deno.test("mlstm parallel backward matches the float64 autograd reference", async () => {
  const gpu = await testGpu();
  const rng = freshRng("mlstm backward");
  const coverage = { exp: 0, positive: 0, negative: 0 };
  const aligned: Draw = { aligned: true, quiet: { heads: "odd", shift: -12 } };
  // With S = 1 on the |Σ C| side, h = ±v·|C|/(|C| + eps), and the gradients of q, k and ĩ are eps-sized
  // differences of O(1) terms, f32 noise that the bounds merely admit: S = 1 runs on the exp(−m) side.
  await checkBackward(
    gpu,
    rng,
    dims(2, 2, 1, 4, 4),
    false,
    { aligned: true, quiet: { heads: "all", shift: -12 } },
    "S=1",
    coverage,
  );
  await checkBackward(gpu, rng, dims(2, 3, 17, 8, 8), false, aligned, "B2 NH3 S17 DH8", coverage);
  await checkBackward(gpu, rng, dims(1, 2, 33, 12, 5), false, aligned, "DHQK 12 ≠ DHV 5", coverage);
  await checkBackward(gpu, rng, dims(2, 2, 10, 7, 3), true, aligned, "odd DHQK 7, fused views", coverage);
  assert.equal(await checkBackward(gpu, rng, dims(2, 2, 64, 16, 24), true, {}, "realistic S=64", coverage), 7);
  assert.ok(coverage.exp > 0 && coverage.positive > 0 && coverage.negative > 0, JSON.stringify(coverage));
});

Deno.test("mlstm parallel backward splits (batch, head) pairs when the scores exceed a binding", async () => {
  const gpu = await testGpu();
  const rng = freshRng("mlstm backward split");
  const coverage = { exp: 0, positive: 0, negative: 0 };
  const d = dims(3, 3, 33, 4, 4);
  const pair = d.seq * 36 * 4;
  const saved = gpu.maxBinding;
  const room = gpu.limits.minStorageBufferOffsetAlignment + 100;
  const draw: Draw = { aligned: true, quiet: { heads: "odd", shift: -12 } };
  try {
    gpu.maxBinding = 2 * pair + room; // heads {0, 1} and {2} of each batch
    assert.equal(await checkBackward(gpu, rng, d, true, draw, "heads split", coverage), 3 * 2 * 7);
    gpu.maxBinding = 2 * d.heads * pair + room; // batches {0, 1} and {2}
    assert.equal(await checkBackward(gpu, rng, d, false, draw, "batches split", coverage), 2 * 7);
  } finally {
    gpu.maxBinding = saved;
  }
});

Deno.test("mlstm golden mlstm_cell_fn: gradients of sum(output · loss_weight)", async () => {
  const gpu = await testGpu();
  const g = await readSafetensors(new URL("../../shared/golden/mlstm_cell_fn.safetensors", import.meta.url));
  const gold = (name: string): Float32Array => g[name].data as Float32Array;
  const [batch, heads, seq, dh] = g["input.q"].shape;
  const d = dims(batch, heads, seq, dh, dh);
  const names = ["q", "k", "v", "igate_preact", "fgate_preact"];
  const up = (name: string, width: number): MatrixView => {
    const data = Float32Array.from(swapSeqHeads(gold(name), batch, heads, seq, width));
    return matrix(Tensor.fromHost(gpu, { dtype: "float32", shape: [batch, seq, heads * width], data }));
  };
  const [q, k, v, i, f] = names.map((n, j) => up(`input.${n}`, j < 3 ? dh : 1));
  const weight = up("loss_weight", dh).tensor;
  const options = { batch, numHeads: heads };
  const { h, cache } = mlstmParallelForwardWithCache(q, k, v, i, f, options);
  const grads = mlstmParallelBackward(weight, q, k, v, i, f, cache, options);
  const got = await Tensor.toHostAll(GRADS.map((n) => grads[n]));
  // The CPU reference reproduces PyTorch autograd (float64, stored as float32) ...
  const x = names.map((n) => Float64Array.from(gold(`input.${n}`)));
  const ref = mlstmParallelBackwardRef(x[0], x[1], x[2], x[3], x[4], gold("loss_weight"), d);
  const values = { q: x[0], k: x[1], v: x[2], igate: x[3], fgate: x[4] };
  const forward = mlstmParallelRef(x[0], x[1], x[2], x[3], x[4], d);
  const bounds = gradientBounds(values, Float64Array.from(gold("loss_weight")), d, forward);
  GRADS.forEach((n, j) => {
    const want = gold(`grad.input.${names[j]}`);
    assertClose(ref[n], want, 1e-6, `CPU reference vs golden ${n}`);
    // ... and the GPU is within the conformance tolerance of it (measured: 4e-6 to 1.3e-5, PyTorch's own float32
    // run 3e-6 to 7e-6), and within the rounding tolerance of the reference.
    const output = swapSeqHeads(got[j].data as Float32Array, batch, seq, heads, j < 3 ? dh : 1);
    console.log(`golden ${n}: relative error ${relativeError(output, want).toExponential(2)}`);
    assertClose(output, want, 5e-4, `golden ${n} (conformance tolerance)`);
    assertWithinBound(output, ref[n], bounds[n], `golden ${n} vs the CPU reference`);
  });
  for (const t of [h, weight, ...Object.values(cache), ...Object.values(grads), q.tensor, k.tensor, v.tensor]) {
    t.dispose();
  }
  for (const t of [i.tensor, f.tensor]) t.dispose();
});

Deno.test("mlstm ops name the tensor and both shapes on bad input", async () => {
  const gpu = await testGpu();
  const z = (...shape: number[]): MatrixView => matrix(Tensor.zeros(gpu, shape));
  const [q, k, v, i, f] = [z(2, 5, 8), z(2, 5, 8), z(2, 5, 6), z(2, 5, 2), z(2, 5, 2)];
  const opts = { batch: 2, numHeads: 2 };
  assert.throws(() => mlstmParallelForward(q, z(2, 5, 6), v, i, f, opts), /k: expected shape \[10, 8\], got \[10, 6\]/);
  assert.throws(
    () => mlstmParallelForward(q, k, v, z(2, 5, 3), f, opts),
    /igate: expected shape \[10, 2\], got \[10, 3\]/,
  );
  assert.throws(
    () => mlstmParallelForward(q, k, v, i, f, { batch: 3, numHeads: 2 }),
    /not a positive multiple of batch 3/,
  );
  assert.throws(() => mlstmParallelForward(q, k, z(2, 5, 7), i, f, opts), /v has 7 columns, which numHeads 2/);
  const long = z(MLSTM_MAX_LOOP + 1, 1);
  assert.throws(() => mlstmParallelForward(long, long, long, long, long, { batch: 1, numHeads: 1 }), /chunkwise form/);
  const saved = gpu.maxBinding;
  gpu.maxBinding = 5 * 5 * 4;
  try {
    assert.throws(() => mlstmParallelForward(q, k, v, i, f, opts), /score matrix per head .* chunkwise form/);
  } finally {
    gpu.maxBinding = saved;
  }
  const { h, cache } = mlstmParallelForwardWithCache(q, k, v, i, f, opts);
  const [wide, flatM] = [Tensor.zeros(gpu, [2, 5, 8]), cache.m.reshape([2, 10])];
  assert.throws(
    () => mlstmParallelBackward(wide, q, k, v, i, f, cache, opts),
    /mlstmParallelBackward: dh: expected shape \[2, 5, 6\], got \[2, 5, 8\]/,
  );
  assert.throws(
    () => mlstmParallelBackward(h, q, k, v, i, f, { ...cache, m: flatM }, opts),
    /cache\.m: expected shape \[2, 2, 5\], got \[2, 10\]/,
  );
  for (const t of [h, wide, flatM, ...Object.values(cache)]) t.dispose();
  const row = (x: MatrixView): MatrixView => stepView(x, 5, 0);
  const state = { c: Tensor.zeros(gpu, [2, 2, 4, 3]), n: Tensor.zeros(gpu, [2, 2, 3]), m: Tensor.zeros(gpu, [2, 2]) };
  assert.throws(
    () => mlstmRecurrentStep(row(q), row(k), row(v), row(i), row(f), state, { numHeads: 2, keyScaledState: true }),
    /state\.n: expected shape \[2, 2, 4\], got \[2, 2, 3\]/,
  );
  for (const t of [q, k, v, i, f, long].map((x) => x.tensor).concat(Object.values(state))) t.dispose();
  await closeTestGpu();
});
