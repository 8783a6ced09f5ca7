/**
 * Forward of the reference README's xLSTMBlockStack (7 blocks, sLSTM at 1, E 128) on x [4, 256, 128]: one whole
 * forward recorded, then one wait. `deno bench -A bench/stack_bench.ts` times it; `deno run -A bench/stack_bench.ts`
 * prints ms per forward, tokens/s and dispatches per forward.
 */

import { noGrad } from "../src/autograd.ts";
import { createGpu } from "../src/gpu/device.ts";
import { xLSTMBlockStackConfig } from "../src/config.ts";
import { xLSTMBlockStack } from "../src/models/block_stack.ts";
import { Rng } from "../src/random.ts";
import { Tensor } from "../src/tensor.ts";
import { README_STACK_YAML } from "../scripts/readme_config.ts";

const B = 4, S = 256, E = 128;
const gpu = await createGpu();
const stack = await xLSTMBlockStack.create(xLSTMBlockStackConfig(README_STACK_YAML), { gpu, seed: 0 });
const x = Tensor.fromHost(gpu, {
  dtype: "float32",
  shape: [B, S, E],
  data: Float32Array.from(new Rng(1).normals(B * S * E)),
});

/** One forward and one wait for it. */
async function forward(): Promise<void> {
  noGrad(() => stack.apply(x)).dispose();
  await gpu.finish();
}

Deno.bench({ name: `README stack forward B${B} T${S} E${E} (7 blocks, sLSTM at [1])`, fn: forward });

if (import.meta.main) {
  const reps = Number(Deno.args[0] ?? 5);
  await forward();
  const before = gpu.dispatchCount;
  const times: number[] = [];
  for (let i = 0; i < reps; i++) {
    const t0 = performance.now();
    await forward();
    times.push(performance.now() - t0);
  }
  const ms = times.sort((a, b) => a - b)[reps >> 1];
  console.log(
    `${gpu.adapterName}: README stack forward B${B} T${S}: median ${ms.toFixed(1)} ms over ${reps} ` +
      `(${(B * S / ms * 1000).toFixed(0)} tokens/s), ${(gpu.dispatchCount - before) / reps} dispatches per forward`,
  );
  stack.dispose();
  gpu.destroy();
}
