import assert from "node:assert/strict";
import type { Gpu } from "../src/gpu/runtime.ts";
import { resolveSampling, sampleTokens, type Sampling, samplingUniform } from "../src/ops/sample.ts";
import { type MatrixView, Tensor } from "../src/tensor.ts";
import { sampleRef } from "./cpu/sample.ts";
import { closeTestGpu, freshRng, type Rng, testGpu } from "./util.ts";

/**
 * A draw closer than this (relative to the kept mass) to a top-p or cumulative-mass threshold may flip between the
 * GPU's float32 and the reference's float64; such draws are counted, not compared. Measured on lavapipe over
 * ~15,000 draws: the only flip had a margin of 3.7e-8; about 0.6 % of draws fall under 1e-6.
 */
const AMBIGUOUS = 1e-6;

const u32 = (rng: Rng) => Math.floor(rng.uniform() * 2 ** 32);

/**
 * Samples the rows of `view` once per step (history column i for steps[i]) and returns the history rows; checks
 * that `ids` holds the last step's tokens.
 */
async function sampleSteps(
  gpu: Gpu,
  view: MatrixView,
  sampling: Sampling,
  seed: number,
  steps: number[],
): Promise<Int32Array> {
  const B = view.rows;
  const ids = Tensor.zeros(gpu, [B, 1], "int32"), history = Tensor.zeros(gpu, [B, steps.length], "int32");
  steps.forEach((step, i) => sampleTokens(view, ids, history, i, { sampling, seed, step }));
  const [h, last] = await Tensor.toHostAll([history, ids]);
  const tokens = h.data as Int32Array;
  for (let b = 0; b < B; b++) {
    assert.equal(last.data[b], tokens[b * steps.length + steps.length - 1], "ids = last column");
  }
  ids.dispose();
  history.dispose();
  return tokens;
}

/** Compares GPU tokens with the float64 reference on every row and step; returns [compared, ambiguous]. */
async function compare(
  gpu: Gpu,
  logits: Float32Array,
  B: number,
  V: number,
  sampling: Sampling,
  seed: number,
  steps: number[],
): Promise<[number, number]> {
  const t = Tensor.fromHost(gpu, { dtype: "float32", shape: [B, V], data: logits });
  const got = await sampleSteps(gpu, { tensor: t, rows: B, cols: V, offset: 0, stride: V }, sampling, seed, steps);
  t.dispose();
  const s = resolveSampling(sampling, V);
  let compared = 0, ambiguous = 0;
  steps.forEach((step, i) => {
    for (let b = 0; b < B; b++) {
      const ref = sampleRef(logits.subarray(b * V, (b + 1) * V), s, samplingUniform(seed, step, b));
      if (ref.margin < AMBIGUOUS) {
        ambiguous++;
        continue;
      }
      compared++;
      const what = `${JSON.stringify(sampling)} V ${V} seed ${seed} step ${step} row ${b}`;
      assert.equal(got[b * steps.length + i], ref.token, what);
    }
  });
  return [compared, ambiguous];
}

Deno.test("samplingUniform mirrors the kernel's hash: on equal logits the draw picks token ⌊u·V⌋", async () => {
  const gpu = await testGpu();
  const rng = freshRng("sample hash");
  const B = 8, V = 32768; // 2^15: u·V keeps the top 15 bits of the 24-bit uniform exactly
  const t = Tensor.zeros(gpu, [B, V]);
  const view = { tensor: t, rows: B, cols: V, offset: 0, stride: V };
  for (const steps of [[0, 1, 2], [u32(rng), 2 ** 32 - 1]]) {
    const seed = u32(rng);
    const all = await sampleSteps(gpu, view, { temperature: 1 }, seed, steps);
    // top-p 0.3 keeps the first r = ⌈P·V⌉ of the tied tokens (HF's rule with equal masses), then draws ⌊u·r⌋.
    const r = Math.ceil(Math.fround(0.3) * V);
    const nucleus = await sampleSteps(gpu, view, { temperature: 1, topP: 0.3 }, seed, steps);
    steps.forEach((step, i) => {
      for (let b = 0; b < B; b++) {
        const u = samplingUniform(seed, step, b);
        assert.equal(all[b * steps.length + i], Math.floor(u * V), `seed ${seed} step ${step} row ${b}`);
        assert.equal(nucleus[b * steps.length + i], Math.floor(Math.fround(u * r)), `top-p: step ${step} row ${b}`);
      }
    });
  }
  t.dispose();
});

Deno.test("samplingUniform is uniform over steps and rows (chi-square, 16 bins)", () => {
  const seed = u32(freshRng("sample uniformity"));
  for (const draw of [(i: number) => samplingUniform(seed, i, 0), (i: number) => samplingUniform(seed, 7, i)]) {
    const bins = new Array(16).fill(0), n = 1 << 16;
    for (let i = 0; i < n; i++) bins[Math.floor(draw(i) * 16)]++;
    const chi2 = bins.reduce((a, c) => a + (c - n / 16) ** 2 / (n / 16), 0);
    assert.ok(chi2 < 50, `chi-square ${chi2.toFixed(1)} over 16 bins (df 15; 50 has p ≈ 1e-5)`);
  }
});

Deno.test("sampleTokens matches the float64 reference: greedy, temperature, top-k, top-p, ties", async () => {
  const gpu = await testGpu();
  const rng = freshRng("sample reference");
  let compared = 0, ambiguous = 0;
  for (const V of [1000, 37, 1]) {
    const B = 12;
    const normal = Float32Array.from(rng.normals(B * V, 2));
    // Quantised logits: ties at the top-k boundary, inside the nucleus boundary and for the argmax.
    const tied = normal.map((v) => Math.round(v * 2) / 2);
    // Masked vocabulary entries (−inf), as a caller's logit mask would leave them.
    const masked = normal.map((v, i) => (i % 5 === 1 ? -Infinity : v));
    const cases: Sampling[] = [
      "greedy",
      { temperature: 1 },
      { temperature: 0.7, topK: 5 },
      { temperature: 1.3, topP: 0.9 },
      { temperature: 1, topK: 20, topP: 0.5 },
      { temperature: 0.5, topP: 0.05 },
      { temperature: 2, topK: 1 },
      { temperature: 1, topK: Math.max(1, V - 1), topP: 0.999 },
    ];
    for (const logits of [normal, tied, masked]) {
      for (const sampling of cases) {
        const [c, a] = await compare(gpu, logits, B, V, sampling, u32(rng), [0, 1, u32(rng)]);
        compared += c;
        ambiguous += a;
      }
    }
  }
  console.log(`compared ${compared} tokens exactly, ${ambiguous} within ${AMBIGUOUS} of a threshold`);
  assert.ok(ambiguous <= 0.02 * (compared + ambiguous), `${ambiguous} ambiguous draws of ${compared + ambiguous}`);
});

Deno.test("sampleTokens reads the last time step of [B, S, V] logits, split over dispatches when too large", async () => {
  const gpu = await testGpu();
  const rng = freshRng("sample split");
  const [B, S, V] = [3, 5, 300];
  const data = Float32Array.from(rng.normals(B * S * V, 3));
  const t = Tensor.fromHost(gpu, { dtype: "float32", shape: [B, S, V], data });
  const view = { tensor: t, rows: B, cols: V, offset: (S - 1) * V, stride: S * V };
  const last = Float32Array.from({ length: B * V }, (_, i) => data[Math.floor(i / V) * S * V + (S - 1) * V + (i % V)]);
  const sampling = { temperature: 0.8, topK: 40, topP: 0.9 }, seed = u32(rng);
  const saved = gpu.maxBinding;
  try {
    gpu.maxBinding = gpu.limits.minStorageBufferOffsetAlignment + 4 * (V + 100); // one row per binding
    const before = gpu.dispatchCount;
    const got = await sampleSteps(gpu, view, sampling, seed, [5]);
    assert.equal(gpu.dispatchCount - before, B, "one dispatch per row");
    const s = resolveSampling(sampling, V);
    for (let b = 0; b < B; b++) {
      const ref = sampleRef(last.subarray(b * V, (b + 1) * V), s, samplingUniform(seed, 5, b));
      if (ref.margin >= AMBIGUOUS) assert.equal(got[b], ref.token, `row ${b}`);
    }
  } finally {
    gpu.maxBinding = saved;
  }
  t.dispose();
});

Deno.test("sampleTokens rejects bad operands and settings, naming them", async () => {
  const gpu = await testGpu();
  const logits = Tensor.zeros(gpu, [2, 10]);
  const view = { tensor: logits, rows: 2, cols: 10, offset: 0, stride: 10 };
  const ids = Tensor.zeros(gpu, [2, 1], "int32"), history = Tensor.zeros(gpu, [2, 4], "int32");
  const ok = { sampling: "greedy" as const, seed: 0, step: 0 };
  assert.throws(
    () => sampleTokens(view, Tensor.zeros(gpu, [2, 2], "int32"), history, 0, ok),
    /ids: expected shape \[2, 1\], got \[2, 2\]/,
  );
  assert.throws(() => sampleTokens(view, Tensor.zeros(gpu, [2, 1]), history, 0, ok), /ids must be int32, got float32/);
  assert.throws(() => sampleTokens(view, ids, history, 4, ok), /column 4 is outside history \[2, 4\]/);
  assert.throws(() => sampleTokens({ ...view, offset: 1 }, ids, history, 0, ok), /logits: view \[2, 10\] \(offset 1/);
  assert.throws(() => sampleTokens(view, ids, history, 0, { ...ok, seed: 2 ** 32 }), /seed must be an integer/);
  assert.throws(() => sampleTokens(view, ids, history, 0, { ...ok, step: -1 }), /step must be an integer/);
  const bad: [unknown, RegExp][] = [
    ["top-k", /sampling must be "greedy" or/],
    [{ temperature: -1 }, /temperature must be a finite number ≥ 0, got -1/],
    [{ temperature: 1, topK: 1.5 }, /topK must be an integer ≥ 0, got 1.5/],
    [{ temperature: 1, topP: 0 }, /topP must be in \(0, 1\], got 0/],
    [{ temperature: 1, topP: 1.5 }, /topP must be in \(0, 1\], got 1.5/],
    [{ temperature: 1e-300 }, /too small/],
  ];
  for (const [sampling, re] of bad) {
    assert.throws(() => sampleTokens(view, ids, history, 0, { ...ok, sampling: sampling as Sampling }), re);
  }
  const huge = Tensor.zeros(gpu, [1, 200000]);
  const one = Tensor.zeros(gpu, [1, 1], "int32"), oneHistory = Tensor.zeros(gpu, [1, 1], "int32");
  assert.throws(
    () => sampleTokens({ tensor: huge, rows: 1, cols: 200000, offset: 0, stride: 200000 }, one, oneHistory, 0, ok),
    /a vocabulary of 200000 needs \d+ loop trips/,
  );
  assert.deepEqual(resolveSampling({ temperature: 0, topK: 3 }, 10).greedy, true, "temperature 0 is greedy");
  assert.equal(resolveSampling({ temperature: 1, topK: 10 }, 10).topK, 0, "k ≥ V turns top-k off");
  for (const t of [logits, ids, history, huge, one, oneHistory]) t.dispose();
  await closeTestGpu();
});
