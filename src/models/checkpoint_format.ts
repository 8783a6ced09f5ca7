/**
 * The reference's checkpoint layouts as small pure functions: key names (spec C3), config fields (C1, C3), the sLSTM
 * recurrent kernel and bias layouts (A5.4, A8) and shard file names. Shared by the loader, the writer and
 * `scripts/convert.ts`.
 *
 * @module
 */

// A full specifier, as in config.ts: the module must also resolve when imported from outside this package.
// deno-lint-ignore no-import-prefix
import { stringify as toYaml } from "npm:yaml@^2.8.1";
import { blockConfigs, ConfigError, xLSTMLargeConfig, type xLSTMLMModelConfig } from "../config.ts";
import { type HostDType, type HostTensor, toFloat32 } from "../host_tensor.ts";
import { cudaLayouts } from "./slstm_layer.ts";

/**
 * A checkpoint directory layout: `"hf"` is the Hugging Face `NX-AI/xLSTM-7b` one (config.json, sharded safetensors
 * with `model.safetensors.index.json`, `backbone.embeddings.weight`); `"xlstm"` is the reference package's own (for
 * xLSTMLarge the NX-AI internal format: config.yaml + model.safetensors or model_{n}.safetensors; for xLSTMLMModel a
 * config.yaml of its xLSTMLMModelConfig + its state_dict in the same files).
 */
export type CheckpointFormat = "hf" | "xlstm";

/** The two stored layouts of the sLSTM recurrent kernel and bias (spec A5.4). */
export type SlstmLayout = "vanilla" | "cuda";

/** The model class a checkpoint holds. */
export type CheckpointArchitecture = "xLSTMLarge" | "xLSTMLMModel";

/** The embedding's key in `transformers`' xLSTMForCausalLM and in the NX-AI xLSTMLarge. */
const HF_EMBEDDING = "backbone.embeddings.weight";
const EMBEDDING = "embedding.weight";

/**
 * An xLSTMLarge state_dict key for a checkpoint tensor name: `backbone.embeddings.weight` → `embedding.weight`, and
 * the `query`/`key`/`value` projections of some `transformers` revisions → `q`/`k`/`v`. Other names are identical.
 */
export function largeKeyFromHf(name: string): string {
  if (name === HF_EMBEDDING) return EMBEDDING;
  return name.replace(/\.mlstm_layer\.(query|key|value)\./, (_, p: string) => `.mlstm_layer.${p[0]}.`);
}

/** The Hugging Face name of an xLSTMLarge state_dict key (the hub's weights use q/k/v). */
export function largeKeyToHf(key: string): string {
  return key === EMBEDDING ? HF_EMBEDDING : key;
}

/** `transformers` xLSTMConfig fields and the alias it falls back to. */
const HF_REQUIRED: [field: string, alias: string | null][] = [
  ["embedding_dim", "hidden_size"],
  ["num_blocks", "num_hidden_layers"],
  ["num_heads", null],
  ["vocab_size", null],
];

/** Fields taken verbatim from config.json; the kernel names are the CUDA backends' and do not apply here. */
const HF_FIELDS = [
  "use_bias",
  "norm_eps",
  "norm_reduction_force_float32",
  "add_out_norm",
  "qk_dim_factor",
  "v_dim_factor",
  "mode",
  "chunk_size",
  "return_last_states",
  "autocast_kernel_dtype",
  "eps",
  "inference_state_dtype",
  "ffn_proj_factor",
  "ffn_round_up_to_multiple_of",
  "gate_soft_cap",
  "output_logit_soft_cap",
  "weight_mode",
];

/** `transformers` defaults that differ from xLSTMLargeConfig's, for a config.json that leaves them out. */
const HF_DEFAULTS = { mode: "inference", return_last_states: true, ffn_proj_factor: 2.667 };

/** The fields of xLSTMLargeConfig the reference model derives (not part of the reference dataclass). */
const LARGE_DERIVED = new Set(["qk_dim", "v_dim", "qk_head_dim", "v_head_dim", "ffn_dim"]);

/** Runs a config factory, adding `file` to a {@linkcode ConfigError}'s message. */
export function inConfigFile<T>(file: string, build: () => T): T {
  try {
    return build();
  } catch (e) {
    if (!(e instanceof ConfigError)) throw e;
    const detail = e.message.slice((e.path || "config").length + 2);
    throw new ConfigError(e.path, `${detail} (in ${file})`);
  }
}

/**
 * The xLSTMLargeConfig of a Hugging Face config.json (as `transformers`' `xLSTMConfig.to_xlstm_block_config`):
 * `embedding_dim` (or `hidden_size`), `num_blocks` (or `num_hidden_layers`), `num_heads` and `vocab_size` are
 * required; other xLSTMLargeConfig fields are taken when present; everything else (kernel names, token ids, HF
 * bookkeeping) is ignored. Throws a {@linkcode ConfigError} naming the field and `file`.
 */
export function largeConfigFromHf(hf: Record<string, unknown>, file: string): xLSTMLargeConfig {
  const input: Record<string, unknown> = { ...HF_DEFAULTS };
  for (const [field, alias] of HF_REQUIRED) {
    const value = hf[field] ?? (alias ? hf[alias] : undefined);
    if (value === undefined || value === null) {
      const also = alias ? ` (nor its alias ${alias})` : "";
      throw new ConfigError(field, `required field missing${also} in ${file}`);
    }
    input[field] = value;
  }
  for (const f of HF_FIELDS) if (hf[f] !== undefined) input[f] = hf[f];
  if (hf.tie_word_embeddings === true) {
    throw new ConfigError("tie_word_embeddings", `xLSTMLarge never ties the LM head to the embedding (in ${file})`);
  }
  return inConfigFile(file, () => xLSTMLargeConfig(input));
}

/** The reference dataclass fields of an xLSTMLargeConfig (what the NX-AI config.yaml holds). */
export function largeConfigDocument(config: xLSTMLargeConfig): Record<string, unknown> {
  return Object.fromEntries(Object.entries(config).filter(([k]) => !LARGE_DERIVED.has(k)));
}

/**
 * A Hugging Face config.json for an xLSTMLarge whose weights are stored as `dtype`. Like the hub's, it asks for
 * inference mode with states returned, which `transformers` needs to generate (our model ignores both fields).
 */
export function hfConfigFromLarge(config: xLSTMLargeConfig, dtype: HostDType): Record<string, unknown> {
  return {
    architectures: ["xLSTMForCausalLM"],
    model_type: "xlstm",
    torch_dtype: dtype,
    hidden_size: config.embedding_dim,
    num_hidden_layers: config.num_blocks,
    tie_word_embeddings: false,
    ...largeConfigDocument(config),
    mode: "inference",
    // (the reference refuses states with a parallel kernel)
    return_last_states: !config.chunkwise_kernel.startsWith("parallel--"),
  };
}

/** The text and file name of the config a checkpoint directory holds. */
export function configFile(
  architecture: CheckpointArchitecture,
  config: xLSTMLargeConfig | xLSTMLMModelConfig,
  format: CheckpointFormat,
  dtype: HostDType,
  slstmLayout: SlstmLayout,
): { name: string; text: string } {
  if (architecture === "xLSTMLarge") {
    const large = config as xLSTMLargeConfig;
    if (format === "hf") return { name: "config.json", text: JSON.stringify(hfConfigFromLarge(large, dtype), null, 2) };
    return { name: "config.yaml", text: toYaml(largeConfigDocument(large)) };
  }
  if (format === "hf") throw new RangeError(`an xLSTMLMModel has no Hugging Face layout; use format "xlstm"`);
  // The written backend must name the layout written: the reference builds the cell (and its shapes) from it.
  const lm = config as xLSTMLMModelConfig;
  const slstm_block = lm.slstm_block && { ...lm.slstm_block, slstm: { ...lm.slstm_block.slstm, backend: slstmLayout } };
  return { name: "config.yaml", text: toYaml({ ...lm, slstm_block }) };
}

/** An sLSTM cell tensor of an xLSTMLMModel: which part, and its head geometry. */
export interface SlstmCellTensor {
  /** The block index. */
  block: number;
  /** `_recurrent_kernel_` or `_bias_`. */
  part: "kernel" | "bias";
  /** Heads NH. */
  heads: number;
  /** Head dim DH. */
  headDim: number;
}

/** The sLSTM cell tensors of an xLSTMLMModel by state_dict key (spec A8: under `xlstm_block_stack.blocks.{i}.`). */
export function slstmCellTensors(config: xLSTMLMModelConfig): Map<string, SlstmCellTensor> {
  const out = new Map<string, SlstmCellTensor>();
  blockConfigs(config).forEach((b, block) => {
    if (b.kind !== "slstm") return;
    const heads = b.config.slstm.num_heads, headDim = b.config.slstm.embedding_dim / heads;
    const cell = `xlstm_block_stack.blocks.${block}.xlstm.slstm_cell.`;
    out.set(`${cell}_recurrent_kernel_`, { block, part: "kernel", heads, headDim });
    out.set(`${cell}_bias_`, { block, part: "bias", heads, headDim });
  });
  return out;
}

/** The stored shape of a cell tensor in `layout`: kernel vanilla (NH, 4DH, DH), cuda (NH, DH, 4DH); bias (4H). */
export function slstmShape(cell: SlstmCellTensor, layout: SlstmLayout): number[] {
  const { heads: NH, headDim: DH } = cell;
  if (cell.part === "bias") return [4 * NH * DH];
  return layout === "vanilla" ? [NH, 4 * DH, DH] : [NH, DH, 4 * DH];
}

/** The layout a stored recurrent kernel's shape reveals, or null when it fits neither. */
export function slstmLayoutOfKernel(shape: readonly number[], cell: SlstmCellTensor): SlstmLayout | null {
  for (const layout of ["vanilla", "cuda"] as const) {
    if (slstmShape(cell, layout).join() === shape.join()) return layout;
  }
  return null;
}

/** A cell tensor stored in layout `from`, permuted to layout `to` (float32; `t` itself when they agree). */
export function convertSlstm(t: HostTensor, cell: SlstmCellTensor, from: SlstmLayout, to: SlstmLayout): HostTensor {
  if (from === to) return t;
  const layout = cudaLayouts(cell.heads, cell.headDim)[cell.part];
  const data = toFloat32(t);
  // The model's internal order is the vanilla layout, so cuda → vanilla is the cuda layout's fromExternal.
  return {
    dtype: "float32",
    shape: slstmShape(cell, to),
    data: to === "vanilla" ? layout.fromExternal(data) : layout.toExternal(data),
  };
}

/** HF writes at most this many bytes per shard by default (`max_shard_size="5GB"`). */
export const DEFAULT_SHARD_BYTES = 5e9;

/**
 * The weight file names of shard k (0-based) of n: HF `model-0000{k+1}-of-0000{n}.safetensors`, NX-AI
 * `model_{k}.safetensors`; a single file is `model.safetensors` in both.
 */
export function shardFileName(format: CheckpointFormat, k: number, n: number): string {
  if (n === 1) return "model.safetensors";
  const pad = (i: number) => String(i).padStart(5, "0");
  return format === "hf" ? `model-${pad(k + 1)}-of-${pad(n)}.safetensors` : `model_${k}.safetensors`;
}

/** Whether `name` is a weight file of either layout (so a rewrite can drop stale shards). */
export function isWeightFileName(name: string): boolean {
  return /^model(-\d{5}-of-\d{5}|_\d+)?\.safetensors$/.test(name);
}

/** The HF index of a sharded checkpoint. */
export const HF_INDEX = "model.safetensors.index.json";

/** Groups tensors of `bytes` (in order) into shards of at most `maxBytes`; a larger tensor gets a shard alone. */
export function planShards(bytes: readonly number[], maxBytes: number): number[][] {
  const shards: number[][] = [];
  let size = Infinity;
  bytes.forEach((b, i) => {
    if (size + b > maxBytes) {
      shards.push([]);
      size = 0;
    }
    shards.at(-1)!.push(i);
    size += b;
  });
  return shards.length ? shards : [[]];
}
