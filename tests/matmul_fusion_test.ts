/**
 * gemm's inference fusions (`GemmFusion`) against float64 compositions of the separate ops' references: the RMSNorm
 * of A folded in, the SwiGLU of A, the soft cap of C, a second product sharing A, and a residual accumulated in
 * place; odd shapes (M not a multiple of 8, N not of 16, K not of 4), float16 weights, and the fallbacks when the
 * bindings force a split (K passes, two dispatches). Every product checks which kernel ran: the GEMV kernel for
 * M ≤ 8 and K ≥ 256, the register-blocked one otherwise.
 */

import assert from "node:assert/strict";
import type { Gpu } from "../src/gpu/runtime.ts";
import { gemm, type GemmOptions, gemvMinK } from "../src/ops/matmul.ts";
import { matrix, type MatrixView, Tensor } from "../src/tensor.ts";
import { gatedActivationRef, softCapRef } from "./cpu/activations.ts";
import { linearRef } from "./cpu/matmul.ts";
import { normRef } from "./cpu/norm.ts";
import { type Dtype, dtypes, expectedKernel, kernelsOf, random } from "./matmul_util.ts";
import { assertClose, closeTestGpu, freshRng, limited, randomTensor, type Rng, testGpu } from "./util.ts";

// Every adapter takes the GEMV paths a GPU takes, so CPU runs test them at small K too (the policy: matmul_test.ts).
gemvMinK.software = gemvMinK.gpu;

/**
 * Runs `gemm` into a fresh `[m, n]` C (starting from `init` when accumulating) and returns C and the dispatches,
 * after checking that every product ran on the kernel meant for m rows.
 */
async function run(
  gpu: Gpu,
  a: MatrixView,
  b: MatrixView,
  m: number,
  n: number,
  options: GemmOptions,
  init?: Float64Array,
  maxBinding?: number,
): Promise<{ c: Float32Array; dispatches: number }> {
  const c = init
    ? Tensor.fromHost(gpu, { dtype: "float32", shape: [m, n], data: Float32Array.from(init) })
    : Tensor.empty(gpu, [m, n]);
  let kernels: string[] = [];
  const call = async () => {
    kernels = await kernelsOf(gpu, () => gemm(a, b, matrix(c), { transposeB: true, ...options }));
  };
  const before = gpu.dispatchCount;
  const dispatches = maxBinding
    ? await limited(gpu, maxBinding, null, call)
    : (await call(), gpu.dispatchCount - before);
  const products = kernels.filter((k) => k.startsWith("matmul"));
  assert.ok(products.length > 0, `no product among ${kernels}`);
  const k = options.transposeB === false ? b.rows : b.cols;
  const want = expectedKernel(m, k, b.tensor.dtype as Dtype);
  for (const kernel of products) assert.equal(kernel, want, `M = ${m}, K = ${k}`);
  const out = (await c.toHost()).data as Float32Array;
  c.dispose();
  return { c: out, dispatches };
}

Deno.test("gemm rmsNorm: RMSNorm of A folded into the product, float32 and float16 weights, K passes", async () => {
  const gpu = await testGpu(), rng = freshRng("gemm rmsNorm");
  for (const dtype of dtypes(gpu)) {
    for (const [m, n, k] of [[1, 50, 64], [13, 37, 37], [2, 16, 5]]) {
      const x = random(gpu, rng, [m, k], "float32", 3), w = random(gpu, rng, [n, k], dtype);
      const nw = random(gpu, rng, [k]), bias = random(gpu, rng, [n]);
      const eps = 1e-6;
      const want = linearRef(normRef(x.v, k, nw.v, null, { kind: "rms", eps }), w.v, bias.v, m, n, k);
      const options = { bias: bias.t, rmsNorm: { weight: nw.t, eps } };
      const fused = await run(gpu, matrix(x.t), matrix(w.t), m, n, options);
      assert.equal(fused.dispatches, 1);
      assertClose(fused.c, want, 1e-5, `${dtype} [${m}, ${n}, ${k}]`);
      for (const t of [x.t, w.t, nw.t, bias.t]) t.dispose();
    }
  }
});

/** A product over K = 65,540: two passes over K, so the RMSNorm and the soft cap run as their own kernels. */
async function longK(gpu: Gpu, rng: Rng, cap: number | undefined): Promise<void> {
  const [m, n, k] = [2, 3, 65540], eps = 1e-6;
  const x = random(gpu, rng, [m, k]), w = random(gpu, rng, [n, k]), nw = random(gpu, rng, [k]);
  let want = linearRef(normRef(x.v, k, nw.v, null, { kind: "rms", eps }), w.v, null, m, n, k);
  if (cap) want = softCapRef(want, cap);
  const r = await run(gpu, matrix(x.t), matrix(w.t), m, n, { rmsNorm: { weight: nw.t, eps }, softCap: cap });
  assert.equal(r.dispatches, cap ? 4 : 3); // norm, two passes (, soft cap)
  assertClose(r.c, want, 1e-5, `K = ${k}${cap ? ", capped" : ""}`);
  for (const t of [x.t, w.t, nw.t]) t.dispose();
}

Deno.test("gemm rmsNorm over K in passes: the norm kernel first", async () => {
  await longK(await testGpu(), freshRng("gemm rmsNorm long K"), undefined);
});

Deno.test("gemm gatedA: SwiGLU of a [gate | z] view accumulated into a residual, float16, split bindings", async () => {
  const gpu = await testGpu(), rng = freshRng("gemm gatedA");
  for (const dtype of dtypes(gpu)) {
    for (const [m, n, f] of [[1, 32, 40], [11, 21, 37], [3, 5, 2]]) {
      const gu = random(gpu, rng, [m, 2 * f], "float32", 2), w = random(gpu, rng, [n, f], dtype);
      const bias = random(gpu, rng, [n]), residual = randomTensor(rng, [m, n]).values;
      const glu = gatedActivationRef(gu.v, 2 * f, "swish");
      const want = linearRef(glu, w.v, bias.v, m, n, f).map((v, i) => v + residual[i]);
      const gate: MatrixView = { tensor: gu.t, rows: m, cols: f, offset: 0, stride: 2 * f };
      const options = { bias: bias.t, gatedA: f, accumulate: true };
      const fused = await run(gpu, gate, matrix(w.t), m, n, options, residual);
      assert.equal(fused.dispatches, 1);
      assertClose(fused.c, want, 1e-5, `${dtype} [${m}, ${n}, ${f}]`);
      const split = await run(gpu, gate, matrix(w.t), m, n, options, residual, 512);
      assert.ok(split.dispatches > 1 || w.t.bytes <= 512, `${split.dispatches} dispatches`);
      assertClose(split.c, want, 1e-5, `${dtype} [${m}, ${n}, ${f}] split`);
      for (const t of [gu.t, w.t, bias.t]) t.dispose();
    }
  }
});

Deno.test("gemm softCap: the logit soft cap as the product's epilogue", async () => {
  const gpu = await testGpu(), rng = freshRng("gemm softCap");
  for (const [m, n, k] of [[1, 40, 32], [9, 17, 7]]) {
    const x = random(gpu, rng, [m, k], "float32", 4), w = random(gpu, rng, [n, k]), nw = random(gpu, rng, [k]);
    const cap = 3;
    const want = softCapRef(
      linearRef(normRef(x.v, k, nw.v, null, { kind: "rms", eps: 1e-5 }), w.v, null, m, n, k),
      cap,
    );
    const options = { softCap: cap, rmsNorm: { weight: nw.t, eps: 1e-5 } };
    const fused = await run(gpu, matrix(x.t), matrix(w.t), m, n, options);
    assert.equal(fused.dispatches, 1);
    assertClose(fused.c, want, 1e-5, `[${m}, ${n}, ${k}]`);
    for (const t of [x.t, w.t, nw.t]) t.dispose();
  }
});

Deno.test("gemm softCap over K in passes: the soft-cap kernel after", async () => {
  await longK(await testGpu(), freshRng("gemm softCap long K"), 5);
});

Deno.test("gemm second: two projections of one normed input in one dispatch, or two when split", async () => {
  const gpu = await testGpu(), rng = freshRng("gemm second");
  for (const dtype of dtypes(gpu)) {
    for (const [m, n1, n2, k] of [[1, 96, 4, 32], [10, 19, 6, 13], [2, 3, 33, 8]]) {
      const x = random(gpu, rng, [m, k]), w1 = random(gpu, rng, [n1, k], dtype), w2 = random(gpu, rng, [n2, k], dtype);
      const b1 = random(gpu, rng, [n1]), b2 = random(gpu, rng, [n2]), nw = random(gpu, rng, [k]);
      for (const withBias1 of [true, false]) {
        const xn = normRef(x.v, k, nw.v, null, { kind: "rms", eps: 1e-6 });
        const y1 = linearRef(xn, w1.v, withBias1 ? b1.v : null, m, n1, k), y2 = linearRef(xn, w2.v, b2.v, m, n2, k);
        const want = new Float64Array(m * (n1 + n2));
        for (let r = 0; r < m; r++) {
          want.set(y1.subarray(r * n1, (r + 1) * n1), r * (n1 + n2));
          want.set(y2.subarray(r * n2, (r + 1) * n2), r * (n1 + n2) + n1);
        }
        const options: GemmOptions = {
          bias: withBias1 ? b1.t : null,
          rmsNorm: { weight: nw.t, eps: 1e-6 },
          second: { b: matrix(w2.t), bias: b2.t },
        };
        const fused = await run(gpu, matrix(x.t), matrix(w1.t), m, n1 + n2, options);
        assert.equal(fused.dispatches, 1);
        assertClose(fused.c, want, 1e-5, `${dtype} [${m}, ${n1}+${n2}, ${k}]`);
        const split = await run(gpu, matrix(x.t), matrix(w1.t), m, n1 + n2, options, undefined, 256);
        assert.ok(split.dispatches >= 2, `${split.dispatches} dispatches`);
        assertClose(split.c, want, 1e-5, `${dtype} [${m}, ${n1}+${n2}, ${k}] split`);
      }
      for (const t of [x.t, w1.t, w2.t, b1.t, b2.t, nw.t]) t.dispose();
    }
  }
});

/** The float64 reference of the xLSTM Large decode products the fusions serve, on random inputs. */
interface ModelProduct {
  name: string;
  a: MatrixView;
  b: MatrixView;
  n: number;
  options: GemmOptions;
  init?: Float64Array;
  want: Float64Array;
  dispose: () => void;
}

/** rmsNorm + second (q|k|v|o and i|f), gatedA + accumulate (proj_down), rmsNorm + softCap (the LM head). */
function modelProducts(gpu: Gpu, rng: Rng, dtype: Dtype, m: number, n: number, k: number): ModelProduct[] {
  const eps = 1e-6, n2 = 5;
  const x = random(gpu, rng, [m, k], "float32", 2), nw = random(gpu, rng, [k]);
  const w = random(gpu, rng, [n, k], dtype), w2 = random(gpu, rng, [n2, k], dtype);
  const b1 = random(gpu, rng, [n]), b2 = random(gpu, rng, [n2]);
  const gu = random(gpu, rng, [m, 2 * k], "float32", 2), residual = randomTensor(rng, [m, n]).values;
  const xn = normRef(x.v, k, nw.v, null, { kind: "rms", eps });
  const y1 = linearRef(xn, w.v, b1.v, m, n, k), y2 = linearRef(xn, w2.v, b2.v, m, n2, k);
  const both = new Float64Array(m * (n + n2));
  for (let r = 0; r < m; r++) {
    both.set(y1.subarray(r * n, (r + 1) * n), r * (n + n2));
    both.set(y2.subarray(r * n2, (r + 1) * n2), r * (n + n2) + n);
  }
  const glu = gatedActivationRef(gu.v, 2 * k, "swish");
  const down = linearRef(glu, w.v, b1.v, m, n, k).map((v, i) => v + residual[i]);
  const cap = 2;
  const rmsNorm = { weight: nw.t, eps };
  let left = 3; // the tensors go once the last product is done
  const dispose = () => {
    if (--left === 0) { for (const t of [x.t, nw.t, w.t, w2.t, b1.t, b2.t, gu.t]) t.dispose(); }
  };
  return [
    {
      name: "rmsNorm + second",
      a: matrix(x.t),
      b: matrix(w.t),
      n: n + n2,
      options: { bias: b1.t, rmsNorm, second: { b: matrix(w2.t), bias: b2.t } },
      want: both,
      dispose,
    },
    {
      name: "gatedA + accumulate",
      a: { tensor: gu.t, rows: m, cols: k, offset: 0, stride: 2 * k },
      b: matrix(w.t),
      n,
      options: { bias: b1.t, gatedA: k, accumulate: true },
      init: residual,
      want: down,
      dispose,
    },
    {
      name: "rmsNorm + softCap",
      a: matrix(x.t),
      b: matrix(w.t),
      n,
      options: { rmsNorm, softCap: cap },
      want: softCapRef(linearRef(xn, w.v, null, m, n, k), cap),
      dispose,
    },
  ];
}

Deno.test("gemm fusions on the GEMV kernel: the model's combinations for M = 1..9, odd N and K, split bindings", async () => {
  const gpu = await testGpu(), rng = freshRng("gemm fusions GEMV");
  // M 1, 4 and 8 fill the kernel's ROWS variants (1, 4, 8), M 2 and 5 leave rows unused, M 9 is blocked; N is not a
  // multiple of its 8 columns per workgroup; K 261 loads scalars, K 260 vec4s. Few shapes per dtype: every variant
  // is a pipeline to compile.
  const shapes = {
    float32: [[1, 37, 261], [4, 21, 260], [5, 19, 261], [9, 11, 260]],
    float16: [[1, 37, 260], [2, 9, 261], [8, 13, 260]],
  };
  for (const dtype of dtypes(gpu)) {
    for (const [m, n, k] of shapes[dtype]) {
      for (const p of modelProducts(gpu, rng, dtype, m, n, k)) {
        const what = `${p.name} ${dtype} [${m}, ${p.n}, ${k}]`;
        const fused = await run(gpu, p.a, p.b, m, p.n, p.options, p.init);
        assert.equal(fused.dispatches, 1, what);
        assertClose(fused.c, p.want, 1e-5, what);
        // 4 KiB bindings: B ([n, k], ≥ 4.6 KiB) splits along N, and two products go to two dispatches (K passes
        // with these fusions: the long-K tests).
        const split = await run(gpu, p.a, p.b, m, p.n, p.options, p.init, 4096);
        assert.ok(split.dispatches > 1, `${what}: ${split.dispatches} dispatches with split bindings`);
        assertClose(split.c, p.want, 1e-5, `${what} split`);
        p.dispose();
      }
    }
  }
});

Deno.test("gemm fusions: clear errors for combinations that do not fit", () => {
  return testGpu().then((gpu) => {
    const a = Tensor.zeros(gpu, [4, 8]), b = Tensor.zeros(gpu, [6, 8]), c = Tensor.zeros(gpu, [4, 6]);
    const w = Tensor.zeros(gpu, [8]), b2 = Tensor.zeros(gpu, [3, 8]);
    const call = (o: GemmOptions, cv = matrix(c)) => () => gemm(matrix(a), matrix(b), cv, { transposeB: true, ...o });
    assert.throws(call({ softCap: 2, accumulate: true }), /softCap cannot be combined with accumulate/);
    assert.throws(
      call({ rmsNorm: { weight: Tensor.zeros(gpu, [5]), eps: 0 } }),
      /rmsNorm.weight \[5\] does not match K = 8/,
    );
    assert.throws(call({ rmsNorm: { weight: w, eps: 0 }, gatedA: 4 }), /cannot be combined/);
    assert.throws(call({ second: { b: matrix(b2) } }), /second.b \[3, 8\]ᵀ does not fit c \[4, 6\]/);
    assert.throws(call({ gatedA: 4 }), /a with its gated part view \[4, 12\]/);
    for (const t of [a, b, c, w, b2]) t.dispose();
  });
});

Deno.test("gemm fusions: release the GPU", async () => {
  await closeTestGpu();
});
