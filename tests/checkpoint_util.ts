/**
 * Checkpoint test helpers: tiny models with random weights (every parameter matters), their logits, a temporary
 * directory per test, safetensors rewrites, and the sLSTM cuda layout written out from spec A5.4's index table
 * (independently of the library's permutation, so a test comparing the two can fail).
 */

import type { Gpu } from "../src/gpu/runtime.ts";
import { type HostTensor, numel, toFloat32 } from "../src/host_tensor.ts";
import type { PretrainedModel } from "../src/models/pretrained.ts";
import { xLSTMLarge } from "../src/models/xlstm_large.ts";
import { castHost, readSafetensors, writeSafetensors } from "../src/safetensors.ts";
import { Tensor } from "../src/tensor.ts";
import { host, type Rng } from "./util.ts";

/** An xLSTMLarge with every kind of parameter, tiny: E 16, 2 heads, 2 blocks, V 24, FFN 64. */
export const LARGE = { embedding_dim: 16, num_heads: 2, num_blocks: 2, vocab_size: 24, use_bias: true };

/** The same model as a Hugging Face config.json writes it, with fields the loader must ignore or map. */
export const LARGE_HF_CONFIG = {
  architectures: ["xLSTMForCausalLM"],
  model_type: "xlstm",
  hidden_size: 16,
  embedding_dim: null,
  num_hidden_layers: 2,
  num_heads: 2,
  vocab_size: 24,
  use_bias: true,
  ffn_proj_factor: 2.6667,
  chunkwise_kernel: "chunkwise--triton_xl_chunk",
  step_kernel: "triton",
  cell_norm_eps: 1e-6,
  head_dim: 8,
  bos_token_id: 0,
  torch_dtype: "float32",
};

/** A NeurIPS xLSTMLMModel: an mLSTM block, then an sLSTM block (2 heads of 8) with its FFN; V 20. */
export function lmConfig(backend: "vanilla" | "cuda", tie = false): Record<string, unknown> {
  return {
    mlstm_block: { mlstm: { num_heads: 2, conv1d_kernel_size: 2, qkv_proj_blocksize: 4 } },
    slstm_block: { slstm: { num_heads: 2, backend, conv1d_kernel_size: 2 }, feedforward: { proj_factor: 1.3 } },
    context_length: 8,
    num_blocks: 2,
    embedding_dim: 16,
    slstm_at: [1],
    vocab_size: 20,
    tie_weights: tie,
  };
}

/** Sets every parameter to N(0, 0.3²) values (tied names share theirs). */
export async function randomize(model: PretrainedModel, rng: Rng): Promise<void> {
  const record: Record<string, HostTensor> = {};
  const byTensor = new Map<Tensor, HostTensor>();
  const tensors = new Map(model.namedParameters());
  for (const [key, shape] of model.stateDictShapes()) {
    const t = tensors.get(key)!;
    if (!byTensor.has(t)) byTensor.set(t, host(shape, rng.normals(numel(shape), 0.3)));
    record[key] = byTensor.get(t)!;
  }
  await model.loadStateDict(record);
}

/** Token ids `[2, 5]` inside `vocab`. */
export function tokenIds(vocab: number): HostTensor {
  return { dtype: "int32", shape: [2, 5], data: Int32Array.from({ length: 10 }, (_, i) => (i * 7 + 3) % vocab) };
}

/** The model's logits for `ids`, read back. */
export async function logitsOf(gpu: Gpu, model: PretrainedModel, ids: HostTensor): Promise<Float32Array> {
  const input = Tensor.fromHost(gpu, ids);
  const out = await model.forward(input);
  const logits = Array.isArray(out) ? out[0] : out;
  const data = (await logits.toHost()).data as Float32Array;
  if (Array.isArray(out)) { for (const s of Object.values(out[1])) s.forEach((x) => x.dispose()); }
  logits.dispose();
  input.dispose();
  return data;
}

/**
 * The logits `model` gives with its parameters (those `round` selects; all by default) rounded to float16, computed
 * in a float32 copy: what a float16 checkpoint of it must reproduce exactly (or, with float16 weights on the GPU,
 * up to f32 summation order).
 */
export async function halfRoundedLogits(
  gpu: Gpu,
  model: xLSTMLarge,
  ids: HostTensor,
  round: (key: string) => boolean = () => true,
): Promise<Float32Array> {
  const rounded: Record<string, HostTensor> = {};
  for (const [k, t] of Object.entries(await model.stateDict())) {
    rounded[k] = round(k) ? { dtype: "float32", shape: t.shape, data: toFloat32(castHost(t, "float16")) } : t;
  }
  const copy = await xLSTMLarge.create(model.config, { gpu, initialize: false });
  try {
    await copy.loadStateDict(rounded);
    return await logitsOf(gpu, copy, ids);
  } finally {
    copy.dispose();
  }
}

/** Runs `fn` in a fresh temporary directory, removed afterwards. */
export async function inTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "xlstm_checkpoint_test_" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** Rewrites a safetensors file through `edit`. */
export async function rewrite(
  path: string,
  edit: (tensors: Record<string, HostTensor>) => Record<string, HostTensor>,
): Promise<void> {
  await writeSafetensors(path, edit(await readSafetensors(path)));
}

/** Vanilla recurrent kernel `[h][g·DH + o][i]` → cuda `[h][i][g·DH + o]` (spec A5.4). */
export function kernelToCuda(t: HostTensor, NH: number, DH: number): HostTensor {
  const src = t.data as Float32Array, out = new Float32Array(src.length);
  for (let h = 0; h < NH; h++) {
    for (let r = 0; r < 4 * DH; r++) {
      for (let i = 0; i < DH; i++) out[h * DH * 4 * DH + i * 4 * DH + r] = src[h * 4 * DH * DH + r * DH + i];
    }
  }
  return { dtype: "float32", shape: [NH, DH, 4 * DH], data: out };
}

/** Vanilla bias `[g·H + h·DH + d]` (gate-major) → cuda `[h·4DH + g·DH + d]` (head-major) (spec A5.4). */
export function biasToCuda(t: HostTensor, NH: number, DH: number): HostTensor {
  const src = t.data as Float32Array, out = new Float32Array(src.length);
  for (let g = 0; g < 4; g++) {
    for (let h = 0; h < NH; h++) {
      for (let d = 0; d < DH; d++) out[h * 4 * DH + g * DH + d] = src[g * NH * DH + h * DH + d];
    }
  }
  return { dtype: "float32", shape: [...t.shape], data: out };
}

/** The sLSTM cell keys of {@linkcode lmConfig}'s block 1 (2 heads of 8). */
export const CELL = {
  kernel: "xlstm_block_stack.blocks.1.xlstm.slstm_cell._recurrent_kernel_",
  bias: "xlstm_block_stack.blocks.1.xlstm.slstm_cell._bias_",
  NH: 2,
  DH: 8,
};
