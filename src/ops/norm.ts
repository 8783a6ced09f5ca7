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
const MAX_THREADS = 256;
/** Per-invocation loop trips allowed, well below lavapipe's silent cut at 65,535. */
const MAX_TRIPS = 32768;

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
 * (whatever `weightOffset`), a null `bias` means no shift. Statistics are computed in f32, mean first and then the
 * biased variance. Returns a new `[..., C]` tensor.
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
  const threads = Math.min(MAX_THREADS, 2 ** Math.ceil(Math.log2(Math.max(groupSize, 32))));
  const trips = 3 * Math.ceil(groupSize / threads) + 2 * Math.log2(threads);
  if (trips > MAX_TRIPS) {
    throw new RangeError(
      `norm: groups of ${groupSize} channels need ${trips} loop trips per thread, over ${MAX_TRIPS}`,
    );
  }

  const gpu = x.gpu;
  const out = Tensor.empty(gpu, x.shape);
  const units = x.size / groupSize;
  if (units === 0) return out;
  const input = x.binding("norm x");
  // Absent operands are skipped by the kernel, but every declared binding needs a buffer.
  const placeholder = x.range(0, 1);
  gpu.dispatch(
    gpu.pipeline(KERNEL, { WG: threads }),
    [
      input,
      weight?.binding("norm weight") ?? placeholder,
      bias?.binding("norm bias") ?? placeholder,
      out.binding("norm out"),
    ],
    new Params().u32(units).u32(groupSize).u32(groups).u32(kind === "layer" ? 1 : 0)
      .u32(weight ? 1 : 0).u32(bias ? 1 : 0).f32(eps).f32(weightOffset),
    grid(units, 1, gpu.limits.maxComputeWorkgroupsPerDimension),
  );
  return out;
}
