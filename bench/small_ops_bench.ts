/**
 * The small kernels of the README model (B·S = 1024 rows, E 128, mLSTM inner D 256, sLSTM 4 heads) at their model
 * shapes: the headwise projections, the causal conv with swish, the gated activation, the mLSTM output gate and the
 * residual add. Each timed iteration records `PER_SUBMIT` calls of one op into one submit and waits once; an empty
 * submit-and-wait (the ~11 ms wait of Deno's polling) is timed the same way and subtracted.
 * `deno run -A bench/small_ops_bench.ts [rounds]` prints ms per op (median over the rounds, min–max) with the adapter's
 * name; `deno bench -A bench/small_ops_bench.ts` times the same rounds.
 */

import { createGpu } from "../src/gpu/device.ts";
import { causalConv1d } from "../src/ops/conv1d.ts";
import { gatedActivation } from "../src/ops/gated_activation.ts";
import { linearHeadwise } from "../src/ops/linear_headwise.ts";
import { add, mlstmOutputGate } from "../src/ops/pointwise.ts";
import { Rng } from "../src/random.ts";
import { columns, matrix, Tensor } from "../src/tensor.ts";

const ROWS = 1024, E = 128, D = 256, PER_SUBMIT = 10;
const gpu = await createGpu();
const rng = new Rng(1);
const random = (shape: number[], std = 1): Tensor =>
  Tensor.fromHost(gpu, {
    dtype: "float32",
    shape,
    data: Float32Array.from(rng.normals(shape.reduce((a, b) => a * b, 1), std)),
  });

/** One op at its model shape; `run` records one call and returns what it allocated (to dispose). */
interface Case {
  name: string;
  run: () => Tensor | null;
  ms: number[];
}

const up = random([ROWS, 2 * D]), xc = random([ROWS, D]), hn = random([ROWS, D]), skip = random([D]);
const qkv = random([ROWS, 3 * D]), wx = random([ROWS, 4 * E]), xs = random([ROWS, E]), h = random([ROWS, E]);
const wqk = random([D / 4, 4, 4], 0.5), bq = random([D]), wgate = random([4, E / 4, E / 4], 0.2);
const convW = random([D, 1, 4], 0.5), convB = random([D]), ffnUp = random([ROWS, 384]);
const convWs = random([E, 1, 4], 0.5), convBs = random([E]);

const cases: Case[] = [
  // mLSTM q (the k and v calls are the same shape): 64 heads of 4×4 into a third of the [rows, 3D] q|k|v buffer.
  {
    name: "linearHeadwise 64 heads 4×4 → [1024, 256] of 768",
    run: () => {
      linearHeadwise(matrix(xc), wqk, bq, columns(qkv, D, D));
      return null;
    },
  },
  // One of the four sLSTM gate projections: 4 heads of 32×32 into a quarter of the [rows, 4E] gate buffer.
  {
    name: "linearHeadwise 4 heads 32×32 → [1024, 128] of 512",
    run: () => {
      linearHeadwise(matrix(xs), wgate, null, columns(wx, E, E));
      return null;
    },
  },
  // The mLSTM conv reads the first half of the up-projection (a strided view); the sLSTM one a contiguous [rows, E].
  {
    name: "causalConv1d+swish [1024, 256] (strided x)",
    run: () => causalConv1d(columns(up, 0, D), convW, convB, { batch: 4, activation: "swish" }),
  },
  {
    name: "causalConv1d+swish [1024, 128]",
    run: () => causalConv1d(matrix(xs), convWs, convBs, { batch: 4, activation: "swish" }),
  },
  { name: "gatedActivation gelu [1024, 384] → [1024, 192]", run: () => gatedActivation(ffnUp, "gelu") },
  { name: "mlstmOutputGate [1024, 256]", run: () => mlstmOutputGate(hn, skip, xc, columns(up, D, D)) },
  { name: "add [1024, 128]", run: () => add(xs, h) },
].map((c) => ({ ...c, ms: [] }));

/** Milliseconds for `PER_SUBMIT` calls of `run` (or none) plus one submit and wait. */
async function timed(run: (() => Tensor | null) | null): Promise<number> {
  const start = performance.now();
  if (run) { for (let i = 0; i < PER_SUBMIT; i++) run()?.dispose(); }
  await gpu.finish();
  return performance.now() - start;
}

const median = (v: number[]): number => [...v].sort((a, b) => a - b)[v.length >> 1];
const empty: number[] = [];

/** One round: an empty wait, then one iteration of every case (interleaved so that load changes hit all alike). */
async function round(): Promise<void> {
  empty.push(await timed(null));
  for (const c of cases) c.ms.push(await timed(c.run));
}

function report(): void {
  const base = median(empty);
  console.log(
    `\nsmall ops on ${gpu.adapterName}: ms per op (median of ${empty.length} rounds of ${PER_SUBMIT} per ` +
      `submit, minus an empty wait of ${base.toFixed(1)} ms; min–max)`,
  );
  for (const c of cases) {
    const per = (t: number): string => ((t - base) / PER_SUBMIT).toFixed(2);
    const sorted = [...c.ms].sort((a, b) => a - b);
    console.log(`  ${c.name.padEnd(52)} ${per(median(c.ms)).padStart(7)}  (${per(sorted[0])}–${per(sorted.at(-1)!)})`);
  }
}

await round(); // compile the pipelines outside the timings
for (const c of cases) c.ms.length = 0;
empty.length = 0;

if (import.meta.main) {
  const rounds = Number(Deno.args[0] ?? 7);
  for (let i = 0; i < rounds; i++) await round();
  report();
  gpu.destroy();
} else {
  Deno.bench({ name: `small ops round (${cases.length} ops × ${PER_SUBMIT} per submit)`, n: 5, warmup: 1, fn: round });
  globalThis.addEventListener("unload", () => {
    report();
    gpu.destroy();
  });
}
