/**
 * One parity training step at the reference config (B 256, T 255, E 64, 2 blocks; AdamW): forward, cross-entropy,
 * backward and optimizer step recorded as one command buffer, then one wait. For xLSTM[1:1] (mLSTM, sLSTM) and
 * xLSTM[0:1] (sLSTM, sLSTM). The PyTorch reference takes 3.4 s per xLSTM[1:1] step on this project's 2-core CPU.
 *
 *   deno bench -A bench/train_step_bench.ts     # Deno's timing, few iterations (a step takes seconds on lavapipe)
 *   deno run -A bench/train_step_bench.ts [reps] [configs…]   # ms per step and dispatches per step
 */

import { createGpu } from "../src/gpu/device.ts";
import { readExperiment } from "../src/train/experiment.ts";
import { Trainer } from "../src/train/trainer.ts";

const CONFIGS = ["parity_xlstm11", "parity_xlstm01"];
const gpu = await createGpu();

async function trainer(name: string): Promise<Trainer> {
  // Warm-up 0 so that every timed step updates the parameters with a non-zero learning rate.
  const exp = await readExperiment(new URL(`../scripts/configs/${name}.yaml`, import.meta.url), {
    training: { lr_warmup_steps: 0 },
  });
  return Trainer.create(exp, { gpu });
}

/** One training step and one wait for it. */
async function step(t: Trainer): Promise<void> {
  t.trainStep();
  await gpu.finish();
}

for (const name of CONFIGS) {
  let t: Trainer | null = null;
  Deno.bench({
    name: `${name} train step B256 T255 E64 (AdamW)`,
    n: 3,
    warmup: 1,
    async fn(b) {
      t ??= await trainer(name);
      b.start();
      await step(t);
      b.end();
    },
  });
}

if (import.meta.main) {
  const reps = Number(Deno.args[0] ?? 3);
  const names = Deno.args.length > 1 ? Deno.args.slice(1) : CONFIGS;
  for (const name of names) {
    const t = await trainer(name);
    await step(t); // compile pipelines, fill the buffer pool
    const before = gpu.dispatchCount;
    const times: number[] = [];
    for (let i = 0; i < reps; i++) {
      const t0 = performance.now();
      await step(t);
      times.push(performance.now() - t0);
    }
    const m = await t.readMetrics();
    const ms = times.sort((a, b) => a - b)[reps >> 1];
    const blocks = t.experiment.model._block_map.replaceAll("0", "m").replaceAll("1", "s");
    console.log(
      `${gpu.adapterName}: ${name} (blocks ${blocks}) train step B256 T255: median ${ms.toFixed(0)} ms over ` +
        `${reps}, ${(gpu.dispatchCount - before) / reps} dispatches per step, loss ${m.loss.toFixed(4)}`,
    );
    t.dispose();
  }
  gpu.destroy();
}
