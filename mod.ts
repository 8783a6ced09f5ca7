/**
 * # @xlstm/core
 *
 * xLSTM — the sLSTM + mLSTM recurrent architecture of Beck et al. (NeurIPS 2024) — in TypeScript, with every
 * kernel in WGSL on WebGPU: any GPU Deno can reach, no native build step. Configs take the PyTorch reference's
 * (NX-AI/xlstm) YAML/dict fields verbatim, parameters carry its state_dict names, and outputs match it.
 *
 * @example The reference README's block stack
 * ```ts
 * import { Tensor, xLSTMBlockStack, xLSTMBlockStackConfig } from "@xlstm/core";
 *
 * const cfg = xLSTMBlockStackConfig(`
 * mlstm_block:
 *   mlstm: { conv1d_kernel_size: 4, qkv_proj_blocksize: 4, num_heads: 4 }
 * slstm_block:
 *   slstm: { backend: cuda, num_heads: 4, conv1d_kernel_size: 4, bias_init: powerlaw_blockdependent }
 *   feedforward: { proj_factor: 1.3, act_fn: gelu }
 * context_length: 256
 * num_blocks: 7
 * embedding_dim: 128
 * slstm_at: [1]
 * `);
 * const stack = await xLSTMBlockStack.create(cfg);
 * const x = await Tensor.from({ dtype: "float32", shape: [4, 256, 128], data: new Float32Array(4 * 256 * 128) });
 * const y = await stack.forward(x);
 * console.log(y.shape); // [4, 256, 128]
 * stack.dispose();
 * ```
 *
 * @module
 */

export * from "./src/config.ts";
export { type BackwardFn, GradNode, type InputGrad, isGradEnabled, noGrad, type PartialGrad } from "./src/autograd.ts";
export {
  type AdapterSource,
  createGpu,
  getGpu,
  GpuUnavailableError,
  NO_ADAPTER_HELP,
  releaseGpu,
} from "./src/gpu/device.ts";
export { type BufferRange, Gpu, GpuError, type Kernel, Params, type Workgroups } from "./src/gpu/runtime.ts";
export { checkLoopLimit, type LoopLimitReport } from "./src/gpu/self_test.ts";
export {
  bf16ToNumber,
  f16ToNumber,
  type HostData,
  type HostDType,
  type HostTensor,
  numberToBf16,
  numberToF16,
  toFloat32,
  toInt32,
} from "./src/host_tensor.ts";
export { Rng } from "./src/random.ts";
export * from "./src/safetensors.ts";
export { columns, type DType, matrix, type MatrixView, Tensor, type TensorOptions, tidy } from "./src/tensor.ts";
export { type CreateOptions, Module } from "./src/models/module.ts";
export {
  type Init,
  inits,
  type Layout,
  type LoadOptions,
  ParameterStore,
  Scope,
  StateDictError,
  type WeightDType,
} from "./src/models/parameters.ts";
export { fuseXLSTMLargeStateDict, splitXLSTMLargeStateDict } from "./src/models/xlstm_large_weights.ts";
export {
  convertCheckpoint,
  loadPretrained,
  type LoadPretrainedOptions,
  type LoadProgress,
  type LoadReport,
  loadWeights,
  type PretrainedModel,
  type SaveOptions,
  savePretrained,
} from "./src/models/pretrained.ts";
export { CheckpointError } from "./src/models/checkpoint_reader.ts";
export type { WriteReport } from "./src/models/checkpoint_writer.ts";
export type { CheckpointArchitecture, CheckpointFormat, SlstmLayout } from "./src/models/checkpoint_format.ts";
export { mLSTMLayer, type mLSTMLayerState } from "./src/models/mlstm_layer.ts";
export { sLSTMLayer, type sLSTMLayerState } from "./src/models/slstm_layer.ts";
export { GatedFeedForward } from "./src/models/feedforward.ts";
export { xLSTMBlock, type xLSTMBlockState } from "./src/models/block.ts";
export { xLSTMBlockStack, type xLSTMBlockStackState } from "./src/models/block_stack.ts";
export { xLSTMLMModel } from "./src/models/lm_model.ts";
export * as functional from "./src/nn/functional.ts";
export * from "./src/optim/adamw.ts";
export * from "./src/optim/schedule.ts";
export * from "./src/data/parity.ts";
export * from "./src/data/mqar.ts";
export * from "./src/data/random.ts";
export { resolveInterpolations } from "./src/data/interpolate.ts";
export { xLSTMLarge, type xLSTMLargeGenerateOptions, type xLSTMLargeState } from "./src/models/xlstm_large.ts";
export * from "./src/train/trainer.ts";
export * from "./src/train/loop.ts";
export * from "./src/train/progress.ts";
export * from "./src/train/checkpoint.ts";
export {
  type Experiment,
  experiment,
  mergeConfig,
  readExperiment,
  type TaskSplit,
  type TrainingSettings,
} from "./src/train/experiment.ts";
export {
  type GenerateOptions,
  type GenerateResult,
  generateTokens,
  type GenerationCheckpoint,
  type GenerationTiming,
  type TokenChunk,
} from "./src/generate/generate.ts";
export {
  type Generatable,
  type GenerativeModel,
  generativeModel,
  mapState,
  releaseState,
  stateEntries,
  type StatefulForwardModel,
  type StepModel,
} from "./src/generate/model.ts";
export { loadGenerationState, saveGenerationState } from "./src/generate/state_file.ts";
export type { Sampling, SamplingParams } from "./src/ops/sample.ts";
