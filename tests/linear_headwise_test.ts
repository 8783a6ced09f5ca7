import assert from "node:assert/strict";
import { headwiseLimits, linearHeadwise } from "../src/ops/linear_headwise.ts";
import { columns, matrix, Tensor } from "../src/tensor.ts";
import { linearHeadwiseRef } from "./cpu/linear_headwise.ts";
import { assertClose, closeTestGpu, freshRng, randomTensor, type Rng, testGpu } from "./util.ts";

interface Case {
  heads: number;
  din: number;
  dout: number;
  rows: number;
  bias: boolean;
}

/** Random x (placed at column `lead` of a wider [rows, lead + NH·din + 3] buffer), weight and bias. */
function inputs(rng: Rng, c: Case, lead: number) {
  const xw = lead + c.heads * c.din + 3;
  const xAll = randomTensor(rng, [c.rows, xw]);
  const x = new Float64Array(c.rows * c.heads * c.din);
  for (let r = 0; r < c.rows; r++) {
    for (let j = 0; j < c.heads * c.din; j++) x[r * c.heads * c.din + j] = xAll.values[r * xw + lead + j];
  }
  const w = randomTensor(rng, [c.heads, c.dout, c.din], 1 / Math.sqrt(c.din));
  const b = c.bias ? randomTensor(rng, [c.heads * c.dout]) : null;
  return { xAll, x, w, b, want: linearHeadwiseRef(x, c.rows, w.values, c.heads, c.dout, c.din, b?.values ?? null) };
}

Deno.test("linearHeadwise matches the float64 reference (one and several heads, din ≠ dout, bias or not)", async () => {
  const gpu = await testGpu();
  const rng = freshRng("linearHeadwise");
  const cases: Case[] = [
    { heads: 1, din: 8, dout: 8, rows: 5, bias: false },
    { heads: 1, din: 6, dout: 10, rows: 7, bias: true },
    { heads: 4, din: 3, dout: 5, rows: 9, bias: true },
    { heads: 4, din: 4, dout: 4, rows: 33, bias: false }, // the mLSTM q/k/v shape (blocksize 4)
    { heads: 3, din: 7, dout: 2, rows: 300, bias: true }, // more than one workgroup of outputs
  ];
  for (const c of cases) {
    const { xAll, w, b, want } = inputs(rng, c, 2);
    const tx = Tensor.fromHost(gpu, xAll.host), tw = Tensor.fromHost(gpu, w.host);
    const tb = b ? Tensor.fromHost(gpu, b.host) : null;
    const y = linearHeadwise(columns(tx, 2, c.heads * c.din), tw, tb);
    assert.deepEqual(y.shape, [c.rows, c.heads * c.dout]);
    assertClose((await y.toHost()).data as Float32Array, want, 1e-6, `linearHeadwise ${JSON.stringify(c)}`);
    for (const t of [tx, tw, tb, y]) t?.dispose();
  }
});

Deno.test("linearHeadwise writes into a column slice and leaves the other columns alone", async () => {
  const gpu = await testGpu();
  const rng = freshRng("linearHeadwise into");
  const c: Case = { heads: 4, din: 4, dout: 4, rows: 6, bias: true };
  const { xAll, w, b, want } = inputs(rng, c, 0);
  const width = 3 * c.heads * c.dout; // the [rows, 3D] q|k|v buffer; write k (the middle third)
  const sentinel = randomTensor(rng, [c.rows, width]);
  const tx = Tensor.fromHost(gpu, xAll.host), tw = Tensor.fromHost(gpu, w.host), tb = Tensor.fromHost(gpu, b!.host);
  const qkv = Tensor.fromHost(gpu, sentinel.host);
  const d = c.heads * c.dout;
  const returned = linearHeadwise(columns(tx, 0, c.heads * c.din), tw, tb, columns(qkv, d, d));
  assert.equal(returned, qkv);
  const got = (await qkv.toHost()).data as Float32Array;
  const inSlice = [], outside = [], outsideWant = [];
  for (let r = 0; r < c.rows; r++) {
    for (let j = 0; j < width; j++) {
      if (j >= d && j < 2 * d) inSlice.push(got[r * width + j]);
      else outside.push(got[r * width + j]), outsideWant.push(sentinel.values[r * width + j]);
    }
  }
  assertClose(inSlice, want, 1e-6, "k columns");
  assert.deepEqual(outside, outsideWant, "q and v columns must stay untouched");
  for (const t of [tx, tw, tb, qkv]) t.dispose();
});

Deno.test("linearHeadwise splits long reductions and oversized bindings across dispatches", async () => {
  const gpu = await testGpu();
  const rng = freshRng("linearHeadwise split");
  const c: Case = { heads: 2, din: 11, dout: 3, rows: 40, bias: true };
  const { xAll, w, b, want } = inputs(rng, c, 1);
  const tx = Tensor.fromHost(gpu, xAll.host), tw = Tensor.fromHost(gpu, w.host), tb = Tensor.fromHost(gpu, b!.host);
  const saved = { trips: headwiseLimits.maxTrips, binding: gpu.maxBinding };
  headwiseLimits.maxTrips = 4; // din 11 → slices of 4, 4, 3
  gpu.maxBinding = 1024; // x is 40 × 26 floats = 4160 bytes → several row chunks
  try {
    const before = gpu.dispatchCount;
    const y = linearHeadwise(columns(tx, 1, c.heads * c.din), tw, tb);
    assert.ok(gpu.dispatchCount - before >= 9, `expected ≥ 3 row chunks × 3 slices, got ${gpu.dispatchCount - before}`);
    assertClose((await y.toHost()).data as Float32Array, want, 1e-6, "split linearHeadwise");
    y.dispose();
  } finally {
    headwiseLimits.maxTrips = saved.trips;
    gpu.maxBinding = saved.binding;
  }
  for (const t of [tx, tw, tb]) t.dispose();
});

Deno.test("linearHeadwise names the tensor and both shapes on a mismatch", async () => {
  const gpu = await testGpu();
  const x = Tensor.zeros(gpu, [5, 12]), w = Tensor.zeros(gpu, [3, 2, 4]);
  assert.throws(() => linearHeadwise(matrix(x), Tensor.zeros(gpu, [3, 2, 5]), null), /x \[5, 12\].*weight \[3, 2, 5\]/);
  assert.throws(
    () => linearHeadwise(matrix(x), Tensor.zeros(gpu, [6, 4]), null),
    /weight: expected shape \[\*, \*, \*\], got \[6, 4\]/,
  );
  assert.throws(() => linearHeadwise(matrix(x), w, Tensor.zeros(gpu, [5])), /bias: expected shape \[6\], got \[5\]/);
  const out = Tensor.zeros(gpu, [5, 7]);
  assert.throws(
    () => linearHeadwise(matrix(x), w, null, matrix(out)),
    /out \[5, 7\] does not match the result \[5, 6\]/,
  );
  assert.throws(() => linearHeadwise(matrix(x), w, null, columns(x, 0, 6)), /out shares a buffer with x/);
  await closeTestGpu();
});
