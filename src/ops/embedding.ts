/**
 * Embedding lookup (PyTorch `nn.Embedding`), for vocabularies larger than one storage binding too.
 *
 * @module
 */

import code from "../../shaders/embedding_forward.wgsl" with { type: "text" };
import { grid, Params } from "../gpu/runtime.ts";
import { formatShape } from "../host_tensor.ts";
import { Tensor } from "../tensor.ts";

const KERNEL = { name: "embedding_forward", code };
const QUIET_NAN_BITS = 0x7fc00000;

/**
 * `out[..., e] = weight[ids[...], e]` for int32 `ids [...]` and `weight [V, E]`; returns a new `[..., E]` tensor.
 *
 * An id outside `[0, V)` yields a row of NaN (callers validate host ids; this keeps a bad id on the GPU from passing
 * for a real embedding). A weight larger than one storage binding (`gpu.maxBinding`, e.g. 50304 × 4096 f32 = 824 MB)
 * is looked up in vocabulary row ranges, one dispatch per range.
 */
export function embedding(ids: Tensor, weight: Tensor): Tensor {
  if (ids.dtype !== "int32") {
    throw new TypeError(`embedding: ids must be int32, got ${ids.dtype} ${formatShape(ids.shape)}`);
  }
  if (weight.dtype !== "float32" || weight.shape.length !== 2) {
    throw new RangeError(
      `embedding: weight must be a float32 [V, E] matrix, got ${weight.dtype} ${formatShape(weight.shape)}`,
    );
  }
  const [vocab, dim] = weight.shape;
  const gpu = ids.gpu;
  const out = Tensor.empty(gpu, [...ids.shape, dim]);
  if (out.size === 0) return out;
  if (vocab > 2 ** 31 - 1) throw new RangeError(`embedding: a vocabulary of ${vocab} rows exceeds int32 ids`);
  // Rows per range: a range's bytes plus the slack of aligning its start down must fit one binding.
  const align = gpu.limits.minStorageBufferOffsetAlignment;
  const rowBytes = dim * 4;
  const rowsPerRange = weight.bytes <= gpu.maxBinding ? vocab : Math.floor((gpu.maxBinding - align) / rowBytes);
  if (rowsPerRange < 1) {
    throw new RangeError(
      `embedding: one row of weight ${formatShape(weight.shape)} (${rowBytes} bytes) does not fit this adapter's ` +
        `storage binding limit of ${gpu.maxBinding} bytes`,
    );
  }
  const pipeline = gpu.pipeline(KERNEL);
  const idsRange = ids.binding("embedding ids"), outRange = out.binding("embedding out");
  for (let lo = 0; lo === 0 || lo < vocab; lo += rowsPerRange) {
    const hi = Math.min(vocab, lo + rowsPerRange);
    const start = lo * rowBytes, offset = Math.floor(start / align) * align;
    const size = Math.max(4, hi * rowBytes - offset);
    gpu.dispatch(
      pipeline,
      [idsRange, { buffer: weight.buffer, offset, size }, outRange],
      new Params().u32(out.size).u32(dim).u32(vocab).u32(lo).u32(hi).u32((start - offset) / 4)
        .u32(lo === 0 ? 1 : 0).u32(QUIET_NAN_BITS),
      grid(out.size, 256, gpu.limits.maxComputeWorkgroupsPerDimension),
    );
  }
  return out;
}
