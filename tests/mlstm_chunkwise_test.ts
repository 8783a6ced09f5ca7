import assert from "node:assert/strict";
import type { Gpu } from "../src/gpu/runtime.ts";
import { mlstmParallelForward, mlstmRecurrentStep, type MlstmState } from "../src/ops/mlstm.ts";
import { mlstmChunkwiseForward } from "../src/ops/mlstm_chunkwise.ts";
import { columns, type MatrixView, Tensor } from "../src/tensor.ts";
import { type MlstmDims, type MlstmStateRef, mlstmStepRef } from "./cpu/mlstm.ts";
import { mlstmChunkwiseRef } from "./cpu/mlstm_chunkwise.ts";
import { softCapRef } from "./cpu/activations.ts";
import { assertClose, closeTestGpu, freshRng, limited, relativeError, type Rng, testGpu } from "./util.ts";

// h divides by |q·n + Σ w·q·k|, which random queries and keys make cancel (the f32 error of h then grows with the
// cancellation, as in tests/mlstm_test.ts). The inputs here align queries with keys per head (q = ±k̄ + noise,
// k = k̄ + noise, initial n along k̄), so the normaliser keeps its sign and h is well-conditioned: 1e-5 of max|h|
// is then a tight f32 bound (the sums have at most L + DHQK terms of a few rounded operations each).
const TOL = 1e-5;

type Name = "q" | "k" | "v" | "igate" | "fgate";
const NAMES: Name[] = ["q", "k", "v", "igate", "fgate"];

const dims = (batch: number, heads: number, seq: number, dqk: number, dv: number): MlstmDims => ({
  batch,
  heads,
  seq,
  dqk,
  dv,
});

function widths(d: MlstmDims): Record<Name, number> {
  return { q: d.heads * d.dqk, k: d.heads * d.dqk, v: d.heads * d.dv, igate: d.heads, fgate: d.heads };
}

/** Random float32-representable inputs [B·S, cols] (aligned queries and keys) and a consistent initial state. */
function randomCase(rng: Rng, d: MlstmDims): { x: Record<Name, Float64Array>; state: MlstmStateRef } {
  const rows = d.batch * d.seq, cols = widths(d), pairs = d.batch * d.heads;
  const normals = (n: number, mean: number, std: number): Float64Array =>
    Float64Array.from(rng.normals(n, std), (y) => y + mean);
  const x: Record<Name, Float64Array> = {
    q: normals(rows * cols.q, 0, 0.3),
    k: normals(rows * cols.k, 0, 0.3),
    v: normals(rows * cols.v, 0, 1),
    igate: normals(rows * cols.igate, 0, 3),
    fgate: normals(rows * cols.fgate, 3, 2),
  };
  const state = { c: normals(pairs * d.dqk * d.dv, 0, 1), n: new Float64Array(pairs * d.dqk), m: normals(pairs, 0, 2) };
  for (let p = 0; p < pairs; p++) {
    const [b, h] = [Math.floor(p / d.heads), p % d.heads];
    const dir = rng.normals(d.dqk);
    for (let e = 0; e < d.dqk; e++) {
      state.n[p * d.dqk + e] = 2 * dir[e];
      for (let c = 0; c < d.dv; c++) state.c[(p * d.dqk + e) * d.dv + c] *= dir[e];
      for (let t = 0; t < d.seq; t++) {
        const at = (b * d.seq + t) * cols.q + h * d.dqk + e;
        x.k[at] += dir[e];
        x.q[at] += (t % 3 === 1 ? -1 : 1) * dir[e];
      }
    }
  }
  for (const y of [...Object.values(x), ...Object.values(state)]) y.set(Float32Array.from(y));
  return { x, state };
}

/** [B, S, NH, DH] → [B, NH, S, DH]. */
function headMajor(y: ArrayLike<number>, d: MlstmDims, dh: number): Float64Array {
  const out = new Float64Array(y.length);
  for (let b = 0; b < d.batch; b++) {
    for (let t = 0; t < d.seq; t++) {
      for (let h = 0; h < d.heads; h++) {
        for (let e = 0; e < dh; e++) {
          out[((b * d.heads + h) * d.seq + t) * dh + e] = y[((b * d.seq + t) * d.heads + h) * dh + e];
        }
      }
    }
  }
  return out;
}

function headMajorAll(x: Record<Name, Float64Array>, d: MlstmDims): Record<Name, Float64Array> {
  const dh: Record<Name, number> = { q: d.dqk, k: d.dqk, v: d.dv, igate: 1, fgate: 1 };
  return Object.fromEntries(NAMES.map((n) => [n, headMajor(x[n], d, dh[n])])) as Record<Name, Float64Array>;
}

/** The step-by-step recurrence (B2.4) over the whole sequence in float64: h [B,NH,S,DHV] and the last state. */
function stepLoopRef(
  y: Record<Name, Float64Array>,
  d: MlstmDims,
  state: MlstmStateRef | null,
  eps: number,
): MlstmStateRef & { h: Float64Array } {
  const pairs = d.batch * d.heads;
  const h = new Float64Array(pairs * d.seq * d.dv);
  const at = (z: Float64Array, dh: number, t: number): Float64Array => {
    const out = new Float64Array(pairs * dh);
    for (let p = 0; p < pairs; p++) out.set(z.subarray((p * d.seq + t) * dh, (p * d.seq + t + 1) * dh), p * dh);
    return out;
  };
  let s = state;
  for (let t = 0; t < d.seq; t++) {
    const r = mlstmStepRef(
      at(y.q, d.dqk, t),
      at(y.k, d.dqk, t),
      at(y.v, d.dv, t),
      at(y.igate, 1, t),
      at(y.fgate, 1, t),
      s,
      d,
      false,
      eps,
    );
    for (let p = 0; p < pairs; p++) h.set(r.h.subarray(p * d.dv, (p + 1) * d.dv), (p * d.seq + t) * d.dv);
    s = r;
  }
  return { h, c: s!.c, n: s!.n, m: s!.m };
}

Deno.test("chunkwise float64 reference (B2.3) matches the looped recurrent step (B2.4)", () => {
  const rng = freshRng("mlstm chunkwise cpu");
  const d = dims(1, 2, 12, 5, 3);
  const { x, state } = randomCase(rng, d);
  const y = headMajorAll(x, d);
  for (const initial of [null, state]) {
    // eps = 0: the stabilisers differ (per step vs per chunk), which only moves the eps term.
    const want = stepLoopRef(y, d, initial, 0);
    for (const chunk of [1, 2, 3, 4, 12]) {
      const got = mlstmChunkwiseRef(y.q, y.k, y.v, y.igate, y.fgate, initial, d, chunk, 0);
      const what = `L=${chunk}${initial ? ", initial state" : ""}`;
      for (const n of ["h", "c", "n", "m"] as const) assertClose(got[n], want[n], 1e-12, `${what}: ${n}`);
    }
  }
});

/** Uploads the inputs: q|k|v as column slices of one buffer when `fused`, else separate tensors. */
function upload(gpu: Gpu, x: Record<Name, Float64Array>, d: MlstmDims, fused: boolean): {
  views: Record<Name, MatrixView>;
  tensors: Tensor[];
} {
  const rows = d.batch * d.seq, cols = widths(d);
  const pack = (names: Name[]): Record<string, MatrixView> => {
    const width = names.reduce((w, n) => w + cols[n], 0);
    const data = new Float32Array(rows * width);
    let at = 0;
    for (const n of names) {
      for (let r = 0; r < rows; r++) data.set(x[n].subarray(r * cols[n], (r + 1) * cols[n]), r * width + at);
      at += cols[n];
    }
    const t = Tensor.fromHost(gpu, { dtype: "float32", shape: [rows, width], data });
    at = 0;
    return Object.fromEntries(names.map((n) => [n, columns(t, (at += cols[n]) - cols[n], cols[n])]));
  };
  const groups: Name[][] = fused ? [["q", "k", "v"], ["igate", "fgate"]] : NAMES.map((n) => [n]);
  const views = Object.assign({}, ...groups.map(pack)) as Record<Name, MatrixView>;
  return { views, tensors: [...new Set(Object.values(views).map((v) => v.tensor))] };
}

function uploadState(gpu: Gpu, s: MlstmStateRef, d: MlstmDims): MlstmState {
  const f = (shape: number[], data: Float64Array): Tensor =>
    Tensor.fromHost(gpu, { dtype: "float32", shape, data: Float32Array.from(data) });
  return {
    c: f([d.batch, d.heads, d.dqk, d.dv], s.c),
    n: f([d.batch, d.heads, d.dqk], s.n),
    m: f([d.batch, d.heads], s.m),
  };
}

interface Case {
  d: MlstmDims;
  chunk: number;
  withState: boolean;
  fused: boolean;
  chunksPerSegment?: number;
  /** The kernel soft-caps the gates; the reference gets them capped. */
  gateSoftCap?: number;
}

async function checkAgainstRef(gpu: Gpu, rng: Rng, c: Case): Promise<void> {
  const { d, chunk } = c;
  const what = `B${d.batch} NH${d.heads} S${d.seq} DHQK${d.dqk} DHV${d.dv} L${chunk}` +
    (c.withState ? " state" : "") + (c.chunksPerSegment ? ` ${c.chunksPerSegment}/segment` : "") +
    (c.gateSoftCap ? ` gate cap ${c.gateSoftCap}` : "");
  const { x, state } = randomCase(rng, d);
  const { views, tensors } = upload(gpu, x, d, c.fused);
  const initial = c.withState ? uploadState(gpu, state, d) : null;
  const before = initial ? await Tensor.toHostAll(Object.values(initial)) : [];
  const out = mlstmChunkwiseForward(views.q, views.k, views.v, views.igate, views.fgate, initial, {
    batch: d.batch,
    numHeads: d.heads,
    chunkSize: chunk,
    chunksPerSegment: c.chunksPerSegment,
    gateSoftCap: c.gateSoftCap,
  });
  assert.deepEqual(out.h.shape, [d.batch, d.seq, d.heads * d.dv]);
  const [h, cs, ns, ms] = await Tensor.toHostAll([out.h, out.c, out.n, out.m]);
  const y = headMajorAll(x, d);
  if (c.gateSoftCap) [y.igate, y.fgate] = [softCapRef(y.igate, c.gateSoftCap), softCapRef(y.fgate, c.gateSoftCap)];
  const want = mlstmChunkwiseRef(y.q, y.k, y.v, y.igate, y.fgate, c.withState ? state : null, d, chunk);
  const gotH = headMajor(h.data as Float32Array, d, d.dv);
  console.log(`${what}: h relative error ${relativeError(gotH, want.h).toExponential(2)}`);
  assertClose(gotH, want.h, TOL, `${what}: h`);
  assertClose(cs.data as Float32Array, want.c, TOL, `${what}: c`);
  assertClose(ns.data as Float32Array, want.n, TOL, `${what}: n`);
  assertClose(ms.data as Float32Array, want.m, TOL, `${what}: m`);
  if (initial) {
    const after = await Tensor.toHostAll(Object.values(initial));
    after.forEach((a, i) => assert.deepEqual(a.data, before[i].data, `${what}: the input state was modified`));
  }
  for (const t of [...tensors, ...Object.values(out), ...Object.values(initial ?? {})]) t.dispose();
}

Deno.test("mlstm chunkwise forward matches the float64 reference (B2.3)", async () => {
  const gpu = await testGpu();
  const rng = freshRng("mlstm chunkwise");
  await checkAgainstRef(gpu, rng, { d: dims(2, 2, 16, 8, 12), chunk: 4, withState: false, fused: false });
  await checkAgainstRef(gpu, rng, { d: dims(2, 2, 16, 8, 12), chunk: 4, withState: true, fused: true });
  await checkAgainstRef(gpu, rng, { d: dims(1, 3, 12, 6, 5), chunk: 12, withState: true, fused: false });
  await checkAgainstRef(gpu, rng, { d: dims(1, 2, 6, 7, 4), chunk: 1, withState: true, fused: true });
  await checkAgainstRef(gpu, rng, { d: dims(2, 1, 8, 4, 9), chunk: 2, withState: false, fused: true });
  await checkAgainstRef(gpu, rng, { d: dims(1, 2, 32, 16, 16), chunk: 16, withState: true, fused: true });
  // The gate soft cap applied as the gates are loaded (xlstm_large), with a cap that bends most of them.
  await checkAgainstRef(gpu, rng, { d: dims(2, 2, 16, 8, 12), chunk: 4, withState: true, fused: true, gateSoftCap: 2 });
});

Deno.test("mlstm chunkwise forward carries the state across segments", async () => {
  const gpu = await testGpu();
  const rng = freshRng("mlstm chunkwise segments");
  const d = dims(2, 2, 20, 4, 6);
  await checkAgainstRef(gpu, rng, { d, chunk: 4, withState: true, fused: true, chunksPerSegment: 2 }); // 2, 2, 1
  await checkAgainstRef(gpu, rng, { d, chunk: 2, withState: false, fused: false, chunksPerSegment: 3 }); // 4 + 1
});

Deno.test("mlstm chunkwise forward splits views larger than one binding over batch groups and time segments", async () => {
  const gpu = await testGpu();
  const rng = freshRng("mlstm chunkwise binding split");
  // Fused q|k|v rows of 48 floats: a 2 KiB binding holds about 10 rows, so each group is one sequence and each
  // segment two chunks of 4 (8 segments in all), every binding within the limit (checked by `limited`).
  const c: Case = { d: dims(2, 2, 32, 8, 8), chunk: 4, withState: true, fused: true };
  const whole = await limited(gpu, gpu.maxBinding, null, () => checkAgainstRef(gpu, rng, c));
  const split = await limited(gpu, 2048, null, () => checkAgainstRef(gpu, rng, c));
  assert.ok(split >= 4 * whole, `${split} dispatches split vs ${whole} whole: the views were not split`);
  // 8 KiB hold about 42 rows: groups of two sequences (the segment spans the first's tail and the second's head),
  // then a group of one.
  await limited(gpu, 8192, null, () => checkAgainstRef(gpu, rng, { ...c, d: dims(3, 2, 32, 8, 8) }));
  // 600 bytes hold the scratch of one chunk (576) but not 4 rows of the fused q|k|v view.
  await assert.rejects(
    () => limited(gpu, 600, null, () => checkAgainstRef(gpu, rng, c)),
    /one chunk of 4 rows of q \[64, 16\] \(stride 48\) does not fit this adapter's storage binding limit of 600/,
  );
});

Deno.test("mlstm chunkwise, looped recurrent step and parallel forms agree (f32)", async () => {
  const gpu = await testGpu();
  const rng = freshRng("mlstm three forms");
  const d = dims(2, 2, 16, 8, 6);
  const { x } = randomCase(rng, d);
  const { views, tensors } = upload(gpu, x, d, true);
  const chunk = mlstmChunkwiseForward(views.q, views.k, views.v, views.igate, views.fgate, null, {
    batch: d.batch,
    numHeads: d.heads,
    chunkSize: 4,
  });
  const parallel = mlstmParallelForward(views.q, views.k, views.v, views.igate, views.fgate, {
    batch: d.batch,
    numHeads: d.heads,
  });
  const stepH: Tensor[] = [];
  let state: MlstmState | null = null;
  for (let t = 0; t < d.seq; t++) {
    const at = (v: MatrixView): MatrixView => ({
      ...v,
      rows: d.batch,
      offset: v.offset + t * v.stride,
      stride: v.stride * d.seq,
    });
    const r = mlstmRecurrentStep(at(views.q), at(views.k), at(views.v), at(views.igate), at(views.fgate), state, {
      numHeads: d.heads,
      keyScaledState: false,
    });
    if (state) { for (const s of Object.values(state)) s.dispose(); }
    state = { c: r.c, n: r.n, m: r.m };
    stepH.push(r.h);
  }
  const [ch, ph, cc, cn, cm, sc, sn, sm, ...steps] = await Tensor.toHostAll([
    chunk.h,
    parallel,
    chunk.c,
    chunk.n,
    chunk.m,
    state!.c,
    state!.n,
    state!.m,
    ...stepH,
  ]);
  // Step outputs are [B, NH·DHV] per t: interleave them into [B, S, NH·DHV].
  const row = d.heads * d.dv;
  const looped = new Float32Array(d.batch * d.seq * row);
  steps.forEach((s, t) => {
    for (let b = 0; b < d.batch; b++) {
      looped.set((s.data as Float32Array).subarray(b * row, (b + 1) * row), (b * d.seq + t) * row);
    }
  });
  const got = ch.data as Float32Array;
  console.log(
    `h: chunkwise vs step ${relativeError(got, looped).toExponential(2)}, vs parallel ${
      relativeError(got, ph.data as Float32Array).toExponential(2)
    }`,
  );
  assertClose(got, looped, TOL, "chunkwise h vs looped step h");
  assertClose(got, ph.data as Float32Array, TOL, "chunkwise h vs parallel h");
  assertClose(looped, ph.data as Float32Array, TOL, "looped step h vs parallel h");
  assertClose(cc.data as Float32Array, sc.data as Float32Array, TOL, "final c vs looped step");
  assertClose(cn.data as Float32Array, sn.data as Float32Array, TOL, "final n vs looped step");
  assertClose(cm.data as Float32Array, sm.data as Float32Array, TOL, "final m vs looped step");
  for (const t of [...tensors, ...Object.values(chunk), parallel, ...Object.values(state!), ...stepH]) t.dispose();
});

Deno.test("mlstm chunkwise forward rejects S not a multiple of the chunk size", async () => {
  const gpu = await testGpu();
  try {
    const d = dims(1, 1, 6, 4, 4);
    const { views, tensors } = upload(gpu, randomCase(freshRng("mlstm chunkwise shapes"), d).x, d, false);
    assert.throws(
      () =>
        mlstmChunkwiseForward(views.q, views.k, views.v, views.igate, views.fgate, null, {
          batch: 1,
          numHeads: 1,
          chunkSize: 4,
        }),
      /S = 6 is not a multiple of chunkSize 4/,
    );
    for (const t of tensors) t.dispose();
  } finally {
    await closeTestGpu();
  }
});
