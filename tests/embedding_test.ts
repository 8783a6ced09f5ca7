import assert from "node:assert/strict";
import { embedding } from "../src/ops/embedding.ts";
import { Tensor } from "../src/tensor.ts";
import { embeddingRef } from "./cpu/embedding.ts";
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

Deno.test("embedding splits a weight larger than one binding into vocabulary ranges", async () => {
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
  } finally {
    gpu.maxBinding = saved;
  }
});

Deno.test("embedding rejects bad operands, naming them", async () => {
  const gpu = await testGpu();
  const ids = Tensor.fromHost(gpu, { dtype: "int32", shape: [2], data: new Int32Array([0, 1]) });
  assert.throws(
    () => embedding(ids, Tensor.zeros(gpu, [4, 2, 3])),
    /weight must be a float32 \[V, E\] matrix, got float32 \[4, 2, 3\]/,
  );
  assert.throws(
    () => embedding(Tensor.zeros(gpu, [2]), Tensor.zeros(gpu, [4, 3])),
    /ids must be int32, got float32 \[2\]/,
  );
  await closeTestGpu();
});
