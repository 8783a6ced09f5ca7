import assert from "node:assert/strict";
import { gemm, type GemmBatch, gemvMinK, linear, matmul } from "../src/ops/matmul.ts";
import { matrix, Tensor } from "../src/tensor.ts";
import { linearRef, matmulRef } from "./cpu/matmul.ts";
import { dtypes, expectedKernel, kernelsOf, random } from "./matmul_util.ts";
import { assertClose, closeTestGpu, freshRng, limited, randomTensor, type Rng, testGpu } from "./util.ts";
import type { Gpu } from "../src/gpu/runtime.ts";
import type { MatrixView } from "../src/tensor.ts";

// Every adapter takes the GEMV paths a GPU takes, so CPU runs test them at small K too (the policy: matmul_test.ts).
gemvMinK.software = gemvMinK.gpu;

const COMBOS = [[false, false], [false, true], [true, false], [true, true]] as const;

interface Case {
  label: string;
  got: Tensor;
  want: Float64Array;
  tol: number;
}

/** Records one random `matmul` of op(A) [m, k] · op(B) [k, n] and its float64 reference. */
function randomCase(
  gpu: Gpu,
  rng: Rng,
  [m, n, k]: number[],
  transposeA: boolean,
  transposeB: boolean,
  withBias: boolean,
): Case {
  const a = randomTensor(rng, transposeA ? [k, m] : [m, k]);
  const b = randomTensor(rng, transposeB ? [n, k] : [k, n]);
  const bias = withBias ? randomTensor(rng, [n]) : null;
  const ta = Tensor.fromHost(gpu, a.host), tb = Tensor.fromHost(gpu, b.host);
  const tbias = bias && Tensor.fromHost(gpu, bias.host);
  const got = matmul(ta, tb, { transposeA, transposeB, bias: tbias });
  ta.dispose(), tb.dispose(), tbias?.dispose();
  const want = matmulRef(a.values, b.values, m, n, k, { transposeA, transposeB, bias: bias?.values });
  const label = `${m}×${n}×${k} ${transposeA ? "T" : "N"}${transposeB ? "T" : "N"}${withBias ? " +bias" : ""}`;
  return { label, got, want, tol: 1e-5 };
}

/** Reads every case back with one wait and compares. */
async function check(cases: Case[]): Promise<void> {
  const hosts = await Tensor.toHostAll(cases.map((c) => c.got));
  cases.forEach((c, i) => {
    assert.deepEqual(hosts[i].shape, [...c.got.shape]);
    assertClose(hosts[i].data as Float32Array, c.want, c.tol, c.label);
    c.got.dispose();
  });
}

Deno.test("matmul matches the float64 reference for all transposes, odd shapes, with and without bias", async () => {
  const gpu = await testGpu();
  const rng = freshRng("matmul");
  // Odd sizes (f32 loads, edge tiles, a partial last K step), multiples of 4 (vec4 loads in all four layouts),
  // M = 1 (decoding), N = 1, K = 0 (C = bias).
  const shapes = [[1, 1, 1], [3, 5, 7], [67, 33, 129], [130, 257, 64], [36, 20, 44], [1, 300, 64], [40, 1, 37], [
    4,
    6,
    0,
  ]];
  const cases: Case[] = [];
  for (const shape of shapes) {
    for (const [ta, tb] of COMBOS) {
      for (const bias of [false, true]) cases.push(randomCase(gpu, rng, shape, ta, tb, bias));
    }
  }
  await check(cases);
});

Deno.test("few rows of C and K ≥ 256 (decoding) run the GEMV kernel: M = 1..9, f16, bias, accumulate, splits", async () => {
  const gpu = await testGpu();
  const rng = freshRng("gemm GEMV");
  for (const dtype of dtypes(gpu)) {
    for (let m = 1; m <= 9; m++) {
      // N not a multiple of the 8 columns per workgroup; K 259 and 2054 load scalars (with a partial last step), 260
      // and 2052 vec4s; K > 2048 takes the kernel's unrolled rounds before the remainder; K 67 < 256 is blocked.
      const [n, k] = [8 * m + 3, [259, 260, 2052, 67, 2054][(m + (dtype === "float16" ? 1 : 0)) % 5]];
      const x = random(gpu, rng, [m, k]), w = random(gpu, rng, [n, k], dtype), bias = random(gpu, rng, [n]);
      const init = randomTensor(rng, [m, n]);
      const want = linearRef(x.v, w.v, bias.v, m, n, k).map((v, i) => v + init.values[i]);
      const what = `${dtype} ${m}×${n}×${k}`;
      // 2 KiB bindings split B's rows over N, and over K (accumulating passes) where a row exceeds 2 KiB.
      for (const maxBinding of [gpu.maxBinding, 2048]) {
        const c = Tensor.fromHost(gpu, init.host);
        let kernels: string[] = [];
        const dispatches = await limited(gpu, maxBinding, null, async () => {
          kernels = await kernelsOf(gpu, () => {
            gemm(matrix(x.t), matrix(w.t), matrix(c), { transposeB: true, bias: bias.t, accumulate: true });
          });
        });
        assert.deepEqual(new Set(kernels), new Set([expectedKernel(m, k, dtype)]), what);
        assert.ok((dispatches > 1) === (maxBinding === 2048), `${what}: ${dispatches} dispatches at ${maxBinding} B`);
        assertClose((await c.toHost()).data as Float32Array, want, 1e-5, `${what}, bindings of ${maxBinding} B`);
        c.dispose();
      }
      for (const t of [x.t, w.t, bias.t]) t.dispose();
    }
  }
});

Deno.test("the GEMV kernel starts at K 256 on a GPU and at K 2048 on a CPU software adapter", async () => {
  const gpu = await testGpu();
  const rng = freshRng("gemm GEMV policy");
  const pinned = { ...gemvMinK };
  Object.assign(gemvMinK, { gpu: 256, software: 2048 });
  try {
    const minK = gpu.software ? 2048 : 256;
    for (const k of [minK - 4, minK]) {
      const x = random(gpu, rng, [1, k]), w = random(gpu, rng, [8, k]), c = Tensor.zeros(gpu, [1, 8]);
      const kernels = await kernelsOf(gpu, () => gemm(matrix(x.t), matrix(w.t), matrix(c), { transposeB: true }));
      assert.deepEqual(kernels, [k >= minK ? "matmul_gemv" : "matmul"], `K ${k} on ${gpu.adapterName}`);
      assertClose((await c.toHost()).data as Float32Array, linearRef(x.v, w.v, null, 1, 8, k), 1e-5, `K ${k}`);
      for (const t of [x.t, w.t, c]) t.dispose();
    }
  } finally {
    Object.assign(gemvMinK, pinned);
  }
});

Deno.test("K beyond one pass (65,536) accumulates over several dispatches", async () => {
  const gpu = await testGpu();
  const rng = freshRng("matmul long K");
  const cases = COMBOS.map(([ta, tb]) => randomCase(gpu, rng, [2, 3, 70001], ta, tb, true));
  // Sums of 70,001 f32 products: the rounding of the running sum alone reaches a few 1e-6 of the result.
  await check(cases.map((c) => ({ ...c, tol: 3e-5 })));
});

Deno.test("linear flattens leading dims: x [..., K] · weightᵀ + bias", async () => {
  const gpu = await testGpu();
  const rng = freshRng("linear");
  const cases: Case[] = [];
  const linears: [number[], number, boolean][] = [
    [[2, 5, 16], 32, true],
    [[3, 1, 7, 36], 20, false],
    [[24], 9, true],
    [[2, 3, 13], 70, true],
  ];
  for (const [xShape, n, withBias] of linears) {
    const k = xShape[xShape.length - 1], rows = xShape.reduce((p, d) => p * d, 1) / k;
    const x = randomTensor(rng, [...xShape]), w = randomTensor(rng, [n, k]);
    const bias = withBias ? randomTensor(rng, [n]) : null;
    const tbias = bias && Tensor.fromHost(gpu, bias.host);
    const tx = Tensor.fromHost(gpu, x.host), tw = Tensor.fromHost(gpu, w.host);
    const before = gpu.dispatchCount;
    const got = linear(tx, tw, tbias);
    assert.equal(gpu.dispatchCount - before, 1, "a small linear is one dispatch");
    tx.dispose(), tw.dispose(), tbias?.dispose();
    assert.deepEqual(got.shape, [...xShape.slice(0, -1), n]);
    const want = linearRef(x.values, w.values, bias?.values ?? null, rows, n, k);
    cases.push({ label: `linear ${xShape}→${n}`, got, want, tol: 1e-5 });
  }
  await check(cases);
});

Deno.test("shape errors name the operands and both shapes", async () => {
  const gpu = await testGpu();
  const x = Tensor.zeros(gpu, [2, 5, 16]), w = Tensor.zeros(gpu, [64, 32]), b = Tensor.zeros(gpu, [7, 1]);
  const bias = b.reshape([7]), sq = Tensor.zeros(gpu, [4, 4]);
  assert.throws(() => linear(x, w), {
    message: "linear: weight [64, 32] does not match x [2, 5, 16] (last dim 16 vs 32)",
  });
  assert.throws(() => linear(w, w, bias), /linear: bias \[7\] does not match the 64 output columns/);
  assert.throws(
    () => matmul(w, w),
    /matmul: a of a \[64, 32\] has K = 32 columns but b of b \[64, 32\] has K = 64 rows/,
  );
  assert.throws(() => matmul(w, b, { transposeA: true }), /aᵀ of a \[64, 32\] has K = 64 columns but b of b \[7, 1\]/);
  assert.throws(() => matmul(x, w), /matmul: a \[2, 5, 16\] and b \[64, 32\] must both be 2-D/);
  assert.throws(() => gemm(matrix(sq), matrix(sq), matrix(sq)), /gemm: the output shares its storage with a/);
  assert.throws(
    () => gemm(matrix(w), matrix(w), { tensor: sq, rows: 64, cols: 64, offset: 0, stride: 64 }, { transposeB: true }),
    /gemm: c view \[64, 64\] \(offset 0, stride 64\) lies outside its tensor \[4, 4\]/,
  );
  assert.throws(
    () => gemm(matrix(w), matrix(w), matrix(sq)),
    /gemm: a \[64, 32\] · b \[64, 32\] does not fit c \[4, 4\]/,
  );
  for (const t of [x, w, b, bias, sq]) t.dispose();
});

Deno.test("operands larger than gpu.maxBinding are split into blocks (non-aligned offsets, bias, all transposes)", async () => {
  const gpu = await testGpu();
  const rng = freshRng("matmul split");
  // 2 KiB bindings (512 floats), smaller than every operand below: rows of 41..67 floats put the blocks' first
  // elements off the 32-byte binding alignment, transposed B splits N (bias offsets), A·B splits K (accumulation).
  let cases: Case[] = [];
  const dispatches = await limited(gpu, 2048, null, () => {
    cases = COMBOS.map(([ta, tb], i) => randomCase(gpu, rng, [61, 67 + i, 45 - i], ta, tb, true));
    return Promise.resolve();
  });
  assert.ok(dispatches > 4 * 8, `only ${dispatches} dispatches: nothing was split`);
  await check(cases);
});

/** A `[rows, cols]` block of random values at `offset` with row `stride` inside a NaN-filled tensor. */
function embedded(
  gpu: Gpu,
  rng: Rng,
  rows: number,
  cols: number,
  offset: number,
  stride: number,
): { view: MatrixView; values: Float64Array } {
  const size = offset + (rows - 1) * stride + cols + 5; // NaN after the last row too
  const data = new Float32Array(size).fill(NaN);
  const values = Float64Array.from(randomTensor(rng, [rows, cols]).values);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) data[offset + r * stride + c] = values[r * cols + c];
  const tensor = Tensor.fromHost(gpu, { dtype: "float32", shape: [size], data });
  return { view: { tensor, rows, cols, offset, stride }, values };
}

Deno.test("gemm on strided views: reads stay inside the views, writes inside the output view, accumulates", async () => {
  const gpu = await testGpu();
  const rng = freshRng("gemm views");
  // Odd layout (f32 loads, a partial last K step) and 16-byte aligned layout (vec4 loads, reads past the view's
  // edge along M and N, which must only reach elements of C that are not stored). Everything around the views is
  // NaN, so any value read from outside a view into a stored element, or written outside C's view, shows.
  // M ≤ 8 with Bᵀ runs the GEMV kernel.
  const layouts = [
    { m: 19, n: 10, k: 23, offset: 5, stride: 40, cOffset: 3, cStride: 37 },
    { m: 18, n: 22, k: 20, offset: 8, stride: 28, cOffset: 4, cStride: 24 },
    { m: 3, n: 10, k: 23, offset: 5, stride: 40, cOffset: 3, cStride: 37 },
    { m: 1, n: 22, k: 20, offset: 8, stride: 28, cOffset: 4, cStride: 24 },
  ];
  for (const { m, n, k, offset, stride, cOffset, cStride } of layouts) {
    for (const [transposeA, transposeB] of COMBOS) {
      const a = transposeA ? embedded(gpu, rng, k, m, offset, stride) : embedded(gpu, rng, m, k, offset, stride);
      const b = transposeB ? embedded(gpu, rng, n, k, offset, stride) : embedded(gpu, rng, k, n, offset, stride);
      const c = embedded(gpu, rng, m, n, cOffset, cStride);
      gemm(a.view, b.view, c.view, { transposeA, transposeB, accumulate: true });
      const [got] = await Tensor.toHostAll([c.view.tensor]);
      const product = matmulRef(a.values, b.values, m, n, k, { transposeA, transposeB });
      const inside = new Float64Array(m * n), want = new Float64Array(m * n);
      got.data.forEach((v, i) => {
        const [r, col] = [Math.floor((i - cOffset) / cStride), (i - cOffset) % cStride];
        if (i >= cOffset && r < m && col < n) {
          inside[r * n + col] = v as number;
          want[r * n + col] = c.values[r * n + col] + product[r * n + col];
        } else if (!Number.isNaN(v)) {
          throw new Error(`element ${i} outside the output view was written (${v})`);
        }
      });
      assertClose(inside, want, 1e-5, `${m}×${n}×${k} ${transposeA ? "T" : "N"}${transposeB ? "T" : "N"} views`);
      for (const t of [a, b, c]) t.view.tensor.dispose();
    }
  }
});

/** Where the products of one batched operand live: product (o, i) starts at offset + o·outer + i·inner. */
interface BatchLayout {
  offset: number;
  stride: number;
  outer: number;
  inner: number;
}

/**
 * Random `[rows, cols]` matrices for every product of a `count` batch, placed by `layout` inside a NaN-filled
 * tensor; `values[o·count[1] + i]` holds product (o, i)'s.
 */
function batchedOperand(
  gpu: Gpu,
  rng: Rng,
  count: [number, number],
  rows: number,
  cols: number,
  layout: BatchLayout,
): { view: MatrixView; values: Float64Array[]; place: (p: number, r: number, c: number) => number } {
  const place = (p: number, r: number, c: number): number =>
    layout.offset + Math.floor(p / count[1]) * layout.outer + (p % count[1]) * layout.inner + r * layout.stride + c;
  const products = count[0] * count[1];
  const data = new Float32Array(place(products - 1, rows - 1, cols - 1) + 6).fill(NaN);
  const values: Float64Array[] = [];
  for (let p = 0; p < products; p++) {
    values.push(Float64Array.from(randomTensor(rng, [rows, cols]).values));
    for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) data[place(p, r, c)] = values[p][r * cols + c];
  }
  const tensor = Tensor.fromHost(gpu, { dtype: "float32", shape: [data.length], data });
  return { view: { tensor, rows, cols, offset: layout.offset, stride: layout.stride }, values, place };
}

/** Layouts for a `[rows, cols]` operand: heads interleaved in the rows of a wide buffer, or matrices back to back. */
function layouts(count: [number, number], rows: number, cols: number, pad: number): BatchLayout[] {
  const wide = count[1] * cols + pad;
  return [
    { offset: pad, stride: wide, inner: cols, outer: rows * wide + pad },
    {
      offset: 2 * pad,
      stride: cols + pad,
      inner: rows * (cols + pad) + pad,
      outer: count[1] * (rows * (cols + pad) + pad) + pad,
    },
  ];
}

/**
 * One batched `gemm` (accumulating into random C, shared bias) against the float64 reference per product; every
 * element of C's tensor outside the products' views must stay NaN.
 */
async function checkBatched(
  gpu: Gpu,
  rng: Rng,
  count: [number, number],
  [m, n, k]: [number, number, number],
  pad: number,
  what: string,
): Promise<void> {
  for (const [transposeA, transposeB] of COMBOS) {
    for (const [la, lb, lc] of [[0, 1, 0], [1, 0, 1]]) {
      const [ar, ac] = transposeA ? [k, m] : [m, k], [br, bc] = transposeB ? [n, k] : [k, n];
      const a = batchedOperand(gpu, rng, count, ar, ac, layouts(count, ar, ac, pad)[la]);
      const b = batchedOperand(gpu, rng, count, br, bc, layouts(count, br, bc, pad)[lb]);
      const cLayout = layouts(count, m, n, pad)[lc];
      const c = batchedOperand(gpu, rng, count, m, n, cLayout);
      const bias = randomTensor(rng, [n]), tbias = Tensor.fromHost(gpu, bias.host);
      const strides = (l: BatchLayout): [number, number] => [l.outer, l.inner];
      const batch: GemmBatch = {
        count,
        a: strides(layouts(count, ar, ac, pad)[la]),
        b: strides(layouts(count, br, bc, pad)[lb]),
        c: strides(cLayout),
      };
      gemm(a.view, b.view, c.view, { transposeA, transposeB, bias: tbias, accumulate: true, batch });
      const [got] = await Tensor.toHostAll([c.view.tensor]);
      const want = new Float64Array(got.data.length).fill(NaN);
      c.values.forEach((old, p) => {
        const product = matmulRef(a.values[p], b.values[p], m, n, k, { transposeA, transposeB, bias: bias.values });
        for (let r = 0; r < m; r++) {
          for (let j = 0; j < n; j++) want[c.place(p, r, j)] = old[r * n + j] + product[r * n + j];
        }
      });
      const inside: number[] = [], wanted: number[] = [];
      got.data.forEach((v, i) => {
        if (!Number.isNaN(want[i])) [inside.push(v as number), wanted.push(want[i])];
        else if (!Number.isNaN(v)) throw new Error(`${what}: element ${i} outside the products' views was written`);
      });
      const label = `${what} ${transposeA ? "T" : "N"}${transposeB ? "T" : "N"} layouts ${la}${lb}${lc}`;
      assertClose(inside, wanted, 1e-5, label);
      for (const t of [a.view.tensor, b.view.tensor, c.view.tensor, tbias]) t.dispose();
    }
  }
}

Deno.test("batched gemm: two-level strides, head slices of a wide buffer, all transposes, shared bias", async () => {
  const gpu = await testGpu();
  const rng = freshRng("gemm batch");
  // Multiples of 4 with padding 4 (vec4 loads in every product); odd sizes (f32 loads); sizes that are multiples of
  // 4 with an odd padding, so that only the batch strides break the vec4 alignment.
  await checkBatched(gpu, rng, [2, 3], [16, 20, 12], 4, "aligned");
  await checkBatched(gpu, rng, [3, 2], [9, 7, 5], 3, "odd");
  await checkBatched(gpu, rng, [2, 2], [8, 12, 16], 3, "odd batch strides");
  await checkBatched(gpu, rng, [1, 4], [17, 33, 0], 4, "K = 0");
  const x = Tensor.zeros(gpu, [64]);
  const view = (rows: number, cols: number): MatrixView => ({ tensor: x, rows, cols, offset: 0, stride: cols });
  const out = Tensor.zeros(gpu, [64]);
  assert.throws(
    () =>
      gemm(view(4, 4), view(4, 4), { ...view(4, 4), tensor: out }, {
        batch: { count: [2, 3], a: [16, 0], b: [0, 0], c: [32, 12] },
      }),
    /gemm: c view \[4, 4\] \(offset 0, stride 4\) lies outside its tensor \[64\] in product \[1, 2\] of the batch/,
  );
  assert.throws(
    () =>
      gemm(view(4, 4), view(4, 4), { ...view(4, 4), tensor: out }, {
        batch: { count: [2, 1], a: [-1, 0], b: [0, 0], c: [16, 0] },
      }),
    /gemm: batch\.a must be two non-negative integers, got \[-1,0\]/,
  );
  x.dispose(), out.dispose();
});

/**
 * A random gemm with the `triangular` option into a NaN-filled C against the float64 reference (op(A) lower
 * triangular for "lowerA"). Everything must match, except that "lowerC" may leave elements above the diagonal
 * unwritten; returns how many it left.
 */
async function checkTriangular(
  gpu: Gpu,
  rng: Rng,
  [m, n, k]: [number, number, number],
  transposeA: boolean,
  transposeB: boolean,
  triangular: "lowerA" | "lowerC",
): Promise<number> {
  const a = randomTensor(rng, transposeA ? [k, m] : [m, k]), b = randomTensor(rng, transposeB ? [n, k] : [k, n]);
  if (triangular === "lowerA") {
    for (let r = 0; r < m; r++) {
      for (let i = r + 1; i < k; i++) {
        const at = transposeA ? i * m + r : r * k + i; // op(A)[r, i]
        (a.host.data as Float32Array)[at] = a.values[at] = 0;
      }
    }
  }
  const [ta, tb] = [Tensor.fromHost(gpu, a.host), Tensor.fromHost(gpu, b.host)];
  const tc = Tensor.fromHost(gpu, { dtype: "float32", shape: [m, n], data: new Float32Array(m * n).fill(NaN) });
  gemm(matrix(ta), matrix(tb), matrix(tc), { transposeA, transposeB, triangular });
  const [got] = await Tensor.toHostAll([tc]);
  const want = matmulRef(a.values, b.values, m, n, k, { transposeA, transposeB });
  const kept = Float64Array.from(got.data as Float32Array);
  let unwritten = 0;
  kept.forEach((v, i) => {
    if (triangular === "lowerC" && i % n > Math.floor(i / n) && Number.isNaN(v)) {
      [kept[i], unwritten] = [want[i], unwritten + 1];
    }
  });
  const what = `${triangular} ${m}×${n}×${k} ${transposeA ? "T" : "N"}${transposeB ? "T" : "N"}`;
  assertClose(kept, want, 1e-5, what);
  for (const t of [ta, tb, tc]) t.dispose();
  return unwritten;
}

Deno.test("triangular gemm: lowerA stops each row's sum after its diagonal, lowerC skips blocks above it", async () => {
  const gpu = await testGpu();
  const rng = freshRng("gemm triangular");
  for (const [ta, tb] of COMBOS) {
    // Square and not (K > M: rows stop short of K; K < M: the diagonal leaves A), odd and aligned sizes.
    for (const mnk of [[37, 33, 45], [40, 24, 64], [47, 20, 13]] as [number, number, number][]) {
      await checkTriangular(gpu, rng, mnk, ta, tb, "lowerA");
    }
    assert.ok(await checkTriangular(gpu, rng, [70, 70, 9], ta, tb, "lowerC") > 0, "lowerC skipped nothing");
    await checkTriangular(gpu, rng, [33, 80, 12], ta, tb, "lowerC");
  }
  // Blocks of M, N and K (2 KiB bindings) move the diagonal relative to each block.
  const split = await limited(gpu, 2048, null, async () => {
    for (const [ta, tb] of COMBOS) {
      await checkTriangular(gpu, rng, [61, 67, 61], ta, tb, "lowerA");
      await checkTriangular(gpu, rng, [61, 67, 45], ta, tb, "lowerC");
    }
  });
  assert.ok(split > 8 * 8, `only ${split} dispatches: nothing was split`);
});

Deno.test("batched gemm splits batches over dispatches: binding limit, workgroups per dimension", async () => {
  const gpu = await testGpu();
  const rng = freshRng("gemm batch split");
  const count: [number, number] = [3, 4], mnk: [number, number, number] = [12, 20, 16];
  // 4000-byte bindings (990 floats after the slack) hold a few products of each operand: runs of inner products
  // within one outer product, single products for the wide layouts.
  const few = await limited(gpu, 4000, null, () => checkBatched(gpu, rng, count, mnk, 4, "groups of products"));
  // 640-byte bindings (150 floats) and 4×4 products: groups of 2 or 3 whole outer products.
  const outers = await limited(gpu, 640, null, () => checkBatched(gpu, rng, [5, 2], [4, 4, 4], 4, "outer groups"));
  // 1 KiB bindings (246 floats after the slack): smaller than one product's C in the wide layout, so products are
  // split into blocks too.
  const blocks = await limited(gpu, 1024, null, () => checkBatched(gpu, rng, [2, 2], mnk, 4, "products split"));
  // At most 5 workgroups per grid dimension: z cannot hold an outer product's 7 inner ones, so each outer product
  // takes runs of 5 and 2.
  const layers = await limited(gpu, gpu.maxBinding, 5, () => checkBatched(gpu, rng, [2, 7], [9, 7, 5], 3, "z limit"));
  const plain = 4 * 2; // transposes × layouts, one dispatch each when nothing is split
  assert.ok(few > plain && blocks > few, `dispatches: ${few} (groups), ${blocks} (blocks)`);
  assert.ok(outers >= plain * 2 && outers <= plain * 3, `${outers} dispatches for groups of outer products`);
  assert.equal(layers, plain * 2 * 2, "[2, 7] products at 5 per dispatch");
  await closeTestGpu();
});
