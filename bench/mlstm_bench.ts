/**
 * The parallel mLSTM cell forward at the reference README's size (B 4, S 256, NH 4, DH 64, q|k|v column slices of
 * one [B·S, 3·256] buffer), and its two batched gemms alone, with the triangular shortcuts the cell uses: Q·Kᵀ
 * (`lowerC`) and W·V (`lowerA`), [B·NH] products of 256×256×64 and 256×64×256. Their GFLOP/s are effective: the
 * full products' flops over the time, so that skipping the causal half shows as speed. Each timed iteration records
 * `PER_SUBMIT` calls into one submit and waits once (a wait costs ≥ 10 ms in Deno, about 1 ms per call here).
 * `deno run -A bench/mlstm_bench.ts [iterations]` prints the medians; `deno bench -A bench/mlstm_bench.ts` times
 * the same iterations.
 */

import { createGpu } from "../src/gpu/device.ts";
import { gemm } from "../src/ops/matmul.ts";
import { mlstmParallelForward } from "../src/ops/mlstm.ts";
import { Rng } from "../src/random.ts";
import { type MatrixView, Tensor } from "../src/tensor.ts";

const B = 4, S = 256, NH = 4, DH = 64, D = NH * DH;
const PER_SUBMIT = 10;

const gpu = await createGpu();
const rng = new Rng(1);
const random = (shape: number[], mean = 0, std = 1): Tensor =>
  Tensor.fromHost(gpu, {
    dtype: "float32",
    shape,
    data: Float32Array.from(rng.normals(shape.reduce((p, d) => p * d, 1), std), (x) => x + mean),
  });
// Gates drawn as in tests/mlstm_test.ts: input gates spread around 0, forget gates mostly open.
const qkv = random([B * S, 3 * D]), igate = random([B * S, NH], 0, 3), fgate = random([B * S, NH], 3, 2);
// Zeros satisfy lowerA (W is zero above the diagonal); the timing does not depend on the values.
const weights = Tensor.zeros(gpu, [B, NH, S, S]), h = Tensor.empty(gpu, [B, S, D]);
const column = (offset: number): MatrixView => ({ tensor: qkv, rows: B * S, cols: D, offset, stride: 3 * D });
const gates = (t: Tensor): MatrixView => ({ tensor: t, rows: B * S, cols: NH, offset: 0, stride: NH });
/** Head slice of pair (0, 0); the batch strides step to the others. */
const head = (x: MatrixView): MatrixView => ({ ...x, rows: S, cols: DH });
const pairStrides = (x: MatrixView): [number, number] => [S * x.stride, DH];
const w: MatrixView = { tensor: weights, rows: S, cols: S, offset: 0, stride: S };
const wStrides: [number, number] = [NH * S * S, S * S];
const hView: MatrixView = { tensor: h, rows: B * S, cols: D, offset: 0, stride: D };

interface Case {
  name: string;
  /** Floating-point operations of one full product, for effective GFLOP/s; 0 to report ms per call instead. */
  flops: number;
  run: () => void;
  ms: number[];
}

const cases: Case[] = [
  {
    name: `mLSTM parallel cell forward B${B} S${S} NH${NH} DH${DH}`,
    flops: 0,
    run: () =>
      mlstmParallelForward(column(0), column(D), column(2 * D), gates(igate), gates(fgate), { batch: B, numHeads: NH })
        .dispose(),
    ms: [],
  },
  {
    name: `gemm Q·Kᵀ, ${B * NH} products ${S}×${S}×${DH}`,
    flops: 2 * B * NH * S * S * DH,
    run: () =>
      gemm(head(column(0)), head(column(D)), w, {
        transposeB: true,
        triangular: "lowerC",
        batch: { count: [B, NH], a: pairStrides(column(0)), b: pairStrides(column(D)), c: wStrides },
      }),
    ms: [],
  },
  {
    name: `gemm W·V, ${B * NH} products ${S}×${DH}×${S}`,
    flops: 2 * B * NH * S * S * DH,
    run: () =>
      gemm(w, head(column(2 * D)), head(hView), {
        triangular: "lowerA",
        batch: { count: [B, NH], a: wStrides, b: pairStrides(column(2 * D)), c: pairStrides(hView) },
      }),
    ms: [],
  },
];

/** One timed iteration: `PER_SUBMIT` calls recorded, one submit, one wait; records ms per call. */
async function iteration(c: Case): Promise<void> {
  const start = performance.now();
  for (let i = 0; i < PER_SUBMIT; i++) c.run();
  await gpu.finish();
  c.ms.push((performance.now() - start) / PER_SUBMIT);
}

function report(): void {
  console.log(`\nmLSTM parallel forward on ${gpu.adapterName} (median over iterations; min–max):`);
  for (const c of cases) {
    const values = c.ms.map((ms) => c.flops ? c.flops / ms / 1e6 : ms).sort((p, q) => p - q);
    if (!values.length) continue;
    const unit = c.flops ? "effective GFLOP/s" : "ms per call";
    console.log(
      `  ${c.name}: ${values[values.length >> 1].toFixed(1)} ${unit} (${values[0].toFixed(1)}–` +
        `${values[values.length - 1].toFixed(1)}, ${values.length} iterations of ${PER_SUBMIT} calls)`,
    );
  }
}

for (const c of cases) {
  await iteration(c); // compile the pipelines outside the timings
  c.ms.length = 0;
  Deno.bench({ name: c.name, n: 5, warmup: 1, fn: async () => await iteration(c) });
}

if (import.meta.main) {
  const iterations = Number(Deno.args[0] ?? 7);
  // Interleaved, so that load from other processes spreads over all cases alike.
  for (let i = 0; i < iterations; i++) for (const c of cases) await iteration(c);
  report();
  gpu.destroy();
} else {
  globalThis.addEventListener("unload", () => {
    report();
    gpu.destroy();
  });
}
