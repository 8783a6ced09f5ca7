/**
 * Fused sLSTM kernels at two sizes, each recorded whole and then waited for once:
 * - inference: the forward at the README sLSTM block size (B 4, H 128, NH 4, S 256);
 * - training: forward (saving states) and backward at the parity config (B 256, T 255, H 64, NH 1).
 *
 * `deno bench -A bench/slstm_bench.ts` times them with Deno's harness; `deno run -A bench/slstm_bench.ts [reps]`
 * prints µs per step of the inference case (and the cost of an empty finish for comparison) and the median ms of the
 * training forward and backward.
 */

import { createGpu } from "../src/gpu/device.ts";
import { planSlstm, slstmRecurrentBackward, slstmRecurrentForward } from "../src/ops/slstm.ts";
import { Rng } from "../src/random.ts";
import { Tensor } from "../src/tensor.ts";

const gpu = await createGpu();
const rng = new Rng(1);

/** Random inputs of one size: wx, R, bias and an output gradient. */
function inputs(batch: number, seq: number, hidden: number, heads: number): Tensor[] {
  const dh = hidden / heads;
  const upload = (shape: number[], std: number): Tensor =>
    Tensor.fromHost(gpu, {
      dtype: "float32",
      shape,
      data: Float32Array.from(rng.normals(shape.reduce((a, b) => a * b), std)),
    });
  return [
    upload([batch, seq, 4 * hidden], 1),
    upload([heads, 4 * dh, dh], 1 / Math.sqrt(dh)),
    upload([4 * hidden], 0.5),
    upload([batch, seq, hidden], 1),
  ];
}

const INFER = { batch: 4, seq: 256, hidden: 128, heads: 4 };
const TRAIN = { batch: 256, seq: 255, hidden: 64, heads: 1 };
const [wx, r, bias] = inputs(INFER.batch, INFER.seq, INFER.hidden, INFER.heads);
const [twx, tr, tbias, tdy] = inputs(TRAIN.batch, TRAIN.seq, TRAIN.hidden, TRAIN.heads);
for (const [name, c] of [["inference", INFER], ["training", TRAIN]] as const) {
  for (const pass of ["forward", "backward"] as const) {
    const plan = planSlstm(gpu, c.hidden / c.heads, c.batch, { pass });
    console.log(
      `${name} ${pass} (B ${c.batch}, H ${c.hidden}, NH ${c.heads}): ${plan.perInvocation} sequences per ` +
        `invocation, ${plan.sequencesPerWorkgroup} per workgroup of ${plan.workgroup}, R in ` +
        `${plan.rInWorkgroup ? "workgroup" : "global"} memory, ${plan.stepsPerDispatch} steps per dispatch`,
    );
  }
}

/** The inference case: one whole forward and one wait. */
async function inference(): Promise<void> {
  const { y, state } = slstmRecurrentForward(wx, r, bias, null, { numHeads: INFER.heads });
  await gpu.finish();
  y.dispose();
  state.dispose();
}

/** The training forward (saving states for the backward); returns what the backward needs. */
async function trainForward(): Promise<Tensor[]> {
  const { y, state, saved } = slstmRecurrentForward(twx, tr, tbias, null, { numHeads: TRAIN.heads, saveStates: true });
  await gpu.finish();
  state.dispose();
  return [y, saved!];
}

/** The training backward (dwx, dR via one gemm, dbias) on a forward's outputs. */
async function trainBackward([y, saved]: Tensor[]): Promise<void> {
  const g = slstmRecurrentBackward(tdy, null, { wx: twx, recurrentKernel: tr, bias: tbias, state: null, y, saved }, {
    numHeads: TRAIN.heads,
  });
  await gpu.finish();
  for (const t of [g.dwx, g.dRecurrentKernel, g.dBias, g.dState]) t.dispose();
}

const trained = await trainForward();
Deno.bench({
  name: `slstm forward B${INFER.batch} H${INFER.hidden} NH${INFER.heads}: ${INFER.seq} steps + one finish`,
  fn: inference,
});
Deno.bench({
  name: `slstm training forward B${TRAIN.batch} T${TRAIN.seq} H${TRAIN.hidden} NH${TRAIN.heads} (saving states)`,
  n: 3,
  warmup: 1,
  fn: async () => (await trainForward()).forEach((t) => t.dispose()),
});
Deno.bench({
  name: `slstm training backward B${TRAIN.batch} T${TRAIN.seq} H${TRAIN.hidden} NH${TRAIN.heads}`,
  n: 3,
  warmup: 1,
  fn: () => trainBackward(trained),
});

if (import.meta.main) {
  const reps = Number(Deno.args[0] ?? 5);
  /** Median ms of `reps` runs after one warm-up run. */
  const median = async (fn: () => Promise<void>): Promise<number> => {
    await fn();
    const times: number[] = [];
    for (let i = 0; i < reps; i++) {
      const start = performance.now();
      await fn();
      times.push(performance.now() - start);
    }
    return times.sort((a, b) => a - b)[reps >> 1];
  };
  const dispatches = gpu.dispatchCount;
  await inference();
  const perSequence = gpu.dispatchCount - dispatches;
  const us = await median(inference) * 1000;
  const finishUs = await median(() => gpu.finish()) * 1000;
  const S = INFER.seq;
  console.log(
    `inference: ${perSequence} dispatch(es) per sequence; ${us.toFixed(0)} µs per sequence = ` +
      `${(us / S).toFixed(2)} µs/step, ${(us / (S * INFER.batch)).toFixed(3)} µs per (sequence, step); an empty ` +
      `finish costs ${finishUs.toFixed(0)} µs (${((us - finishUs) / S).toFixed(2)} µs/step without it)`,
  );
  const forwardMs = await median(async () => (await trainForward()).forEach((t) => t.dispose()));
  const backwardMs = await median(() => trainBackward(trained));
  console.log(
    `training B${TRAIN.batch} T${TRAIN.seq} H${TRAIN.hidden} NH${TRAIN.heads}: forward ${forwardMs.toFixed(0)} ms, ` +
      `backward ${backwardMs.toFixed(0)} ms (medians of ${reps}; load ${Deno.loadavg()[0].toFixed(2)})`,
  );
  trained.forEach((t) => t.dispose());
  gpu.destroy();
}
