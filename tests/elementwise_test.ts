import assert from "node:assert/strict";
import { add, mul } from "../src/ops/elementwise.ts";
import { Tensor } from "../src/tensor.ts";
import { assertClose, closeTestGpu, freshRng, randomTensor, testGpu } from "./util.ts";

Deno.test("add and mul broadcast b over the leading dims of a", async () => {
  const gpu = await testGpu();
  const rng = freshRng("elementwise");
  const a = randomTensor(rng, [3, 70000]);
  const b = randomTensor(rng, [70000]);
  const ta = Tensor.fromHost(gpu, a.host), tb = Tensor.fromHost(gpu, b.host);
  const [sum, prod] = await Tensor.toHostAll([add(ta, tb), mul(ta, tb)]);
  const n = b.values.length;
  assertClose(sum.data as Float32Array, a.values.map((v, i) => v + b.values[i % n]), 1e-7, "add");
  assertClose(prod.data as Float32Array, a.values.map((v, i) => v * b.values[i % n]), 1e-7, "mul");
});

Deno.test("add names both shapes when they do not broadcast", async () => {
  const gpu = await testGpu();
  const a = Tensor.zeros(gpu, [2, 3]), b = Tensor.zeros(gpu, [2]);
  assert.throws(() => add(a, b), /b \[2\] over a \[2, 3\]/);
  await closeTestGpu();
});
