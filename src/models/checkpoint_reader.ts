/**
 * Opening a checkpoint for streaming: finds its config and weight files (Hugging Face, NX-AI internal, or a
 * reference xLSTMLMModel state_dict), reads every header up front and indexes the tensors under the model's
 * state_dict keys; tensor data is read one tensor at a time, on demand.
 *
 * @module
 */

import { basename, dirname, join } from "node:path";
import {
  readConfigFile,
  xLSTMLargeConfig,
  type xLSTMLargeConfig as LargeConfig,
  xLSTMLMModelConfig,
  type xLSTMLMModelConfig as LMConfig,
} from "../config.ts";
import { resolveInterpolations } from "../data/interpolate.ts";
import type { HostDType, HostTensor } from "../host_tensor.ts";
import { SafetensorsFile } from "../safetensors.ts";
import {
  type CheckpointFormat,
  convertSlstm,
  HF_INDEX,
  inConfigFile,
  largeConfigFromHf,
  largeKeyFromHf,
  type SlstmCellTensor,
  slstmCellTensors,
  type SlstmLayout,
  slstmLayoutOfKernel,
  slstmShape,
} from "./checkpoint_format.ts";

/** A checkpoint that cannot be loaded; `problems` lists every one found, each naming the file and the tensor. */
export class CheckpointError extends Error {
  /** The error class name. */
  override name = "CheckpointError";

  /** An error listing `problems` under `summary`. */
  constructor(summary: string, readonly problems: string[]) {
    super(
      problems.length === 1
        ? `${summary}: ${problems[0]}`
        : `${summary}: ${problems.length} problems:\n  ${problems.join("\n  ")}`,
    );
  }
}

/** A resolved config and the model class it builds. */
export type CheckpointConfig =
  | { architecture: "xLSTMLarge"; config: LargeConfig }
  | { architecture: "xLSTMLMModel"; config: LMConfig };

/** One tensor of a checkpoint. */
export interface CheckpointEntry {
  /** The model's state_dict key. */
  key: string;
  /** The weight file holding it. */
  file: string;
  /** Its name in that file. */
  name: string;
  /** Stored dtype. */
  dtype: HostDType;
  /** Stored shape. */
  shape: number[];
  /** Stored bytes. */
  byteLength: number;
}

/** Options of {@linkcode CheckpointReader.open}. */
export interface OpenCheckpointOptions {
  /** A config file (YAML or JSON) to use instead of the one beside the weights. */
  config?: string;
}

const FLOATS = new Set<HostDType>(["float32", "float16", "bfloat16", "float64"]);

const isMapping = (v: unknown): v is Record<string, unknown> =>
  typeof v === "object" && v !== null && !Array.isArray(v);
/** An xLSTMLMModelConfig document has a block template; an xLSTMLargeConfig has none. */
const isLmDocument = (v: unknown): boolean => isMapping(v) && (isMapping(v.mlstm_block) || isMapping(v.slstm_block));

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    throw e;
  }
}

/**
 * Reads a config file: an xLSTMLMModelConfig (at the top or under `model`, as the reference's experiment YAMLs),
 * a Hugging Face config.json, or an NX-AI config.yaml (an xLSTMLargeConfig; weight_mode forced to single, as the
 * reference's loader does).
 */
export async function readCheckpointConfig(path: string): Promise<CheckpointConfig & { format: CheckpointFormat }> {
  const doc = await readConfigFile(path);
  const lm = isLmDocument(doc) ? doc : isLmDocument(doc.model) ? resolveInterpolations(doc).model as unknown : null;
  if (lm) {
    return {
      architecture: "xLSTMLMModel",
      format: "xlstm",
      config: inConfigFile(path, () => xLSTMLMModelConfig(lm)),
    };
  }
  if (path.endsWith(".json")) return { architecture: "xLSTMLarge", format: "hf", config: largeConfigFromHf(doc, path) };
  const config = inConfigFile(path, () => xLSTMLargeConfig({ ...doc, weight_mode: "single" }));
  return { architecture: "xLSTMLarge", format: "xlstm", config };
}

/** The config beside `dir`'s weights: config.json (HF) first, then config.yaml. */
async function findConfig(dir: string): Promise<string> {
  for (const name of ["config.json", "config.yaml", "config.yml"]) {
    if (await exists(join(dir, name))) return join(dir, name);
  }
  throw new CheckpointError(dir, ["no config.json or config.yaml (pass a config file)"]);
}

/**
 * The weight files of a checkpoint directory: the HF index's shards, `model.safetensors`, or NX-AI's
 * `model_0.safetensors`, `model_1.safetensors`, … (consecutive, as the reference loader reads them).
 */
async function findWeights(dir: string, problems: string[]): Promise<{ files: string[]; index?: Map<string, string> }> {
  const indexPath = join(dir, HF_INDEX);
  if (await exists(indexPath)) {
    const index = new Map<string, string>();
    let map: unknown;
    try {
      map = JSON.parse(await Deno.readTextFile(indexPath)).weight_map;
    } catch (e) {
      throw new CheckpointError(indexPath, [`not a JSON index: ${(e as Error).message}`]);
    }
    if (!isMapping(map)) throw new CheckpointError(indexPath, ["no weight_map object"]);
    const files: string[] = [];
    const missing = new Set<string>();
    for (const [name, shard] of Object.entries(map)) {
      const path = join(dir, String(shard));
      index.set(name, path);
      if (files.includes(path) || missing.has(path)) continue;
      if (await exists(path)) files.push(path);
      else {
        missing.add(path);
        problems.push(`${indexPath}: weight_map points at ${shard} (e.g. for tensor "${name}"), which does not exist`);
      }
    }
    return { files, index };
  }
  if (await exists(join(dir, "model.safetensors"))) return { files: [join(dir, "model.safetensors")] };
  const files: string[] = [];
  while (await exists(join(dir, `model_${files.length}.safetensors`))) {
    files.push(join(dir, `model_${files.length}.safetensors`));
  }
  if (!files.length) {
    throw new CheckpointError(dir, [`no weights: expected ${HF_INDEX}, model.safetensors or model_0.safetensors`]);
  }
  return { files };
}

/**
 * A checkpoint opened for streaming. Every header is read (and checked) when it opens; {@linkcode read} then loads
 * one tensor's bytes at a time. Close it (or `using`) to release the files.
 */
export class CheckpointReader {
  /** Non-fatal problems found while opening (bad or missing shards, index mismatches, duplicates, int dtypes). */
  readonly problems: string[];
  /** Every tensor, file by file in data order (a sequential read). */
  readonly entries: CheckpointEntry[] = [];
  #files = new Map<string, SafetensorsFile>();
  #cells = new Map<string, SlstmCellTensor>();
  /** The stored sLSTM layout of each block, from its recurrent kernel's shape. */
  #layouts = new Map<number, SlstmLayout>();
  /** The HF index's weight_map: tensor name → shard path. */
  #weightMap = new Map<string, string>();

  private constructor(
    /** What the checkpoint is: the model class and its config. */
    readonly model: CheckpointConfig,
    /** The layout the config names (the tensor names are mapped either way). */
    readonly format: CheckpointFormat,
    /** The directory or file it was opened from, for messages. */
    readonly where: string,
    problems: string[],
  ) {
    this.problems = problems;
    if (model.architecture === "xLSTMLMModel") this.#cells = slstmCellTensors(model.config);
  }

  /**
   * Opens a checkpoint directory (or one `.safetensors` file with `options.config` or a config beside it). Throws
   * {@linkcode CheckpointError} or `ConfigError` when it cannot be read at all; other problems are collected in
   * {@linkcode CheckpointReader.problems}.
   */
  static async open(path: string, options: OpenCheckpointOptions = {}): Promise<CheckpointReader> {
    const isFile = (await Deno.stat(path)).isFile;
    const dir = isFile ? dirname(path) : path;
    const configPath = options.config ?? await findConfig(dir);
    const { format, ...model } = await readCheckpointConfig(configPath);
    const problems: string[] = [];
    const weights = isFile ? { files: [path] } : await findWeights(dir, problems);
    return await CheckpointReader.#build(model as CheckpointConfig, format, path, weights, problems);
  }

  /** A reader over explicit weight files for a model of `model`'s config (tensor names mapped as in any layout). */
  static fromFiles(files: readonly string[], model: CheckpointConfig): Promise<CheckpointReader> {
    return CheckpointReader.#build(model, "xlstm", files.join(", "), { files: [...files] }, []);
  }

  static async #build(
    model: CheckpointConfig,
    format: CheckpointFormat,
    where: string,
    weights: { files: string[]; index?: Map<string, string> },
    problems: string[],
  ): Promise<CheckpointReader> {
    const reader = new CheckpointReader(model, format, where, problems);
    try {
      await reader.#scan(weights.files, weights.index);
    } catch (e) {
      reader.close();
      throw e;
    }
    return reader;
  }

  async #scan(files: string[], index?: Map<string, string>): Promise<void> {
    this.#weightMap = index ?? new Map();
    const seen = new Map<string, CheckpointEntry>();
    const rename = this.model.architecture === "xLSTMLarge" ? largeKeyFromHf : (name: string) => name;
    for (const file of files) {
      let st: SafetensorsFile;
      try {
        st = await SafetensorsFile.open(file);
      } catch (e) {
        // A truncated or malformed shard: its message names the file and the first tensor at fault.
        this.problems.push((e as Error).message);
        continue;
      }
      this.#files.set(file, st);
      for (const name of st.names()) {
        const { dtype, shape, byteLength } = st.info(name);
        const e: CheckpointEntry = { key: rename(name), file, name, dtype, shape, byteLength };
        const listed = index?.get(name);
        if (index && listed !== file) {
          this.problems.push(
            `${file}: tensor "${name}" is ${listed ? `mapped to ${basename(listed)}` : "not listed"} in ${HF_INDEX}`,
          );
        }
        if (!FLOATS.has(dtype)) this.problems.push(`${file}: tensor "${name}" has dtype ${dtype}, a float is needed`);
        const earlier = seen.get(e.key);
        if (earlier) {
          this.problems.push(
            `${file}: tensor "${name}" is also in ${earlier.file}` +
              (earlier.name === name ? "" : ` as "${earlier.name}"`),
          );
          continue;
        }
        seen.set(e.key, e);
        this.entries.push(e);
        const cell = this.#cells.get(e.key);
        const layout = cell?.part === "kernel" ? slstmLayoutOfKernel(shape, cell) : null;
        if (cell && layout) this.#layouts.set(cell.block, layout);
      }
    }
  }

  /** The file a tensor name is expected in, for messages: the shard the HF index lists it in, else the checkpoint. */
  expectedFile(name: string): string {
    return this.#weightMap.get(name) ?? this.where;
  }

  /** The shape `e` takes when read with {@linkcode read} for a model whose sLSTM layout is `layout`. */
  shape(e: CheckpointEntry, layout: SlstmLayout): number[] {
    const stored = this.#stored(e);
    return stored ? slstmShape(stored.cell, layout) : e.shape;
  }

  /** Reads one tensor from disk, with an xLSTMLMModel's sLSTM cell tensors permuted to `layout`. */
  async read(e: CheckpointEntry, layout: SlstmLayout): Promise<HostTensor> {
    const file = this.#files.get(e.file);
    if (!file) throw new CheckpointError(e.file, [`not open (tensor "${e.name}")`]);
    const t = await file.read(e.name);
    const stored = this.#stored(e);
    return stored ? convertSlstm(t, stored.cell, stored.layout, layout) : t;
  }

  /**
   * The cell geometry and stored layout of an sLSTM cell tensor; null for other tensors and for a block whose
   * kernel shape fits no layout (left as stored, so the model's shape check reports it).
   */
  #stored(e: CheckpointEntry): { cell: SlstmCellTensor; layout: SlstmLayout } | null {
    const cell = this.#cells.get(e.key);
    const layout = cell && this.#layouts.get(cell.block);
    return cell && layout ? { cell, layout } : null;
  }

  /** Closes every file. */
  close(): void {
    for (const f of this.#files.values()) f.close();
    this.#files.clear();
  }

  /** Closes every file at the end of a `using` block. */
  [Symbol.dispose](): void {
    this.close();
  }
}
