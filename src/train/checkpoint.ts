/**
 * Training checkpoints: ONE safetensors file holding the model parameters (`model.<state_dict key>`, the
 * reference's names and layouts), the AdamW state (`optimizer.<parameter>.exp_avg` / `.exp_avg_sq` float32 in the
 * port's internal parameter layout, `.step` int32), and, as JSON strings in `__metadata__`, the optimizer step, the
 * resolved experiment config, the training data stream's position and the metric accumulators. Written atomically
 * (temporary file, sync, rename), so a crash never leaves a half-written checkpoint behind.
 *
 * @module
 */

import type { HostTensor } from "../host_tensor.ts";
import { SafetensorsFile, writeSafetensors } from "../safetensors.ts";

/** Value of `__metadata__.format` that marks a training checkpoint. */
export const CHECKPOINT_FORMAT = "xlstm-core/train-checkpoint";
const VERSION = "1";

/** Metric accumulators carried across a resume, so logged values continue exactly. */
export interface MetricState {
  /** Sum of all step losses since the start (float64, for the reference's running mean). */
  lossSum: number;
  /** Correct predictions since the start. */
  correct: number;
  /** Counted targets since the start. */
  count: number;
  /** Steps folded into the sums above. */
  steps: number;
  /** The GPU window accumulators not yet read (loss sum, correct, count; float32 values). */
  window: [number, number, number];
  /** Steps accumulated in `window`. */
  windowSteps: number;
}

/** Everything a checkpoint holds. */
export interface Checkpoint {
  /** Optimizer steps done. */
  step: number;
  /** The resolved experiment document. */
  experiment: Record<string, unknown>;
  /** The training stream's `state()`. */
  data: unknown;
  /** Metric accumulators. */
  metrics: MetricState;
  /** Model parameters by state_dict key. */
  model: Record<string, HostTensor>;
  /** Optimizer state by `AdamW.state()` key. */
  optimizer: Record<string, HostTensor>;
}

/** Writes `ckpt` to `path` atomically (an existing file is replaced only once the new one is complete). */
export async function writeCheckpoint(path: string | URL, ckpt: Checkpoint): Promise<void> {
  const tensors: Record<string, HostTensor> = {};
  for (const [k, t] of Object.entries(ckpt.model)) tensors[`model.${k}`] = t;
  for (const [k, t] of Object.entries(ckpt.optimizer)) tensors[`optimizer.${k}`] = t;
  await writeSafetensors(path, tensors, {
    metadata: {
      format: CHECKPOINT_FORMAT,
      version: VERSION,
      step: String(ckpt.step),
      experiment: JSON.stringify(ckpt.experiment),
      data: JSON.stringify(ckpt.data),
      metrics: JSON.stringify(ckpt.metrics),
    },
  });
}

/** Reads a checkpoint written by {@linkcode writeCheckpoint}; throws naming the file when it is not one. */
export async function readCheckpoint(path: string | URL): Promise<Checkpoint> {
  using file = await SafetensorsFile.open(path);
  const meta = file.metadata;
  const where = `checkpoint ${file.path}`;
  if (meta.format !== CHECKPOINT_FORMAT) {
    throw new Error(`${where}: not a training checkpoint (__metadata__.format is ${JSON.stringify(meta.format)})`);
  }
  if (meta.version !== VERSION) throw new Error(`${where}: unsupported version ${meta.version}`);
  const json = (key: string): unknown => {
    try {
      return JSON.parse(meta[key]);
    } catch {
      throw new Error(`${where}: __metadata__.${key} is missing or not JSON`);
    }
  };
  const step = json("step");
  if (!Number.isSafeInteger(step) || (step as number) < 0) throw new Error(`${where}: bad step ${meta.step}`);
  const ckpt: Checkpoint = {
    step: step as number,
    experiment: json("experiment") as Record<string, unknown>,
    data: json("data"),
    metrics: json("metrics") as MetricState,
    model: {},
    optimizer: {},
  };
  for (const name of file.names()) {
    const dot = name.indexOf(".");
    const part = name.slice(0, dot);
    if (part !== "model" && part !== "optimizer") throw new Error(`${where}: unexpected tensor ${name}`);
    ckpt[part][name.slice(dot + 1)] = await file.read(name);
  }
  return ckpt;
}
