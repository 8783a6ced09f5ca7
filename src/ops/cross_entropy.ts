/**
 * Cross-entropy loss of logits against integer labels (PyTorch `F.cross_entropy(logits.view(-1, V), labels.view(-1),
 * ignore_index)` with mean reduction), with argmax accuracy counts and, fused into the same recording, the gradient
 * of the mean loss with respect to the logits.
 *
 * @module
 */

import code from "../../shaders/cross_entropy.wgsl" with { type: "text" };
import { type BufferRange, type Gpu, grid, Params } from "../gpu/runtime.ts";
import { formatShape } from "../host_tensor.ts";
import { Tensor } from "../tensor.ts";

const KERNEL = { name: "cross_entropy", code };
/** Per-invocation loop trips allowed, well below lavapipe's silent cut at 65,535. */
const MAX_TRIPS = 32768;
const QUIET_NAN_BITS = 0x7fc00000;

/**
 * Tuning of {@linkcode crossEntropy}: columns per segment (a row of V logits is split into ceil(V / segmentLength)
 * segments, each one invocation) and rows per invocation of the per-row reduction (lowered automatically for rows
 * of many segments). Exported so tests can force several segments and chunks on small inputs.
 */
export const crossEntropyPaths: { segmentLength: number; rowsPerChunk: number } = {
  segmentLength: 4096,
  rowsPerChunk: 256,
};

/** Options of {@linkcode crossEntropy}. */
export interface CrossEntropyOptions {
  /** Rows whose label equals this are left out of the loss, the counts and the gradient (default -1). */
  ignoreIndex?: number;
  /** Also compute `dLogits`, the gradient of the mean loss (default false). */
  withGrad?: boolean;
  /**
   * Upstream gradient of the loss, multiplied into `dLogits`: a number, or a float32 `[1]` tensor read on the GPU
   * (the gradient arriving from autograd). Default 1.
   */
  gradScale?: number | Tensor;
}

/** Results of {@linkcode crossEntropy}; all are new tensors. */
export interface CrossEntropyResult {
  /**
   * float32 `[1]`: the mean of `logsumexp(x) − x[label]` over rows whose label is not `ignoreIndex`. When every row
   * is ignored this is 0 (PyTorch returns NaN, 0/0), so a running mean of losses stays finite; the gradient is then
   * zero too. A label outside `[0, V)` other than `ignoreIndex` makes it NaN (PyTorch raises an error).
   */
  loss: Tensor;
  /** float32 `[1]`: rows (not ignored) whose first argmax equals the label (exact below 2^24). */
  correct: Tensor;
  /** float32 `[1]`: rows not ignored (exact below 2^24). */
  count: Tensor;
  /** float32 `[..., V]` like the logits: `gradScale · (softmax(x) − onehot(label)) / count`, 0 on ignored rows. */
  dLogits: Tensor | null;
}

/**
 * Mean cross-entropy of `logits [..., V]` (float32) against `labels` (int32, one per row of V logits, any shape),
 * with accuracy counts; with `withGrad`, also the gradient of the mean loss (see {@linkcode CrossEntropyResult}).
 *
 * Numerically stable: each row's log-sum-exp is taken about its maximum, per segment of columns and then combined,
 * so no invocation loops over a whole long row (V = 50,304 runs as 13 segments). Deterministic: every sum runs in a
 * fixed order. Records 3 dispatches (4 with the gradient) per range of rows; logits larger than one storage binding
 * are processed in row ranges.
 *
 * @example
 * ```ts
 * import { crossEntropy, Tensor } from "@xlstm/core";
 * const logits = await Tensor.from({ dtype: "float32", shape: [2, 3], data: new Float32Array([1, 2, 3, 0, 0, 5]) });
 * const labels = await Tensor.from({ dtype: "int32", shape: [2], data: new Int32Array([2, -1]) });
 * const { loss, correct, count, dLogits } = crossEntropy(logits, labels, { withGrad: true });
 * const [l, c, n] = await Tensor.toHostAll([loss, correct, count]);
 * console.log(l.data[0], c.data[0], n.data[0], dLogits!.shape); // 0.4076 1 1 [2, 3]
 * ```
 */
export function crossEntropy(logits: Tensor, labels: Tensor, options: CrossEntropyOptions = {}): CrossEntropyResult {
  const { ignoreIndex = -1, withGrad = false, gradScale = 1 } = options;
  if (logits.dtype !== "float32" || logits.shape.length === 0) {
    throw new TypeError(
      `crossEntropy: logits must be a float32 tensor [..., V], got ${logits.dtype} ${formatShape(logits.shape)}`,
    );
  }
  const vocab = logits.shape[logits.shape.length - 1];
  const rows = vocab > 0 ? logits.size / vocab : 0;
  if (labels.dtype !== "int32" || labels.size !== rows) {
    throw new RangeError(
      `crossEntropy: labels must be int32 with one label per row of logits ${formatShape(logits.shape)} ` +
        `(${rows} rows), got ${labels.dtype} ${formatShape(labels.shape)}`,
    );
  }
  if (vocab < 1) throw new RangeError(`crossEntropy: logits ${formatShape(logits.shape)} have no classes`);
  if (!Number.isInteger(ignoreIndex) || Math.abs(ignoreIndex) > 2 ** 31 - 1) {
    throw new RangeError(`crossEntropy: ignoreIndex must be an int32, got ${ignoreIndex}`);
  }
  if (gradScale instanceof Tensor && (gradScale.dtype !== "float32" || gradScale.size !== 1)) {
    throw new RangeError(
      `crossEntropy: gradScale must be a number or a float32 [1] tensor, got ${gradScale.dtype} ` +
        `${formatShape(gradScale.shape)}`,
    );
  }
  const segLen = Math.min(vocab, crossEntropyPaths.segmentLength);
  const segs = Math.ceil(vocab / segLen);
  const perChunk = Math.max(1, Math.min(crossEntropyPaths.rowsPerChunk, Math.floor(MAX_TRIPS / (2 * segs + 2))));
  if (2 * segLen + 2 > MAX_TRIPS || 2 * segs + 2 > MAX_TRIPS) {
    throw new RangeError(
      `crossEntropy: rows of ${vocab} classes in segments of ${segLen} need more than ${MAX_TRIPS} loop trips per ` +
        `invocation; lower crossEntropyPaths.segmentLength`,
    );
  }

  const gpu = logits.gpu;
  const ranges = rowRanges(gpu, rows, vocab);
  const chunksOf = (n: number) => Math.ceil(n / perChunk);
  const chunks = ranges.reduce((acc, r) => acc + chunksOf(r.rows), 0);
  if (chunks > MAX_TRIPS) {
    throw new RangeError(`crossEntropy: ${rows} rows make ${chunks} chunks of ${perChunk}, over ${MAX_TRIPS}`);
  }
  const segments = Tensor.empty(gpu, [Math.max(1, rows * segs), 3]);
  const lse = Tensor.empty(gpu, [Math.max(1, rows)]);
  const partial = Tensor.empty(gpu, [Math.max(1, chunks), 3]);
  const loss = Tensor.empty(gpu, [1]), correct = Tensor.empty(gpu, [1]), count = Tensor.empty(gpu, [1]);
  const dLogits = withGrad ? Tensor.empty(gpu, logits.shape) : null;
  const labelRange = labels.binding("crossEntropy labels");
  const wg = (n: number) => grid(n, 64, gpu.limits.maxComputeWorkgroupsPerDimension);
  const params = (rowsHere: number, row0: number, skip: number, chunk0: number) =>
    new Params().u32(rowsHere).u32(vocab).u32(segLen).u32(segs).i32(ignoreIndex).u32(perChunk).u32(chunks)
      .u32(gradScale instanceof Tensor ? 1 : 0).f32(gradScale instanceof Tensor ? 1 : gradScale)
      .u32(row0).u32(skip).u32(chunk0).u32(QUIET_NAN_BITS);

  let chunk0 = 0;
  for (const range of ranges) {
    const bound = { buffer: logits.buffer, offset: range.offset, size: range.size };
    const p = params(range.rows, range.row0, range.skip, chunk0);
    gpu.dispatch(gpu.pipeline(KERNEL, {}, "segments"), [bound, segments.range()], p, wg(range.rows * segs));
    gpu.dispatch(
      gpu.pipeline(KERNEL, {}, "rows"),
      [bound, labelRange, segments.range(), lse.range(), partial.range()],
      p,
      wg(chunksOf(range.rows)),
    );
    chunk0 += chunksOf(range.rows);
  }
  gpu.dispatch(
    gpu.pipeline(KERNEL, {}, "total"),
    [partial.range(), loss.range(), correct.range(), count.range()],
    params(0, 0, 0, 0),
    [1],
  );
  if (dLogits) {
    const upstream = gradScale instanceof Tensor ? gradScale.range(0, 1) : count.range();
    for (const range of ranges) {
      const bound = { buffer: logits.buffer, offset: range.offset, size: range.size };
      gpu.dispatch(
        gpu.pipeline(KERNEL, {}, "grad"),
        [bound, labelRange, lse.range(), count.range(), upstream, { ...bound, buffer: dLogits.buffer }],
        params(range.rows, range.row0, range.skip, 0),
        wg(range.rows * segs),
      );
    }
  }
  // Pooled buffers return after the recorded work that uses them (see Gpu.release).
  segments.dispose();
  lse.dispose();
  partial.dispose();
  return { loss, correct, count, dLogits };
}

/** {@linkcode crossEntropy} with the gradient: `dLogits` is always present. */
export function crossEntropyWithGrad(
  logits: Tensor,
  labels: Tensor,
  options: Omit<CrossEntropyOptions, "withGrad"> = {},
): CrossEntropyResult & { dLogits: Tensor } {
  const result = crossEntropy(logits, labels, { ...options, withGrad: true });
  return { ...result, dLogits: result.dLogits! };
}

/** Rows `[row0, row0 + rows)` bound as `{offset, size}` of the logits, with `skip` elements before row0. */
interface RowRange extends Omit<BufferRange, "buffer"> {
  row0: number;
  rows: number;
  skip: number;
}

/** Splits `rows` rows of `vocab` floats into ranges that each fit one storage binding (one range when all fit). */
function rowRanges(gpu: Gpu, rows: number, vocab: number): RowRange[] {
  const rowBytes = vocab * 4;
  const align = gpu.limits.minStorageBufferOffsetAlignment;
  const perRange = rows * rowBytes <= gpu.maxBinding ? rows : Math.floor((gpu.maxBinding - align) / rowBytes);
  if (perRange < 1 && rows > 0) {
    throw new RangeError(
      `crossEntropy: one row of ${vocab} logits (${rowBytes} bytes) exceeds the storage binding limit ` +
        `of ${gpu.maxBinding} bytes`,
    );
  }
  const ranges: RowRange[] = [];
  for (let row0 = 0; row0 < rows; row0 += perRange) {
    const n = Math.min(perRange, rows - row0);
    const start = row0 * rowBytes, offset = Math.floor(start / align) * align;
    ranges.push({ row0, rows: n, offset, size: start + n * rowBytes - offset, skip: (start - offset) / 4 });
  }
  return ranges;
}
