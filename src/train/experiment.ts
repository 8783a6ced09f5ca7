/**
 * Experiment configs in the reference's `experiments/*.yaml` layout (spec D1–D3): a `training` section, a `model`
 * section (an `xLSTMLMModelConfig` dict) and a `dataset` section (`form_language` parity, or our `mqar`), with
 * OmegaConf-style interpolations.
 *
 * @module
 */

import { readConfigFile, xLSTMLMModelConfig } from "../config.ts";
import { resolveInterpolations } from "../data/interpolate.ts";
import { MqarData, mqarSplits } from "../data/mqar.ts";
import { ParityData, paritySplits } from "../data/parity.ts";
import { isMapping, type TokenStream } from "../data/random.ts";

/** The `training` section, validated (spec D3 names in comments). */
export interface TrainingSettings {
  /** `batch_size`. */
  readonly batchSize: number;
  /** `lr`: the peak learning rate. */
  readonly lr: number;
  /** `seed`: seeds the parameter initialisation (the data has its own `dataset.kwargs.seed`). */
  readonly seed: number;
  /** `val_every_step`. */
  readonly valEveryStep: number;
  /** `lr_warmup_steps`. */
  readonly warmupSteps: number;
  /** `lr_decay_until_steps`. */
  readonly decayUntilStep: number;
  /** `lr_decay_factor`: the final learning rate is `lr · lr_decay_factor`. */
  readonly decayFactor: number;
  /** `weight_decay` of the decay group. */
  readonly weightDecay: number;
  /** `num_steps`: optimizer steps of the whole run. */
  readonly numSteps: number;
}

/** One subpart of the dataset (e.g. `train`, `validation`): a fresh stream of its examples on every call. */
export interface TaskSplit {
  /** Subpart name. */
  readonly name: string;
  /** `train`, `validation` or `test`. */
  readonly subset: string;
  /** Examples in the split (`count[subset]`). */
  readonly count: number;
  /** A new stream at the split's first example. */
  stream(): TokenStream<unknown>;
}

/** A validated experiment. */
export interface Experiment {
  /** The whole document with interpolations resolved (stored in checkpoints, so a resume rebuilds the same run). */
  readonly doc: Record<string, unknown>;
  /** The `training` section. */
  readonly training: TrainingSettings;
  /** The resolved `model` section. */
  readonly model: xLSTMLMModelConfig;
  /** `parity` or `mqar`. */
  readonly task: string;
  /** The dataset's subparts in order (train first). */
  readonly splits: readonly TaskSplit[];
}

/**
 * A copy of `base` with `patch` merged in: mappings merge key by key, anything else (numbers, lists) replaces.
 * Used for command-line overrides and reduced settings before interpolations are resolved.
 */
export function mergeConfig(base: Record<string, unknown>, patch: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = { ...base };
  for (const [k, v] of Object.entries(patch)) {
    out[k] = isMapping(v) && isMapping(out[k]) ? mergeConfig(out[k] as Record<string, unknown>, v) : v;
  }
  return out;
}

function setting(section: Record<string, unknown>, key: string, kind: "int" | "count" | "number"): number {
  const v = section[key];
  const ok = typeof v === "number" && Number.isFinite(v) &&
    (kind === "number" ? v >= 0 : Number.isSafeInteger(v) && v >= (kind === "count" ? 1 : 0));
  if (!ok) {
    const want = kind === "count" ? "a positive integer" : kind === "int" ? "an integer >= 0" : "a number >= 0";
    throw new Error(`training.${key} must be ${want}; got ${JSON.stringify(v)}`);
  }
  return v as number;
}

/** Validates the `training` section. */
function trainingSettings(section: unknown): TrainingSettings {
  if (!isMapping(section)) throw new Error(`the config needs a training section (a mapping)`);
  return {
    batchSize: setting(section, "batch_size", "count"),
    lr: setting(section, "lr", "number"),
    seed: setting(section, "seed", "int"),
    valEveryStep: setting(section, "val_every_step", "count"),
    warmupSteps: setting(section, "lr_warmup_steps", "int"),
    decayUntilStep: setting(section, "lr_decay_until_steps", "int"),
    decayFactor: setting(section, "lr_decay_factor", "number"),
    weightDecay: setting(section, "weight_decay", "number"),
    numSteps: setting(section, "num_steps", "int"),
  };
}

/** The dataset's splits: `form_language` (parity) or `mqar`. */
function taskSplits(section: unknown): { task: string; splits: TaskSplit[]; vocabSize: number } {
  if (!isMapping(section) || !isMapping(section.kwargs)) {
    throw new Error(`the config needs a dataset section with name and kwargs`);
  }
  const { name, kwargs } = section;
  if (name === "form_language") {
    const splits = Object.entries(paritySplits(kwargs)).map(([n, s]) => ({
      name: n,
      subset: s.subset,
      count: s.count,
      stream: () => new ParityData(s.options),
    }));
    return { task: "parity", splits, vocabSize: (kwargs.vocab_size as number | undefined) ?? 3 };
  }
  if (name === "mqar") {
    const splits = Object.entries(mqarSplits(kwargs)).map(([n, s]) => ({
      name: n,
      subset: s.subset,
      count: s.count,
      stream: () => new MqarData(s.options),
    }));
    return { task: "mqar", splits, vocabSize: kwargs.vocab_size as number };
  }
  throw new Error(`dataset.name must be form_language (parity) or mqar; got ${JSON.stringify(name)}`);
}

/**
 * Validates an experiment document: resolves its interpolations, then checks the `training`, `model` and
 * `dataset` sections. Errors name the offending key.
 *
 * @param doc a parsed experiment YAML (interpolations may be unresolved).
 * @example
 * ```ts
 * import { experiment, readExperiment } from "./experiment.ts";
 * const exp = await readExperiment("scripts/configs/parity_xlstm01.yaml");
 * console.log(exp.task, exp.training.decayUntilStep, exp.model._block_map); // parity 20000 1,1
 * console.log(experiment(exp.doc).splits.map((s) => s.name)); // ["train", "validation", "test"]
 * ```
 */
export function experiment(doc: Record<string, unknown>): Experiment {
  const resolved = resolveInterpolations(doc);
  const training = trainingSettings(resolved.training);
  if (!isMapping(resolved.model)) throw new Error(`the config needs a model section (a mapping)`);
  const model = xLSTMLMModelConfig(resolved.model);
  const { task, splits, vocabSize } = taskSplits(resolved.dataset);
  if (model.vocab_size < vocabSize) {
    throw new Error(`model.vocab_size ${model.vocab_size} is smaller than the dataset's vocab_size ${vocabSize}`);
  }
  if (!splits.some((s) => s.subset === "train")) throw new Error(`dataset.kwargs.count has no train subset`);
  return { doc: resolved, training, model, task, splits };
}

/** Reads and validates an experiment YAML file, after merging `overrides` into it (see {@linkcode mergeConfig}). */
export async function readExperiment(
  path: string | URL,
  overrides: Record<string, unknown> = {},
): Promise<Experiment> {
  return experiment(mergeConfig(await readConfigFile(path), overrides));
}
