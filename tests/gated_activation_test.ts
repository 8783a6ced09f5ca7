import assert from "node:assert/strict";
import { gatedActivation, gatedActivationBackward, type GatedActivationFn } from "../src/ops/gated_activation.ts";
import { Tensor } from "../src/tensor.ts";
import {
  ACTIVATION_DERIVATIVES,
  ACTIVATIONS,
  centralDifferences,
  dot,
  erf,
  erfc,
  gatedActivationBackwardRef,
  gatedActivationRef,
} from "./cpu/activations.ts";
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
  for (const v of rng.normals(1998, 3)) gate.push(v);
  const n = gate.length; // 10016: rows of [4 gates | 4 ones] take the vec4 path, rows of [gate | 1] the scalar one
  const g32 = Float64Array.from(Float32Array.from(gate));
  const quads = Array.from({ length: n / 4 }, (_, r) => [...gate.slice(4 * r, 4 * r + 4), 1, 1, 1, 1]);
  const layouts = [
    Tensor.fromHost(gpu, host([n, 2], gate.flatMap((g) => [g, 1]))),
    Tensor.fromHost(gpu, host([n / 4, 8], quads.flat())),
  ];
  for (const tx of layouts) {
    const outs = ALL.map((a) => gatedActivation(tx, a));
    const got = await Tensor.toHostAll(outs);
    ALL.forEach((a, k) => {
      const data = got[k].data as Float32Array;
      let worst = 0;
      for (let i = 0; i < n; i++) {
        const want = ACTIVATIONS[a](g32[i]);
        const err = Math.abs(data[i] - want) / (1e-6 * Math.abs(want) + 1e-7);
        if (!(err <= 1)) throw new Error(`${a}(${g32[i]}) = ${data[i]}, want ${want} (x ${tx.shape})`);
        worst = Math.max(worst, Math.abs(want) > 1e-30 ? Math.abs(data[i] / want - 1) : 0);
      }
      console.log(`${a} (x ${tx.shape}): worst relative error ${worst.toExponential(2)}`);
    });
    for (const t of [tx, ...outs]) t.dispose();
  }
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

Deno.test("the float64 gated-activation gradient matches central differences of the forward", () => {
  const rng = freshRng("gatedActivation gradient reference");
  const width = 10, rows = 3;
  const x = Float64Array.from(rng.normals(rows * width, 2)), dy = Float64Array.from(rng.normals(rows * width / 2));
  for (const a of ALL) {
    const want = gatedActivationBackwardRef(dy, x, width, a);
    const fd = centralDifferences((v) => dot(dy, gatedActivationRef(v, width, a)), x);
    // Random normals never sit on relu's kink, so the central difference is smooth there.
    for (let i = 0; i < x.length; i++) {
      assert.ok(Math.abs(fd[i] - want[i]) < 1e-7, `${a}: dx[${i}] = ${want[i]}, finite difference ${fd[i]}`);
    }
  }
});

Deno.test("each activation's derivative is accurate elementwise over a wide range (dy = up = 1)", async () => {
  const gpu = await testGpu();
  const rng = freshRng("activation derivatives");
  // Dense over [−20, 20], the GELU branch points and the kinks (the 0s), tiny and huge values, random normals.
  const gate = [0, -0, 1e-30, -1e-30, 1e-7, -1e-7, 0.75, -0.75, 3, -3, 14, -14, 21, -21, 60, -60, 1e4, -1e4, 1e18];
  for (let i = 0; i <= 8000; i++) gate.push(-20 + i * 0.005);
  gate.push(...rng.normals(10240 - gate.length, 3));
  const n = gate.length; // 10240: rows of [4 gates | 4 ones] take the vec4 path, rows of [gate | 1] the scalar one
  const g32 = Float64Array.from(Float32Array.from(gate));
  const quads = Array.from({ length: n / 4 }, (_, r) => [...gate.slice(4 * r, 4 * r + 4), 1, 1, 1, 1]);
  const ones = Tensor.fromHost(gpu, host([n], new Float32Array(n).fill(1)));
  for (
    const [tx, p] of [[Tensor.fromHost(gpu, host([n, 2], gate.flatMap((g) => [g, 1]))), 1], [
      Tensor.fromHost(gpu, host([n / 4, 8], quads.flat())),
      4,
    ]] as const
  ) {
    const outs = ALL.map((a) => gatedActivationBackward(ones.reshape([n / p, p]), tx, a));
    const got = await Tensor.toHostAll(outs);
    ALL.forEach((a, k) => {
      const data = got[k].data as Float32Array;
      let worst = 0;
      for (let i = 0; i < n; i++) {
        const r = Math.floor(i / p), c = i % p; // gate i sits at column c of row r; its d gate there, d up p further
        const pairs = [[data[r * 2 * p + c], ACTIVATION_DERIVATIVES[a](g32[i])], [
          data[r * 2 * p + p + c],
          ACTIVATIONS[a](g32[i]),
        ]];
        for (const [value, want] of pairs) {
          if (!(Math.abs(value - want) <= 1e-6 * Math.abs(want) + 1e-7)) {
            throw new Error(`${a}'(${g32[i]}): got ${value}, want ${want} (x ${tx.shape})`);
          }
        }
        const [value, want] = pairs[0];
        worst = Math.max(worst, Math.abs(want) > 0.05 ? Math.abs(value / want - 1) : 0);
      }
      console.log(`${a}' (x ${tx.shape}): worst relative error where |act'| > 0.05: ${worst.toExponential(2)}`);
    });
    for (const t of [tx, ...outs]) t.dispose();
  }
  ones.dispose();
});

Deno.test("gatedActivationBackward matches the float64 reference (vec4 and scalar paths, split bindings)", async () => {
  const gpu = await testGpu();
  const rng = freshRng("gatedActivationBackward");
  const saved = gpu.maxBinding;
  try {
    // P 24: vec4 units; P 7: scalars. The last case binds rows in chunks (x is 64 · 48 floats = 12 KiB): both halves
    // of dx must fall inside each chunk's binding.
    for (const [shape, binding] of [[[2, 5, 48], saved], [[3, 2, 14], saved], [[64, 48], 1024], [[50, 14], 512]]) {
      const x = randomTensor(rng, shape as number[], 2);
      const dyShape = [...(shape as number[]).slice(0, -1), (shape as number[]).at(-1)! / 2];
      const dy = randomTensor(rng, dyShape);
      const [tx, tdy] = [Tensor.fromHost(gpu, x.host), Tensor.fromHost(gpu, dy.host)];
      gpu.maxBinding = binding as number;
      const before = gpu.dispatchCount;
      const outs = ALL.map((a) => gatedActivationBackward(tdy, tx, a));
      const dispatches = (gpu.dispatchCount - before) / ALL.length;
      gpu.maxBinding = saved;
      if (binding !== saved) assert.ok(dispatches >= 3, `expected several row chunks, got ${dispatches}`);
      const got = await Tensor.toHostAll(outs);
      ALL.forEach((a, k) => {
        assert.deepEqual(got[k].shape, shape);
        const want = gatedActivationBackwardRef(dy.values, x.values, (shape as number[]).at(-1)!, a);
        assertClose(got[k].data as Float32Array, want, 1e-6, `${a} ${shape}`);
      });
      for (const t of [tx, tdy, ...outs]) t.dispose();
    }
  } finally {
    gpu.maxBinding = saved;
  }
});

Deno.test("gatedActivation rejects an odd width and an unknown activation", async () => {
  const gpu = await testGpu();
  const x = Tensor.zeros(gpu, [3, 5]);
  assert.throws(() => gatedActivation(x, "gelu"), /x: expected shape \[\.\.\., 2P\] with P ≥ 1, got \[3, 5\]/);
  assert.throws(
    () => gatedActivation(Tensor.zeros(gpu, [3, 4]), "tanh" as GatedActivationFn),
    /unknown activation "tanh"/,
  );
  assert.throws(
    () => gatedActivationBackward(Tensor.zeros(gpu, [3, 3]), Tensor.zeros(gpu, [3, 4]), "gelu"),
    /gatedActivationBackward dy: expected shape \[3, 2\], got \[3, 3\]/,
  );
  assert.throws(
    () => gatedActivationBackward(x, x, "gelu"),
    /gatedActivationBackward x: expected shape \[\.\.\., 2P\]/,
  );
  await closeTestGpu();
});
