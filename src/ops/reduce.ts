/**
 * Column sums of a matrix (Σ over rows), the reduction behind every bias and per-channel weight gradient: a
 * gradient `[B·T, C]` summed over its B·T rows.
 *
 * @module
 */

import code from "../../shaders/reduce_rows.wgsl" with { type: "text" };
import { grid, Params } from "../gpu/runtime.ts";
import { formatShape } from "../host_tensor.ts";
import { matrix, type MatrixView, Tensor } from "../tensor.ts";

const KERNEL = { name: "reduce_rows", code };
const THREADS = 64;
/** Per-invocation loop trips allowed, well below lavapipe's silent cut at 65,535. */
const MAX_TRIPS = 32768;

/** Tuning of {@linkcode sumRows}; exported so tests can force many chunks and levels on small inputs. */
export const reduceSettings: { rowsPerChunk: number } = {
  /**
   * Rows one invocation sums. Each pass divides the row count by this, so 256 reduces 200k rows in three
   * dispatches while a GPU still gets chunks × columns invocations to spread over its cores.
   */
  rowsPerChunk: 256,
};

/**
 * Sums a `[R, C]` matrix over its rows: returns a new `[C]` tensor. A tensor is viewed as rows of its last
 * dimension; a view may be strided (a column slice of a wider tensor). Rows are summed in chunks of
 * {@linkcode reduceSettings}`.rowsPerChunk` into partial sums, which are summed again the same way until one row is
 * left, so no invocation loops long and the sum is tree-shaped (f32 rounding grows with the chunk length and the
 * number of levels, not with R). Views wider than the storage binding limit are reduced in blocks of rows.
 */
export function sumRows(x: MatrixView | Tensor): Tensor {
  let view = x instanceof Tensor ? matrix(x) : x;
  const { tensor, rows, cols, offset, stride } = view;
  const gpu = tensor.gpu;
  if (tensor.dtype !== "float32") throw new TypeError(`sumRows: x must be float32, got ${tensor.dtype}`);
  const end = offset + Math.max(0, rows - 1) * stride + cols;
  const valid = [rows, cols, offset, stride].every((n) => Number.isInteger(n) && n >= 0) && cols > 0;
  if (!valid || (rows > 1 && stride < cols) || (rows > 0 && end > tensor.size)) {
    throw new RangeError(
      `sumRows: view [${rows}, ${cols}] at offset ${offset} with row stride ${stride} does not fit x ` +
        formatShape(tensor.shape),
    );
  }
  const { rowsPerChunk } = reduceSettings;
  if (!(Number.isInteger(rowsPerChunk) && rowsPerChunk >= 2 && rowsPerChunk <= MAX_TRIPS)) {
    throw new RangeError(`sumRows: rowsPerChunk must be an integer in [2, ${MAX_TRIPS}], got ${rowsPerChunk}`);
  }
  if (rows === 0) return Tensor.zeros(gpu, [cols]);
  let partials: Tensor | null = null;
  for (;;) {
    const out = sumChunks(view, rowsPerChunk);
    partials?.dispose(); // the recorded dispatch still reads it; the pool hands it out only to later commands
    if (out.shape.length === 1) return out;
    partials = out;
    view = matrix(out);
  }
}

/**
 * One level: sums chunks of `rowsPerChunk` rows into a new `[chunks, C]` tensor (`[C]` when one chunk covers every
 * row), binding the view in blocks of whole chunks that each fit one storage binding.
 */
function sumChunks(view: MatrixView, rowsPerChunk: number): Tensor {
  const { tensor, rows, cols, offset, stride } = view;
  const gpu = tensor.gpu;
  // A bound range starts aligned down to minStorageBufferOffsetAlignment, so allow that much slack.
  const align = gpu.limits.minStorageBufferOffsetAlignment / 4;
  const room = Math.floor(gpu.maxBinding / 4) - cols - (align - 1);
  const fit = room < 0 ? 0 : rows === 1 ? 1 : Math.floor(room / stride) + 1;
  if (fit < 1) {
    throw new RangeError(
      `sumRows: one row of the view [${rows}, ${cols}] (stride ${stride}) exceeds this adapter's storage binding ` +
        `limit of ${gpu.maxBinding} bytes`,
    );
  }
  const chunkRows = Math.min(rowsPerChunk, fit);
  const blockRows = rows <= fit ? rows : Math.floor(fit / chunkRows) * chunkRows;
  const chunks = Math.ceil(rows / chunkRows);
  const out = Tensor.empty(gpu, chunks === 1 ? [cols] : [chunks, cols]);
  const pipeline = gpu.pipeline(KERNEL, { WG: THREADS });
  const target = out.binding("sumRows partials");
  for (let row0 = 0; row0 < rows; row0 += blockRows) {
    const count = Math.min(blockRows, rows - row0);
    const first = offset + row0 * stride;
    const start = Math.floor(first / align) * align;
    const last = first + (count - 1) * stride + cols;
    gpu.dispatch(
      pipeline,
      [tensor.range(start, last - start), target],
      new Params().u32(count).u32(cols).u32(first - start).u32(stride).u32(chunkRows).u32(row0 / chunkRows),
      grid(Math.ceil(count / chunkRows) * cols, THREADS, gpu.limits.maxComputeWorkgroupsPerDimension),
    );
  }
  return out;
}
