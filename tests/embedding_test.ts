import assert from "node:assert/strict";
import { embedding, embeddingBackward, embeddingBackwardPaths } from "../src/ops/embedding.ts";
import { Tensor } from "../src/tensor.ts";
import { embeddingBackwardRef, embeddingRef } from "./cpu/embedding.ts";
import { assertClose, closeTestGpu, freshRng, randomTensor, type Rng, testGpu } from "./util.ts";
import type { Gpu } from "../src/gpu/runtime.ts";

/** Looks up random ids (some outside `[0, V)` when `invalid`) in a random `[V, E]` weight and checks the rows. */
async function check(gpu: Gpu, rng: Rng, idShape: number[], vocab: number, dim: number, invalid: number[]) {
  const weight = randomTensor(rng, [vocab, dim]);
  const n = idShape.reduce((a, b) => a * b, 1);
  const ids = Int32Array.from({ length: n }, () => rng.int(vocab));
  // Always include the first and last rows; put the invalid ids at random positions.
  ids[0] = 0;
  ids[n - 1] = vocab - 1;
  for (const bad of invalid) ids[1 + rng.int(n - 2)] = bad;
  const out = embedding(
    Tensor.fromHost(gpu, { dtype: "int32", shape: idShape, data: ids }),
    Tensor.fromHost(gpu, weight.host),
  );
  const got = await out.toHost();
  assert.deepEqual(got.shape, [...idShape, dim]);
  const want = embeddingRef(ids, weight.values, dim);
  const data = got.data as Float32Array;
  for (let i = 0; i < want.length; i++) {
    assert.equal(Number.isNaN(data[i]), Number.isNaN(want[i]), `element ${i} (id ${ids[Math.floor(i / dim)]})`);
  }
  const valid = (a: ArrayLike<number>) => Array.from(a).map((v) => (Number.isNaN(v) ? 0 : v));
  assertClose(valid(data), valid(want), 0, "embedding rows"); // a lookup is a copy: exact
  return ids.filter((id) => id < 0 || id >= vocab).length;
}

Deno.test("embedding looks up rows and writes NaN for out-of-range ids", async () => {
  const gpu = await testGpu();
  const rng = freshRng("embedding");
  const bad = await check(gpu, rng, [3, 7], 50, 24, [-1, 50, 2 ** 31 - 1, -(2 ** 31)]);
  assert.ok(bad > 0, "the test must contain invalid ids");
  await check(gpu, rng, [5], 11, 3, []);
});

Deno.test("embedding splits a weight (and an output) larger than one binding into vocabulary (position) ranges", async () => {
  const gpu = await testGpu();
  const rng = freshRng("embedding split");
  const saved = gpu.maxBinding;
  const align = gpu.limits.minStorageBufferOffsetAlignment;
  try {
    // Rows of 25 floats (100 bytes) never align with the offset alignment, so every range has a remainder.
    gpu.maxBinding = align + 12 * 100; // 12 rows per range: 200 rows → 17 dispatches
    const before = gpu.dispatchCount;
    await check(gpu, rng, [3, 4], 200, 25, [200, -3]);
    assert.equal(gpu.dispatchCount - before, 17);
    // 42 output rows of 100 bytes exceed the binding too: ranges of 12 positions, each over the 17 vocabulary ranges.
    const more = gpu.dispatchCount;
    await check(gpu, rng, [6, 7], 200, 25, [-1, 201]);
    assert.equal(gpu.dispatchCount - more, 4 * 17);
  } finally {
    gpu.maxBinding = saved;
  }
});

/**
 * Checks `embeddingBackward` for `n` random ids in `[0, vocab)` (plus the given invalid ones) against the float64
 * reference, and that a second run gives bitwise the same result (no atomics, fixed summation order).
 */
async function checkBackward(gpu: Gpu, rng: Rng, idShape: number[], vocab: number, dim: number, invalid: number[]) {
  const n = idShape.reduce((a, b) => a * b, 1);
  const ids = Int32Array.from({ length: n }, () => rng.int(vocab));
  for (const bad of invalid) ids[rng.int(n)] = bad;
  const dOut = randomTensor(rng, [...idShape, dim]);
  const idsT = Tensor.fromHost(gpu, { dtype: "int32", shape: idShape, data: ids });
  const dOutT = Tensor.fromHost(gpu, dOut.host);
  const [got, again] = await Tensor.toHostAll([
    embeddingBackward(idsT, dOutT, vocab),
    embeddingBackward(idsT, dOutT, vocab),
  ]);
  assert.deepEqual(got.shape, [vocab, dim]);
  // Each element sums about n / vocab terms of unit normals in f32: relative error a few ulp of the largest.
  assertClose(got.data as Float32Array, embeddingBackwardRef(ids, dOut.values, vocab, dim), 2e-6, "dweight");
  assert.deepEqual(again.data, got.data, "a second run must give bitwise the same gradient");
  idsT.dispose();
  dOutT.dispose();
}

Deno.test("embeddingBackward: the CPU reference matches finite differences of the forward", () => {
  const rng = freshRng("embedding backward fd");
  const [vocab, dim, n] = [5, 3, 9];
  const ids = Int32Array.from({ length: n }, () => rng.int(vocab));
  ids[4] = vocab; // out of range: its NaN row does not depend on the weight
  const weight = Float64Array.from(rng.normals(vocab * dim));
  const r = Float64Array.from(rng.normals(n * dim));
  // loss = Σ out · r over the valid rows; d loss / d weight by central differences.
  const loss = (w: Float64Array) =>
    embeddingRef(ids, w, dim).reduce((acc, v, i) => (Number.isNaN(v) ? acc : acc + v * r[i]), 0);
  const want = embeddingBackwardRef(ids, r, vocab, dim);
  const h = 1e-6;
  for (let i = 0; i < weight.length; i++) {
    const plus = weight.slice(), minus = weight.slice();
    plus[i] += h;
    minus[i] -= h;
    const fd = (loss(plus) - loss(minus)) / (2 * h);
    assert.ok(Math.abs(fd - want[i]) < 1e-8, `dweight[${i}]: finite difference ${fd} vs ${want[i]}`);
  }
});

Deno.test("embeddingBackward sums rows per id, deterministically, ignoring out-of-range ids", async () => {
  const gpu = await testGpu();
  const rng = freshRng("embedding backward");
  await checkBackward(gpu, rng, [3, 7], 50, 24, [-1, 50, 2 ** 31 - 1]);
  await checkBackward(gpu, rng, [40], 3, 5, [3, -(2 ** 31)]);
  await checkBackward(gpu, rng, [2], 6, 1, []); // untouched rows must come back zero
  await checkBackward(gpu, rng, [0, 4], 4, 3, []); // no positions: all zero
});

Deno.test("embeddingBackward chains ids across several position blocks", async () => {
  const gpu = await testGpu();
  const rng = freshRng("embedding backward blocks");
  const saved = embeddingBackwardPaths.blockSize;
  try {
    embeddingBackwardPaths.blockSize = 4; // 61 positions → 16 blocks, the last one partial
    await checkBackward(gpu, rng, [61], 5, 7, [9]);
    embeddingBackwardPaths.blockSize = 1; // every position its own block
    await checkBackward(gpu, rng, [3, 5], 4, 4, []);
  } finally {
    embeddingBackwardPaths.blockSize = saved;
  }
});

Deno.test("embeddingBackward at training sizes: parity batch (V 3, N 65,280) and an LM vocabulary (V 50,304)", async () => {
  const gpu = await testGpu();
  const rng = freshRng("embedding backward sizes");
  // 65,280 positions over 3 ids: chains of ~340 per 1024-position block, 64 blocks; a single chain over all
  // positions would exceed lavapipe's loop limit.
  await checkBackward(gpu, rng, [256, 255], 3, 8, []);
  await checkBackward(gpu, rng, [4, 256], 50304, 40, []);
});

Deno.test("embedding rejects bad operands, naming them", async () => {
  const gpu = await testGpu();
  const ids = Tensor.fromHost(gpu, { dtype: "int32", shape: [2], data: new Int32Array([0, 1]) });
  assert.throws(
    () => embedding(ids, Tensor.zeros(gpu, [4, 2, 3])),
    /weight must be a float32 or float16 \[V, E\] matrix, got float32 \[4, 2, 3\]/,
  );
  assert.throws(
    () => embedding(Tensor.zeros(gpu, [2]), Tensor.zeros(gpu, [4, 3])),
    /ids must be int32, got float32 \[2\]/,
  );
  assert.throws(
    () => embeddingBackward(ids, Tensor.zeros(gpu, [3, 4]), 5),
    /dOut: expected shape \[2, 4\], got \[3, 4\]/,
  );
  assert.throws(() => embeddingBackward(ids, Tensor.zeros(gpu, [2, 4]), 0), /vocabSize must be an integer/);
  await closeTestGpu();
});
