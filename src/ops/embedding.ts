/**
 * Embedding lookup (PyTorch `nn.Embedding`), for vocabularies larger than one storage binding too, and its weight
 * gradient.
 *
 * @module
 */

import code from "../../shaders/embedding_forward.wgsl" with { type: "text" };
import backwardCode from "../../shaders/embedding_backward.wgsl" with { type: "text" };
import { type BufferRange, grid, type Kernel, Params } from "../gpu/runtime.ts";
import { formatShape } from "../host_tensor.ts";
import { type DType, elementBytes, expectShape, Tensor } from "../tensor.ts";

/** The lookup for each element type of the table: the shared source with the table's alias prepended. */
const KERNELS: Partial<Record<DType, Kernel>> = {
  float32: { name: "embedding_forward", code: "alias W = f32;\n" + code },
  float16: { name: "embedding_forward(f16)", code: "enable f16;\nalias W = f16;\n" + code },
};
const QUIET_NAN_BITS = 0x7fc00000;

/**
 * `out[..., e] = weight[ids[...], e]` for int32 `ids [...]` and `weight [V, E]`; returns a new float32 `[..., E]`
 * tensor. The weight is float32, or float16 on adapters with `shader-f16` (converted as it is read).
 *
 * An id outside `[0, V)` yields a row of NaN (callers validate host ids; this keeps a bad id on the GPU from passing
 * for a real embedding). A weight larger than one storage binding (`gpu.maxBinding`, e.g. 50304 × 4096 f32 = 824 MB)
 * is looked up in vocabulary row ranges, one dispatch per range; an output larger than one binding (a 16k-token
 * prefill at E 4096: 268 MB) is written in ranges of positions, each looked up in every vocabulary range.
 */
export function embedding(ids: Tensor, weight: Tensor): Tensor {
  if (ids.dtype !== "int32") {
    throw new TypeError(`embedding: ids must be int32, got ${ids.dtype} ${formatShape(ids.shape)}`);
  }
  if (weight.dtype === "int32" || weight.shape.length !== 2) {
    throw new RangeError(
      `embedding: weight must be a float32 or float16 [V, E] matrix, got ${weight.dtype} ${formatShape(weight.shape)}`,
    );
  }
  const [vocab, dim] = weight.shape;
  const gpu = ids.gpu;
  if (weight.dtype === "float16" && !gpu.hasF16) {
    throw new TypeError(
      `embedding: weight ${formatShape(weight.shape)} is float16, but this adapter lacks the WebGPU feature ` +
        `"shader-f16"; use a float32 weight`,
    );
  }
  const out = Tensor.empty(gpu, [...ids.shape, dim]);
  if (out.size === 0) return out;
  if (vocab > 2 ** 31 - 1) throw new RangeError(`embedding: a vocabulary of ${vocab} rows exceeds int32 ids`);
  const align = gpu.limits.minStorageBufferOffsetAlignment, e = elementBytes(weight.dtype);
  const rowBytes = dim * e;
  // Rows per range: a range's bytes plus the slack of aligning its start down (and, for float16, of rounding its
  // end up to a whole word: the two together stay under one alignment) must fit one binding.
  const rowsPerRange = weight.bytes <= gpu.maxBinding ? vocab : Math.floor((gpu.maxBinding - align) / rowBytes);
  if (rowsPerRange < 1) {
    throw new RangeError(
      `embedding: one row of weight ${formatShape(weight.shape)} (${rowBytes} bytes) does not fit this adapter's ` +
        `storage binding limit of ${gpu.maxBinding} bytes`,
    );
  }
  const pipeline = gpu.pipeline(KERNELS[weight.dtype]!);
  const positions = ids.size;
  const perPart = out.bytes <= gpu.maxBinding ? positions : Math.floor((gpu.maxBinding - align) / (dim * 4));
  if (perPart < 1) {
    throw new RangeError(
      `embedding: one output row of ${dim} floats does not fit this adapter's storage binding limit of ` +
        `${gpu.maxBinding} bytes`,
    );
  }
  for (let p0 = 0; p0 < positions; p0 += perPart) {
    const count = Math.min(perPart, positions - p0);
    const [idsRange, idsOff] = elementRange(ids, p0, count, align);
    const [outRange, outOff] = elementRange(out, p0 * dim, count * dim, align);
    for (let lo = 0; lo === 0 || lo < vocab; lo += rowsPerRange) {
      const hi = Math.min(vocab, lo + rowsPerRange);
      const start = lo * rowBytes, offset = Math.floor(start / align) * align;
      const size = Math.max(4, Math.ceil((hi * rowBytes) / 4) * 4 - offset);
      gpu.dispatch(
        pipeline,
        [idsRange, { buffer: weight.buffer, offset, size }, outRange],
        new Params().u32(count * dim).u32(dim).u32(vocab).u32(lo).u32(hi).u32((start - offset) / e)
          .u32(lo === 0 ? 1 : 0).u32(QUIET_NAN_BITS).u32(idsOff).u32(outOff),
        grid(count * dim, 256, gpu.limits.maxComputeWorkgroupsPerDimension),
      );
    }
  }
  return out;
}

/**
 * The binding of elements `[first, first + count)` of a 4-byte tensor, its start aligned down, and the index of
 * `first` within it.
 */
function elementRange(t: Tensor, first: number, count: number, align: number): [BufferRange, number] {
  const offset = Math.floor((first * 4) / align) * align;
  return [{ buffer: t.buffer, offset, size: (first + count) * 4 - offset }, first - offset / 4];
}

const BACKWARD = { name: "embedding_backward", code: backwardCode };
/** Per-invocation loop trips allowed, well below lavapipe's silent cut at 65,535. */
const MAX_TRIPS = 32768;
/** Bytes the backward's (blocks × V) slot table may take before blocks grow longer. */
const MAX_SLOT_BYTES = 64 << 20;

/**
 * Tuning of {@linkcode embeddingBackward}: positions per block (a power of two; longer blocks when the slot table of
 * blocks × V entries would exceed 64 MiB). Exported so tests can force several blocks on small inputs.
 */
export const embeddingBackwardPaths: { blockSize: number } = { blockSize: 1024 };

/**
 * Gradient of {@linkcode embedding} with respect to its weight: `dweight[v, e] = Σ_{n: ids[n] = v} dOut[n, e]` for
 * int32 `ids [...]` and `dOut [..., E]`; returns a new `[vocabSize, E]` tensor (zero rows for ids that never occur).
 * Ids outside `[0, vocabSize)` contribute nothing.
 *
 * Deterministic: no float atomics; each row is summed in position order within blocks of positions, then over the
 * blocks in order. Three dispatches (chain links per block, per-block chain sums, per-row gather); loop trips per
 * invocation are bounded by 5 × the block size and 5 × the block count (checked).
 */
export function embeddingBackward(ids: Tensor, dOut: Tensor, vocabSize: number): Tensor {
  if (ids.dtype !== "int32") {
    throw new TypeError(`embeddingBackward: ids must be int32, got ${ids.dtype} ${formatShape(ids.shape)}`);
  }
  if (dOut.dtype !== "float32") {
    throw new TypeError(`embeddingBackward: dOut must be float32, got ${dOut.dtype} ${formatShape(dOut.shape)}`);
  }
  const dim = dOut.shape[dOut.shape.length - 1];
  expectShape("embeddingBackward dOut", dOut, [...ids.shape, dim ?? -1]);
  if (!Number.isInteger(vocabSize) || vocabSize < 1 || vocabSize > 2 ** 31 - 1) {
    throw new RangeError(`embeddingBackward: vocabSize must be an integer in [1, 2^31 - 1], got ${vocabSize}`);
  }
  const gpu = ids.gpu;
  const dWeight = Tensor.empty(gpu, [vocabSize, dim]);
  if (dWeight.size === 0) return dWeight;
  const positions = ids.size;
  // Loop trips per invocation: a chain step or a block of the gather carries 4 inner trips, one per vec4.
  const trips = (outer: number) => 5 * outer + 20;
  let block = embeddingBackwardPaths.blockSize;
  const slotBytes = (b: number) => Math.ceil(positions / b) * vocabSize * 4;
  while (trips(2 * block) <= MAX_TRIPS && slotBytes(block) > Math.min(MAX_SLOT_BYTES, gpu.maxBinding)) block *= 2;
  const blocks = Math.max(1, Math.ceil(positions / block));
  if (trips(block) > MAX_TRIPS || trips(blocks) > MAX_TRIPS || slotBytes(block) > gpu.maxBinding) {
    throw new RangeError(
      `embeddingBackward: ${positions} positions over a vocabulary of ${vocabSize} need blocks of ${block} ` +
        `positions and ${blocks} blocks; both must keep loop trips under ${MAX_TRIPS} and the slot table ` +
        `(${slotBytes(block)} bytes) within one binding`,
    );
  }
  const slices = Math.ceil(dim / 16);
  const params = new Params().u32(positions).u32(dim).u32(vocabSize).u32(block).u32(blocks).u32(slices);
  const wg = (n: number) => grid(n, 64, gpu.limits.maxComputeWorkgroupsPerDimension);
  const next = Tensor.empty(gpu, [Math.max(1, positions)], "int32");
  const slot = Tensor.zeros(gpu, [blocks, vocabSize], "int32");
  const partial = Tensor.empty(gpu, [Math.max(1, positions), dim]);
  const idsRange = ids.binding("embeddingBackward ids");
  const slotRange = slot.binding("embeddingBackward slot table");
  if (positions > 0) {
    gpu.dispatch(gpu.pipeline(BACKWARD, {}, "links"), [idsRange, next.range(), slotRange], params, wg(positions));
    gpu.dispatch(
      gpu.pipeline(BACKWARD, {}, "block_sums"),
      [idsRange, next.range(), slotRange, dOut.binding("embeddingBackward dOut"), partial.binding("partial sums")],
      params,
      wg(positions * slices),
    );
  }
  gpu.dispatch(
    gpu.pipeline(BACKWARD, {}, "gather"),
    [slotRange, partial.binding("partial sums"), dWeight.binding("embeddingBackward dWeight")],
    params,
    wg(vocabSize * slices),
  );
  // Pooled buffers return after the recorded work that uses them (see Gpu.release).
  next.dispose();
  slot.dispose();
  partial.dispose();
  return dWeight;
}
