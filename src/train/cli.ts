/**
 * The command line shared by `scripts/parity.ts` and `scripts/mqar.ts`: flags (node:util parseArgs, strict), the
 * choice between the reference config and a reduced setting for CPU-only WebGPU (lavapipe), resume, and reporting.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { getGpu, GpuUnavailableError } from "../gpu/device.ts";
import type { Gpu } from "../gpu/runtime.ts";
import { type Experiment, mergeConfig, readExperiment } from "./experiment.ts";
import { runTraining, TrainingStoppedError } from "./loop.ts";
import { Progress } from "./progress.ts";
import { Trainer } from "./trainer.ts";

/** What a task script supplies to {@linkcode trainCli}. */
export interface TaskCli {
  /** The script's path, for the usage text. */
  script: string;
  /** One line saying what the script trains. */
  description: string;
  /** The default experiment YAML (the reference config). */
  defaultConfig: URL;
  /** Overrides that make the reduced CPU setting: sizes, lengths and steps, for any config. */
  reduced: Record<string, unknown>;
  /** The reduced default's block layout (`model.num_blocks`, `model.slstm_at`); `--config FILE --small` keeps the file's. */
  reducedLayout: Record<string, unknown>;
  /** One line describing the reduced setting. */
  reducedNote: string;
}

const FLAGS = {
  config: { type: "string" },
  small: { type: "boolean" },
  steps: { type: "string" },
  "batch-size": { type: "string" },
  seed: { type: "string" },
  lr: { type: "string" },
  clip: { type: "string" },
  "log-every": { type: "string" },
  "eval-every": { type: "string" },
  "eval-batches": { type: "string" },
  checkpoint: { type: "string" },
  "checkpoint-every": { type: "string" },
  resume: { type: "string" },
  metrics: { type: "string" },
  help: { type: "boolean", short: "h" },
} as const;

/** Flags that would change what a resumed run is; its config comes from the checkpoint. */
const NOT_ON_RESUME = ["config", "small", "seed", "batch-size"] as const;

function usage(task: TaskCli): string {
  return `${task.description}

usage: deno run -A ${task.script} [flags]

  --config FILE          experiment YAML (default ${decodeURIComponent(task.defaultConfig.pathname)})
  --small                use the reduced setting (the default on a CPU-only adapter without --config); with
                         --config it shrinks sizes, lengths and steps and keeps the file's block layout
  --steps N              training.num_steps (the cosine decay follows it, as \${.num_steps} in the YAML)
  --batch-size N         training.batch_size
  --seed N               training.seed (parameter initialisation)
  --lr X                 training.lr (peak learning rate)
  --clip X               clip the global gradient norm to X (default off, as in the reference)
  --log-every N          read and print loss/accuracy every N steps (default 20)
  --eval-every N         evaluate every N steps (default training.val_every_step) and at the end
  --eval-batches N       at most N validation batches per split (default: the whole split)
  --checkpoint FILE      write a checkpoint (safetensors) every --checkpoint-every steps and at the end
  --checkpoint-every N   default: --eval-every
  --resume FILE          continue the run saved in FILE (its config; --steps, --lr, --clip may change)
  --metrics FILE         append JSON lines (train, eval, summary records) to FILE
  -h, --help             this text`;
}

function count(flag: string, text: string | undefined, min = 1): number | undefined {
  if (text === undefined) return undefined;
  const v = Number(text);
  if (!/^\d+$/.test(text.trim()) || !Number.isSafeInteger(v) || v < min) {
    const want = min === 0 ? "an integer >= 0" : "a positive integer";
    throw new Error(`--${flag} must be ${want}; got ${JSON.stringify(text)}`);
  }
  return v;
}

function real(flag: string, text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  const v = Number(text);
  if (text.trim() === "" || !Number.isFinite(v) || v <= 0) {
    throw new Error(`--${flag} must be a number > 0; got ${JSON.stringify(text)}`);
  }
  return v;
}

/** Parsed command line. */
interface Cli {
  values: ReturnType<typeof parseArgs<{ options: typeof FLAGS }>>["values"];
  steps?: number;
  batchSize?: number;
  seed?: number;
  lr?: number;
  clip?: number;
  logEvery?: number;
  evalEvery?: number;
  evalBatches?: number;
  checkpointEvery?: number;
}

function parse(args: string[]): Cli {
  const { values, positionals } = parseArgs({ args, options: FLAGS, strict: true, allowPositionals: true });
  if (positionals.length) throw new Error(`unexpected argument ${JSON.stringify(positionals[0])}`);
  if (values.resume) {
    const bad = NOT_ON_RESUME.filter((f) => values[f] !== undefined);
    if (bad.length) throw new Error(`--${bad[0]} cannot be combined with --resume (the checkpoint holds the config)`);
  }
  return {
    values,
    steps: count("steps", values.steps),
    batchSize: count("batch-size", values["batch-size"]),
    seed: count("seed", values.seed, 0),
    lr: real("lr", values.lr),
    clip: real("clip", values.clip),
    logEvery: count("log-every", values["log-every"]),
    evalEvery: count("eval-every", values["eval-every"]),
    evalBatches: count("eval-batches", values["eval-batches"]),
    checkpointEvery: count("checkpoint-every", values["checkpoint-every"]),
  };
}

/** The `training` overrides given on the command line. */
function trainingOverrides(cli: Cli): Record<string, unknown> {
  const t: Record<string, unknown> = {};
  if (cli.steps !== undefined) t.num_steps = cli.steps;
  if (cli.batchSize !== undefined) t.batch_size = cli.batchSize;
  if (cli.seed !== undefined) t.seed = cli.seed;
  if (cli.lr !== undefined) t.lr = cli.lr;
  return Object.keys(t).length ? { training: t } : {};
}

function describe(exp: Experiment, trainer: Trainer): string {
  const t = exp.training, m = exp.model;
  const blocks = m._block_map.split(",").map((b) => (b === "1" ? "s" : "m")).join("");
  const lengths = exp.splits.map((s) => `${s.name} ${s.count} × T ${s.stream().seqLen}`);
  return [
    `model: ${m.num_blocks} block(s) [${blocks}] (m = mLSTM, s = sLSTM), embedding ${m.embedding_dim}, ` +
    `vocab ${m.vocab_size}, ${trainer.model.numParameters().toLocaleString("en-US")} parameters`,
    `task: ${exp.task}; data: ${lengths.join(", ")}`,
    `training: ${t.numSteps} steps, batch ${t.batchSize}, AdamW lr ${t.lr} (warm-up ${t.warmupSteps}, cosine to ` +
    `${t.lr * t.decayFactor} at ${t.decayUntilStep}), weight decay ${t.weightDecay}, seed ${t.seed}` +
    (trainer.clip ? `, clip ${trainer.clip}` : ""),
  ].join("\n");
}

/**
 * Runs a task script: parses `args`, trains, reports. Returns the process exit code (0 done, 1 training or GPU
 * failure, 2 bad command line).
 */
export async function trainCli(args: string[], task: TaskCli): Promise<number> {
  let cli: Cli;
  try {
    cli = parse(args);
  } catch (e) {
    console.error(`error: ${(e as Error).message}\n\n${usage(task)}`);
    return 2;
  }
  if (cli.values.help) {
    console.log(usage(task));
    return 0;
  }
  let gpu: Gpu;
  try {
    gpu = await getGpu();
  } catch (e) {
    if (e instanceof GpuUnavailableError) {
      console.error(`error: ${e.message}`);
      return 1;
    }
    throw e;
  }
  const progress = new Progress({ metricsPath: cli.values.metrics ?? null });
  progress.line(`adapter: ${gpu.adapterName}`);
  let trainer: Trainer;
  try {
    if (cli.values.resume) {
      trainer = await Trainer.resume(cli.values.resume, { gpu, clip: cli.clip, overrides: trainingOverrides(cli) });
      progress.line(`resumed from ${cli.values.resume} at step ${trainer.step}`);
    } else {
      const reduced = cli.values.small || (!cli.values.config && gpu.software);
      const config = cli.values.config ?? task.defaultConfig;
      const reduction = cli.values.config ? task.reduced : mergeConfig(task.reduced, { model: task.reducedLayout });
      const overrides = mergeConfig(reduced ? reduction : {}, trainingOverrides(cli));
      trainer = await Trainer.create(await readExperiment(config, overrides), { gpu, clip: cli.clip });
      progress.line(`config: ${config instanceof URL ? decodeURIComponent(config.pathname) : config}`);
      if (reduced) {
        const why = cli.values.config ? "--small" : "a CPU-only adapter; --config FILE runs the full one";
        progress.line(`reduced setting (${why}): ${task.reducedNote}`);
      }
    }
  } catch (e) {
    console.error(`error: ${(e as Error).message}`);
    return 1;
  }
  progress.line(describe(trainer.experiment, trainer));
  try {
    await runTraining(trainer, {
      logEvery: cli.logEvery,
      evalEvery: cli.evalEvery,
      evalBatches: cli.evalBatches,
      checkpoint: cli.values.checkpoint ?? null,
      checkpointEvery: cli.checkpointEvery,
      progress,
    });
    return 0;
  } catch (e) {
    if (e instanceof TrainingStoppedError) {
      console.error(`error: ${e.message}`);
      return 1;
    }
    throw e;
  } finally {
    trainer.dispose();
  }
}
