import assert from "node:assert/strict";
import { mlstmOutputGate, sigmoidGate, softCap } from "../src/ops/pointwise.ts";
import { columns, Tensor } from "../src/tensor.ts";
import { mlstmOutputGateRef, sigmoidGateRef, softCapRef } from "./cpu/activations.ts";
import { assertClose, closeTestGpu, freshRng, host, randomTensor, testGpu } from "./util.ts";

Deno.test("softCap is c·tanh(x/c): relative accuracy near 0, exactly ±c (no NaN) for huge |x|", async () => {
  const gpu = await testGpu();
  const rng = freshRng("softCap");
  const special = [0, 1e-30, -1e-30, 1e-6, -1e-6, 1e-3, 0.3, 100, -100, 1e6, -1e6, 3e38, -3e38, Infinity, -Infinity];
  const values = [...special, ...rng.normals(3000, 40)];
  const x = host([values.length], values);
  const x64 = Float64Array.from(x.data as Float32Array);
  const tx = Tensor.fromHost(gpu, x);
  for (const cap of [15, 30]) {
    const y = softCap(tx, cap);
    assert.deepEqual(y.shape, [values.length]);
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
  const o = randomTensor(rng, [2, 7, 48], 4), h = randomTensor(rng, [2, 7, 48]);
  const to = Tensor.fromHost(gpu, o.host), th = Tensor.fromHost(gpu, h.host);
  const y = sigmoidGate(to, th);
  assert.deepEqual(y.shape, [2, 7, 48]);
  assertClose((await y.toHost()).data as Float32Array, sigmoidGateRef(o.values, h.values), 1e-6, "sigmoidGate");
  for (const t of [to, th, y]) t.dispose();
});

Deno.test("mlstmOutputGate is (hNorm + skip ⊙ xConv) ⊙ silu(z), z the second half of the up-projection", async () => {
  const gpu = await testGpu();
  const rng = freshRng("mlstmOutputGate");
  const [b, s, d] = [2, 9, 40];
  const hNorm = randomTensor(rng, [b, s, d]), skip = randomTensor(rng, [d]), xConv = randomTensor(rng, [b, s, d]);
  const up = randomTensor(rng, [b, s, 2 * d], 3);
  const want = mlstmOutputGateRef(hNorm.values, skip.values, xConv.values, up.values, d, 2 * d);
  const [th, tskip, tx, tup] = [hNorm, skip, xConv, up].map((t) => Tensor.fromHost(gpu, t.host));
  const y = mlstmOutputGate(th, tskip, tx, columns(tup, d, d));
  assert.deepEqual(y.shape, [b, s, d]);
  assertClose((await y.toHost()).data as Float32Array, want, 1e-6, "mlstmOutputGate");
  y.dispose();
  // Rows split over dispatches: up (5760 bytes) exceeds a 1 KiB binding; skip is broadcast in every chunk.
  const saved = gpu.maxBinding;
  gpu.maxBinding = 1024;
  try {
    const before = gpu.dispatchCount;
    const ys = mlstmOutputGate(th, tskip, tx, columns(tup, d, d));
    assert.ok(gpu.dispatchCount - before >= 3, `expected several row chunks, got ${gpu.dispatchCount - before}`);
    assertClose((await ys.toHost()).data as Float32Array, want, 1e-6, "mlstmOutputGate split");
    ys.dispose();
  } finally {
    gpu.maxBinding = saved;
  }
  for (const t of [th, tskip, tx, tup]) t.dispose();
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
  await closeTestGpu();
});
