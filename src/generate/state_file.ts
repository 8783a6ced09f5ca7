/**
 * Saving and restoring a generation (recurrent state, last tokens, seed, draw counter, sampling) as a safetensors
 * file, so that a session resumed later continues exactly as if it had never stopped.
 *
 * Layout: `last_tokens` int32 `[B]` and one float32 tensor per state tensor, named `state.<path>` by its place in
 * the model's nested state (`state.0.0` for block 0's C of an xLSTMLarge, `state.block_1.slstm_state` for an
 * xLSTMLMModel). Metadata: `format`, `version`, `model_class`, `model_config` (the resolved config as JSON), `seed`,
 * `step`, `sampling` (JSON).
 *
 * @module
 */

import { noGrad } from "../autograd.ts";
import { formatShape, type HostTensor } from "../host_tensor.ts";
import type { Sampling } from "../ops/sample.ts";
import { SafetensorsError, SafetensorsFile, writeSafetensors } from "../safetensors.ts";
import { Tensor, tidy } from "../tensor.ts";
import type { GenerationCheckpoint } from "./generate.ts";
import {
  type Generatable,
  type GenerativeModel,
  generativeModel,
  mapState,
  releaseState,
  stateEntries,
} from "./model.ts";

const FORMAT = "xlstm-generation-state";
const VERSION = "1";
const LAST = "last_tokens";
const PREFIX = "state.";

/**
 * Writes a generation checkpoint to `path` (atomically: a temporary file, then a rename). One readback for all the
 * state tensors.
 *
 * @example
 * ```ts
 * import { generateTokens, loadGenerationState, releaseState, saveGenerationState, xLSTMLarge, xLSTMLargeConfig }
 *   from "@xlstm/core";
 * const cfg = xLSTMLargeConfig({ embedding_dim: 32, num_heads: 2, num_blocks: 1, vocab_size: 40 });
 * const model = await xLSTMLarge.create(cfg, { seed: 0 });
 * const first = await generateTokens(model, undefined, { maxNewTokens: 4, sampling: { temperature: 1 }, seed: 3 });
 * const path = await Deno.makeTempFile({ suffix: ".safetensors" });
 * await saveGenerationState(path, model, first.checkpoint);
 * const resume = await loadGenerationState(path, model);
 * const more = await generateTokens(model, undefined, { maxNewTokens: 4, resume }); // tokens 5–8 of one run of 8
 * console.log(more.tokens.shape); // [1, 4]
 * for (const s of [first.checkpoint.state, resume.state, more.checkpoint.state]) releaseState(s);
 * await Deno.remove(path);
 * model.dispose();
 * ```
 */
export async function saveGenerationState<S>(
  path: string,
  model: Generatable<S>,
  checkpoint: GenerationCheckpoint<S>,
): Promise<void> {
  const lm = generativeModel(model);
  const entries = stateEntries(checkpoint.state);
  const hosts = await Tensor.toHostAll(entries.map(([, t]) => t));
  const record: Record<string, HostTensor> = {
    [LAST]: { dtype: "int32", shape: [checkpoint.lastTokens.length], data: checkpoint.lastTokens },
  };
  entries.forEach(([p], i) => record[PREFIX + p] = hosts[i]);
  await writeSafetensors(path, record, {
    metadata: {
      format: FORMAT,
      version: VERSION,
      model_class: lm.modelClass,
      model_config: JSON.stringify(lm.config),
      seed: String(checkpoint.seed),
      step: String(checkpoint.step),
      sampling: JSON.stringify(checkpoint.sampling),
    },
  });
}

/**
 * Reads a checkpoint written by {@linkcode saveGenerationState} for `model`, its state uploaded to the model's GPU
 * (the caller frees it, e.g. with `releaseState`). Every mismatch is an error naming the file: another format or
 * model class, and, listed together, each state tensor whose shape differs from this model's (both shapes), missing
 * or extra tensors, and the config fields that differ. It cannot tell apart models of one config with other weights.
 */
export async function loadGenerationState<S>(path: string, model: Generatable<S>): Promise<GenerationCheckpoint<S>> {
  const lm = generativeModel(model);
  using file = await SafetensorsFile.open(path);
  const meta = file.metadata;
  const fail = (detail: string, tensor?: string) => new SafetensorsError(file.path, detail, tensor);
  if (meta.format !== FORMAT || meta.version !== VERSION) {
    throw fail(
      `not a generation state: metadata format ${JSON.stringify(meta.format)} version ${JSON.stringify(meta.version)}` +
        `, expected "${FORMAT}" version "${VERSION}"`,
    );
  }
  if (meta.model_class !== lm.modelClass) {
    throw fail(`the state was saved from an ${meta.model_class}; this model is an ${lm.modelClass}`);
  }
  if (!file.has(LAST)) throw fail(`tensor "${LAST}" is missing`, LAST);
  const last = file.info(LAST);
  if (last.dtype !== "int32" || last.shape.length !== 1 || last.shape[0] < 1) {
    throw fail(`tensor "${LAST}" must be int32 [B], got ${last.dtype} ${formatShape(last.shape)}`, LAST);
  }
  const template = stateTemplate(lm, last.shape[0]);
  try {
    const problems = stateProblems(file, template);
    const config = JSON.parse(JSON.stringify(lm.config));
    problems.push(...configDifferences(JSON.parse(meta.model_config ?? "null"), config, "config"));
    if (problems.length) {
      throw fail(`the state does not fit this ${lm.modelClass}:\n  ${problems.join("\n  ")}`, firstTensor(problems));
    }
    const lastTokens = (await file.read(LAST)).data as Int32Array;
    const hosts = new Map<string, HostTensor>();
    for (const [p] of stateEntries(template)) hosts.set(p, await file.read(PREFIX + p));
    const state = mapState(template, (_, p) => Tensor.fromHost(lm.gpu, hosts.get(p)!).keep());
    return {
      state,
      lastTokens,
      seed: Number(meta.seed),
      step: Number(meta.step),
      sampling: JSON.parse(meta.sampling ?? '"greedy"') as Sampling,
    };
  } finally {
    releaseState(template);
  }
}

/** The state this model returns for a batch of `B` (one forward of BOS tokens): the structure and shapes to expect. */
function stateTemplate<S>(lm: GenerativeModel<S>, B: number): S {
  return noGrad(() =>
    tidy(() => {
      const ids = Tensor.zeros(lm.gpu, [B, 1], "int32");
      return lm.forward(ids, undefined)[1];
    })
  );
}

/** Missing, extra, mistyped and misshapen state tensors of `file` against the template. */
function stateProblems(file: SafetensorsFile, template: unknown): string[] {
  const problems: string[] = [];
  const want = new Map(stateEntries(template).map(([p, t]) => [PREFIX + p, t.shape]));
  for (const [name, shape] of want) {
    if (!file.has(name)) {
      problems.push(`tensor "${name}" is missing (this model's is ${formatShape(shape)})`);
      continue;
    }
    const info = file.info(name);
    if (info.dtype !== "float32") problems.push(`tensor "${name}" must be float32, got ${info.dtype}`);
    if (formatShape(info.shape) !== formatShape(shape)) {
      problems.push(`tensor "${name}": the file has ${formatShape(info.shape)}, this model's is ${formatShape(shape)}`);
    }
  }
  for (const name of file.names()) {
    if (name !== LAST && !want.has(name)) problems.push(`tensor "${name}" is not part of this model's state`);
  }
  return problems;
}

/** `key: file …, model …` for every config field (dotted path) whose value differs. */
function configDifferences(saved: unknown, current: unknown, path: string): string[] {
  const isObject = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === "object";
  if (isObject(saved) && isObject(current)) {
    const keys = new Set([...Object.keys(saved), ...Object.keys(current)]);
    return [...keys].flatMap((k) => configDifferences(saved[k], current[k], `${path}.${k}`));
  }
  const [a, b] = [JSON.stringify(saved), JSON.stringify(current)];
  return a === b ? [] : [`${path}: the file has ${a ?? "nothing"}, this model has ${b ?? "nothing"}`];
}

/** The tensor named by the first problem, if any (for `SafetensorsError.tensor`). */
function firstTensor(problems: string[]): string | undefined {
  return /^tensor "([^"]+)"/.exec(problems[0])?.[1];
}
