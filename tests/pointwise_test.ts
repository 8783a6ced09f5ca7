import assert from "node:assert/strict";
import { add, mlstmOutputGate, mul, sigmoidGate, softCap } from "../src/ops/pointwise.ts";
import { columns, Tensor } from "../src/tensor.ts";
import { mlstmOutputGateRef, sigmoidGateRef, softCapRef } from "./cpu/activations.ts";
import { assertClose, closeTestGpu, freshRng, host, randomTensor, type Rng, testGpu } from "./util.ts";
import type { Gpu } from "../src/gpu/runtime.ts";

Deno.test("softCap is c·tanh(x/c): relative accuracy near 0, exactly ±c (no NaN) for huge |x|", async () => {
  const gpu = await testGpu();
  const rng = freshRng("softCap");
  const special = [0, 1e-30, -1e-30, 1e-6, -1e-6, 1e-3, 0.3, 100, -100, 1e6, -1e6, 3e38, -3e38, Infinity, -Infinity];
  const values = [...special, ...rng.normals(3001, 40)]; // 3016 = 8 × 377: vec4 rows of 3016, scalar rows of 377
  const x = host([values.length], values);
  const x64 = Float64Array.from(x.data as Float32Array);
  const tx = Tensor.fromHost(gpu, x);
  for (const [cap, shape] of [[15, [3016]], [30, [3016]], [15, [8, 377]]] as const) {
    const y = softCap(tx.reshape(shape), cap);
    assert.deepEqual(y.shape, shape);
    const got = (await y.toHost()).data as Float32Array, want = softCapRef(x64, cap);
    for (let i = 0; i < got.length; i++) {
      if (!(Math.abs(got[i] - want[i]) <= 1e-6 * Math.abs(want[i]) + 1e-30)) {
        throw new Error(`softCap(${x64[i]}, ${cap}) = ${got[i]}, want ${want[i]}`);
      }
    }
    y.dispose();
  }
  tx.dispose();
});

Deno.test("sigmoidGate is sigmoid(o) ⊙ h", async () => {
  const gpu = await testGpu();
  const rng = freshRng("sigmoidGate");
  // vec4 units (48 columns), scalars with a ragged last group of 4 (7 columns), and 16 per invocation (2¹⁶ elements)
  for (const shape of [[2, 7, 48], [3, 5, 7], [4, 16384]]) {
    const o = randomTensor(rng, shape, 4), h = randomTensor(rng, shape);
    const to = Tensor.fromHost(gpu, o.host), th = Tensor.fromHost(gpu, h.host);
    const y = sigmoidGate(to, th);
    assert.deepEqual(y.shape, shape);
    const want = sigmoidGateRef(o.values, h.values);
    assertClose((await y.toHost()).data as Float32Array, want, 1e-6, `sigmoidGate ${shape}`);
    for (const t of [to, th, y]) t.dispose();
  }
});

Deno.test("mlstmOutputGate is (hNorm + skip ⊙ xConv) ⊙ silu(z), z the second half of the up-projection", async () => {
  const gpu = await testGpu();
  const rng = freshRng("mlstmOutputGate");
  for (const d of [40, 13]) await outputGateCase(gpu, rng, d); // vec4 units, scalars
});

async function outputGateCase(gpu: Gpu, rng: Rng, d: number): Promise<void> {
  const [b, s] = [2, 9];
  const hNorm = randomTensor(rng, [b, s, d]), skip = randomTensor(rng, [d]), xConv = randomTensor(rng, [b, s, d]);
  const up = randomTensor(rng, [b, s, 2 * d], 3);
  const want = mlstmOutputGateRef(hNorm.values, skip.values, xConv.values, up.values, d, 2 * d);
  const [th, tskip, tx, tup] = [hNorm, skip, xConv, up].map((t) => Tensor.fromHost(gpu, t.host));
  const y = mlstmOutputGate(th, tskip, tx, columns(tup, d, d));
  assert.deepEqual(y.shape, [b, s, d]);
  assertClose((await y.toHost()).data as Float32Array, want, 1e-6, "mlstmOutputGate");
  y.dispose();
  // Rows split over dispatches: up (≥ 1872 bytes) exceeds a 1 KiB binding; skip is broadcast in every chunk.
  const saved = gpu.maxBinding;
  gpu.maxBinding = 1024;
  try {
    const before = gpu.dispatchCount;
    const ys = mlstmOutputGate(th, tskip, tx, columns(tup, d, d));
    assert.ok(gpu.dispatchCount - before >= 2, `expected several row chunks, got ${gpu.dispatchCount - before}`);
    assertClose((await ys.toHost()).data as Float32Array, want, 1e-6, "mlstmOutputGate split");
    ys.dispose();
  } finally {
    gpu.maxBinding = saved;
  }
  for (const t of [th, tskip, tx, tup]) t.dispose();
}

Deno.test("add and mul broadcast b over the leading dims of a", async () => {
  const gpu = await testGpu();
  const rng = freshRng("add/mul");
  // [3, 70000] takes 16 elements per invocation, in vec4 units; [3, 70001] in scalars; [2, 3, 5] broadcasts a
  // [3, 5] b (rows of 15); [4, 6] adds a whole tensor (rows of its last dimension, 4 elements per invocation).
  for (
    const [aShape, bShape] of [[[3, 70000], [70000]], [[3, 70001], [70001]], [[2, 3, 5], [3, 5]], [[4, 6], [4, 6]]]
  ) {
    const a = randomTensor(rng, aShape), b = randomTensor(rng, bShape);
    const ta = Tensor.fromHost(gpu, a.host), tb = Tensor.fromHost(gpu, b.host);
    const outs = [add(ta, tb), mul(ta, tb)];
    const [sum, prod] = await Tensor.toHostAll(outs);
    assert.deepEqual(sum.shape, aShape);
    const n = b.values.length;
    assertClose(sum.data as Float32Array, a.values.map((v, i) => v + b.values[i % n]), 1e-7, `add ${aShape}`);
    assertClose(prod.data as Float32Array, a.values.map((v, i) => v * b.values[i % n]), 1e-7, `mul ${aShape}`);
    for (const t of [ta, tb, ...outs]) t.dispose();
  }
});

Deno.test("add splits rows when a exceeds one storage binding", async () => {
  const gpu = await testGpu();
  const rng = freshRng("add split");
  const a = randomTensor(rng, [40, 12]), b = randomTensor(rng, [12]);
  const ta = Tensor.fromHost(gpu, a.host), tb = Tensor.fromHost(gpu, b.host);
  const saved = gpu.maxBinding;
  gpu.maxBinding = 1024; // a is 1920 bytes
  try {
    const before = gpu.dispatchCount;
    const sum = add(ta, tb);
    assert.ok(gpu.dispatchCount - before >= 2, `expected several row chunks, got ${gpu.dispatchCount - before}`);
    assertClose((await sum.toHost()).data as Float32Array, a.values.map((v, i) => v + b.values[i % 12]), 1e-7, "split");
    sum.dispose();
  } finally {
    gpu.maxBinding = saved;
  }
  for (const t of [ta, tb]) t.dispose();
});

Deno.test("pointwise ops name the tensor and both shapes on a mismatch", async () => {
  const gpu = await testGpu();
  const a = Tensor.zeros(gpu, [4, 6]), up = Tensor.zeros(gpu, [4, 12]);
  assert.throws(
    () => sigmoidGate(a, Tensor.zeros(gpu, [4, 5])),
    /sigmoidGate h: expected shape \[4, 6\], got \[4, 5\]/,
  );
  assert.throws(() => softCap(a, 0), /cap must be positive/);
  assert.throws(
    () => mlstmOutputGate(a, Tensor.zeros(gpu, [5]), a, columns(up, 6, 6)),
    /skip: expected shape \[6\], got \[5\]/,
  );
  assert.throws(
    () => mlstmOutputGate(a, Tensor.zeros(gpu, [6]), Tensor.zeros(gpu, [24]), columns(up, 6, 6)),
    /xConv: expected shape \[4, 6\], got \[24\]/,
  );
  assert.throws(
    () => mlstmOutputGate(a, Tensor.zeros(gpu, [6]), a, columns(up, 0, 5)),
    /z \[4, 5\] does not match the output \[4, 6\]/,
  );
  assert.throws(
    () => add(Tensor.zeros(gpu, [2, 3]), Tensor.zeros(gpu, [2])),
    /add: cannot broadcast b \[2\] over a \[2, 3\]/,
  );
  assert.throws(() => mul(a, Tensor.zeros(gpu, [4])), /mul: cannot broadcast b \[4\] over a \[4, 6\]/);
  assert.throws(() => add(a, Tensor.zeros(gpu, [0])), /add: cannot broadcast b \[0\] over a \[4, 6\]/);
  await closeTestGpu();
});
