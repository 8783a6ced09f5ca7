/**
 * float16 weights: the tensor dtype (2 bytes per element, host round trips), the matmul's f16 B operand and the
 * embedding's f16 table against float64 references on the f16-rounded values (so the tolerance stays that of f32
 * arithmetic), their splits over storage bindings, and the errors for what f16 does not support.
 */

import assert from "node:assert/strict";
import { linear as linearFn } from "../src/nn/functional.ts";
import { Gpu } from "../src/gpu/runtime.ts";
import { f16ToNumber, type HostTensor, numberToF16 } from "../src/host_tensor.ts";
import { embedding } from "../src/ops/embedding.ts";
import { matmul } from "../src/ops/matmul.ts";
import { add } from "../src/ops/pointwise.ts";
import { Tensor } from "../src/tensor.ts";
import { embeddingRef } from "./cpu/embedding.ts";
import { matmulRef } from "./cpu/matmul.ts";
import { assertClose, closeTestGpu, freshRng, limited, randomTensor, type Rng, testGpu } from "./util.ts";

/** Random normal values rounded to float16: the host tensor (float16 bits) and their exact float64 values. */
function randomHalf(rng: Rng, shape: number[], std = 1): { host: HostTensor; values: Float64Array } {
  const bits = Uint16Array.from(randomTensor(rng, shape, std).values, numberToF16);
  return { host: { dtype: "float16", shape, data: bits }, values: Float64Array.from(bits, f16ToNumber) };
}

Deno.test("float16 tensors: 2 bytes per element, host round trips of odd sizes, conversion from float32", async () => {
  const gpu = await testGpu(), rng = freshRng("f16 tensor");
  for (const n of [1, 3, 4, 7, 130]) {
    const h = randomHalf(rng, [n]);
    const t = Tensor.fromHost(gpu, h.host, { dtype: "float16" });
    assert.equal(t.bytes, 2 * n);
    const back = await t.toHost();
    assert.equal(back.dtype, "float16");
    assert.deepEqual(back.data, h.host.data);
    t.dispose();
  }
  // float32 host data rounds half to even: 1 + 2^-11 lies halfway between 1 and 1 + 2^-10.
  const f32 = Tensor.fromHost(
    gpu,
    { dtype: "float32", shape: [3], data: new Float32Array([1 + 2 ** -11, -2.5, 1e6]) },
    {
      dtype: "float16",
    },
  );
  assert.deepEqual([...(await f32.toHost()).data as Uint16Array].map(f16ToNumber), [1, -2.5, Infinity]);
  f32.dispose();
});

Deno.test("matmul with a float16 B: all transposes, odd shapes, bias, against the float64 reference", async () => {
  const gpu = await testGpu(), rng = freshRng("f16 matmul");
  // Odd sizes (scalar loads), multiples of 4 (vec4<f16> loads), M = 1 (decoding), a partial K step.
  for (const [m, n, k] of [[1, 1, 1], [3, 5, 7], [33, 67, 129], [1, 96, 64], [36, 20, 44]]) {
    for (const transposeA of [false, true]) {
      for (const transposeB of [false, true]) {
        const a = randomTensor(rng, transposeA ? [k, m] : [m, k]);
        const b = randomHalf(rng, transposeB ? [n, k] : [k, n]);
        const bias = randomTensor(rng, [n]);
        const [ta, tbias] = [a.host, bias.host].map((h) => Tensor.fromHost(gpu, h));
        const tb = Tensor.fromHost(gpu, b.host, { dtype: "float16" });
        const got = matmul(ta, tb, { transposeA, transposeB, bias: tbias });
        const want = matmulRef(a.values, b.values, m, n, k, { transposeA, transposeB, bias: bias.values });
        const what = `${m}×${n}×${k} ${transposeA ? "T" : "N"}${transposeB ? "T" : "N"}`;
        assertClose((await got.toHost()).data as Float32Array, want, 1e-5, what);
        for (const t of [ta, tb, tbias, got]) t.dispose();
      }
    }
  }
});

Deno.test("linear with a float16 weight larger than one binding splits it in bytes", async () => {
  const gpu = await testGpu(), rng = freshRng("f16 linear split");
  // W [67, 45] f16 = 6,030 bytes over 1 KiB bindings: rows of 90 bytes, never aligned to the binding offset.
  const x = randomTensor(rng, [5, 45]), w = randomHalf(rng, [67, 45]);
  const tx = Tensor.fromHost(gpu, x.host), tw = Tensor.fromHost(gpu, w.host, { dtype: "float16" });
  let got: Tensor | null = null;
  const dispatches = await limited(gpu, 1024, null, () => {
    got = linearFn(tx, tw);
    return Promise.resolve();
  });
  assert.ok(dispatches >= 6, `only ${dispatches} dispatches: the weight was not split`);
  const want = matmulRef(x.values, w.values, 5, 67, 45, { transposeB: true });
  assertClose((await got!.toHost()).data as Float32Array, want, 1e-5, "split f16 linear");
  for (const t of [tx, tw, got!]) t.dispose();
});

Deno.test("embedding with a float16 table: exact rows, ranges split in bytes (odd E)", async () => {
  const gpu = await testGpu(), rng = freshRng("f16 embedding");
  for (const [vocab, dim, binding] of [[30, 8, 0], [200, 25, 1024]]) {
    const table = randomHalf(rng, [vocab, dim]);
    const ids = Int32Array.from({ length: 8 }, () => rng.int(vocab));
    ids[0] = 0, ids[7] = vocab - 1, ids[5] = vocab; // first and last rows, one invalid id (NaN row)
    const tIds = Tensor.fromHost(gpu, { dtype: "int32", shape: [2, 4], data: ids });
    const tTable = Tensor.fromHost(gpu, table.host, { dtype: "float16" });
    let out: Tensor | null = null;
    const dispatches = await limited(gpu, binding || gpu.maxBinding, null, () => {
      out = embedding(tIds, tTable);
      return Promise.resolve();
    });
    // Rows of 50 bytes, in ranges of (1024 − alignment) / 50 rows (19 rows, 11 dispatches on lavapipe).
    const align = gpu.limits.minStorageBufferOffsetAlignment;
    if (binding) assert.equal(dispatches, Math.ceil(vocab / Math.floor((binding - align) / (2 * dim))));
    const got = (await out!.toHost()).data as Float32Array;
    const want = embeddingRef(ids, table.values, dim);
    want.forEach((v, i) =>
      assert.ok(Object.is(got[i], v) || (Number.isNaN(v) && Number.isNaN(got[i])), `element ${i}`)
    );
    for (const t of [tIds, tTable, out!]) t.dispose();
  }
});

Deno.test("float16: clear errors for gradients, other ops, and adapters without shader-f16", async () => {
  const gpu = await testGpu();
  const w = Tensor.fromHost(gpu, { dtype: "float32", shape: [4, 4], data: new Float32Array(16) }, { dtype: "float16" });
  w.requiresGrad = true;
  const x = Tensor.fromHost(gpu, { dtype: "float32", shape: [2, 4], data: new Float32Array(8) });
  const y = linearFn(x, w);
  await assert.rejects(
    () => y.backward(Tensor.zeros(gpu, [2, 4])),
    /linear: backward through the float16 weight \[4, 4\] is not supported: float16 weights are for inference only/,
  );
  assert.throws(() => add(w, w), /a float16 tensor \[4, 4\]; float16 holds weights/);
  assert.throws(() => matmul(w, x, { transposeB: true }), /matmul: a is float16, not float32/);
  // The same device seen as an adapter without the feature.
  const plain = new Gpu(gpu.device, "no shader-f16", []);
  const w2 = Tensor.fromHost(plain, { dtype: "float32", shape: [4, 4], data: new Float32Array(16) }, {
    dtype: "float16",
  });
  const x2 = Tensor.fromHost(plain, { dtype: "float32", shape: [2, 4], data: new Float32Array(8) });
  assert.throws(() => matmul(x2, w2, { transposeB: true }), /lacks the WebGPU feature "shader-f16"; use float32/);
  const ids = Tensor.fromHost(plain, { dtype: "int32", shape: [1], data: new Int32Array(1) });
  assert.throws(() => embedding(ids, w2), /float16, but this adapter lacks the WebGPU feature "shader-f16"/);
  for (const t of [w, x, y, w2, x2, ids]) t.dispose();
  await closeTestGpu();
});
