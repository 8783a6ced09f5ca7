import assert from "node:assert/strict";
import { reduceSettings, sumRows } from "../src/ops/reduce.ts";
import type { Gpu } from "../src/gpu/runtime.ts";
import { columns, matrix, type MatrixView, Tensor } from "../src/tensor.ts";
import { assertClose, closeTestGpu, freshRng, randomTensor, type Rng, testGpu } from "./util.ts";

/** Column sums of a strided view, in float64. */
function sumRowsRef(data: Float64Array, v: MatrixView): Float64Array {
  const out = new Float64Array(v.cols);
  for (let r = 0; r < v.rows; r++) for (let c = 0; c < v.cols; c++) out[c] += data[v.offset + r * v.stride + c];
  return out;
}

/** A random tensor whose values have mean `mean`, so that a dropped or doubled chunk shows in the sums. */
function upload(gpu: Gpu, rng: Rng, shape: number[], mean: number): { t: Tensor; exact: Float64Array } {
  const { host } = randomTensor(rng, shape);
  const data = (host.data as Float32Array).map((v) => v + mean);
  return { t: Tensor.fromHost(gpu, { ...host, data }), exact: Float64Array.from(data) };
}

interface Case {
  what: string;
  shape: number[];
  /** The view: whole tensor when absent, else columns [start, start + count) of it. */
  cols?: [number, number];
  rowsPerChunk?: number;
  /** Storage binding limit in bytes forced for this case (splits the view into blocks of rows). */
  maxBinding?: number;
}

const CASES: Case[] = [
  { what: "200k × 3 (782 chunks, then 4, then 1: three levels)", shape: [200000, 3] },
  { what: "one chunk (a single pass)", shape: [100, 5] },
  { what: "one row", shape: [1, 9] },
  { what: "one column, rows not a multiple of the chunk", shape: [1001, 1], rowsPerChunk: 16 },
  { what: "column slice at an unaligned offset, chunks of 7 rows", shape: [500, 10], cols: [3, 4], rowsPerChunk: 7 },
  {
    what: "binding limit of 4 KiB: the view is bound in blocks of whole chunks",
    shape: [3000, 7],
    cols: [2, 5],
    maxBinding: 4096,
  },
];

Deno.test("sumRows matches float64 column sums, across chunks, levels and binding blocks", async () => {
  const gpu = await testGpu();
  const rng = freshRng("sumRows");
  const saved = { ...reduceSettings }, savedBinding = gpu.maxBinding;
  const outs: Tensor[] = [], wants: Float64Array[] = [];
  try {
    for (const c of CASES) {
      Object.assign(reduceSettings, saved, c.rowsPerChunk ? { rowsPerChunk: c.rowsPerChunk } : {});
      gpu.maxBinding = c.maxBinding ?? savedBinding;
      const { t, exact } = upload(gpu, rng, c.shape, 1);
      const view = c.cols ? columns(t, ...c.cols) : matrix(t);
      outs.push(sumRows(c.cols ? view : t));
      wants.push(sumRowsRef(exact, view));
    }
  } finally {
    Object.assign(reduceSettings, saved);
    gpu.maxBinding = savedBinding;
  }
  const got = await Tensor.toHostAll(outs);
  got.forEach((g, i) => {
    assert.deepEqual(g.shape, [wants[i].length], CASES[i].what);
    // Sums of up to 200k values with mean 1: f32 chunked sums stay within ~1e-7 of the total, while one lost or
    // doubled chunk of 256 rows would be off by ~1e-3.
    assertClose(g.data as Float32Array, wants[i], 1e-6, CASES[i].what);
  });
});

Deno.test("sumRows of zero rows is zeros; bad views are rejected", async () => {
  const gpu = await testGpu();
  const empty = await sumRows(Tensor.empty(gpu, [0, 4])).toHost();
  assert.deepEqual([...empty.data], [0, 0, 0, 0]);
  const t = Tensor.zeros(gpu, [4, 6]);
  assert.throws(
    () => sumRows({ tensor: t, rows: 4, cols: 3, offset: 4, stride: 6 }),
    /view \[4, 3\] at offset 4 with row stride 6 does not fit x \[4, 6\]/,
  );
  assert.throws(() => sumRows({ tensor: t, rows: 2, cols: 3, offset: 0, stride: 2 }), /row stride 2 does not fit/);
  assert.throws(() => sumRows(Tensor.zeros(gpu, [2, 2], "int32")), /must be float32, got int32/);
  await closeTestGpu();
});
