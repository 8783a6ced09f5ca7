import assert from "node:assert/strict";
import { gatedActivation, type GatedActivationFn } from "../src/ops/gated_activation.ts";
import { Tensor } from "../src/tensor.ts";
import { ACTIVATIONS, erf, erfc, gatedActivationRef } from "./cpu/activations.ts";
import { assertClose, closeTestGpu, freshRng, host, randomTensor, testGpu } from "./util.ts";

const ALL: GatedActivationFn[] = ["gelu", "relu", "relu^2", "sigmoid", "swish", "selu"];

Deno.test("the float64 erf reference matches tabulated values", () => {
  // erf/erfc at 40 digits (mpmath), rounded to float64.
  const table: [number, number, number][] = [
    [0.1, 0.1124629160182849, 0.887537083981715],
    [0.5, 0.5204998778130465, 0.4795001221869535],
    [1, 0.8427007929497149, 0.15729920705028513],
    [2, 0.9953222650189527, 0.004677734981047266],
    [3, 0.9999779095030014, 2.209049699858544e-05],
    [5, 0.9999999999984626, 1.537459794428035e-12],
    [10, 1, 2.088487583762545e-45],
  ];
  for (const [z, e, c] of table) {
    assert.ok(Math.abs(erf(z) / e - 1) < 1e-14, `erf(${z}) = ${erf(z)}, want ${e}`);
    assert.ok(Math.abs(erfc(z) / c - 1) < 1e-13, `erfc(${z}) = ${erfc(z)}, want ${c}`);
    assert.ok(Math.abs(erf(-z) + e) < 1e-16 + 1e-14 * e && Math.abs(erfc(-z) - (2 - c)) < 1e-15);
  }
});

Deno.test("each activation is accurate elementwise over a wide range (up = 1)", async () => {
  const gpu = await testGpu();
  const rng = freshRng("activations");
  // Dense over [−20, 20], the GELU branch points (|x| = 0.75, 3, 14), tiny and huge values, and random normals.
  const gate = [0, 1e-30, -1e-30, 1e-7, -1e-7, 0.75, -0.75, 3, -3, 14, -14, 14.5, -14.5, 60, -60, 1e4, -1e4];
  for (let i = 0; i <= 8000; i++) gate.push(-20 + i * 0.005);
  for (const v of rng.normals(2000, 3)) gate.push(v);
  const n = gate.length;
  const x = host([n, 2], gate.flatMap((g) => [g, 1]));
  const g32 = Float64Array.from(Float32Array.from(gate));
  const tx = Tensor.fromHost(gpu, x);
  const outs = ALL.map((a) => gatedActivation(tx, a));
  const got = await Tensor.toHostAll(outs);
  ALL.forEach((a, k) => {
    const data = got[k].data as Float32Array;
    let worst = 0;
    for (let i = 0; i < n; i++) {
      const want = ACTIVATIONS[a](g32[i]);
      const err = Math.abs(data[i] - want) / (1e-6 * Math.abs(want) + 1e-7);
      if (!(err <= 1)) throw new Error(`${a}(${g32[i]}) = ${data[i]}, want ${want}`);
      worst = Math.max(worst, Math.abs(want) > 1e-30 ? Math.abs(data[i] / want - 1) : 0);
    }
    console.log(`${a}: worst relative error ${worst.toExponential(2)}`);
  });
  for (const t of [tx, ...outs]) t.dispose();
});

Deno.test("gatedActivation multiplies act(first half) by the second half", async () => {
  const gpu = await testGpu();
  const rng = freshRng("gatedActivation");
  const [b, s, p] = [2, 5, 24];
  const x = randomTensor(rng, [b, s, 2 * p], 2);
  const tx = Tensor.fromHost(gpu, x.host);
  for (const a of ALL) {
    const y = gatedActivation(tx, a);
    assert.deepEqual(y.shape, [b, s, p]);
    assertClose((await y.toHost()).data as Float32Array, gatedActivationRef(x.values, 2 * p, a), 1e-6, a);
    y.dispose();
  }
  tx.dispose();
});

Deno.test("gatedActivation splits rows when x exceeds one storage binding", async () => {
  const gpu = await testGpu();
  const rng = freshRng("gatedActivation split");
  const x = randomTensor(rng, [50, 32]); // 6400 bytes
  const tx = Tensor.fromHost(gpu, x.host);
  const saved = gpu.maxBinding;
  gpu.maxBinding = 1024;
  try {
    const before = gpu.dispatchCount;
    const y = gatedActivation(tx, "gelu");
    assert.ok(gpu.dispatchCount - before >= 7, `expected ≥ 7 row chunks, got ${gpu.dispatchCount - before}`);
    assertClose((await y.toHost()).data as Float32Array, gatedActivationRef(x.values, 32, "gelu"), 1e-6, "split");
    y.dispose();
  } finally {
    gpu.maxBinding = saved;
  }
  tx.dispose();
});

Deno.test("gatedActivation rejects an odd width and an unknown activation", async () => {
  const gpu = await testGpu();
  const x = Tensor.zeros(gpu, [3, 5]);
  assert.throws(() => gatedActivation(x, "gelu"), /x: expected shape \[\.\.\., 2P\] with P ≥ 1, got \[3, 5\]/);
  assert.throws(
    () => gatedActivation(Tensor.zeros(gpu, [3, 4]), "tanh" as GatedActivationFn),
    /unknown activation "tanh"/,
  );
  await closeTestGpu();
});
