/**
 * Demo: the reference README's two examples on the default WebGPU adapter.
 *
 *   deno run -A scripts/demo.ts [--batch 4] [--seq 256]
 *
 * Builds the README's xLSTMBlockStack (7 blocks, sLSTM at block 1) and maps x [B, S, 128] to the same shape, then
 * the README's xLSTMLMModel (vocab 50304) and maps token ids [B, S] to logits [B, S, 50304], timing both.
 */

import { parseArgs } from "node:util";
import {
  checkLoopLimit,
  getGpu,
  noGrad,
  Rng,
  Tensor,
  xLSTMBlockStack,
  xLSTMBlockStackConfig,
  xLSTMLMModel,
  xLSTMLMModelConfig,
} from "../mod.ts";
import { README_LM_YAML, README_STACK_YAML } from "./readme_config.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: { batch: { type: "string", default: "4" }, seq: { type: "string", default: "256" } },
});
const B = Number(values.batch), S = Number(values.seq);

const gpu = await getGpu();
const loop = await checkLoopLimit(gpu);
console.log(`adapter: ${gpu.adapterName}${gpu.hasF16 ? " (shader-f16)" : ""}`);
console.log(
  `loop self-test: ${loop.truncates ? `loops stop after ${loop.counted} iterations (kernels stay below)` : "ok"}`,
);

const rng = new Rng(0);
const stack = await xLSTMBlockStack.create(xLSTMBlockStackConfig(README_STACK_YAML), { seed: 0 });
const x = await Tensor.from({
  dtype: "float32",
  shape: [B, S, 128],
  data: Float32Array.from(rng.normals(B * S * 128)),
});
await noGrad(() => stack.apply(x)).toHost(); // compile pipelines
let t0 = performance.now();
const y = await noGrad(() => stack.apply(x)).toHost();
let ms = performance.now() - t0;
console.log(
  `xLSTMBlockStack (${stack.numParameters().toLocaleString()} params): x [${x.shape}] -> y [${y.shape}] ` +
    `in ${ms.toFixed(1)} ms (${(B * S / ms * 1000).toFixed(0)} tokens/s), finite: ${y.data.every(Number.isFinite)}`,
);
stack.dispose();

const lm = await xLSTMLMModel.create(xLSTMLMModelConfig(README_LM_YAML), { seed: 0 });
lm.resetParameters();
const ids = await Tensor.from({
  dtype: "int32",
  shape: [B, S],
  data: Int32Array.from({ length: B * S }, () => rng.int(50304)),
});
t0 = performance.now();
const logits = await noGrad(() => lm.apply(ids)).toHost();
ms = performance.now() - t0;
console.log(
  `xLSTMLMModel (${lm.numParameters().toLocaleString()} params): ids [${ids.shape}] -> logits [${logits.shape}] ` +
    `in ${ms.toFixed(1)} ms, finite: ${logits.data.every(Number.isFinite)}`,
);
lm.dispose();
