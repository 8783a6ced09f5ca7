/**
 * Pointwise ops over strided matrix views (one mechanism, `shaders/pointwise_forward.wgsl`): the soft cap of
 * xlstm_large, its sigmoid output gate, and the NeurIPS mLSTM layer's skip-and-gate output path. The gated
 * activations (`gated_activation.ts`) reuse the same dispatch.
 *
 * @module
 */

import code from "../../shaders/pointwise_forward.wgsl" with { type: "text" };
import { type BufferRange, type Gpu, grid, type Kernel, Params } from "../gpu/runtime.ts";
import { formatShape } from "../host_tensor.ts";
import { expectShape, matrix, type MatrixView, Tensor } from "../tensor.ts";

/** WGSL of the pointwise mechanism (bindings, view indexing, accurate exp/tanh/sigmoid); other kernels append to it. */
export const POINTWISE_WGSL: string = code;

const KERNEL: Kernel = { name: "pointwise_forward", code };
/** Views a pointwise kernel reads besides `out`; `Params` has an (offset, stride) pair for each. */
const MAX_INPUTS = 4;

/** A view's shape in error messages: `[rows, cols]`. */
export function viewShape(v: MatrixView): string {
  return formatShape([v.rows, v.cols]);
}

/** Throws, naming the view, unless every element it addresses lies inside its tensor. */
export function checkView(name: string, v: MatrixView): void {
  const ok = [v.rows, v.cols, v.offset, v.stride].every((n) => Number.isInteger(n) && n >= 0) &&
    (v.rows === 0 || v.offset + (v.rows - 1) * v.stride + v.cols <= v.tensor.size);
  if (!ok) {
    throw new RangeError(
      `${name}: view ${viewShape(v)} (offset ${v.offset}, stride ${v.stride}) lies outside its tensor ` +
        formatShape(v.tensor.shape),
    );
  }
}

/** One dispatch's rows `[row, row + rows)` with each view's binding and its element offset within that binding. */
export interface RowChunk {
  /** First row. */
  row: number;
  /** Number of rows. */
  rows: number;
  /** One storage binding per view, in the order given. */
  bindings: BufferRange[];
  /** Element index of each view's (row, 0) within its binding. */
  offsets: number[];
}

/**
 * Splits the common rows of `views` into dispatches whose storage bindings fit `gpu.maxBinding`. A view whose whole
 * tensor fits is bound whole; a larger one is bound to the byte range its rows touch, the start aligned down to
 * `minStorageBufferOffsetAlignment`. A stride-0 view (a row broadcast over all rows) touches only `cols` elements.
 */
export function rowChunks(gpu: Gpu, views: readonly MatrixView[], names: readonly string[]): RowChunk[] {
  const rows = views[0].rows;
  const align = gpu.limits.minStorageBufferOffsetAlignment / 4;
  const room = Math.floor(gpu.maxBinding / 4) - (align - 1);
  let perChunk = rows;
  views.forEach((v, i) => {
    if (v.tensor.bytes <= gpu.maxBinding || v.stride === 0) return;
    const fit = Math.floor((room - v.cols) / v.stride) + 1;
    if (fit < 1) {
      throw new RangeError(
        `${names[i]}: one row of view ${viewShape(v)} (stride ${v.stride}) does not fit this adapter's storage ` +
          `binding limit of ${gpu.maxBinding} bytes`,
      );
    }
    perChunk = Math.min(perChunk, fit);
  });
  const chunks: RowChunk[] = [];
  for (let row = 0; row < rows; row += perChunk) {
    const n = Math.min(perChunk, rows - row);
    const bindings: BufferRange[] = [], offsets: number[] = [];
    for (const v of views) {
      const first = v.offset + row * v.stride;
      if (v.tensor.bytes <= gpu.maxBinding) {
        bindings.push(v.tensor.range());
        offsets.push(first);
      } else {
        const start = first - (first % align);
        const end = first + (n - 1) * v.stride + v.cols;
        bindings.push({ buffer: v.tensor.buffer, offset: start * 4, size: (end - start) * 4 });
        offsets.push(first - start);
      }
    }
    chunks.push({ row, rows: n, bindings, offsets });
  }
  return chunks;
}

/** One call of a pointwise entry point. */
export interface PointwiseCall {
  /** The module: {@linkcode POINTWISE_WGSL}, possibly with entry points appended. */
  kernel: Kernel;
  /** Entry point name. */
  entry: string;
  /** Pipeline override constants. */
  constants?: Record<string, number>;
  /** Inputs, each with `out`'s rows and columns (stride 0 broadcasts one row); at most four. */
  inputs: readonly MatrixView[];
  /** Names of the inputs, for error messages. */
  names: readonly string[];
  /** `Params.scalar`. */
  scalar?: number;
}

/**
 * Records `out[r, c] = f(inputs[0][r, c], …)` for every element of `out`, split over row chunks where a view
 * exceeds one storage binding. `out` must not share a buffer with an input.
 */
export function pointwiseInto(op: string, out: MatrixView, call: PointwiseCall): void {
  const { inputs, names } = call;
  if (inputs.length > MAX_INPUTS) throw new RangeError(`${op}: at most ${MAX_INPUTS} inputs`);
  checkView(`${op} out`, out);
  if (out.rows > 1 && out.stride < out.cols) throw new RangeError(`${op} out: rows of ${viewShape(out)} overlap`);
  inputs.forEach((v, i) => {
    checkView(`${op} ${names[i]}`, v);
    if (v.rows !== out.rows || v.cols !== out.cols) {
      throw new RangeError(`${op}: ${names[i]} ${viewShape(v)} does not match the output ${viewShape(out)}`);
    }
    if (v.tensor.buffer === out.tensor.buffer) throw new RangeError(`${op}: ${names[i]} shares a buffer with out`);
  });
  const gpu = out.tensor.gpu;
  const pipeline = gpu.pipeline(call.kernel, call.constants ?? {}, call.entry);
  const views = [out, ...inputs];
  for (const chunk of rowChunks(gpu, views, [`${op} out`, ...names.map((n) => `${op} ${n}`)])) {
    const params = new Params().u32(chunk.rows).u32(out.cols);
    for (let i = 0; i <= MAX_INPUTS; i++) params.u32(chunk.offsets[i] ?? 0).u32(views[i]?.stride ?? 0);
    params.f32(call.scalar ?? 0);
    gpu.dispatch(pipeline, chunk.bindings, params, grid(chunk.rows * out.cols, 256));
  }
}

/** A new tensor of `like`'s shape, filled by one entry point of this module; `inputs` are matrices of its rows. */
function fresh(op: string, entry: string, like: Tensor, inputs: MatrixView[], names: string[], scalar = 0): Tensor {
  const out = Tensor.empty(like.gpu, like.shape);
  pointwiseInto(op, rowsOf(out, inputs[0].cols), { kernel: KERNEL, entry, inputs, names, scalar });
  return out;
}

/** `t` as rows of its last dimension (a scalar or an empty tensor as one row). */
function rowsOf(t: Tensor, cols: number = t.shape[t.shape.length - 1] || 1): MatrixView {
  return t.size ? matrix(t, cols) : { tensor: t, rows: 0, cols, offset: 0, stride: cols };
}

/**
 * `cap · tanh(x / cap)` (spec C2 `soft_cap`: 15 on the xlstm_large gate pre-activations, 30 on its logits). Exact
 * ±cap, never NaN, for large |x|; relative accuracy near 0. Returns a new tensor of x's shape.
 */
export function softCap(x: Tensor, cap: number): Tensor {
  if (!(cap > 0 && Number.isFinite(cap))) throw new RangeError(`softCap: cap must be positive and finite, got ${cap}`);
  return fresh("softCap", "soft_cap", x, [rowsOf(x)], ["x"], cap);
}

/** `sigmoid(o) ⊙ h` (spec C2, the xlstm_large mLSTM output gate). Returns a new tensor of o's shape. */
export function sigmoidGate(o: Tensor, h: Tensor): Tensor {
  expectShape("sigmoidGate h", h, o.shape);
  return fresh("sigmoidGate", "sigmoid_gate", o, [rowsOf(o), rowsOf(h)], ["o", "h"]);
}

/**
 * The NeurIPS mLSTM layer's output path (spec A4 steps 5–6): `(hNorm + skip ⊙ xConv) ⊙ silu(z)`, with `skip`
 * broadcast over rows. `hNorm` and `xConv` are contiguous `[..., D]`, `skip` is `[D]` (`learnable_skip`), `z` a view
 * of the same rows and D columns (the second half of the `[rows, 2D]` up-projection). Returns a new tensor of hNorm's
 * shape.
 */
export function mlstmOutputGate(hNorm: Tensor, skip: Tensor, xConv: Tensor, z: MatrixView): Tensor {
  const d = hNorm.shape[hNorm.shape.length - 1] ?? 0;
  if (hNorm.shape.length < 1 || d < 1) {
    throw new RangeError(`mlstmOutputGate hNorm: expected shape [..., D] with D ≥ 1, got ${formatShape(hNorm.shape)}`);
  }
  expectShape("mlstmOutputGate skip", skip, [d]);
  expectShape("mlstmOutputGate xConv", xConv, hNorm.shape);
  const h = rowsOf(hNorm);
  const skipRow: MatrixView = { tensor: skip, rows: h.rows, cols: d, offset: 0, stride: 0 };
  return fresh("mlstmOutputGate", "mlstm_output_gate", hNorm, [h, skipRow, rowsOf(xConv), z], [
    "hNorm",
    "skip",
    "xConv",
    "z",
  ]);
}
