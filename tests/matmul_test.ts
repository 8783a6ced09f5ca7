import assert from "node:assert/strict";
import { gemm, linear, matmul } from "../src/ops/matmul.ts";
import { matrix, Tensor } from "../src/tensor.ts";
import { linearRef, matmulRef } from "./cpu/matmul.ts";
import { assertClose, closeTestGpu, freshRng, randomTensor, type Rng, testGpu } from "./util.ts";
import type { Gpu } from "../src/gpu/runtime.ts";

const COMBOS = [[false, false], [false, true], [true, false], [true, true]] as const;

interface Case {
  label: string;
  got: Tensor;
  want: Float64Array;
  tol: number;
}

/** Records one random `matmul` of op(A) [m, k] · op(B) [k, n] and its float64 reference. */
function randomCase(gpu: Gpu, rng: Rng, [m, n, k]: number[], transposeA: boolean, transposeB: boolean, withBias: boolean) {
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
  const shapes = [[1, 1, 1], [3, 5, 7], [67, 33, 129], [130, 257, 64], [1, 300, 64], [40, 1, 37], [4, 6, 0]];
  const cases: Case[] = [];
  for (const shape of shapes) {
    for (const [ta, tb] of COMBOS) for (const bias of [false, true]) cases.push(randomCase(gpu, rng, shape, ta, tb, bias));
  }
  await check(cases);
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
  const linears: [number[], number, boolean][] = [[[2, 5, 16], 32, true], [[3, 1, 7, 36], 20, false], [[24], 9, true]];
  for (const [xShape, n, withBias] of linears) {
    const k = xShape[xShape.length - 1], rows = xShape.reduce((p, d) => p * d, 1) / k;
    const x = randomTensor(rng, [...xShape]), w = randomTensor(rng, [n, k]);
    const bias = withBias ? randomTensor(rng, [n]) : null;
    const tbias = bias && Tensor.fromHost(gpu, bias.host);
    const got = linear(Tensor.fromHost(gpu, x.host), Tensor.fromHost(gpu, w.host), tbias);
    assert.deepEqual(got.shape, [...xShape.slice(0, -1), n]);
    const want = linearRef(x.values, w.values, bias?.values ?? null, rows, n, k);
    cases.push({ label: `linear ${xShape}→${n}`, got, want, tol: 1e-5 });
  }
  await check(cases);
});

Deno.test("shape errors name the operands and both shapes", async () => {
  const gpu = await testGpu();
  const x = Tensor.zeros(gpu, [2, 5, 16]), w = Tensor.zeros(gpu, [64, 32]), b = Tensor.zeros(gpu, [7]);
  assert.throws(() => linear(x, w), { message: "linear: weight [64, 32] does not match x [2, 5, 16] (last dim 16 vs 32)" });
  assert.throws(() => linear(w, w, b), /linear: bias \[7\] does not match the 64 output columns/);
  assert.throws(() => matmul(w, w), /matmul: a of a \[64, 32\] has K = 32 columns but b of b \[64, 32\] has K = 64 rows/);
  assert.throws(() => matmul(w, b.reshape([7, 1]), { transposeA: true }), /aᵀ of a \[64, 32\] has K = 64 columns but b of b \[7, 1\] has K = 7 rows/);
  assert.throws(() => matmul(x, w), /matmul: a \[2, 5, 16\] and b \[64, 32\] must both be 2-D/);
  assert.throws(() => gemm(matrix(w), matrix(w), matrix(w), { transposeB: true }), /output shares its storage with a/);
  for (const t of [x, w, b]) t.dispose();
});

Deno.test("operands larger than gpu.maxBinding are split into blocks (non-aligned offsets, bias, all transposes)", async () => {
  const gpu = await testGpu();
  const rng = freshRng("matmul split");
  const saved = gpu.maxBinding;
  try {
    // 2 KiB bindings: 512 floats, smaller than any operand below; 61·67 rows are not multiples of the 32-byte alignment.
    gpu.maxBinding = 2048;
    const before = gpu.dispatchCount;
    const cases = COMBOS.map(([ta, tb], i) => randomCase(gpu, rng, [61, 67 + i, 45 - i], ta, tb, i % 2 === 0));
    assert.ok(gpu.dispatchCount - before > 4 * 8, `only ${gpu.dispatchCount - before} dispatches: nothing was split`);
    await check(cases);
  } finally {
    gpu.maxBinding = saved;
  }
});

Deno.test("gemm writes into a column slice, reads strided views and accumulates", async () => {
  const gpu = await testGpu();
  const rng = freshRng("gemm views");
  const [m, n, k, wide] = [19, 10, 23, 37];
  // A = columns [5, 5 + k) of a [m, 40] tensor; C = columns [3, 3 + n) of a [m, wide] tensor holding old values.
  const aAll = randomTensor(rng, [m, 40]), b = randomTensor(rng, [n, k]), old = randomTensor(rng, [m, wide]);
  const ta = Tensor.fromHost(gpu, aAll.host), tb = Tensor.fromHost(gpu, b.host), tc = Tensor.fromHost(gpu, old.host);
  const aView = { tensor: ta, rows: m, cols: k, offset: 5, stride: 40 };
  gemm(aView, matrix(tb), { tensor: tc, rows: m, cols: n, offset: 3, stride: wide }, {
    transposeB: true,
    accumulate: true,
  });
  const aDense = new Float64Array(m * k).map((_, i) => aAll.values[Math.floor(i / k) * 40 + 5 + (i % k)]);
  const product = matmulRef(aDense, b.values, m, n, k, { transposeB: true });
  const want = Float64Array.from(old.values);
  for (let i = 0; i < m; i++) for (let j = 0; j < n; j++) want[i * wide + 3 + j] += product[i * n + j];
  await check([{ label: "gemm view", got: tc, want, tol: 1e-5 }]);
  ta.dispose(), tb.dispose();
  await closeTestGpu();
});
