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
import { grid, Params } from "../gpu/runtime.ts";
import { formatShape } from "../host_tensor.ts";
import { expectShape, Tensor } from "../tensor.ts";

const KERNEL = { name: "norm_forward", code };
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
  /** Invocations per workgroup of the per-unit path (tests lower it to make the grid spill into y). */
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
}

/**
 * Normalises each group of `C / groups` contiguous channels of every row of `x [..., C]`, then applies the
 * per-channel affine `· (weightOffset + weight[c]) + bias[c]` over all C channels. A null `weight` means scale 1
 * (whatever `weightOffset`), a null `bias` means no shift. Statistics are computed in f32: a rough mean, then the
 * mean and biased variance about it (accurate when |mean| ≫ std). Returns a new `[..., C]` tensor.
 */
export function norm(x: Tensor, weight: Tensor | null, bias: Tensor | null, options: NormOptions): Tensor {
  const { kind, groups = 1, eps, weightOffset = 0 } = options;
  if (x.dtype !== "float32" || x.shape.length === 0) {
    throw new TypeError(`norm: x must be a float32 tensor [..., C], got ${x.dtype} ${formatShape(x.shape)}`);
  }
  const channels = x.shape[x.shape.length - 1];
  if (!Number.isInteger(groups) || groups < 1 || channels % groups !== 0) {
    throw new RangeError(`norm: ${groups} groups do not divide the ${channels} channels of x ${formatShape(x.shape)}`);
  }
  if (kind !== "layer" && kind !== "rms") throw new RangeError(`norm: kind must be "layer" or "rms", got ${kind}`);
  if (!(eps >= 0)) throw new RangeError(`norm: eps must be a non-negative number, got ${eps}`);
  if (weight) expectShape("norm weight", weight, [channels]);
  if (bias) expectShape("norm bias", bias, [channels]);
  const groupSize = channels / groups;
  const units = x.size / groupSize;
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
    ],
    new Params().u32(units).u32(groupSize).u32(groups).u32(kind === "layer" ? 1 : 0)
      .u32(weight ? 1 : 0).u32(bias ? 1 : 0).f32(eps).f32(weightOffset),
    grid(units, perUnit ? threads : 1, gpu.limits.maxComputeWorkgroupsPerDimension),
  );
  return out;
}
