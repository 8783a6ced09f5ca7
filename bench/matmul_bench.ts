/**
 * Matmul throughput on the project's layouts. Square products: `linear` (x [S, S] · W[S, S]ᵀ, the Linear hot path)
 * at S = 512 and 1024, plus the backward-pass layouts (A·B and Aᵀ·B) at 512. Decoding products: `linear` with M = 1
 * and M = 4 rows of x against a weight [N, K] at K 4096, N 4096 (out_proj, proj_down's shape) and N 12304 (the 7B's
 * fused q|k|v|o and i|f), float32 and float16 weights — the GEMV path of `gemm`, bound by streaming the weight.
 *
 * Each timed iteration records several dispatches into one submit and waits once (a wait costs ≥ 10 ms in Deno).
 * `deno bench -A bench/matmul_bench.ts` prints GFLOP/s and the weight's GB/s (medians over the iterations) with the
 * adapter's name when it ends; `deno run -A bench/matmul_bench.ts [iterations]` prints only that table. Timings do
 * not depend on the values, so the decoding weights are zeros (no host work for 200 MB tensors).
 */

import { createGpu } from "../src/gpu/device.ts";
import { linear, matmul } from "../src/ops/matmul.ts";
import { Rng } from "../src/random.ts";
import { type DType, Tensor } from "../src/tensor.ts";

const gpu = await createGpu();
const rng = new Rng(1);
const random = (shape: number[]): Tensor =>
  Tensor.fromHost(gpu, { dtype: "float32", shape, data: Float32Array.from(rng.normals(shape[0] * shape[1])) });

interface Case {
  name: string;
  /** Floating-point operations and weight bytes per product. */
  flops: number;
  weightBytes: number;
  /** Dispatches per submit: enough to hide the wait, few enough to keep an iteration short on lavapipe. */
  perSubmit: number;
  run: () => Tensor;
  seconds: number[];
}

/** A product of op(x) and w, `[m, k]` by `[k, n]`, weighing w's bytes. */
function benchCase(name: string, [m, n, k]: number[], w: Tensor, perSubmit: number, run: () => Tensor): Case {
  return { name: `${name} ${m}×${n}×${k}`, flops: 2 * m * n * k, weightBytes: w.bytes, perSubmit, run, seconds: [] };
}

function square(name: string, s: number, perSubmit: number, run: (x: Tensor, w: Tensor) => Tensor): Case {
  const x = random([s, s]), w = random([s, s]);
  return benchCase(name, [s, s, s], w, perSubmit, () => run(x, w));
}

function decoding(m: number, n: number, k: number, dtype: DType): Case {
  const x = random([m, k]), w = Tensor.zeros(gpu, [n, k], dtype);
  const weight = dtype === "float16" ? "f16 W" : "f32 W";
  return benchCase(`linear x·Wᵀ (${weight})`, [m, n, k], w, 10, () => linear(x, w));
}

const cases: Case[] = [
  square("linear x·Wᵀ", 512, 20, (x, w) => linear(x, w)),
  square("linear x·Wᵀ", 1024, 5, (x, w) => linear(x, w)),
  square("matmul A·B", 512, 20, (x, w) => matmul(x, w)),
  square("matmul Aᵀ·B", 512, 20, (x, w) => matmul(x, w, { transposeA: true })),
];
for (const dtype of gpu.hasF16 ? ["float32", "float16"] as const : ["float32"] as const) {
  for (const n of [4096, 12304]) for (const m of [1, 4]) cases.push(decoding(m, n, 4096, dtype));
}

/** One timed iteration: `perSubmit` products recorded, one submit, one wait. */
async function iteration(c: Case): Promise<void> {
  const start = performance.now();
  for (let i = 0; i < c.perSubmit; i++) c.run().dispose();
  await gpu.finish();
  c.seconds.push((performance.now() - start) / 1000 / c.perSubmit);
}

function report(): void {
  console.log(`\nmatmul on ${gpu.adapterName} (median over iterations, per product; GFLOP/s min–max):`);
  for (const c of cases) {
    const s = [...c.seconds].sort((p, q) => p - q);
    if (!s.length) continue;
    const median = s[s.length >> 1], gflops = (t: number): string => (c.flops / t / 1e9).toFixed(1);
    console.log(
      `  ${c.name}: ${(median * 1e3).toFixed(2)} ms, ${gflops(median)} GFLOP/s ` +
        `(${gflops(s[s.length - 1])}–${gflops(s[0])}), weight ${(c.weightBytes / median / 1e9).toFixed(2)} GB/s, ` +
        `${s.length} iterations of ${c.perSubmit} dispatches`,
    );
  }
}

for (const c of cases) {
  await iteration(c); // compile the pipeline outside the timings
  c.seconds.length = 0;
  Deno.bench({
    name: `${c.name}, ${c.perSubmit} per submit`,
    n: c.flops > 2 * 512 ** 3 ? 5 : 10,
    warmup: 1,
    // An async function: Deno only awaits benchmarks declared `async`.
    fn: async () => await iteration(c),
  });
}

if (import.meta.main) {
  const iterations = Number(Deno.args[0] ?? 7);
  for (let i = 0; i < iterations; i++) for (const c of cases) await iteration(c);
  report();
  gpu.destroy();
} else {
  globalThis.addEventListener("unload", () => {
    report();
    gpu.destroy();
  });
}
