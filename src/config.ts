/**
 * Config layer: the reference's config dataclasses (NX-AI/xlstm 2.0.5) as factory functions.
 *
 * Each factory takes the reference's dict fields verbatim (snake_case) as a plain object or a YAML/JSON string and
 * returns a new, deeply frozen config with the reference's defaults and derived fields, resolved in the order of
 * the reference's `__post_init__` chain. Input is validated strictly (like `dacite.from_dict(strict=True)`):
 * unknown keys, wrong types, values outside the reference's registries and shapes that cannot be built throw a
 * {@linkcode ConfigError} naming the full key path. A resolved config is itself valid input, so
 * `factory({ ...cfg, field: value })` re-derives everything.
 *
 * @module
 */

// A full specifier, not an import-map name: the module must also resolve when imported from outside this
// package (the conformance harness imports mod.ts from ../shared, where our deno.json does not apply).
// deno-lint-ignore no-import-prefix
import { parse as parseYaml } from "npm:yaml@^2.8.1";

/** Thrown for an invalid config. The message starts with the full key path, e.g. `slstm_block.slstm.backend: …`. */
export class ConfigError extends Error {
  /** Dotted key path of the offending field (`""` for the config as a whole). */
  readonly path: string;

  /** Creates an error for the field at `path`. */
  constructor(path: string, message: string) {
    super(`${path || "config"}: ${message}`);
    this.name = "ConfigError";
    this.path = path;
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Resolved config types (field order follows the reference dataclasses)

/** Resolved `mLSTMLayerConfig` (xlstm/blocks/mlstm/layer.py). */
export interface mLSTMLayerConfig {
  /** Up-projection factor of the inner dim (default 2.0). */
  readonly proj_factor: number;
  /** Round `_proj_up_dim` up (true) or down to the multiple. */
  readonly round_proj_up_dim_up: boolean;
  /** `_proj_up_dim` is a multiple of this (default 64). */
  readonly round_proj_up_to_multiple_of: number;
  /** Derived: `proj_factor × embedding_dim` rounded to a multiple of `round_proj_up_to_multiple_of`. */
  readonly _proj_up_dim: number;
  /** Causal conv kernel size; must be > 0. */
  readonly conv1d_kernel_size: number;
  /** Block size of the block-diagonal q/k/v projections; must divide `_inner_embedding_dim`. */
  readonly qkv_proj_blocksize: number;
  /** mLSTM cell heads; must divide `_inner_embedding_dim`. */
  readonly num_heads: number;
  /** Model width; -1 until the stack sets it. */
  readonly embedding_dim: number;
  /** Biases on the linear layers; set by the stack. */
  readonly bias: boolean;
  /** Output dropout; set by the stack. */
  readonly dropout: number;
  /** -1 until the stack sets it; size of the reference's causal-mask buffer. */
  readonly context_length: number;
  /** Stack depth (wang init of `proj_down`); `null` inside a block config not yet placed in a stack. */
  readonly _num_blocks: number | null;
  /** Derived: the inner (up-projected) dim D, equal to `_proj_up_dim`. */
  readonly _inner_embedding_dim: number;
}

/** Resolved `mLSTMBlockConfig` (xlstm/blocks/mlstm/block.py). An mLSTM block has no feed-forward. */
export interface mLSTMBlockConfig {
  /** The block's layer. */
  readonly mlstm: mLSTMLayerConfig;
  /** Stack depth; set by the stack. */
  readonly _num_blocks: number | null;
  /** Position in the stack; set per block by {@linkcode blockConfigs}, `null` in the stack-level template. */
  readonly _block_idx: number | null;
}

/** The dtype names the reference's sLSTM config accepts. */
export type SlstmDtype = "bfloat16" | "float16" | "float32";

/** Resolved `sLSTMCellConfig` (xlstm/blocks/slstm/cell.py). */
export interface sLSTMCellConfig {
  /** Cell width H; -1 until set (the layer config sets it to `embedding_dim`). */
  readonly hidden_size: number;
  /** Heads; must divide `hidden_size`. Values <= 0 become 1, as in the reference. */
  readonly num_heads: number;
  /** Derived from `function`: 4 for `slstm`, 2 for `lstm`. */
  readonly num_states: number;
  /** Reference kernel backend; it decides the layout of the stored recurrent kernel and bias. */
  readonly backend: "cuda" | "vanilla";
  /** Pointwise cell function: the sLSTM, or a plain LSTM. */
  readonly function: "slstm" | "lstm";
  /** Gate bias init. */
  readonly bias_init: "powerlaw_blockdependent" | "small_init" | "standard" | "zeros";
  /** Recurrent kernel init. */
  readonly recurrent_weight_init: "zeros" | "standard";
  /** Block index, for the powerlaw forget-gate bias init; `null` in a stack-level template. */
  readonly _block_idx: number | null;
  /** Stack depth, for the powerlaw forget-gate bias init. */
  readonly _num_blocks: number | null;
  /** Gates per head (i, f, z, o). */
  readonly num_gates: number;
  /** CUDA only: cut the recurrent gradient through y. */
  readonly gradient_recurrent_cut: boolean;
  /** CUDA only: clip value of the recurrent gradient. */
  readonly gradient_recurrent_clipval: number | null;
  /** Declared by the reference but not used by it. */
  readonly forward_clipval: number | null;
  /** Compile-time batch size of the CUDA kernel. */
  readonly batch_size: number;
  /** External layout of the cell input. */
  readonly input_shape: "BSGNH" | "SBGNH";
  /**
   * Backend-internal gate layout. Config resolution gives `"SBNGH"`; the reference's vanilla cell rewrites it to
   * `"SBGNH"` when the cell is constructed, which this config layer does not model.
   */
  readonly internal_input_shape: "SBNGH" | "SBGNH" | "SBNHG";
  /** Layout of the cell output. */
  readonly output_shape: "BNSH" | "SBH" | "BSH" | "SBNH";
  /** Extra compile-time defines of the reference's CUDA kernel. */
  readonly constants: Readonly<Record<string, unknown>>;
  /** CUDA kernel dtype. */
  readonly dtype: SlstmDtype;
  /** Bias dtype (default float32). */
  readonly dtype_b: SlstmDtype;
  /** Recurrent kernel dtype; defaults to `dtype`. */
  readonly dtype_r: SlstmDtype;
  /** Input (W) dtype; defaults to `dtype`. */
  readonly dtype_w: SlstmDtype;
  /** Gate dtype; defaults to `dtype_r`. */
  readonly dtype_g: SlstmDtype;
  /** State dtype; defaults to `dtype_w`. */
  readonly dtype_s: SlstmDtype;
  /** Accumulation dtype; defaults to `dtype_b`. */
  readonly dtype_a: SlstmDtype;
  /** Keep the recurrent kernel and bias in float32 under autocast. */
  readonly enable_automatic_mixed_precision: boolean;
  /** Unused by the reference. */
  readonly initial_val: number | readonly number[];
}

/** Resolved `sLSTMLayerConfig` (xlstm/blocks/slstm/layer.py): the cell fields plus the layer's own. */
export interface sLSTMLayerConfig extends sLSTMCellConfig {
  /** Model width; -1 until the stack sets it; copied into `hidden_size`. */
  readonly embedding_dim: number;
  /** Causal conv kernel size; 0 means no convolution. */
  readonly conv1d_kernel_size: number;
  /** Learnable weight of the output group norm. */
  readonly group_norm_weight: boolean;
  /** Output dropout; set by the stack. */
  readonly dropout: number;
}

/** Resolved `FeedForwardConfig` (xlstm/components/feedforward.py), the gated FFN of sLSTM blocks. */
export interface FeedForwardConfig {
  /** Up-projection factor (default 1.3). */
  readonly proj_factor: number;
  /** Round `_proj_up_dim` up (true) or down to the multiple. */
  readonly round_proj_up_dim_up: boolean;
  /** `_proj_up_dim` is a multiple of this (default 64). */
  readonly round_proj_up_to_multiple_of: number;
  /** Derived hidden width P (0 while `embedding_dim` is -1). */
  readonly _proj_up_dim: number;
  /** Activation of the gate branch (`swish` is SiLU, `relu^2` is relu(x)²). */
  readonly act_fn: "gelu" | "relu" | "relu^2" | "sigmoid" | "swish" | "selu";
  /** Model width; -1 until a built block sets it (see {@linkcode blockConfigs}). */
  readonly embedding_dim: number;
  /** Output dropout; never propagated from the stack. */
  readonly dropout: number;
  /** Biases on both linear layers; never propagated from the stack. */
  readonly bias: boolean;
  /** The only FFN type. */
  readonly ff_type: "ffn_gated";
  /** Stack depth (wang init of `proj_down`); set by a built block. */
  readonly _num_blocks: number | null;
}

/** Resolved `sLSTMBlockConfig` (xlstm/blocks/slstm/block.py). */
export interface sLSTMBlockConfig {
  /** The block's layer. */
  readonly slstm: sLSTMLayerConfig;
  /** The FFN after the layer; on by default, `null` means none. */
  readonly feedforward: FeedForwardConfig | null;
  /** Stack depth; set by the stack. */
  readonly _num_blocks: number | null;
  /** Position in the stack; set per block by {@linkcode blockConfigs}, `null` in the stack-level template. */
  readonly _block_idx: number | null;
}

/** Resolved `xLSTMBlockStackConfig` (xlstm/xlstm_block_stack.py). */
export interface xLSTMBlockStackConfig {
  /** Template of every mLSTM block; `null` means all blocks are sLSTM. */
  readonly mlstm_block: mLSTMBlockConfig | null;
  /** Template of every sLSTM block. */
  readonly slstm_block: sLSTMBlockConfig | null;
  /** Copied into the mLSTM layers; -1 when not set. */
  readonly context_length: number;
  /** Number of blocks (>= 1). */
  readonly num_blocks: number;
  /** Model width (>= 1), copied into both layer templates. */
  readonly embedding_dim: number;
  /** LayerNorm after the last block. */
  readonly add_post_blocks_norm: boolean;
  /** Copied into the mLSTM layers only. */
  readonly bias: boolean;
  /** Copied into the mLSTM and sLSTM layers (not the FFN). */
  readonly dropout: number;
  /** Indices of the sLSTM blocks (`"all"` in the input is expanded). */
  readonly slstm_at: readonly number[];
  /** Derived: one `0` (mLSTM) or `1` (sLSTM) per block, comma-separated, e.g. `"0,1,0"`. */
  readonly _block_map: string;
}

/** Resolved `xLSTMLMModelConfig` (xlstm/xlstm_lm_model.py): a stack config plus the LM fields. */
export interface xLSTMLMModelConfig extends xLSTMBlockStackConfig {
  /** Vocabulary size V (>= 1). */
  readonly vocab_size: number;
  /** `lm_head.weight` is `token_embedding.weight`. */
  readonly tie_weights: boolean;
  /** Put the embedding in the weight-decay group. */
  readonly weight_decay_on_embedding: boolean;
  /** Dropout (rate `dropout`) after the embedding. */
  readonly add_embedding_dropout: boolean;
}

/** The kernel dtype names xLSTMLargeConfig accepts (`float64` as used by the float64 golden runs). */
export type LargeDtype = "float32" | "bfloat16" | "float16" | "float64";

/**
 * Resolved `xLSTMLargeConfig` (xlstm/xlstm_large/model.py, the xLSTM 7B architecture). The reference config has
 * no derived fields; the last five fields here are the dims its model computes at construction.
 */
export interface xLSTMLargeConfig {
  /** Model width E. */
  readonly embedding_dim: number;
  /** Heads; must divide `qk_dim` and `v_dim`. */
  readonly num_heads: number;
  /** Number of mLSTM blocks. */
  readonly num_blocks: number;
  /** Vocabulary size V. */
  readonly vocab_size: number;
  /** Biases on the linear layers. */
  readonly use_bias: boolean;
  /** Epsilon of the RMS norms. */
  readonly norm_eps: number;
  /** Reduce the norms in float32. */
  readonly norm_reduction_force_float32: boolean;
  /** RMS norm after the last block. */
  readonly add_out_norm: boolean;
  /** `qk_dim = int(embedding_dim × qk_dim_factor)`. */
  readonly qk_dim_factor: number;
  /** `v_dim = int(embedding_dim × v_dim_factor)`. */
  readonly v_dim_factor: number;
  /** mlstm_kernels kernel for training and prefill: `chunkwise--…` or `parallel--…`. */
  readonly chunkwise_kernel: string;
  /** Step-loop kernel for prefill tails in inference mode. */
  readonly sequence_kernel: "native_sequence__native" | "native_sequence__triton";
  /** Single-step kernel for generation. */
  readonly step_kernel: "native" | "triton";
  /** Backend mode. */
  readonly mode: "train" | "train_with_padding" | "inference";
  /** Chunk size of the chunkwise kernel. */
  readonly chunk_size: number;
  /** Return the final states in training mode (inference mode always does). */
  readonly return_last_states: boolean;
  /** Autocast dtype of the kernels. */
  readonly autocast_kernel_dtype: LargeDtype;
  /** Kernel epsilon. */
  readonly eps: number;
  /** Dtype of the recurrent states in inference mode. */
  readonly inference_state_dtype: LargeDtype;
  /** FFN up-projection factor (code default 2.6667; the 7B HF config says 2.667). */
  readonly ffn_proj_factor: number;
  /** `ffn_dim` is rounded up to a multiple of this. */
  readonly ffn_round_up_to_multiple_of: number;
  /** Soft cap of the i/f gate pre-activations; `null`: none (the reference's `soft_cap` accepts `None`). */
  readonly gate_soft_cap: number | null;
  /** Soft cap of the output logits; `null`: none. */
  readonly output_logit_soft_cap: number | null;
  /** Separate (`single`) or fused projection weights. */
  readonly weight_mode: "single" | "fused";
  /** Derived (model): `int(embedding_dim × qk_dim_factor)`. */
  readonly qk_dim: number;
  /** Derived (model): `int(embedding_dim × v_dim_factor)`. */
  readonly v_dim: number;
  /** Derived (model): `qk_dim / num_heads` (DHQK). */
  readonly qk_head_dim: number;
  /** Derived (model): `v_dim / num_heads` (DHV). */
  readonly v_head_dim: number;
  /** Derived (model, FeedForward `up_proj_dim`): `embedding_dim × ffn_proj_factor` rounded up to the multiple. */
  readonly ffn_dim: number;
}

/** One block of a stack as the reference builds it (see {@linkcode blockConfigs}). */
export type BlockConfig =
  | { readonly kind: "mlstm"; readonly config: mLSTMBlockConfig }
  | { readonly kind: "slstm"; readonly config: sLSTMBlockConfig };

// ---------------------------------------------------------------------------------------------------------------
// Registries of allowed values

const BACKENDS = ["cuda", "vanilla"];
/** sLSTM pointwise functions and their state counts (the reference's `rnn_function_registry`). */
const NUM_STATES: Readonly<Record<string, number>> = { slstm: 4, lstm: 2 };
const BIAS_INITS = ["powerlaw_blockdependent", "small_init", "standard", "zeros"];
const RECURRENT_INITS = ["zeros", "standard"];
const ACT_FNS = ["gelu", "relu", "relu^2", "sigmoid", "swish", "selu"];
const SLSTM_DTYPES = ["bfloat16", "float16", "float32"];
const LARGE_DTYPES = ["float32", "bfloat16", "float16", "float64"];
const CHUNKWISE_KERNELS = [
  ..."native_autograd native_custbw triton_limit_chunk triton_xl_chunk triton_xl_chunk_siging"
    .split(" ").map((k) => `chunkwise--${k}`),
  ...("native_autograd native_custbw native_stablef_autograd native_stablef_custbw triton_limit_headdim " +
    "native_siging_autograd native_siging_custbw").split(" ").map((k) => `parallel--${k}`),
];

// ---------------------------------------------------------------------------------------------------------------
// Field tables: one spec per dataclass field drives defaults, type checks and value checks

type FieldType = "int" | "float" | "bool" | "str" | "mapping" | "floats" | "indices";

interface Field {
  readonly type: FieldType;
  /** Value when the key is absent; `undefined` makes the key required. */
  readonly default: unknown;
  readonly nullable?: boolean;
  readonly oneOf?: readonly string[];
  readonly min?: number;
  readonly max?: number;
  /** Placeholder allowed outside [min, max]: -1 means "not set yet; the enclosing config sets it". */
  readonly unset?: number;
}

type Schema = Readonly<Record<string, Field>>;

const TYPES: Readonly<Record<FieldType, readonly [(v: unknown) => boolean, string]>> = {
  int: [(v) => Number.isInteger(v), "an integer"],
  float: [(v) => typeof v === "number" && Number.isFinite(v), "a finite number"],
  bool: [(v) => typeof v === "boolean", "a boolean"],
  str: [(v) => typeof v === "string", "a string"],
  mapping: [isMapping, "a mapping"],
  floats: [
    (v) => typeof v === "number" || (Array.isArray(v) && v.every((x) => typeof x === "number")),
    "a number or a list of numbers",
  ],
  indices: [
    (v) => v === "all" || (Array.isArray(v) && v.every(Number.isInteger)),
    'a list of integer block indices or "all"',
  ],
};

const NULLABLE = { nullable: true } as const;
const DIM = { min: 1, unset: -1 } as const;
const PROB = { min: 0, max: 1 } as const;

const int = (d: number | null | undefined, o: Partial<Field> = {}): Field => ({ type: "int", default: d, ...o });
const float = (d: number | null, o: Partial<Field> = {}): Field => ({ type: "float", default: d, ...o });
const bool = (d: boolean): Field => ({ type: "bool", default: d });
const str = (d: string | null, oneOf?: readonly string[], o: Partial<Field> = {}): Field => ({
  type: "str",
  default: d,
  oneOf,
  ...o,
});
/** A nested config (resolved by its own resolver) or a plain dict. */
const mapping = (d: object | null, nullable = d === null): Field => ({ type: "mapping", default: d, nullable });
/** A derived field: accepted in input (the reference's dicts may carry it) and always recomputed. */
const derived = (type: FieldType): Field => ({ type, default: null, nullable: true });

/** `UpProjConfigMixin` fields; subclasses only change the `proj_factor` default. */
const upProj = (projFactor: number): Schema => ({
  proj_factor: float(projFactor),
  round_proj_up_dim_up: bool(true),
  round_proj_up_to_multiple_of: int(64, { min: 1 }),
  _proj_up_dim: derived("int"),
});

const MLSTM_LAYER: Schema = {
  ...upProj(2.0),
  conv1d_kernel_size: int(4, { min: 1 }),
  qkv_proj_blocksize: int(4, { min: 1 }),
  num_heads: int(4, { min: 1 }),
  embedding_dim: int(-1, DIM),
  bias: bool(false),
  dropout: float(0, PROB),
  context_length: int(-1, DIM),
  _num_blocks: int(1, NULLABLE),
  _inner_embedding_dim: derived("int"),
};

const SLSTM_CELL: Schema = {
  hidden_size: int(-1, DIM),
  num_heads: int(4),
  num_states: int(4),
  backend: str("cuda", BACKENDS),
  function: str("slstm", Object.keys(NUM_STATES)),
  bias_init: str("powerlaw_blockdependent", BIAS_INITS),
  recurrent_weight_init: str("zeros", RECURRENT_INITS),
  _block_idx: int(0, NULLABLE),
  _num_blocks: int(1, NULLABLE),
  num_gates: int(4),
  gradient_recurrent_cut: bool(false),
  gradient_recurrent_clipval: float(null, NULLABLE),
  forward_clipval: float(null, NULLABLE),
  batch_size: int(8),
  input_shape: str("BSGNH", ["BSGNH", "SBGNH"]),
  internal_input_shape: str("SBNGH", ["SBNGH", "SBGNH", "SBNHG"]),
  output_shape: str("BNSH", ["BNSH", "SBH", "BSH", "SBNH"]),
  constants: mapping({}),
  dtype: str("bfloat16", SLSTM_DTYPES),
  dtype_b: str("float32", SLSTM_DTYPES, NULLABLE),
  dtype_r: str(null, SLSTM_DTYPES, NULLABLE),
  dtype_w: str(null, SLSTM_DTYPES, NULLABLE),
  dtype_g: str(null, SLSTM_DTYPES, NULLABLE),
  dtype_s: str(null, SLSTM_DTYPES, NULLABLE),
  dtype_a: str(null, SLSTM_DTYPES, NULLABLE),
  enable_automatic_mixed_precision: bool(true),
  initial_val: { type: "floats", default: 0 },
};

const SLSTM_LAYER: Schema = {
  ...SLSTM_CELL,
  embedding_dim: int(-1, DIM),
  conv1d_kernel_size: int(4, { min: 0 }),
  group_norm_weight: bool(true),
  dropout: float(0, PROB),
};

const FEEDFORWARD: Schema = {
  ...upProj(1.3),
  act_fn: str("gelu", ACT_FNS),
  embedding_dim: int(-1, DIM),
  dropout: float(0, PROB),
  bias: bool(false),
  ff_type: str("ffn_gated", ["ffn_gated"]),
  _num_blocks: int(1, NULLABLE),
};

const MLSTM_BLOCK: Schema = { mlstm: mapping({}), _num_blocks: int(null, NULLABLE), _block_idx: int(null, NULLABLE) };

const SLSTM_BLOCK: Schema = {
  slstm: mapping({}),
  feedforward: mapping({}, true),
  _num_blocks: int(null, NULLABLE),
  _block_idx: int(null, NULLABLE),
};

const STACK: Schema = {
  mlstm_block: mapping(null),
  slstm_block: mapping(null),
  context_length: int(-1, DIM),
  num_blocks: int(1, { min: 1 }),
  embedding_dim: int(128, { min: 1 }),
  add_post_blocks_norm: bool(true),
  bias: bool(false),
  dropout: float(0, PROB),
  slstm_at: { type: "indices", default: [] },
  _block_map: str(null, undefined, NULLABLE),
};

const LM_MODEL: Schema = {
  ...STACK,
  vocab_size: int(-1, { min: 1 }),
  tie_weights: bool(false),
  weight_decay_on_embedding: bool(false),
  add_embedding_dropout: bool(false),
};

const LARGE: Schema = {
  embedding_dim: int(undefined, { min: 1 }),
  num_heads: int(undefined, { min: 1 }),
  num_blocks: int(undefined, { min: 1 }),
  vocab_size: int(undefined, { min: 1 }),
  use_bias: bool(false),
  norm_eps: float(1e-6),
  norm_reduction_force_float32: bool(true),
  add_out_norm: bool(true),
  qk_dim_factor: float(0.5),
  v_dim_factor: float(1.0),
  chunkwise_kernel: str("chunkwise--triton_limit_chunk", CHUNKWISE_KERNELS),
  sequence_kernel: str("native_sequence__triton", ["native_sequence__native", "native_sequence__triton"]),
  step_kernel: str("triton", ["native", "triton"]),
  mode: str("train", ["train", "train_with_padding", "inference"]),
  chunk_size: int(64, { min: 1 }),
  return_last_states: bool(false),
  autocast_kernel_dtype: str("bfloat16", LARGE_DTYPES),
  eps: float(1e-6),
  inference_state_dtype: str("float32", LARGE_DTYPES),
  ffn_proj_factor: float(2.6667),
  ffn_round_up_to_multiple_of: int(64, { min: 1 }),
  gate_soft_cap: float(15.0, NULLABLE),
  output_logit_soft_cap: float(30.0, NULLABLE),
  weight_mode: str("single", ["single", "fused"]),
  qk_dim: derived("int"),
  v_dim: derived("int"),
  qk_head_dim: derived("int"),
  v_head_dim: derived("int"),
  ffn_dim: derived("int"),
};

// ---------------------------------------------------------------------------------------------------------------
// Table-driven validation

function isMapping(v: unknown): v is Record<string, unknown> {
  if (v === null || typeof v !== "object" || Array.isArray(v)) return false;
  const proto = Object.getPrototypeOf(v);
  return proto === Object.prototype || proto === null;
}

function show(v: unknown): string {
  const json = typeof v === "number" ? String(v) : JSON.stringify(v); // String: JSON writes NaN as null
  if (json === undefined) return String(v);
  return json.length > 60 ? `${json.slice(0, 57)}...` : json;
}

const join = (path: string, key: string): string => (path ? `${path}.${key}` : key);

function rule(ok: boolean, path: string, message: string): void {
  if (!ok) throw new ConfigError(path, message);
}

function checkField(field: Field, value: unknown, path: string): void {
  const [test, expected] = TYPES[field.type];
  if (value === null) {
    rule(field.nullable === true, path, `must not be null; expected ${expected}`);
    return;
  }
  rule(test(value), path, `expected ${expected}, got ${show(value)}`);
  if (field.oneOf) {
    rule(
      field.oneOf.includes(value as string),
      path,
      `must be one of ${field.oneOf.map(show).join(", ")}; got ${show(value)}`,
    );
  }
  if (typeof value === "number" && value !== field.unset) {
    const { min, max, unset } = field;
    const bounds = [min !== undefined && `>= ${min}`, max !== undefined && `<= ${max}`].filter(Boolean).join(" and ");
    const placeholder = unset === undefined ? "" : `, or ${unset} (not set; the enclosing config sets it)`;
    rule(
      (min ?? -Infinity) <= value && value <= (max ?? Infinity),
      path,
      `must be ${bounds}${placeholder}; got ${value}`,
    );
  }
}

/** Validates `raw` against `schema` and returns a fresh object holding every field (defaults filled in). */
function fill(schema: Schema, raw: unknown, path: string): Record<string, unknown> {
  if (!isMapping(raw)) throw new ConfigError(path, `expected a mapping of config fields, got ${show(raw)}`);
  for (const key of Object.keys(raw)) {
    rule(Object.hasOwn(schema, key), join(path, key), `unknown key; allowed keys: ${Object.keys(schema).join(", ")}`);
  }
  const out: Record<string, unknown> = {};
  for (const [key, field] of Object.entries(schema)) {
    const value = raw[key] === undefined ? field.default : raw[key];
    rule(value !== undefined, join(path, key), "required key is missing");
    checkField(field, value, join(path, key));
    // copy nested values so that neither the caller's input nor the shared defaults are aliased
    out[key] = typeof value === "object" && value !== null ? structuredClone(value) : value;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------------
// Post-init chain. Each resolver validates its input, applies the overrides an enclosing config writes into it
// (the reference mutates nested configs, then re-runs their __post_init__), and derives its fields.

type Mutable<T> = { -readonly [K in keyof T]: T[K] };

/** What an enclosing config writes into a block config: its own fields, and fields of its layer config. */
interface BlockOverrides<L> {
  readonly _num_blocks?: number | null;
  readonly _block_idx?: number | null;
  readonly layer?: Partial<L>;
}

/** `UpProjConfigMixin._set_proj_up_dim`. */
function projUpDim(
  c: Pick<FeedForwardConfig, "proj_factor" | "round_proj_up_dim_up" | "round_proj_up_to_multiple_of">,
  embeddingDim: number,
): number {
  const multiples = (c.proj_factor * embeddingDim) / c.round_proj_up_to_multiple_of;
  const rounded = c.round_proj_up_dim_up ? Math.ceil(multiples) : Math.floor(multiples);
  return rounded * c.round_proj_up_to_multiple_of + 0; // + 0: ceil of a small negative gives -0; Python's int gives 0
}

/** Python's float `a // b` for b > 0 (fmod-based and exact, where Math.floor(a / b) can round up). */
function floorDivPy(a: number, b: number): number {
  const mod = a % b;
  const div = (a - mod) / b - (mod < 0 ? 1 : 0);
  const floor = Math.floor(div);
  return div - floor > 0.5 ? floor + 1 : floor;
}

function upProjText(c: Pick<FeedForwardConfig, "proj_factor" | "round_proj_up_to_multiple_of">, e: number): string {
  return `proj_factor ${c.proj_factor} × embedding_dim ${e}, rounded to a multiple of ${c.round_proj_up_to_multiple_of}`;
}

function resolveMlstmLayer(
  raw: unknown,
  path: string,
  over: Partial<mLSTMLayerConfig>,
  dims: boolean,
): mLSTMLayerConfig {
  const c = { ...fill(MLSTM_LAYER, raw, path), ...over } as Mutable<mLSTMLayerConfig>;
  c._proj_up_dim = projUpDim(c, c.embedding_dim);
  c._inner_embedding_dim = c._proj_up_dim;
  const d = c._inner_embedding_dim;
  if (dims && c.embedding_dim > 0) {
    const how = `_inner_embedding_dim = ${d} (${upProjText(c, c.embedding_dim)})`;
    rule(d >= 1, join(path, "proj_factor"), `must give ${how} >= 1`);
    rule(d % c.num_heads === 0, join(path, "num_heads"), `must divide ${how}; got ${c.num_heads}`);
    rule(
      d % c.qkv_proj_blocksize === 0,
      join(path, "qkv_proj_blocksize"),
      `must divide ${how}; got ${c.qkv_proj_blocksize}`,
    );
  }
  return c;
}

/**
 * `sLSTMCellConfig.__post_init__` (preceded by `hidden_size = embedding_dim` for the layer schema) plus the shape
 * rules the reference's cell enforces at construction. With the cell schema the layer-only fields are absent.
 */
function resolveSlstm(
  schema: typeof SLSTM_CELL | typeof SLSTM_LAYER,
  raw: unknown,
  path: string,
  over: Partial<sLSTMLayerConfig>,
  dims: boolean,
): sLSTMLayerConfig {
  const c = { ...fill(schema, raw, path), ...over } as Mutable<sLSTMLayerConfig>;
  const isLayer = schema === SLSTM_LAYER;
  if (isLayer) c.hidden_size = c.embedding_dim;
  if (c.num_heads <= 0) c.num_heads = 1;
  c.dtype_b ??= c.dtype;
  c.dtype_a ??= c.dtype_b;
  c.dtype_r ??= c.dtype;
  c.dtype_w ??= c.dtype;
  c.dtype_s ??= c.dtype_w;
  c.dtype_g ??= c.dtype_r;
  c.num_states = NUM_STATES[c.function];
  const size = isLayer ? `embedding_dim = ${c.hidden_size}` : `hidden_size = ${c.hidden_size}`;
  if (dims && c.hidden_size > 0) {
    rule(c.hidden_size % c.num_heads === 0, join(path, "num_heads"), `must divide ${size}; got ${c.num_heads}`);
    rule(
      !(c.bias_init === "powerlaw_blockdependent" && c.hidden_size === c.num_heads),
      join(path, "bias_init"),
      `"powerlaw_blockdependent" needs a head dim of at least 2, but ${size} with num_heads ${c.num_heads} gives 1 ` +
        `(the reference then computes 0/0 = NaN forget-gate biases); use "small_init", "standard" or "zeros", ` +
        `or fewer heads`,
    );
  }
  return c;
}

function resolveFeedForward(
  raw: unknown,
  path: string,
  over: Partial<FeedForwardConfig>,
  dims: boolean,
): FeedForwardConfig {
  const c = { ...fill(FEEDFORWARD, raw, path), ...over } as Mutable<FeedForwardConfig>;
  c._proj_up_dim = projUpDim(c, c.embedding_dim);
  if (dims && c.embedding_dim > 0) {
    rule(
      c._proj_up_dim >= 1,
      join(path, "proj_factor"),
      `must give _proj_up_dim = ${c._proj_up_dim} (${upProjText(c, c.embedding_dim)}) >= 1`,
    );
  }
  return c;
}

function resolveMlstmBlock(
  raw: unknown,
  path: string,
  over: BlockOverrides<mLSTMLayerConfig>,
  dims: boolean,
): mLSTMBlockConfig {
  const { layer, ...own } = over;
  const b = { ...fill(MLSTM_BLOCK, raw, path), ...own } as Mutable<mLSTMBlockConfig>;
  b.mlstm = resolveMlstmLayer(b.mlstm, join(path, "mlstm"), { ...layer, _num_blocks: b._num_blocks }, dims);
  return b;
}

function resolveSlstmBlock(
  raw: unknown,
  path: string,
  over: BlockOverrides<sLSTMLayerConfig>,
  dims: boolean,
  feedforward: Partial<FeedForwardConfig> = {},
): sLSTMBlockConfig {
  const { layer, ...own } = over;
  const b = { ...fill(SLSTM_BLOCK, raw, path), ...own } as Mutable<sLSTMBlockConfig>;
  const blockFields = { _block_idx: b._block_idx, _num_blocks: b._num_blocks };
  b.slstm = resolveSlstm(SLSTM_LAYER, b.slstm, join(path, "slstm"), { ...layer, ...blockFields }, dims);
  // sLSTMBlockConfig re-runs the FFN post-init without giving it a width: only the built block does (blockConfigs)
  if (b.feedforward !== null) {
    b.feedforward = resolveFeedForward(b.feedforward, join(path, "feedforward"), feedforward, dims);
  }
  return b;
}

/** `xLSTMBlockStackConfig.__post_init__`, for the stack and for the LM config (which only adds plain fields). */
function resolveStack(schema: Schema, raw: unknown): xLSTMBlockStackConfig {
  const c = fill(schema, raw, "") as Mutable<xLSTMBlockStackConfig> & { slstm_at: readonly number[] | "all" };
  const n = c.num_blocks;
  // without an mLSTM template every block is an sLSTM block, whatever slstm_at says
  const at = c.mlstm_block === null ? "all" : c.slstm_at;
  const slstmAt = at === "all" ? Array.from({ length: n }, (_, i) => i) : at;
  slstmAt.forEach((idx, i) => {
    rule(0 <= idx && idx < n, `slstm_at[${i}]`, `block index must be in 0..${n - 1} (num_blocks = ${n}); got ${idx}`);
  });
  const map = Array.from({ length: n }, (_, i) => (slstmAt.includes(i) ? 1 : 0));
  rule(
    c.slstm_block !== null || !map.includes(1),
    "slstm_block",
    c.mlstm_block === null
      ? "is required when mlstm_block is absent (every block is then an sLSTM block)"
      : `is required: slstm_at places sLSTM blocks at ${show(slstmAt)}`,
  );
  // dims are checked only for templates that are used, as the reference only fails when it builds a block
  if (c.mlstm_block !== null) {
    const layer = {
      embedding_dim: c.embedding_dim,
      bias: c.bias,
      dropout: c.dropout,
      context_length: c.context_length,
    };
    c.mlstm_block = resolveMlstmBlock(c.mlstm_block, "mlstm_block", { _num_blocks: n, layer }, map.includes(0));
  }
  if (c.slstm_block !== null) {
    // the stack's bias never reaches the sLSTM layer (it has no bias field), nor bias/dropout the FFN
    const layer = { dropout: c.dropout, embedding_dim: c.embedding_dim };
    c.slstm_block = resolveSlstmBlock(c.slstm_block, "slstm_block", { _num_blocks: n, layer }, map.includes(1));
  }
  c.slstm_at = slstmAt;
  c._block_map = map.join(",");
  return c;
}

function resolveLarge(raw: unknown): xLSTMLargeConfig {
  const c = fill(LARGE, raw, "") as Mutable<xLSTMLargeConfig>;
  const e = c.embedding_dim;
  const m = c.ffn_round_up_to_multiple_of;
  c.qk_dim = Math.trunc(e * c.qk_dim_factor);
  c.v_dim = Math.trunc(e * c.v_dim_factor);
  c.ffn_dim = Math.trunc(floorDivPy(e * c.ffn_proj_factor + m - 1, m) * m);
  rule(
    c.qk_dim >= 1,
    "qk_dim_factor",
    `must give qk_dim = int(embedding_dim ${e} × ${c.qk_dim_factor}) >= 1; got ${c.qk_dim}`,
  );
  rule(
    c.v_dim >= 1,
    "v_dim_factor",
    `must give v_dim = int(embedding_dim ${e} × ${c.v_dim_factor}) >= 1; got ${c.v_dim}`,
  );
  rule(c.ffn_dim >= 1, "ffn_proj_factor", `must give ffn_dim >= 1; got ${c.ffn_dim}`);
  rule(
    c.qk_dim % c.num_heads === 0,
    "num_heads",
    `must divide qk_dim = ${c.qk_dim} (embedding_dim × qk_dim_factor); got ${c.num_heads}`,
  );
  rule(
    c.v_dim % c.num_heads === 0,
    "num_heads",
    `must divide v_dim = ${c.v_dim} (embedding_dim × v_dim_factor); got ${c.num_heads}`,
  );
  c.qk_head_dim = c.qk_dim / c.num_heads;
  c.v_head_dim = c.v_dim / c.num_heads;
  // mLSTMBackendConfig.__post_init__ (mlstm_kernels), which the reference model constructs from this config
  rule(
    !(c.return_last_states && c.chunkwise_kernel.startsWith("parallel--")),
    "return_last_states",
    `must be false with a parallel kernel (chunkwise_kernel = ${show(c.chunkwise_kernel)})`,
  );
  rule(
    !(c.return_last_states && c.mode === "train_with_padding"),
    "return_last_states",
    'must be false with mode "train_with_padding"',
  );
  return c;
}

// ---------------------------------------------------------------------------------------------------------------
// Public factories

function source(input: unknown): unknown {
  return typeof input === "string" ? parseDocument(input, "the config string") : input;
}

function parseDocument(text: string, origin: string): Record<string, unknown> {
  let doc: unknown;
  try {
    doc = parseYaml(text);
  } catch (e) {
    throw new ConfigError("", `${origin} is not valid YAML or JSON: ${(e as Error).message}`);
  }
  if (!isMapping(doc)) throw new ConfigError("", `${origin} must hold a mapping of config fields, got ${show(doc)}`);
  return doc;
}

function deepFreeze<T>(value: T): T {
  if (typeof value === "object" && value !== null) {
    Object.values(value).forEach(deepFreeze);
    Object.freeze(value);
  }
  return value;
}

/**
 * Resolves an `mLSTMLayerConfig`: defaults, then `_proj_up_dim` and `_inner_embedding_dim`.
 *
 * @param input the reference's dict fields (or a YAML/JSON string of them); absent fields take the defaults.
 * @returns a new, frozen config.
 * @throws {ConfigError} for unknown keys, wrong types or dims that do not divide.
 * @example
 * ```ts
 * import { mLSTMLayerConfig } from "@xlstm/core";
 * const cfg = mLSTMLayerConfig({ embedding_dim: 16, proj_factor: 2 });
 * console.log(cfg._inner_embedding_dim); // 64: rounded up to a multiple of 64
 * ```
 */
export function mLSTMLayerConfig(input: unknown = {}): mLSTMLayerConfig {
  return deepFreeze(resolveMlstmLayer(source(input), "", {}, true));
}

/**
 * Resolves an `mLSTMBlockConfig`. As in the reference, the block copies its `_num_blocks` (default `null`) into the
 * layer config; a stack overwrites both.
 *
 * @param input the reference's dict fields (or a YAML/JSON string); `mlstm: {}` means a default layer.
 * @returns a new, frozen config.
 * @throws {ConfigError} for invalid fields, with the key path (e.g. `mlstm.num_heads`).
 */
export function mLSTMBlockConfig(input: unknown = {}): mLSTMBlockConfig {
  return deepFreeze(resolveMlstmBlock(source(input), "", {}, true));
}

/**
 * Resolves an `sLSTMCellConfig`: `num_heads <= 0` becomes 1, the `dtype_*` fields default along the reference's
 * chain (`dtype_b ← dtype`, `dtype_a ← dtype_b`, `dtype_r`/`dtype_w ← dtype`, `dtype_s ← dtype_w`,
 * `dtype_g ← dtype_r`), and `num_states` comes from `function`.
 *
 * @param input the reference's dict fields (or a YAML/JSON string).
 * @returns a new, frozen config.
 * @throws {ConfigError} for invalid fields, e.g. `num_heads` not dividing `hidden_size`.
 */
export function sLSTMCellConfig(input: unknown = {}): sLSTMCellConfig {
  return deepFreeze(resolveSlstm(SLSTM_CELL, source(input), "", {}, true));
}

/**
 * Resolves an `sLSTMLayerConfig`: `hidden_size = embedding_dim`, then the cell post-init
 * (see {@linkcode sLSTMCellConfig}).
 *
 * @param input the reference's dict fields (or a YAML/JSON string).
 * @returns a new, frozen config.
 * @throws {ConfigError} for invalid fields, e.g. an unknown `backend`.
 * @example
 * ```ts
 * import { sLSTMLayerConfig } from "@xlstm/core";
 * const cfg = sLSTMLayerConfig({ embedding_dim: 32, num_heads: 4, backend: "vanilla" });
 * console.log(cfg.hidden_size, cfg.dtype_a); // 32 "float32"
 * ```
 */
export function sLSTMLayerConfig(input: unknown = {}): sLSTMLayerConfig {
  return deepFreeze(resolveSlstm(SLSTM_LAYER, source(input), "", {}, true));
}

/**
 * Resolves a `FeedForwardConfig`: `_proj_up_dim` from `proj_factor × embedding_dim`, rounded up (or down) to a
 * multiple of `round_proj_up_to_multiple_of`.
 *
 * @param input the reference's dict fields (or a YAML/JSON string).
 * @returns a new, frozen config.
 * @throws {ConfigError} for invalid fields, e.g. an unknown `act_fn`.
 * @example
 * ```ts
 * import { FeedForwardConfig } from "@xlstm/core";
 * console.log(FeedForwardConfig({ embedding_dim: 128, proj_factor: 1.3 })._proj_up_dim); // 192
 * ```
 */
export function FeedForwardConfig(input: unknown = {}): FeedForwardConfig {
  return deepFreeze(resolveFeedForward(source(input), "", {}, true));
}

/**
 * Resolves an `sLSTMBlockConfig`. As in the reference, the block copies `_block_idx` and `_num_blocks` (default
 * `null`) into the layer, and re-runs the feed-forward post-init without setting its `embedding_dim`: the FFN
 * width is only fixed when a stack builds the block (see {@linkcode blockConfigs}).
 *
 * @param input the reference's dict fields (or a YAML/JSON string); `feedforward: null` drops the FFN.
 * @returns a new, frozen config.
 * @throws {ConfigError} for invalid fields, with the key path (e.g. `slstm.backend`).
 */
export function sLSTMBlockConfig(input: unknown = {}): sLSTMBlockConfig {
  return deepFreeze(resolveSlstmBlock(source(input), "", {}, true));
}

/**
 * Resolves an `xLSTMBlockStackConfig`: without `mlstm_block`, `slstm_at` becomes `"all"`; `"all"` expands to every
 * index; the stack copies `embedding_dim`, `bias`, `dropout`, `context_length` and `num_blocks` into the mLSTM
 * template and `dropout`, `embedding_dim` and `num_blocks` into the sLSTM template (not `bias`; the FFN gets
 * nothing); then `_block_map`. The templates keep `_block_idx = null`; {@linkcode blockConfigs} gives the
 * per-block configs.
 *
 * @param input the reference's dict fields (or a YAML/JSON string). `mlstm_block: {}` / `slstm_block: {}` mean
 * default templates; absent or `null` means none.
 * @returns a new, frozen config.
 * @throws {ConfigError} for invalid fields, `slstm_at` indices outside `0..num_blocks-1`, or sLSTM blocks
 * without an `slstm_block`.
 * @example
 * ```ts
 * import { xLSTMBlockStackConfig } from "@xlstm/core";
 * const cfg = xLSTMBlockStackConfig(`
 * mlstm_block: {mlstm: {num_heads: 4}}
 * slstm_block: {slstm: {backend: vanilla, num_heads: 4}, feedforward: {proj_factor: 1.3}}
 * context_length: 256
 * num_blocks: 7
 * embedding_dim: 128
 * slstm_at: [1]
 * `);
 * console.log(cfg._block_map); // "0,1,0,0,0,0,0"
 * ```
 */
export function xLSTMBlockStackConfig(input: unknown = {}): xLSTMBlockStackConfig {
  return deepFreeze(resolveStack(STACK, source(input)));
}

/**
 * Resolves an `xLSTMLMModelConfig`: a stack config (see {@linkcode xLSTMBlockStackConfig}) plus the LM fields.
 *
 * @param input the reference's dict fields (or a YAML/JSON string); `vocab_size` is required in practice
 * (the reference default -1 is rejected).
 * @returns a new, frozen config.
 * @throws {ConfigError} for invalid fields.
 * @example
 * ```ts
 * import { xLSTMLMModelConfig } from "@xlstm/core";
 * const cfg = xLSTMLMModelConfig({ vocab_size: 50304, mlstm_block: {}, num_blocks: 2, context_length: 64 });
 * console.log(cfg._block_map, cfg.mlstm_block?.mlstm._inner_embedding_dim); // "0,0" 256
 * ```
 */
export function xLSTMLMModelConfig(input: unknown): xLSTMLMModelConfig {
  return deepFreeze(resolveStack(LM_MODEL, source(input)) as xLSTMLMModelConfig);
}

/**
 * Resolves an `xLSTMLargeConfig` (xLSTM 7B architecture). `embedding_dim`, `num_heads`, `num_blocks` and
 * `vocab_size` are required. Adds the dims the reference model derives at construction: `qk_dim`, `v_dim`,
 * `qk_head_dim`, `v_head_dim`, `ffn_dim`; these keys are accepted in input and recomputed, so a resolved config can
 * be fed back. Also applies the backend's rules (no `return_last_states` with a parallel kernel or with
 * `train_with_padding`).
 *
 * @param input the reference's dict fields (or a YAML/JSON string).
 * @returns a new, frozen config.
 * @throws {ConfigError} for invalid fields, e.g. `num_heads` not dividing `qk_dim`.
 * @example
 * ```ts
 * import { xLSTMLargeConfig } from "@xlstm/core";
 * const cfg = xLSTMLargeConfig({ embedding_dim: 4096, num_heads: 8, num_blocks: 32, vocab_size: 50304 });
 * console.log(cfg.qk_head_dim, cfg.v_head_dim, cfg.ffn_dim); // 256 512 10944
 * ```
 */
export function xLSTMLargeConfig(input: unknown): xLSTMLargeConfig {
  return deepFreeze(resolveLarge(source(input)));
}

/**
 * The per-block configs a stack really builds (`xLSTMBlockStack._create_blocks`): for each entry of `_block_map`,
 * a copy of the template with its true `_block_idx` (the powerlaw forget-gate init depends on it), re-resolved.
 * sLSTM blocks also get the step `xLSTMBlockConfig` applies when the block is built: the feed-forward takes
 * `embedding_dim` from the layer and `_num_blocks` from the block, which fixes its `_proj_up_dim`.
 *
 * @param stack a resolved stack or LM config.
 * @returns one frozen entry per block, in order.
 * @example
 * ```ts
 * import { blockConfigs, xLSTMBlockStackConfig } from "@xlstm/core";
 * const stack = xLSTMBlockStackConfig({ mlstm_block: {}, slstm_block: {}, num_blocks: 3, slstm_at: [1] });
 * const [, block1] = blockConfigs(stack);
 * if (block1.kind === "slstm") console.log(block1.config.slstm._block_idx, block1.config.feedforward?._proj_up_dim); // 1 192
 * ```
 */
export function blockConfigs(stack: xLSTMBlockStackConfig): BlockConfig[] {
  return stack._block_map.split(",").map((kind, idx): BlockConfig => {
    if (kind === "0") {
      return {
        kind: "mlstm",
        config: deepFreeze(resolveMlstmBlock(stack.mlstm_block, "mlstm_block", { _block_idx: idx }, true)),
      };
    }
    const t = stack.slstm_block;
    const feedforward = t ? { embedding_dim: t.slstm.embedding_dim, _num_blocks: t._num_blocks } : {};
    return {
      kind: "slstm",
      config: deepFreeze(resolveSlstmBlock(t, "slstm_block", { _block_idx: idx }, true, feedforward)),
    };
  });
}

/**
 * Reads a YAML or JSON file holding a config dict (JSON is read as YAML 1.2, of which it is a subset).
 *
 * @param path file path or URL.
 * @returns the parsed mapping, to pass to a factory (or to pick a section from, e.g. `model`).
 * @throws {ConfigError} when the file does not parse or does not hold a mapping.
 */
export async function readConfigFile(path: string | URL): Promise<Record<string, unknown>> {
  return parseDocument(await Deno.readTextFile(path), String(path));
}
