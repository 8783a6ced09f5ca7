/**
 * Pretrained weights: loading the reference's checkpoints (the Hugging Face `NX-AI/xLSTM-7b` layout, the NX-AI
 * internal layout, and state_dicts of the NeurIPS `xLSTMLMModel` in either sLSTM layout) into our models, writing
 * our weights back in the reference's names and layouts, and converting between layouts without a GPU. Everything
 * streams: a load holds one tensor in host memory at a time, a write or a conversion one shard.
 *
 * @module
 */

import { dirname } from "node:path";
import { xLSTMLargeConfig } from "../config.ts";
import type { Gpu } from "../gpu/runtime.ts";
import { formatShape, type HostDType, type HostTensor } from "../host_tensor.ts";
import type { Tensor } from "../tensor.ts";
import {
  type CheckpointArchitecture,
  type CheckpointFormat,
  configFile,
  convertSlstm,
  DEFAULT_SHARD_BYTES,
  largeKeyToHf,
  type SlstmCellTensor,
  slstmCellTensors,
  type SlstmLayout,
  slstmShape,
} from "./checkpoint_format.ts";
import { type CheckpointConfig, type CheckpointEntry, CheckpointError, CheckpointReader } from "./checkpoint_reader.ts";
import { fusedParts, type LoadUnit, planUnits, readUnit } from "./checkpoint_units.ts";
import { writeCheckpointDir, type WriteEntry, type WriteReport } from "./checkpoint_writer.ts";
import { xLSTMLMModel } from "./lm_model.ts";
import type { WeightDType } from "./parameters.ts";
import { xLSTMLarge } from "./xlstm_large.ts";
import { splitXLSTMLargeStateDict } from "./xlstm_large_weights.ts";

/** A model a checkpoint can hold. */
export type PretrainedModel = xLSTMLarge | xLSTMLMModel;

/** Progress of a load, after each unit (one tensor, or the parts of a fused one). */
export interface LoadProgress {
  /** The (first) state_dict key just loaded. */
  key: string;
  /** Checkpoint tensors loaded so far. */
  done: number;
  /** Checkpoint tensors to load. */
  total: number;
  /** Checkpoint bytes loaded so far. */
  bytes: number;
}

/** Options of {@linkcode loadPretrained}. */
export interface LoadPretrainedOptions {
  /** The GPU to place the model on; the default GPU when absent. */
  gpu?: Gpu;
  /** Element type of an xLSTMLarge's weight matrices (see `CreateOptions.weightDtype`); float32 by default. */
  weightDtype?: WeightDType;
  /** A config file (YAML or JSON) to use instead of the one beside the weights (needed for a bare file). */
  config?: string;
  /** The model class expected; a checkpoint of the other one is an error. */
  architecture?: CheckpointArchitecture;
  /**
   * An xLSTMLarge's weight mode, overriding the config's: a single-mode checkpoint (as the HF hub's) loads into a
   * fused model (fewer dispatches per token), each block's parts stacked as they stream in, and the reverse.
   */
  weightMode?: "single" | "fused";
  /** Called after each unit. */
  onProgress?: (progress: LoadProgress) => void;
}

/** What a load did. */
export interface LoadReport {
  /** Tensors loaded (a tied pair counts once). */
  tensors: number;
  /** Checkpoint bytes read. */
  bytes: number;
  /** The largest tensor's bytes. */
  largestTensorBytes: number;
  /**
   * The most bytes held in host memory at once: tensors read and not yet uploaded, plus what a weight-mode
   * conversion made of them. Units are read and uploaded one after another, so this is the largest tensor (or, when
   * fusing or splitting, the largest group of parts plus their fused tensor); a layout or dtype conversion adds
   * transient copies of that one unit only.
   */
  peakHostBytes: number;
  /** Wall time in seconds. */
  seconds: number;
}

/** Options of {@linkcode savePretrained} and {@linkcode convertCheckpoint}. */
export interface SaveOptions {
  /** `"hf"` (xLSTMLarge only) or `"xlstm"` (see {@linkcode CheckpointFormat}). */
  format: CheckpointFormat;
  /** Most tensor bytes per weight file (default 5 GB, as HF's `max_shard_size="5GB"`). */
  maxShardBytes?: number;
  /** Stored float type (default float32 for a save; the source's dtype for a conversion). */
  dtype?: "float32" | "float16" | "bfloat16";
  /** Stored layout of an xLSTMLMModel's sLSTM recurrent kernels and biases (default vanilla). */
  slstmLayout?: SlstmLayout;
  /** Called after each weight file is written. */
  onShard?: (info: { file: string; tensors: number; bytes: number }) => void;
}

/** Tensors whose upload may sit in WebGPU's staging memory before the queue is drained. */
const DRAIN_BYTES = 256 * 2 ** 20;

/** Submits pending buffer writes and waits, so their staging memory is freed (writeBuffer stages until a submit). */
async function drain(gpu: Gpu): Promise<void> {
  gpu.device.queue.submit([]);
  await gpu.finish();
}

/** The model's class and config, as a checkpoint describes them. */
function architectureOf(model: PretrainedModel): CheckpointConfig {
  return model instanceof xLSTMLarge
    ? { architecture: "xLSTMLarge", config: model.config }
    : { architecture: "xLSTMLMModel", config: model.config };
}

/** An xLSTMLarge's config (which enables weight-mode conversion), null for an xLSTMLMModel. */
function largeConfigOf(model: PretrainedModel): xLSTMLargeConfig | null {
  return model instanceof xLSTMLarge ? model.config : null;
}

/** The sLSTM layout the model's state_dict uses (its config's backend). */
function slstmLayoutOf(model: PretrainedModel): SlstmLayout {
  return model instanceof xLSTMLMModel ? model.config.slstm_block?.slstm.backend ?? "vanilla" : "vanilla";
}

/**
 * Checks every checkpoint tensor against the model before any data is read: unexpected names, wrong shapes,
 * missing keys, and the reader's own problems (unreadable or truncated files, int dtypes, index mismatches).
 * Returns the units to load (a tied pair loads once).
 */
function plan(model: PretrainedModel, reader: CheckpointReader, layout: SlstmLayout): LoadUnit[] {
  const expected = model.stateDictShapes();
  const { architecture } = architectureOf(model);
  const fileName = (key: string) => reader.format === "hf" ? largeKeyToHf(key) : key;
  const { units, unexpected, problems } = planUnits(
    reader.entries,
    expected,
    (e) => reader.shape(e, layout),
    largeConfigOf(model),
    (key) => reader.expectedFile(fileName(key)),
  );
  problems.unshift(...reader.problems);
  const what = (e: CheckpointEntry) => `${e.file}: tensor "${e.name}"${e.key === e.name ? "" : ` (key ${e.key})`}`;
  for (const e of unexpected) problems.push(`${what(e)} is not a parameter of this ${architecture}`);
  // Tied names share one tensor; a checkpoint may hold either of them (safetensors' save_model keeps one).
  const tensorOf = new Map<string, Tensor>(model.namedParameters());
  const present = new Set<Tensor>(), planned = new Set<Tensor>();
  const keep = units.filter((unit) => {
    const bad = unit.outputs.filter(([key, shape]) => {
      present.add(tensorOf.get(key)!);
      return shape.join() !== expected.get(key)!.join();
    });
    for (const [key, shape] of bad) {
      const e = unit.entries[0];
      const part = unit.kind === "split" ? `; its part ${key} has shape ${formatShape(shape)}` : "";
      const want = formatShape(expected.get(key)!);
      problems.push(`${what(e)} has shape ${formatShape(e.shape)}${part}, the model expects ${want}`);
    }
    const tensors = unit.outputs.map(([key]) => tensorOf.get(key)!);
    if (bad.length || tensors.every((t) => planned.has(t))) return false;
    tensors.forEach((t) => planned.add(t));
    return true;
  });
  for (const [key, shape] of expected) {
    if (!present.has(tensorOf.get(key)!)) {
      problems.push(`${reader.expectedFile(fileName(key))}: missing tensor "${fileName(key)}" ${formatShape(shape)}`);
    }
  }
  if (problems.length) throw new CheckpointError(`cannot load ${reader.where} into ${architecture}`, problems);
  return keep;
}

/** Validates, then reads and uploads one unit (usually one tensor) at a time. */
async function stream(
  model: PretrainedModel,
  reader: CheckpointReader,
  onProgress?: (p: LoadProgress) => void,
): Promise<LoadReport> {
  const start = performance.now();
  const layout = slstmLayoutOf(model), config = largeConfigOf(model);
  const units = plan(model, reader, layout);
  const total = units.reduce((n, u) => n + u.entries.length, 0);
  const report: LoadReport = { tensors: 0, bytes: 0, largestTensorBytes: 0, peakHostBytes: 0, seconds: 0 };
  let staged = 0;
  for (const unit of units) {
    const record = await readUnit(unit, (e) => reader.read(e, layout), config);
    const read = unit.entries.reduce((n, e) => n + e.byteLength, 0);
    // Held at once: the tensors read, plus what a split or a fusion made of them.
    const made = unit.kind === "plain" ? 0 : Object.values(record).reduce((n, t) => n + t.data.byteLength, 0);
    report.peakHostBytes = Math.max(report.peakHostBytes, read + made);
    await model.loadStateDict(record, { strict: false });
    report.tensors += unit.entries.length;
    report.bytes += read;
    report.largestTensorBytes = Math.max(report.largestTensorBytes, ...unit.entries.map((e) => e.byteLength));
    staged += read;
    if (staged >= DRAIN_BYTES) {
      await drain(model.gpu);
      staged = 0;
    }
    onProgress?.({ key: unit.outputs[0][0], done: report.tensors, total, bytes: report.bytes });
  }
  await drain(model.gpu);
  report.seconds = (performance.now() - start) / 1000;
  return report;
}

/**
 * Loads a checkpoint directory into a new model. Accepted layouts:
 * - Hugging Face (`NX-AI/xLSTM-7b`): config.json, and model.safetensors.index.json with its shards (or one
 *   model.safetensors); names `backbone.embeddings.weight` and `query`/`key`/`value` are mapped. → xLSTMLarge.
 * - NX-AI internal: config.yaml (an xLSTMLargeConfig) and model.safetensors or model_0.safetensors,
 *   model_1.safetensors, … → xLSTMLarge.
 *   An xLSTMLarge checkpoint in either weight mode loads into a model of either (`options.weightMode`, else the
 *   config's): fused tensors are split, or single-mode parts stacked, as they stream in.
 * - The reference `xlstm` package's NeurIPS model: a YAML/JSON xLSTMLMModelConfig (at the top or under `model`) and
 *   a safetensors file of its state_dict; sLSTM recurrent kernels and biases may be in the vanilla or the cuda
 *   layout (detected from the kernel's shape, per block) and are permuted to the layout of the config's backend.
 *   → xLSTMLMModel.
 *
 * `path` may also be a `.safetensors` file, with the config beside it or in `options.config`. Every header is read
 * and every tensor checked (names, shapes, dtypes) before any data: all problems are reported at once in a
 * {@linkcode CheckpointError}, each naming the file and the tensor. The weights then stream one tensor at a time.
 *
 * @example
 * ```ts
 * import { loadPretrained, savePretrained, xLSTMLarge, xLSTMLargeConfig } from "@xlstm/core";
 * const cfg = xLSTMLargeConfig({ embedding_dim: 32, num_heads: 2, num_blocks: 1, vocab_size: 40 });
 * const model = await xLSTMLarge.create(cfg, { seed: 0 });
 * const dir = await Deno.makeTempDir();
 * await savePretrained(model, dir, { format: "hf" }); // as NX-AI/xLSTM-7b: config.json + safetensors
 * const loaded = await loadPretrained(dir, { architecture: "xLSTMLarge", weightMode: "fused" });
 * console.log(loaded.config.weight_mode, loaded.numParameters() === model.numParameters()); // "fused" true
 * model.dispose();
 * loaded.dispose();
 * ```
 */
export function loadPretrained(
  path: string,
  options: LoadPretrainedOptions & { architecture: "xLSTMLarge" },
): Promise<xLSTMLarge>;
/** Loads a checkpoint that must hold an xLSTMLMModel (see the general overload). */
export function loadPretrained(
  path: string,
  options: LoadPretrainedOptions & { architecture: "xLSTMLMModel" },
): Promise<xLSTMLMModel>;
/** Loads a checkpoint into whichever model its config describes (see the overloads above). */
export function loadPretrained(path: string, options?: LoadPretrainedOptions): Promise<PretrainedModel>;
export async function loadPretrained(path: string, options: LoadPretrainedOptions = {}): Promise<PretrainedModel> {
  using reader = await CheckpointReader.open(path, { config: options.config });
  const found = reader.model;
  if (options.architecture && options.architecture !== found.architecture) {
    throw new CheckpointError(path, [`holds an ${found.architecture}, not an ${options.architecture}`]);
  }
  if (options.weightMode && found.architecture !== "xLSTMLarge") {
    throw new RangeError(`weightMode applies to xLSTMLarge checkpoints; ${path} holds an ${found.architecture}`);
  }
  const create = { gpu: options.gpu, weightDtype: options.weightDtype, initialize: false };
  const model = found.architecture === "xLSTMLarge"
    ? await xLSTMLarge.create(
      xLSTMLargeConfig({ ...found.config, weight_mode: options.weightMode ?? found.config.weight_mode }),
      create,
    )
    : await xLSTMLMModel.create(found.config, create);
  try {
    await stream(model, reader, options.onProgress);
  } catch (e) {
    model.dispose();
    throw e;
  }
  return model;
}

/**
 * Streams the tensors of safetensors `files` into an existing model, one at a time, after checking every header
 * against the model (names mapped as {@linkcode loadPretrained} does; an xLSTMLMModel's sLSTM tensors in either
 * layout). Every parameter must be present. Rejects with a {@linkcode CheckpointError} listing every problem.
 *
 * @example
 * ```ts
 * import { loadWeights, savePretrained, xLSTMLarge, xLSTMLargeConfig } from "@xlstm/core";
 * const cfg = xLSTMLargeConfig({ embedding_dim: 32, num_heads: 2, num_blocks: 1, vocab_size: 40 });
 * const source = await xLSTMLarge.create(cfg, { seed: 0 });
 * const dir = await Deno.makeTempDir();
 * await savePretrained(source, dir, { format: "xlstm" });
 * const model = await xLSTMLarge.create(cfg, { initialize: false });
 * const report = await loadWeights(model, `${dir}/model.safetensors`);
 * console.log(report.tensors, report.peakHostBytes === report.largestTensorBytes); // 18 true
 * source.dispose();
 * model.dispose();
 * ```
 */
export async function loadWeights(
  model: PretrainedModel,
  files: string | readonly string[],
  options: { onProgress?: (progress: LoadProgress) => void } = {},
): Promise<LoadReport> {
  using reader = await CheckpointReader.fromFiles(typeof files === "string" ? [files] : files, architectureOf(model));
  return await stream(model, reader, options.onProgress);
}

/**
 * Writes `model`'s weights to directory `dir` in the reference's names and layouts: `"hf"` (an xLSTMLarge as
 * `NX-AI/xLSTM-7b`: config.json, `model-0000k-of-0000n.safetensors`, model.safetensors.index.json) or `"xlstm"`
 * (the NX-AI internal layout for an xLSTMLarge; an xLSTMLMModel's state_dict and config.yaml, sLSTM tensors in
 * `slstmLayout`). Parameters are read back one at a time and written one shard at a time, each file atomically;
 * the config and the index are written last.
 *
 * @example
 * ```ts
 * import { savePretrained, xLSTMLarge, xLSTMLargeConfig } from "@xlstm/core";
 * const cfg = xLSTMLargeConfig({ embedding_dim: 32, num_heads: 2, num_blocks: 1, vocab_size: 40 });
 * const model = await xLSTMLarge.create(cfg, { seed: 0 });
 * const dir = await Deno.makeTempDir();
 * const report = await savePretrained(model, dir, { format: "hf", dtype: "float16", maxShardBytes: 20_000 });
 * console.log(report.files.map((f) => f.slice(dir.length + 1)));
 * // ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", "config.json",
 * //  "model.safetensors.index.json"]
 * model.dispose();
 * ```
 */
export async function savePretrained(model: PretrainedModel, dir: string, options: SaveOptions): Promise<WriteReport> {
  const layout = options.slstmLayout ?? "vanilla", from = slstmLayoutOf(model);
  const cells: Map<string, SlstmCellTensor> = model instanceof xLSTMLMModel
    ? slstmCellTensors(model.config)
    : new Map();
  const sources = [...model.stateDictShapes()].map(([key, shape]): Source => {
    const cell = cells.get(key);
    return {
      key,
      shape: cell ? slstmShape(cell, layout) : shape,
      dtype: "float32",
      read: async () => {
        const t = await model.stateDictTensor(key);
        return cell ? convertSlstm(t, cell, from, layout) : t;
      },
    };
  });
  return await writeSources(dir, sources, architectureOf(model), options);
}

/** A tensor to write: its state_dict key, stored shape, default dtype, and how to fetch it (once). */
interface Source {
  key: string;
  shape: number[];
  dtype: HostDType;
  read(): Promise<HostTensor>;
}

/**
 * Writes `sources` as a checkpoint of `options.format`. The NX-AI layout is single-mode only (the reference's
 * loader forces it), so there a fused xLSTMLarge's tensors are split into their parts, each fused tensor fetched
 * once for all of them.
 */
async function writeSources(
  dir: string,
  sources: Source[],
  model: CheckpointConfig,
  options: SaveOptions,
): Promise<WriteReport> {
  const { architecture } = model, layout = options.slstmLayout ?? "vanilla";
  const large = model.architecture === "xLSTMLarge" ? model.config : null;
  const split = large?.weight_mode === "fused" && options.format === "xlstm" ? large : null;
  const items = sources.flatMap((source) => {
    const parts = split && fusedParts(source.key, source.shape, split);
    return parts
      ? parts.map(([key, shape]) => ({ source, key, shape }))
      : [{ source, key: source.key, shape: source.shape }];
  });
  let cache: { source: Source; parts: Record<string, HostTensor> } | null = null;
  const read = async (i: number): Promise<HostTensor> => {
    const { source, key } = items[i];
    if (key === source.key) return await source.read();
    if (cache?.source !== source) {
      cache = { source, parts: splitXLSTMLargeStateDict({ [source.key]: await source.read() }, split!) };
    }
    return cache.parts[key];
  };
  const entries: WriteEntry[] = items.map(({ source, key, shape }) => ({
    name: architecture === "xLSTMLarge" && options.format === "hf" ? largeKeyToHf(key) : key,
    shape,
    dtype: options.dtype ?? source.dtype,
  }));
  const config = split ? { ...split, weight_mode: "single" as const } : model.config;
  return await writeCheckpointDir(dir, entries, {
    format: options.format,
    maxShardBytes: options.maxShardBytes ?? DEFAULT_SHARD_BYTES,
    config: configFile(architecture, config, options.format, entries[0]?.dtype ?? "float32", layout),
    read,
    onShard: options.onShard,
  });
}

/**
 * Converts a checkpoint (anything {@linkcode loadPretrained} reads) to another layout, dtype or sharding without a
 * GPU: tensors are renamed, sLSTM tensors permuted to `slstmLayout`, and cast; host memory holds one output shard.
 * The tensors are checked for readability and float dtypes, not against a model (loading checks that).
 *
 * @example
 * ```ts
 * import { convertCheckpoint, savePretrained, xLSTMLarge, xLSTMLargeConfig } from "@xlstm/core";
 * const cfg = xLSTMLargeConfig({ embedding_dim: 32, num_heads: 2, num_blocks: 1, vocab_size: 40 });
 * const model = await xLSTMLarge.create(cfg, { seed: 0 });
 * const dir = await Deno.makeTempDir();
 * await savePretrained(model, `${dir}/hf`, { format: "hf" });
 * model.dispose();
 * // The NX-AI internal layout in float16: config.yaml + model.safetensors.
 * const report = await convertCheckpoint(`${dir}/hf`, `${dir}/nx`, { format: "xlstm", dtype: "float16" });
 * console.log(report.tensors, report.bytes); // 18 38408 (19,204 parameters, 2 bytes each)
 * ```
 */
export async function convertCheckpoint(
  from: string,
  to: string,
  options: SaveOptions & { config?: string },
): Promise<WriteReport> {
  using reader = await CheckpointReader.open(from, { config: options.config });
  if (reader.problems.length) throw new CheckpointError(`cannot convert ${from}`, reader.problems);
  const source = await Deno.realPath((await Deno.stat(from)).isFile ? dirname(from) : from);
  const target = await Deno.realPath(to).catch(() => null);
  if (source === target) throw new CheckpointError(to, ["is the source directory; write the conversion elsewhere"]);
  const layout = options.slstmLayout ?? "vanilla";
  const sources = reader.entries.map((e): Source => ({
    key: e.key,
    shape: reader.shape(e, layout),
    dtype: e.dtype,
    read: () => reader.read(e, layout),
  }));
  return await writeSources(to, sources, reader.model, options);
}
