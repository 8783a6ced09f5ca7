import assert from "node:assert/strict";
import type { Gpu } from "../src/gpu/runtime.ts";
import { crossEntropy, crossEntropyPaths, crossEntropyWithGrad } from "../src/ops/cross_entropy.ts";
import { Tensor } from "../src/tensor.ts";
import { crossEntropyRef } from "./cpu/cross_entropy.ts";
import { assertClose, closeTestGpu, freshRng, randomTensor, relativeError, type Rng, testGpu } from "./util.ts";

interface Case {
  /** Logits shape `[..., V]`. */
  shape: number[];
  /** Share of rows labelled `ignoreIndex`. */
  ignored?: number;
  ignoreIndex?: number;
  /** A number, or a value uploaded as a `[1]` tensor. */
  gradScale?: number | { tensor: number };
  /** Labels to plant at random rows (e.g. out of range). */
  planted?: number[];
}

/**
 * Random logits (std 3) and labels (half of them the row's argmax, so accuracy is not trivially 0); checks loss,
 * counts and the gradient against the float64 reference. Returns the reference for further assertions.
 */
async function check(gpu: Gpu, rng: Rng, c: Case) {
  const vocab = c.shape[c.shape.length - 1];
  const rows = c.shape.slice(0, -1).reduce((a, b) => a * b, 1);
  const ignoreIndex = c.ignoreIndex ?? -1;
  const x = randomTensor(rng, c.shape, 3);
  const labels = Int32Array.from({ length: rows }, (_, r) => {
    if (rng.uniform() < (c.ignored ?? 0)) return ignoreIndex;
    if (rng.uniform() < 0.5) return rng.int(vocab);
    const row = x.values.subarray(r * vocab, (r + 1) * vocab);
    return row.indexOf(Math.max(...row));
  });
  for (const label of c.planted ?? []) labels[rng.int(rows)] = label;
  const scale = typeof c.gradScale === "object" ? c.gradScale.tensor : c.gradScale ?? 1;
  const want = crossEntropyRef(x.values, labels, vocab, ignoreIndex, scale);

  const logits = Tensor.fromHost(gpu, x.host);
  const labelT = Tensor.fromHost(gpu, { dtype: "int32", shape: c.shape.slice(0, -1), data: labels });
  const scaleT = typeof c.gradScale === "object"
    ? Tensor.fromHost(gpu, { dtype: "float32", shape: [1], data: new Float32Array([scale]) })
    : null;
  const out = crossEntropyWithGrad(logits, labelT, { ignoreIndex, gradScale: scaleT ?? scale });
  const hosts = await Tensor.toHostAll([out.loss, out.correct, out.count, out.dLogits]);
  assert.deepEqual(hosts[3].shape, c.shape);
  const [[loss], [correct], [count], dLogits] = hosts.map((h) => h.data as Float32Array);
  assert.equal(count, want.count, "count");
  assert.equal(correct, want.correct, "correct");
  if (Number.isNaN(want.loss)) {
    assert.ok(Number.isNaN(loss), `loss ${loss} should be NaN`);
  } else {
    // A mean of f32 log-sum-exps: a few ulp (measured ≤ 1e-7).
    assertClose([loss], [want.loss], 2e-6, "loss");
    // Softmax in f32 about an f32 log-sum-exp: error ~ ulp(lse) relative to the largest entry (measured ≤ 4e-7).
    assertClose(dLogits, want.dLogits, 3e-6, "dLogits");
  }
  for (const t of [logits, labelT, scaleT, out.loss, out.correct, out.count, out.dLogits]) t?.dispose();
  return { want, dLogits };
}

Deno.test("crossEntropy: the CPU gradient matches central finite differences of the CPU loss", () => {
  const rng = freshRng("cross entropy fd");
  const [rows, vocab] = [5, 4];
  const logits = Float64Array.from(rng.normals(rows * vocab, 2));
  const labels = [1, -1, 3, 0, 3];
  const { dLogits } = crossEntropyRef(logits, labels, vocab, -1, 0.7);
  const h = 1e-6;
  for (let i = 0; i < logits.length; i++) {
    const plus = logits.slice(), minus = logits.slice();
    plus[i] += h;
    minus[i] -= h;
    const fd = 0.7 * (crossEntropyRef(plus, labels, vocab).loss - crossEntropyRef(minus, labels, vocab).loss) / (2 * h);
    assert.ok(Math.abs(fd - dLogits[i]) < 1e-8, `dLogits[${i}]: finite difference ${fd} vs ${dLogits[i]}`);
  }
});

Deno.test("crossEntropy matches the float64 reference with ignored rows and upstream scales", async () => {
  const gpu = await testGpu();
  const rng = freshRng("cross entropy");
  await check(gpu, rng, { shape: [2, 5, 7], ignored: 0.3 });
  await check(gpu, rng, { shape: [300, 3], ignored: 0.2, gradScale: 0.25 }); // parity-like rows, 2 row chunks
  await check(gpu, rng, { shape: [9, 6], ignored: 0.3, ignoreIndex: 2, gradScale: { tensor: -1.5 } });
  await check(gpu, rng, { shape: [4, 1] }); // one class: loss 0, gradient 0
});

Deno.test("crossEntropy splits rows into segments, row chunks and binding ranges", async () => {
  const gpu = await testGpu();
  const rng = freshRng("cross entropy split");
  const saved = { ...crossEntropyPaths }, savedBinding = gpu.maxBinding;
  try {
    crossEntropyPaths.segmentLength = 4; // 11 classes → segments of 4, 4, 3
    crossEntropyPaths.rowsPerChunk = 3;
    await check(gpu, rng, { shape: [3, 7, 11], ignored: 0.2 });
    // Rows of 11 floats (44 bytes) never align with the offset alignment, so every range starts mid-binding.
    gpu.maxBinding = gpu.limits.minStorageBufferOffsetAlignment + 5 * 44; // 5 rows per range: 21 rows → 5 ranges
    const before = gpu.dispatchCount;
    await check(gpu, rng, { shape: [21, 11], ignored: 0.2, gradScale: { tensor: 2 } });
    assert.equal(gpu.dispatchCount - before, 5 * 3 + 1);
  } finally {
    Object.assign(crossEntropyPaths, saved);
    gpu.maxBinding = savedBinding;
  }
});

Deno.test("crossEntropy over an LM vocabulary of 50,304 classes", async () => {
  const gpu = await testGpu();
  await check(gpu, freshRng("cross entropy vocab"), { shape: [3, 50304], planted: [-1] });
});

Deno.test("crossEntropy edge cases: all rows ignored, labels out of range, no gradient requested", async () => {
  const gpu = await testGpu();
  const rng = freshRng("cross entropy edges");
  const none = await check(gpu, rng, { shape: [4, 5], ignored: 1 });
  assert.equal(none.want.loss, 0);
  assert.ok(none.dLogits.every((d) => d === 0), "no counted rows: zero gradient");
  const bad = await check(gpu, rng, { shape: [6, 5], planted: [5] });
  assert.ok(Number.isNaN(bad.want.loss));
  assert.equal(bad.dLogits.filter(Number.isNaN).length, 5, "exactly the bad row's gradient is NaN");

  const logits = Tensor.fromHost(gpu, { dtype: "float32", shape: [2, 3], data: new Float32Array([1, 2, 3, 0, 0, 5]) });
  const labels = Tensor.fromHost(gpu, { dtype: "int32", shape: [2], data: new Int32Array([2, -1]) });
  const out = crossEntropy(logits, labels);
  assert.equal(out.dLogits, null);
  const [loss, correct, count] = (await Tensor.toHostAll([out.loss, out.correct, out.count]))
    .map((h) => h.data as Float32Array);
  assert.ok(relativeError(loss, [Math.log(1 + Math.exp(-1) + Math.exp(-2))]) < 1e-6);
  assert.deepEqual([correct[0], count[0]], [1, 1]);
});

Deno.test("crossEntropy rejects bad operands, naming them", async () => {
  const gpu = await testGpu();
  const logits = Tensor.zeros(gpu, [2, 3]);
  assert.throws(() => crossEntropy(logits, Tensor.zeros(gpu, [3], "int32")), /one label per row of logits \[2, 3\]/);
  assert.throws(() => crossEntropy(logits, Tensor.zeros(gpu, [2])), /labels must be int32.*got float32 \[2\]/);
  assert.throws(() => crossEntropy(Tensor.zeros(gpu, [2, 3], "int32"), labelsOf(gpu)), /logits must be a float32/);
  assert.throws(
    () => crossEntropy(logits, labelsOf(gpu), { gradScale: Tensor.zeros(gpu, [2]) }),
    /gradScale must be a number or a float32 \[1\] tensor, got float32 \[2\]/,
  );
  await closeTestGpu();
});

function labelsOf(gpu: Gpu): Tensor {
  return Tensor.fromHost(gpu, { dtype: "int32", shape: [2], data: new Int32Array([0, 1]) });
}
