/**
 * `linear` (x [S, S] · W[S, S]ᵀ, the Linear hot path) at S = 512 and 1024, plus the backward-pass layouts (A·B and
 * Aᵀ·B) at 512. Each timed iteration records several dispatches into one submit and waits once (a wait costs
 * ≥ 10 ms in Deno). `deno bench -A bench/matmul_bench.ts` prints GFLOP/s (median over the iterations) with the
 * adapter's name when it ends; `deno run -A bench/matmul_bench.ts [iterations]` prints only that table.
 */

import { createGpu } from "../src/gpu/device.ts";
import { linear, matmul } from "../src/ops/matmul.ts";
import { Rng } from "../src/random.ts";
import { Tensor } from "../src/tensor.ts";

const gpu = await createGpu();
const rng = new Rng(1);
const square = (s: number): Tensor =>
  Tensor.fromHost(gpu, { dtype: "float32", shape: [s, s], data: Float32Array.from(rng.normals(s * s)) });

interface Case {
  name: string;
  size: number;
  /** Dispatches per submit: enough to hide the wait, few enough to keep an iteration short on lavapipe. */
  perSubmit: number;
  run: (x: Tensor, w: Tensor) => Tensor;
  x: Tensor;
  w: Tensor;
  gflops: number[];
}

function benchCase(name: string, size: number, perSubmit: number, run: Case["run"]): Case {
  return { name, size, perSubmit, run, x: square(size), w: square(size), gflops: [] };
}

const cases: Case[] = [
  benchCase("linear x·Wᵀ", 512, 20, (x, w) => linear(x, w)),
  benchCase("linear x·Wᵀ", 1024, 5, (x, w) => linear(x, w)),
  benchCase("matmul A·B", 512, 20, (x, w) => matmul(x, w)),
  benchCase("matmul Aᵀ·B", 512, 20, (x, w) => matmul(x, w, { transposeA: true })),
];

/** One timed iteration: `perSubmit` products recorded, one submit, one wait. */
async function iteration(c: Case): Promise<void> {
  const start = performance.now();
  for (let i = 0; i < c.perSubmit; i++) c.run(c.x, c.w).dispose();
  await gpu.finish();
  const seconds = (performance.now() - start) / 1000;
  c.gflops.push((2 * c.size ** 3 * c.perSubmit) / seconds / 1e9);
}

function report(): void {
  console.log(`\nmatmul on ${gpu.adapterName} (GFLOP/s, median over iterations; min–max):`);
  for (const c of cases) {
    const g = [...c.gflops].sort((p, q) => p - q);
    if (!g.length) continue;
    const median = g[g.length >> 1];
    console.log(
      `  ${c.name} ${c.size}³: ${median.toFixed(1)} (${g[0].toFixed(1)}–${g[g.length - 1].toFixed(1)}, ` +
        `${g.length} iterations of ${c.perSubmit} dispatches)`,
    );
  }
}

for (const c of cases) {
  await iteration(c); // compile the pipeline outside the timings
  c.gflops.length = 0;
  Deno.bench({
    name: `${c.name} ${c.size}³, ${c.perSubmit} per submit`,
    n: c.size > 512 ? 5 : 10,
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
