import assert from "node:assert/strict";
import {
  add,
  addInto,
  mlstmOutputGate,
  mlstmOutputGateBackward,
  mul,
  mulBackward,
  sigmoidGate,
  sigmoidGateBackward,
  softCap,
  softCapBackward,
} from "../src/ops/pointwise.ts";
import { columns, matrix, type MatrixView, Tensor } from "../src/tensor.ts";
import {
  centralDifferences,
  dot,
  mlstmOutputGateBackwardRef,
  mlstmOutputGateRef,
  sigmoidGateBackwardRef,
  sigmoidGateRef,
  softCapBackwardRef,
  softCapRef,
} from "./cpu/activations.ts";
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

Deno.test("the float64 pointwise gradients match central differences of the forwards", () => {
  const rng = freshRng("pointwise gradient references");
  const near = (got: Float64Array, want: Float64Array, what: string) => {
    for (let i = 0; i < want.length; i++) {
      assert.ok(Math.abs(got[i] - want[i]) < 1e-7, `${what}[${i}]: ${want[i]}, finite difference ${got[i]}`);
    }
  };
  const n = 12, d = 4;
  const [dy, x, o, h] = [0, 1, 2, 3].map(() => Float64Array.from(rng.normals(n, 3)));
  near(centralDifferences((v) => dot(dy, softCapRef(v, 5)), x), softCapBackwardRef(dy, x, 5), "softCap dx");
  const gate = sigmoidGateBackwardRef(dy, o, h);
  near(centralDifferences((v) => dot(dy, sigmoidGateRef(v, h)), o), gate.do, "sigmoidGate do");
  near(centralDifferences((v) => dot(dy, sigmoidGateRef(o, v)), h), gate.dh, "sigmoidGate dh");
  // mLSTM output gate with z at columns [d, 2d) of rows of 2d.
  const [hNorm, xConv] = [0, 1].map(() => Float64Array.from(rng.normals(n)));
  const skip = Float64Array.from(rng.normals(d)), z = Float64Array.from(rng.normals(2 * n, 2));
  const f = (hn: Float64Array, sk: Float64Array, xc: Float64Array, zz: Float64Array) =>
    dot(dy, mlstmOutputGateRef(hn, sk, xc, zz, d, 2 * d));
  const g = mlstmOutputGateBackwardRef(dy, hNorm, skip, xConv, z, d, 2 * d);
  near(centralDifferences((v) => f(v, skip, xConv, z), hNorm), g.dhNorm, "dhNorm");
  near(centralDifferences((v) => f(hNorm, v, xConv, z), skip), g.dskip, "dskip");
  near(centralDifferences((v) => f(hNorm, skip, v, z), xConv), g.dxConv, "dxConv");
  const dzFull = centralDifferences((v) => f(hNorm, skip, xConv, v), z);
  near(dzFull.filter((_, i) => i % (2 * d) >= d), g.dz, "dz");
});

Deno.test("softCapBackward is dy·sech²(x/c), accurate in the tails", async () => {
  const gpu = await testGpu();
  const rng = freshRng("softCapBackward");
  const special = [0, 1e-30, -1e-30, 0.3, 40, -40, 200, -200, 1e6, -1e6, 3e38, -3e38, Infinity, -Infinity];
  const values = [...special, ...rng.normals(64 * 7 - special.length, 30)];
  const x = host([64, 7], values), dy = randomTensor(rng, [64, 7]);
  const x64 = Float64Array.from(x.data as Float32Array);
  const [tx, tdy] = [Tensor.fromHost(gpu, x), Tensor.fromHost(gpu, dy.host)];
  for (const [shape, cap] of [[[64, 7], 15], [[112, 4], 30]] as const) { // scalars; vec4 units
    const got = (await softCapBackward(tdy.reshape(shape), tx.reshape(shape), cap).toHost()).data as Float32Array;
    const want = softCapBackwardRef(dy.values, x64, cap);
    for (let i = 0; i < got.length; i++) {
      // Relative accuracy even where sech² underflows towards 0 (|x| = 200 with cap 15: e^−26.7).
      if (!(Math.abs(got[i] - want[i]) <= 2e-6 * Math.abs(want[i]) + 1e-37)) {
        throw new Error(`softCapBackward(x ${x64[i]}, cap ${cap}) = ${got[i]}, want ${want[i]}`);
      }
    }
  }
  for (const t of [tx, tdy]) t.dispose();
});

Deno.test("sigmoidGateBackward gives do and dh in one dispatch", async () => {
  const gpu = await testGpu();
  const rng = freshRng("sigmoidGateBackward");
  for (const shape of [[2, 7, 48], [3, 5, 7], [4, 16384]]) { // vec4 units, scalars, 16 per invocation
    const [dy, o, h] = [1, 4, 1].map((std) => randomTensor(rng, shape, std));
    const [tdy, to, th] = [dy, o, h].map((t) => Tensor.fromHost(gpu, t.host));
    const before = gpu.dispatchCount;
    const got = sigmoidGateBackward(tdy, to, th);
    assert.equal(gpu.dispatchCount - before, 1);
    const want = sigmoidGateBackwardRef(dy.values, o.values, h.values);
    const [gotO, gotH] = await Tensor.toHostAll([got.do, got.dh]);
    assertClose(gotO.data as Float32Array, want.do, 1e-6, `do ${shape}`);
    assertClose(gotH.data as Float32Array, want.dh, 1e-6, `dh ${shape}`);
    for (const t of [tdy, to, th, got.do, got.dh]) t.dispose();
  }
});

Deno.test("mlstmOutputGateBackward matches the float64 reference (z a column slice, dskip over many rows)", async () => {
  const gpu = await testGpu();
  const rng = freshRng("mlstmOutputGateBackward");
  const saved = gpu.maxBinding;
  try {
    // D 40: vec4 units; D 13: scalars. 2 × 300 rows: dskip sums three 256-row chunks. A 4 KiB binding limit splits
    // the rows over dispatches.
    for (const [d, s, binding] of [[40, 9, saved], [13, 9, saved], [12, 300, saved], [13, 40, 4096]]) {
      const b = 2;
      const [dy, hNorm, xConv] = [0, 1, 2].map(() => randomTensor(rng, [b, s, d]));
      const skip = randomTensor(rng, [d]), up = randomTensor(rng, [b, s, 2 * d], 3);
      const tensors = [dy, hNorm, skip, xConv, up].map((t) => Tensor.fromHost(gpu, t.host));
      const [tdy, th, tskip, tx, tup] = tensors;
      gpu.maxBinding = binding;
      const before = gpu.dispatchCount;
      const got = mlstmOutputGateBackward(tdy, th, tskip, tx, columns(tup, d, d));
      const dispatches = gpu.dispatchCount - before;
      gpu.maxBinding = saved;
      if (binding !== saved) assert.ok(dispatches >= 5, `expected several row chunks, got ${dispatches} dispatches`);
      const want = mlstmOutputGateBackwardRef(dy.values, hNorm.values, skip.values, xConv.values, up.values, d, 2 * d);
      const outs = [got.dhNorm, got.dskip, got.dxConv, got.dz];
      const host = await Tensor.toHostAll(outs);
      assert.deepEqual(host.map((t) => t.shape), [[b, s, d], [d], [b, s, d], [b, s, d]]);
      (["dhNorm", "dskip", "dxConv", "dz"] as const).forEach((k, i) => {
        // dskip sums up to 600 products in f32 chunks: its error grows like √600 · 6e-8 relative to the terms.
        assertClose(host[i].data as Float32Array, want[k], k === "dskip" ? 5e-6 : 1e-6, `${k} D ${d} S ${s}`);
      });
      for (const t of [...tensors, ...outs]) t.dispose();
    }
  } finally {
    gpu.maxBinding = saved;
  }
});

Deno.test("mulBackward: da = dy·b and db = Σ dy·a over broadcast rows", async () => {
  const gpu = await testGpu();
  const rng = freshRng("mulBackward");
  for (const [aShape, bShape] of [[[3, 5, 8], [5, 8]], [[4, 7], [4, 7]], [[600, 3], [3]]]) {
    const [a, dy] = [0, 1].map(() => randomTensor(rng, aShape)), b = randomTensor(rng, bShape);
    const [ta, tdy, tb] = [a, dy, b].map((t) => Tensor.fromHost(gpu, t.host));
    const got = mulBackward(tdy, ta, tb);
    const [da, db] = await Tensor.toHostAll([got.da, got.db]);
    assert.deepEqual([da.shape, db.shape], [aShape, bShape]);
    const n = b.values.length;
    const wantDb = new Float64Array(n);
    a.values.forEach((v, i) => wantDb[i % n] += v * dy.values[i]);
    assertClose(da.data as Float32Array, dy.values.map((v, i) => v * b.values[i % n]), 1e-7, `da ${aShape}`);
    assertClose(db.data as Float32Array, wantDb, 2e-6, `db ${aShape}`);
    for (const t of [ta, tdy, tb, got.da, got.db]) t.dispose();
  }
});

Deno.test("addInto adds in place into strided views and whole tensors", async () => {
  const gpu = await testGpu();
  const rng = freshRng("addInto");
  const saved = gpu.maxBinding;
  interface Case {
    what: string;
    shape: number[]; // target tensor
    view: (t: Tensor) => MatrixView;
    asTensor: boolean; // g as a contiguous tensor (else a column view of a wider one)
    binding?: number;
  }
  const cases: Case[] = [
    { what: "column slice, scalars", shape: [9, 11], view: (t) => columns(t, 3, 5), asTensor: true },
    { what: "column slice, vec4", shape: [9, 16], view: (t) => columns(t, 4, 8), asTensor: false },
    { what: "whole tensor as one row (regrouped)", shape: [6, 128], view: (t) => matrix(t, t.size), asTensor: true },
    { what: "odd whole tensor", shape: [7, 3], view: (t) => matrix(t, t.size), asTensor: true },
    {
      what: "whole tensor as one row (regrouped into rows of 256) over a 2 KiB binding limit",
      shape: [40, 64],
      view: (t) => matrix(t, t.size),
      asTensor: true,
      binding: 2048,
    },
    {
      what: "column slice over a 1 KiB binding limit",
      shape: [60, 9],
      view: (t) => columns(t, 1, 7),
      asTensor: false,
      binding: 1024,
    },
  ];
  try {
    for (const c of cases) {
      const target = randomTensor(rng, c.shape);
      const tt = Tensor.fromHost(gpu, target.host);
      const view = c.view(tt);
      const g = randomTensor(rng, c.asTensor ? [view.rows * view.cols] : [view.rows, view.cols + 3]);
      const tg = Tensor.fromHost(gpu, g.host);
      const gView: MatrixView | Tensor = c.asTensor ? tg : columns(tg, 2, view.cols);
      gpu.maxBinding = c.binding ?? saved;
      const before = gpu.dispatchCount;
      addInto(view, gView);
      const dispatches = gpu.dispatchCount - before;
      gpu.maxBinding = saved;
      if (c.binding) assert.ok(dispatches >= 2, `${c.what}: expected several row chunks, got ${dispatches}`);
      const want = Float64Array.from(target.values);
      for (let r = 0; r < view.rows; r++) {
        for (let k = 0; k < view.cols; k++) {
          const gi = c.asTensor ? r * view.cols + k : r * (view.cols + 3) + 2 + k;
          want[view.offset + r * view.stride + k] += g.values[gi];
        }
      }
      assertClose((await tt.toHost()).data as Float32Array, want, 1e-7, c.what);
      for (const t of [tt, tg]) t.dispose();
    }
  } finally {
    gpu.maxBinding = saved;
  }
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
  const a5 = Tensor.zeros(gpu, [4, 5]);
  assert.throws(() => softCapBackward(a5, a, 15), /softCapBackward dy: expected shape \[4, 6\], got \[4, 5\]/);
  assert.throws(() => sigmoidGateBackward(a, a, a5), /sigmoidGateBackward h: expected shape \[4, 6\], got \[4, 5\]/);
  assert.throws(
    () => mlstmOutputGateBackward(a5, a, Tensor.zeros(gpu, [6]), Tensor.zeros(gpu, [4, 6]), columns(up, 6, 6)),
    /mlstmOutputGateBackward dy: expected shape \[4, 6\], got \[4, 5\]/,
  );
  assert.throws(
    () => mulBackward(a, a, Tensor.zeros(gpu, [5])),
    /mulBackward: cannot broadcast b \[5\] over a \[4, 6\]/,
  );
  assert.throws(() => addInto(matrix(a), a5), /addInto: g \[4, 5\] does not have the 24 elements of target \[4, 6\]/);
  assert.throws(() => addInto(columns(a, 0, 3), columns(a, 3, 3)), /addInto: g shares a buffer with out/);
  await closeTestGpu();
});
