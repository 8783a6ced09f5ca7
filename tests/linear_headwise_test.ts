import assert from "node:assert/strict";
import {
  headwiseBackwardSettings,
  headwiseLimits,
  linearHeadwise,
  linearHeadwiseBackward,
} from "../src/ops/linear_headwise.ts";
import { columns, matrix, type MatrixView, Tensor } from "../src/tensor.ts";
import { linearHeadwiseBackwardRef, linearHeadwiseRef } from "./cpu/linear_headwise.ts";
import { centralDifferences, dot } from "./cpu/activations.ts";
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

Deno.test("the float64 headwise gradients match central differences of the forward", () => {
  const rng = freshRng("linearHeadwise gradient reference");
  const heads = 2, din = 3, dout = 2, rows = 4;
  const x = Float64Array.from(rng.normals(rows * heads * din)), w = Float64Array.from(rng.normals(heads * dout * din));
  const b = Float64Array.from(rng.normals(heads * dout)), dy = Float64Array.from(rng.normals(rows * heads * dout));
  const loss = (xv: Float64Array, wv: Float64Array, bv: Float64Array) =>
    dot(dy, linearHeadwiseRef(xv, rows, wv, heads, dout, din, bv));
  const want = linearHeadwiseBackwardRef(dy, x, rows, w, heads, dout, din);
  const pairs = [
    [centralDifferences((v) => loss(v, w, b), x), want.dx, "dx"],
    [centralDifferences((v) => loss(x, v, b), w), want.dweight, "dweight"],
    [centralDifferences((v) => loss(x, w, v), b), want.dbias, "dbias"],
  ] as const;
  for (const [fd, exact, what] of pairs) {
    for (let i = 0; i < fd.length; i++) {
      assert.ok(Math.abs(fd[i] - exact[i]) < 1e-8, `${what}[${i}]: ${exact[i]} vs finite difference ${fd[i]}`);
    }
  }
});

interface BackwardCase extends Case {
  /** x at this column of a wider buffer (vec4 path when it, din and the width are multiples of 4). */
  xLead: number;
  /** dy is columns [dyLead, dyLead + NH·dout) of a [rows, dyWidth] gradient buffer (e.g. k of q|k|v). */
  dyLead: number;
  dyWidth: number;
  rowsPerChunk?: number;
  maxBinding?: number;
}

Deno.test("linearHeadwiseBackward matches the float64 reference (strided dy and x, both paths, chunked sums)", async () => {
  const gpu = await testGpu();
  const rng = freshRng("linearHeadwiseBackward");
  const cases: BackwardCase[] = [
    // The mLSTM q/k/v shape (blocksize 4): dy is the k third of a [rows, 3D] gradient; vec4 x, 7-row chunks.
    { heads: 4, din: 4, dout: 4, rows: 33, bias: true, xLead: 4, dyLead: 16, dyWidth: 48, rowsPerChunk: 7 },
    // The sLSTM gate shape: dy one gate's columns of the [rows, 4H] gate gradient; two input tiles of 8.
    { heads: 2, din: 16, dout: 16, rows: 12, bias: false, xLead: 0, dyLead: 32, dyWidth: 128 },
    // Scalars: din 3, dout 5 (partial tiles), unaligned slices; 600 rows in three 256-row chunks by default.
    { heads: 3, din: 3, dout: 5, rows: 600, bias: true, xLead: 1, dyLead: 2, dyWidth: 20 },
    { heads: 1, din: 10, dout: 6, rows: 5, bias: true, xLead: 2, dyLead: 0, dyWidth: 6 },
    // A 2 KiB binding limit: x (2400 bytes) is bound in row blocks, each block with its own partial rows.
    {
      heads: 1,
      din: 8,
      dout: 4,
      rows: 40,
      bias: true,
      xLead: 4,
      dyLead: 4,
      dyWidth: 12,
      rowsPerChunk: 5,
      maxBinding: 2048,
    },
  ];
  const saved = { chunk: headwiseBackwardSettings.rowsPerChunk, binding: gpu.maxBinding };
  try {
    for (const c of cases) {
      const { xAll, x, w } = inputs(rng, c, c.xLead);
      const dyAll = randomTensor(rng, [c.rows, c.dyWidth]);
      const cols = c.heads * c.dout, dy = new Float64Array(c.rows * cols);
      for (let r = 0; r < c.rows; r++) {
        for (let j = 0; j < cols; j++) dy[r * cols + j] = dyAll.values[r * c.dyWidth + c.dyLead + j];
      }
      const [tx, tw, tdy] = [xAll, w, dyAll].map((t) => Tensor.fromHost(gpu, t.host));
      const xView: MatrixView = columns(tx, c.xLead, c.heads * c.din), dyView = columns(tdy, c.dyLead, cols);
      headwiseBackwardSettings.rowsPerChunk = c.rowsPerChunk ?? saved.chunk;
      gpu.maxBinding = c.maxBinding ?? saved.binding;
      const before = gpu.dispatchCount;
      const got = linearHeadwiseBackward(dyView, xView, tw, { bias: c.bias });
      const dispatches = gpu.dispatchCount - before;
      headwiseBackwardSettings.rowsPerChunk = saved.chunk;
      gpu.maxBinding = saved.binding;
      // dbias, transpose, dx, dweight partials in 2 row blocks, their column sum (5 without the split)
      if (c.maxBinding) assert.ok(dispatches >= 6, `expected several row blocks, got ${dispatches} dispatches`);
      const want = linearHeadwiseBackwardRef(dy, x, c.rows, w.values, c.heads, c.dout, c.din);
      const outs = [got.dx, got.dweight, ...(got.dbias ? [got.dbias] : [])];
      const host = await Tensor.toHostAll(outs);
      const name = JSON.stringify(c);
      assert.deepEqual(
        host.map((h) => h.shape),
        [[c.rows, c.heads * c.din], [c.heads, c.dout, c.din], ...(c.bias ? [[cols]] : [])],
      );
      assert.equal(got.dbias === null, !c.bias);
      assertClose(host[0].data as Float32Array, want.dx, 1e-6, `dx ${name}`);
      // Sums of up to 600 products in f32 (chunks of ≤ 256, then a column sum): ~√600 · 6e-8 relative to the terms.
      assertClose(host[1].data as Float32Array, want.dweight, 1e-5, `dweight ${name}`);
      if (c.bias) assertClose(host[2].data as Float32Array, want.dbias, 1e-5, `dbias ${name}`);
      for (const t of [tx, tw, tdy, ...outs]) t.dispose();
    }
  } finally {
    headwiseBackwardSettings.rowsPerChunk = saved.chunk;
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
  assert.throws(
    () => linearHeadwiseBackward(matrix(Tensor.zeros(gpu, [5, 7])), matrix(x), w, { bias: false }),
    /dy \[5, 7\] and x \[5, 12\] do not match weight \[3, 2, 4\], which needs \[rows, 6\] and \[rows, 12\]/,
  );
  assert.throws(
    () => linearHeadwiseBackward(matrix(Tensor.zeros(gpu, [4, 6])), matrix(x), w, { bias: false }),
    /dy \[4, 6\] and x \[5, 12\] do not match/,
  );
  await closeTestGpu();
});
