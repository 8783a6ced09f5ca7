/**
 * Layer norm and RMS norm over channel groups, with a per-channel affine. One kernel serves every norm of both
 * architectures:
 *
 * | module | options |
 * | --- | --- |
 * | NeurIPS `LayerNorm` | `{ kind: "layer", eps: 1e-5, weightOffset: 1 }` (the stored weight is an offset: scale 1 + w) |
 * | NeurIPS `MultiHeadLayerNorm` | the same with `groups: NH` (group norm per head) |
 * | xlstm_large `RMSNorm` | `{ kind: "rms", eps: 1e-6 }` |
 * | xlstm_large `MultiHeadLayerNorm` | `{ kind: "layer", groups: NH, eps: 1e-6 }` |
 *
 * @module
 */

import code from "../../shaders/norm_forward.wgsl" with { type: "text" };
import backwardCode from "../../shaders/norm_backward.wgsl" with { type: "text" };
import { grid, Params } from "../gpu/runtime.ts";
import { formatShape } from "../host_tensor.ts";
import { expectShape, matrix, type MatrixView, Tensor } from "../tensor.ts";
import { sumRows } from "./reduce.ts";
import { accurateMath } from "./wgsl_math.ts";

const KERNEL = { name: "norm_forward", code: accurateMath("vec4f") + code };
const BACKWARD_KERNEL = { name: "norm_backward", code: backwardCode };
/** Per-invocation loop trips allowed, well below lavapipe's silent cut at 65,535. */
const MAX_TRIPS = 32768;
/**
 * When {@linkcode norm} gives each (row, group) unit one invocation that walks its channels (no barriers: on
 * lavapipe, where a barrier switches between SIMD batches, this is 5–15× faster at 1024 rows of 64–1024 channels)
 * instead of one cooperating workgroup per unit (for few long units, e.g. decoding one row of 4096 channels on a
 * GPU). Exported so tests can force either path.
 */
export const normPaths: { minUnits: number; maxUnitGroup: number; unitThreads: number } = {
  /** Fewest units for the per-unit path: with fewer, a GPU would sit mostly idle. */
  minUnits: 256,
  /**
   * Longest channel group for the per-unit path: on a GPU one invocation walking a long group serialises what a
   * workgroup would share (lavapipe would prefer the per-unit path even at 4096).
   */
  maxUnitGroup: 1024,
  /**
   * Invocations per workgroup of the per-unit path and of {@linkcode normBackward} (tests lower it to make the grid
   * spill into y).
   */
  unitThreads: 64,
};

/** Options of {@linkcode norm}. */
export interface NormOptions {
  /** `"layer"`: subtract the mean, divide by the biased standard deviation; `"rms"`: divide by the root mean square. */
  kind: "layer" | "rms";
  /** Contiguous channel groups per row, each normalised on its own (default 1); must divide the channel count. */
  groups?: number;
  /** Added to the variance (or mean square) before the square root. */
  eps: number;
  /** Scale is `weightOffset + weight[c]`: 1 for the NeurIPS residual-weight convention, 0 (default) otherwise. */
  weightOffset?: 0 | 1;
  /**
   * Output gate of {@linkcode norm} (forward only, for inference): the result is `sigmoid(o) ⊙ y`, `o` a view of
   * x's rows (of all C channels), e.g. the o columns of xlstm_large's fused projection. Saves the separate gate
   * kernel; not accepted by {@linkcode normBackward}.
   */
  outputGate?: MatrixView;
}

/**
 * Normalises each group of `C / groups` contiguous channels of every row of `x [..., C]`, then applies the
 * per-channel affine `· (weightOffset + weight[c]) + bias[c]` over all C channels. A null `weight` means scale 1
 * (whatever `weightOffset`), a null `bias` means no shift. Statistics are computed in f32: a rough mean, then the
 * mean and biased variance about it (accurate when |mean| ≫ std). Returns a new `[..., C]` tensor.
 */
export function norm(x: Tensor, weight: Tensor | null, bias: Tensor | null, options: NormOptions): Tensor {
  const { kind, groups, eps, weightOffset, groupSize, units } = checkOperands("norm", x, weight, bias, options);
  // Chunks of 4 channels; 3 passes (sum, centred sum, write) plus the masked tail chunk's lanes.
  const chunks = Math.ceil(groupSize / 4);
  const perUnit = units >= normPaths.minUnits && groupSize <= normPaths.maxUnitGroup && 3 * chunks + 3 <= MAX_TRIPS;
  const threads = perUnit ? normPaths.unitThreads : Math.min(256, 2 ** Math.ceil(Math.log2(Math.max(chunks, 32))));
  const trips = perUnit ? 3 * chunks + 3 : 3 * Math.ceil(chunks / threads) + 3 + 2 * Math.log2(threads);
  if (trips > MAX_TRIPS) {
    throw new RangeError(
      `norm: groups of ${groupSize} channels need ${trips} loop trips per thread, over ${MAX_TRIPS}`,
    );
  }

  const gpu = x.gpu;
  const gate = options.outputGate;
  if (gate) {
    checkView(gate, x.size / (groups * groupSize), groups * groupSize);
  }
  const out = Tensor.empty(gpu, x.shape);
  if (x.size === 0) return out;
  const input = x.binding("norm x");
  // Absent operands are skipped by the kernel, but every declared binding needs a buffer.
  const placeholder = x.range(0, 1);
  gpu.dispatch(
    gpu.pipeline(KERNEL, { WG: threads }, perUnit ? "per_unit" : "cooperative"),
    [
      input,
      weight?.binding("norm weight") ?? placeholder,
      bias?.binding("norm bias") ?? placeholder,
      out.binding("norm out"),
      gate ? gate.tensor.binding("norm output gate") : placeholder,
    ],
    new Params().u32(units).u32(groupSize).u32(groups).u32(kind === "layer" ? 1 : 0)
      .u32(weight ? 1 : 0).u32(bias ? 1 : 0).f32(eps).f32(weightOffset)
      .u32(gate ? 1 : 0).u32(gate?.offset ?? 0).u32(gate?.stride ?? 0),
    grid(units, perUnit ? threads : 1, gpu.limits.maxComputeWorkgroupsPerDimension),
  );
  return out;
}

/** Gradients returned by {@linkcode normBackward}. */
export interface NormGrads {
  /** Gradient of x, shaped like x. */
  dx: Tensor;
  /** Gradient of the stored weight `[C]` (the same for either `weightOffset`), or null without a weight. */
  dweight: Tensor | null;
  /** Gradient of the bias `[C]`, or null without a bias. */
  dbias: Tensor | null;
}

/**
 * Backward of {@linkcode norm}: given the output gradient `dy` (shaped like `x`) and the forward's operands, returns
 * new gradients of x, of the weight (when `weight` is given) and of the bias (when `bias` is given). The statistics
 * are recomputed from x. Per (row, group) unit, with x̂ the normalised input, r = 1 / std and g = dy · scale:
 * layer norm `dx = r · (g − mean(g) − x̂ · mean(g · x̂))`, RMS norm `dx = r · (g − x̂ · mean(g · x̂))`;
 * `dweight = Σ_rows dy · x̂` and `dbias = Σ_rows dy` (split column sums, {@linkcode sumRows}). One invocation per unit
 * walks its channels (groups of up to about 65k channels).
 */
export function normBackward(
  dy: Tensor,
  x: Tensor,
  weight: Tensor | null,
  bias: Tensor | null,
  options: NormOptions,
): NormGrads {
  const { kind, groups, eps, weightOffset, channels, groupSize, units } = checkOperands(
    "normBackward",
    x,
    weight,
    bias,
    options,
  );
  expectShape("normBackward dy", dy, x.shape);
  if (options.outputGate) throw new RangeError("normBackward: the outputGate option has no backward");
  if (dy.dtype !== "float32") throw new TypeError(`normBackward: dy must be float32, got ${dy.dtype}`);
  // Two passes over ceil(G / 4) chunks, plus the masked tail's lanes.
  const trips = 2 * Math.ceil(groupSize / 4) + 4;
  if (trips > MAX_TRIPS) {
    throw new RangeError(
      `normBackward: groups of ${groupSize} channels need ${trips} loop trips per thread, over ${MAX_TRIPS}`,
    );
  }

  const gpu = x.gpu;
  const dx = Tensor.empty(gpu, x.shape);
  if (x.size === 0) {
    const zeros = (p: Tensor | null) => p && Tensor.zeros(gpu, [channels]);
    return { dx, dweight: zeros(weight), dbias: zeros(bias) };
  }
  const dbias = bias ? sumRows(matrix(dy, channels)) : null;
  // dy · x̂ per element, summed over rows below; without a weight nothing is written and a stand-in is bound.
  const dyXhat = Tensor.empty(gpu, weight ? x.shape : [1]);
  const threads = normPaths.unitThreads;
  gpu.dispatch(
    gpu.pipeline(BACKWARD_KERNEL, { WG: threads }),
    [
      dy.binding("normBackward dy"),
      x.binding("normBackward x"),
      weight?.binding("normBackward weight") ?? x.range(0, 1),
      dx.binding("normBackward dx"),
      dyXhat.binding("normBackward dy·x̂"),
    ],
    new Params().u32(units).u32(groupSize).u32(groups).u32(kind === "layer" ? 1 : 0).u32(weight ? 1 : 0)
      .f32(eps).f32(weightOffset),
    grid(units, threads, gpu.limits.maxComputeWorkgroupsPerDimension),
  );
  const dweight = weight ? sumRows(matrix(dyXhat, channels)) : null;
  dyXhat.dispose(); // the recorded reduction still reads it; the pool hands it out only to later commands
  return { dx, dweight, dbias };
}

/** Throws unless the output gate view is `[rows, channels]` of float32 inside its tensor. */
function checkView(o: MatrixView, rows: number, channels: number): void {
  const end = o.offset + (rows - 1) * o.stride + channels;
  if (
    o.rows !== rows || o.cols !== channels || o.tensor.dtype !== "float32" || o.stride < channels ||
    o.offset < 0 || end > o.tensor.size
  ) {
    throw new RangeError(
      `norm: outputGate ${o.tensor.dtype} view [${o.rows}, ${o.cols}] (offset ${o.offset}, stride ${o.stride}) of ` +
        `${formatShape(o.tensor.shape)} must be float32 [${rows}, ${channels}] inside its tensor`,
    );
  }
}

/** Validates the operands shared by {@linkcode norm} and {@linkcode normBackward}; errors are prefixed with `op`. */
function checkOperands(
  op: string,
  x: Tensor,
  weight: Tensor | null,
  bias: Tensor | null,
  options: NormOptions,
): Required<Omit<NormOptions, "outputGate">> & { channels: number; groupSize: number; units: number } {
  const { kind, groups = 1, eps, weightOffset = 0 } = options;
  if (x.dtype !== "float32" || x.shape.length === 0) {
    throw new TypeError(`${op}: x must be a float32 tensor [..., C], got ${x.dtype} ${formatShape(x.shape)}`);
  }
  const channels = x.shape[x.shape.length - 1];
  if (!Number.isInteger(groups) || groups < 1 || channels % groups !== 0) {
    throw new RangeError(`${op}: ${groups} groups do not divide the ${channels} channels of x ${formatShape(x.shape)}`);
  }
  if (kind !== "layer" && kind !== "rms") throw new RangeError(`${op}: kind must be "layer" or "rms", got ${kind}`);
  if (!(eps >= 0)) throw new RangeError(`${op}: eps must be a non-negative number, got ${eps}`);
  if (weight) expectShape(`${op} weight`, weight, [channels]);
  if (bias) expectShape(`${op} bias`, bias, [channels]);
  const groupSize = channels / groups;
  return { kind, groups, eps, weightOffset, channels, groupSize, units: x.size / groupSize };
}
