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

/**
 * Random x (placed at column `lead` of a wider [rows, lead + NH·din + pad] buffer), weight and bias. With lead and
 * pad multiples of 4 (and din, dout too) the op takes its vec4 path, otherwise its scalar one.
 */
function inputs(rng: Rng, c: Case, lead: number, pad = 3) {
  const xw = lead + c.heads * c.din + pad;
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
  // Rows that do not fill the last 4-row tile, outputs that do not fill the last 8-output tile, on both paths.
  const cases: (Case & { aligned: boolean })[] = [
    { heads: 1, din: 8, dout: 8, rows: 5, bias: false, aligned: false },
    { heads: 1, din: 6, dout: 10, rows: 7, bias: true, aligned: false },
    { heads: 4, din: 3, dout: 5, rows: 9, bias: true, aligned: false },
    { heads: 4, din: 4, dout: 4, rows: 33, bias: false, aligned: false },
    { heads: 3, din: 7, dout: 2, rows: 300, bias: true, aligned: false }, // more than one workgroup of tiles
    { heads: 4, din: 4, dout: 4, rows: 33, bias: true, aligned: true }, // the mLSTM q/k/v shape (blocksize 4)
    { heads: 2, din: 32, dout: 32, rows: 6, bias: false, aligned: true }, // the sLSTM gate shape (4 output tiles)
    { heads: 3, din: 8, dout: 12, rows: 1, bias: true, aligned: true }, // a half-filled output tile, one row
    { heads: 2, din: 12, dout: 4, rows: 130, bias: true, aligned: true },
  ];
  for (const c of cases) {
    const { xAll, w, b, want } = c.aligned ? inputs(rng, c, 4, 4) : inputs(rng, c, 2);
    const tx = Tensor.fromHost(gpu, xAll.host), tw = Tensor.fromHost(gpu, w.host);
    const tb = b ? Tensor.fromHost(gpu, b.host) : null;
    const y = linearHeadwise(columns(tx, c.aligned ? 4 : 2, c.heads * c.din), tw, tb);
    assert.deepEqual(y.shape, [c.rows, c.heads * c.dout]);
    assertClose((await y.toHost()).data as Float32Array, want, 1e-6, `linearHeadwise ${JSON.stringify(c)}`);
    for (const t of [tx, tw, tb, y]) t?.dispose();
  }
});

Deno.test("linearHeadwise writes into a column slice and leaves the other columns alone", async () => {
  const gpu = await testGpu();
  const rng = freshRng("linearHeadwise into");
  const c: Case = { heads: 4, din: 4, dout: 4, rows: 6, bias: true };
  for (const pad of [3, 4]) { // x unaligned (scalar path) and aligned (vec4 path); k's columns are aligned
    const { xAll, w, b, want } = inputs(rng, c, 0, pad);
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
    assertClose(inSlice, want, 1e-6, `k columns (pad ${pad})`);
    assert.deepEqual(outside, outsideWant, "q and v columns must stay untouched");
    for (const t of [tx, tw, tb, qkv]) t.dispose();
  }
});

Deno.test("linearHeadwise splits long reductions and oversized bindings across dispatches", async () => {
  const gpu = await testGpu();
  const rng = freshRng("linearHeadwise split");
  const saved = { trips: headwiseLimits.maxTrips, binding: gpu.maxBinding };
  try {
    // The scalar path (din 11 in steps of 1) and the vec4 path (din 16 in steps of 4).
    for (
      const [c, lead, pad] of [[{ heads: 2, din: 11, dout: 3, rows: 40, bias: true }, 1, 3], [
        { heads: 2, din: 16, dout: 8, rows: 40, bias: true },
        4,
        4,
      ]] as const
    ) {
      const { xAll, w, b, want } = inputs(rng, c, lead, pad);
      const tx = Tensor.fromHost(gpu, xAll.host), tw = Tensor.fromHost(gpu, w.host);
      const tb = Tensor.fromHost(gpu, b!.host);
      headwiseLimits.maxTrips = 100; // room for a few reduction steps of a tile: several slices
      gpu.maxBinding = 1024; // x is ≥ 40 × 26 floats = 4160 bytes: several row chunks
      const before = gpu.dispatchCount;
      const y = linearHeadwise(columns(tx, lead, c.heads * c.din), tw, tb);
      const n = gpu.dispatchCount - before;
      assert.ok(n >= 6, `expected ≥ 3 row chunks × 2 slices, got ${n} dispatches`);
      assertClose((await y.toHost()).data as Float32Array, want, 1e-6, `split linearHeadwise din ${c.din}`);
      headwiseLimits.maxTrips = 10;
      assert.throws(() => linearHeadwise(columns(tx, lead, c.heads * c.din), tw, tb), /maxTrips 10 is below one step/);
      headwiseLimits.maxTrips = saved.trips;
      gpu.maxBinding = saved.binding;
      for (const t of [tx, tw, tb, y]) t.dispose();
    }
  } finally {
    headwiseLimits.maxTrips = saved.trips;
    gpu.maxBinding = saved.binding;
  }
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
