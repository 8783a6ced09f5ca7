/**
 * Pointwise ops over strided matrix views (one mechanism, `shaders/pointwise_forward.wgsl`): `add` and `mul` with a
 * broadcast trailing-shape operand (the residual adds), the soft cap of xlstm_large, its sigmoid output gate, and the
 * NeurIPS mLSTM layer's skip-and-gate output path. The gated activations (`gated_activation.ts`) reuse the same
 * dispatch.
 *
 * @module
 */

import mathCode from "../../shaders/accurate_math.wgsl" with { type: "text" };
import pointwiseCode from "../../shaders/pointwise_forward.wgsl" with { type: "text" };
import backwardCode from "../../shaders/pointwise_backward.wgsl" with { type: "text" };
import { type BufferRange, type Gpu, grid, type Kernel, Params } from "../gpu/runtime.ts";
import { formatShape } from "../host_tensor.ts";
import { expectShape, matrix, type MatrixView, Tensor } from "../tensor.ts";
import { sumRows } from "./reduce.ts";

/** WGSL of the pointwise mechanism (bindings, view indexing, accurate exp/tanh/sigmoid); other kernels append to it. */
export const POINTWISE_WGSL: string = mathCode + pointwiseCode;

const KERNEL: Kernel = { name: "pointwise_forward", code: POINTWISE_WGSL };
/** WGSL of the backward entry points and derivative helpers; `gated_activation.ts` appends its own after it. */
export const POINTWISE_BACKWARD_WGSL: string = backwardCode;
const BACKWARD: Kernel = { name: "pointwise_backward", code: POINTWISE_WGSL + backwardCode };
/** Views a pointwise kernel reads besides `out`; `Params` has an (offset, stride) pair for each. */
const MAX_INPUTS = 4;
/**
 * Elements of one row that one invocation handles: 16 for tensors of at least 2¹⁶ elements (still ≥ 4096
 * invocations, while llvmpipe's per-invocation cost becomes small), else 4.
 */
function elementsPerInvocation(elements: number): 4 | 16 {
  return elements >= 1 << 16 ? 16 : 4;
}

const variants = new WeakMap<Kernel, Map<string, Kernel>>();

/**
 * The module with its element type prepended: vec4 units (`width` 4: every view's columns, offset and stride are
 * multiples of 4) or scalars (`width` 1), `elements` / `width` units per invocation.
 */
function variant(kernel: Kernel, width: 1 | 4, elements: number): Kernel {
  let byKey = variants.get(kernel);
  if (!byKey) variants.set(kernel, byKey = new Map());
  const key = `W=${width},U=${elements / width}`;
  let k = byKey.get(key);
  if (!k) {
    const [v, vi, vu] = width === 4 ? ["vec4<f32>", "vec4<i32>", "vec4<u32>"] : ["f32", "i32", "u32"];
    const prelude = `alias V = ${v};\nalias VI = ${vi};\nalias VU = ${vu};\nconst W = ${width}u;\n` +
      `const U = ${elements / width}u;\n`;
    byKey.set(key, k = { name: `${kernel.name}(${key})`, code: prelude + kernel.code });
  }
  return k;
}

/** A view's shape in error messages: `[rows, cols]`. */
export function viewShape(v: MatrixView): string {
  return formatShape([v.rows, v.cols]);
}

/** Throws, naming the view, unless it is float32 or int32 and every element it addresses lies inside its tensor. */
export function checkView(name: string, v: MatrixView): void {
  if (v.tensor.dtype === "float16") {
    throw new TypeError(
      `${name}: a float16 tensor ${formatShape(v.tensor.shape)}; float16 holds weights, which only the matmul ` +
        `(as b) and the embedding read`,
    );
  }
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
  /**
   * Further views laid out exactly like `out` (same tensor size, rows, columns, offset and stride; distinct buffers),
   * bound after the inputs and indexed with out's offset and stride: extra outputs of a backward entry point, or
   * inputs beyond the four with parameters. The entry point declares them at bindings k + 2, k + 3, … for k inputs.
   */
  extras?: readonly MatrixView[];
  /**
   * Columns of each out row, from out's first, that the entry point writes (default `out.cols`): an entry point that
   * also writes the `cols` columns right after out's (the second half of `[rows, 2P]`) passes `2 · out.cols`.
   */
  outSpan?: number;
}

/**
 * Records `out[r, c] = f(inputs[0][r, c], …)` for every element of `out` (and of `call.extras`), split over row chunks
 * where a view exceeds one storage binding. `out` and the extras must not share a buffer with any other view.
 */
export function pointwiseInto(op: string, out: MatrixView, call: PointwiseCall): void {
  const { inputs, names, extras = [] } = call;
  if (inputs.length > MAX_INPUTS) throw new RangeError(`${op}: at most ${MAX_INPUTS} inputs`);
  const span = call.outSpan ?? out.cols;
  // out as far as the entry point writes it: what must lie inside its tensor and be bound.
  const written: MatrixView = { ...out, cols: span };
  checkView(`${op} out`, written);
  if (out.rows > 1 && out.stride < span) throw new RangeError(`${op} out: rows of ${viewShape(written)} overlap`);
  inputs.forEach((v, i) => {
    checkView(`${op} ${names[i]}`, v);
    if (v.rows !== out.rows || v.cols !== out.cols) {
      throw new RangeError(`${op}: ${names[i]} ${viewShape(v)} does not match the output ${viewShape(out)}`);
    }
  });
  const buffers = [out, ...extras].map((v) => v.tensor.buffer);
  extras.forEach((v, i) => {
    const like = v.tensor.size === out.tensor.size && v.rows === out.rows && v.cols === out.cols &&
      v.offset === out.offset && v.stride === out.stride;
    if (!like) throw new RangeError(`${op}: extra view ${i} ${viewShape(v)} is not laid out like out`);
    if (buffers.indexOf(v.tensor.buffer) !== i + 1) throw new RangeError(`${op}: extra view ${i} shares a buffer`);
  });
  inputs.forEach((v, i) => {
    if (buffers.includes(v.tensor.buffer)) throw new RangeError(`${op}: ${names[i]} shares a buffer with out`);
  });
  const gpu = out.tensor.gpu;
  const views = [out, ...inputs];
  const width = views.every((v) => v.cols % 4 === 0 && v.offset % 4 === 0 && v.stride % 4 === 0) ? 4 : 1;
  const elements = elementsPerInvocation(out.rows * out.cols);
  const pipeline = gpu.pipeline(variant(call.kernel, width, elements), call.constants ?? {}, call.entry);
  const cols = out.cols / width, perRow = Math.ceil(cols / (elements / width));
  const bound = [written, ...inputs, ...extras];
  const boundNames = [`${op} out`, ...names.map((n) => `${op} ${n}`), ...extras.map((_, i) => `${op} extra ${i}`)];
  for (const chunk of rowChunks(gpu, bound, boundNames)) {
    const params = new Params().u32(chunk.rows).u32(cols);
    for (let i = 0; i <= MAX_INPUTS; i++) {
      const v = views[i]; // absent inputs get zeros (extras are indexed like out)
      params.u32(v ? chunk.offsets[i] / width : 0).u32(v ? v.stride / width : 0);
    }
    params.f32(call.scalar ?? 0);
    gpu.dispatch(pipeline, chunk.bindings, params, grid(chunk.rows * perRow, 256));
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
 * a and b as matrices of equal rows: the same shape gives rows of the last dimension; a trailing-shape b gives rows of
 * b.size, b a stride-0 row (`same` false).
 */
function broadcast(op: string, a: Tensor, b: Tensor): { rows: MatrixView; bRow: MatrixView; same: boolean } {
  if (
    b.size === 0 || a.size % b.size !== 0 || a.shape.slice(a.shape.length - b.shape.length).join() !== b.shape.join()
  ) {
    throw new RangeError(`${op}: cannot broadcast b ${formatShape(b.shape)} over a ${formatShape(a.shape)}`);
  }
  const same = b.size === a.size;
  const cols = same ? a.shape[a.shape.length - 1] || 1 : b.size;
  const rows = rowsOf(a, cols);
  return { rows, bRow: { tensor: b, rows: rows.rows, cols, offset: 0, stride: same ? cols : 0 }, same };
}

function binary(entry: "add" | "mul", a: Tensor, b: Tensor): Tensor {
  const { rows, bRow } = broadcast(entry, a, b);
  return fresh(entry, entry, a, [rows, bRow], ["a", "b"]);
}

/** `a + b`, with `b` broadcast over the leading dimensions of `a` (b's shape is a trailing part of a's). */
export function add(a: Tensor, b: Tensor): Tensor {
  return binary("add", a, b);
}

/** `a * b`, with `b` broadcast over the leading dimensions of `a` (b's shape is a trailing part of a's). */
export function mul(a: Tensor, b: Tensor): Tensor {
  return binary("mul", a, b);
}

/**
 * `cap · tanh(x / cap)` (spec C2 `soft_cap`: 15 on the xlstm_large gate pre-activations, 30 on its logits). Exact
 * ±cap, never NaN, for large |x|; relative accuracy near 0. Returns a new tensor of x's shape.
 */
export function softCap(x: Tensor, cap: number): Tensor {
  if (!(cap > 0 && Number.isFinite(cap))) throw new RangeError(`softCap: cap must be positive and finite, got ${cap}`);
  return fresh("softCap", "soft_cap", x, [rowsOf(x)], ["x"], cap);
}

/**
 * `sigmoid(o) ⊙ h` (spec C2, the xlstm_large mLSTM output gate). `o` is a tensor of h's shape or a view of h's
 * rows (of its last dimension), e.g. the o columns of a fused projection. Returns a new tensor of h's shape.
 */
export function sigmoidGate(o: Tensor | MatrixView, h: Tensor): Tensor {
  return fresh("sigmoidGate", "sigmoid_gate", h, [gateRows("sigmoidGate", o, h), rowsOf(h)], ["o", "h"]);
}

/** The output gate's `o` as a matrix of h's rows; a tensor must have h's shape. */
function gateRows(op: string, o: Tensor | MatrixView, h: Tensor): MatrixView {
  if (!(o instanceof Tensor)) return o; // pointwiseInto checks that it matches h's rows
  expectShape(`${op} h`, h, o.shape);
  return rowsOf(o);
}

/**
 * The NeurIPS mLSTM layer's output path (spec A4 steps 5–6): `(hNorm + skip ⊙ xConv) ⊙ silu(z)`, with `skip`
 * broadcast over rows. `hNorm` and `xConv` are contiguous `[..., D]`, `skip` is `[D]` (`learnable_skip`), `z` a view
 * of the same rows and D columns (the second half of the `[rows, 2D]` up-projection). Returns a new tensor of hNorm's
 * shape.
 */
export function mlstmOutputGate(hNorm: Tensor, skip: Tensor, xConv: Tensor, z: MatrixView): Tensor {
  const { h, skipRow } = outputGateOperands("mlstmOutputGate", hNorm, skip, xConv);
  return fresh("mlstmOutputGate", "mlstm_output_gate", hNorm, [h, skipRow, rowsOf(xConv), z], [
    "hNorm",
    "skip",
    "xConv",
    "z",
  ]);
}

/** Checks the operands of the mLSTM output gate (forward and backward); hNorm as rows and skip as a stride-0 row. */
function outputGateOperands(
  op: string,
  hNorm: Tensor,
  skip: Tensor,
  xConv: Tensor,
): { h: MatrixView; skipRow: MatrixView } {
  const d = hNorm.shape[hNorm.shape.length - 1] ?? 0;
  if (hNorm.shape.length < 1 || d < 1) {
    throw new RangeError(`${op} hNorm: expected shape [..., D] with D ≥ 1, got ${formatShape(hNorm.shape)}`);
  }
  expectShape(`${op} skip`, skip, [d]);
  expectShape(`${op} xConv`, xConv, hNorm.shape);
  const h = rowsOf(hNorm);
  return { h, skipRow: { tensor: skip, rows: h.rows, cols: d, offset: 0, stride: 0 } };
}

// ---- Backward passes (spec B2.5 conventions: each returns new gradient tensors; nothing accumulates).

/** A view with rows of `width` columns over the same elements, when both views are contiguous and it divides them. */
function folded(v: MatrixView, width: number): MatrixView {
  return { tensor: v.tensor, rows: (v.rows * v.cols) / width, cols: width, offset: v.offset, stride: width };
}

/** Row widths {@linkcode addInto} regroups contiguous operands into (vec4 units, bounded rows for binding splits). */
const FOLD_WIDTHS = [4096, 1024, 256, 64, 16, 4];

/**
 * `target += g`, in place: the autograd engine's gradient accumulation. `target` is any strided view (a column slice
 * of a gradient buffer, or a whole tensor); `g` is a view of the same rows and columns, or a contiguous tensor of
 * `rows · cols` elements. When both are contiguous they are regrouped into rows of up to 4096 (so that a whole tensor
 * viewed as one row takes the vec4 path and splits over storage bindings). `g` must not share target's buffer.
 */
export function addInto(target: MatrixView, g: MatrixView | Tensor): void {
  const { rows, cols } = target;
  if (g instanceof Tensor && g.size !== rows * cols) {
    throw new RangeError(
      `addInto: g ${formatShape(g.shape)} does not have the ${rows * cols} elements of target [${rows}, ${cols}]`,
    );
  }
  let gv = g instanceof Tensor ? { tensor: g, rows, cols, offset: 0, stride: cols } : g;
  let out = target;
  const contiguous = (v: MatrixView) => v.rows <= 1 || v.stride === v.cols;
  if (contiguous(out) && contiguous(gv) && gv.rows === rows && gv.cols === cols) {
    const width = FOLD_WIDTHS.find((w) => w <= rows * cols && (rows * cols) % w === 0);
    if (width && width !== cols) [out, gv] = [folded(out, width), folded(gv, width)];
  }
  pointwiseInto("addInto", out, { kernel: BACKWARD, entry: "add_into", inputs: [gv], names: ["g"] });
}

/** Gradient of {@linkcode softCap}: `dx = dy · sech²(x / cap)`. Returns a new tensor of x's shape. */
export function softCapBackward(dy: Tensor, x: Tensor, cap: number): Tensor {
  if (!(cap > 0 && Number.isFinite(cap))) {
    throw new RangeError(`softCapBackward: cap must be positive and finite, got ${cap}`);
  }
  expectShape("softCapBackward dy", dy, x.shape);
  const dx = Tensor.empty(x.gpu, x.shape);
  pointwiseInto("softCapBackward", rowsOf(dx), {
    kernel: BACKWARD,
    entry: "soft_cap_backward",
    inputs: [rowsOf(dy), rowsOf(x)],
    names: ["dy", "x"],
    scalar: cap,
  });
  return dx;
}

/** Gradients of {@linkcode sigmoidGate}. */
export interface SigmoidGateGrads {
  /** `dy · h · sigmoid(o) · (1 − sigmoid(o))`. */
  do: Tensor;
  /** `dy · sigmoid(o)`. */
  dh: Tensor;
}

/**
 * Gradients of {@linkcode sigmoidGate} `sigmoid(o) ⊙ h` (one dispatch for both), both contiguous of h's shape (a
 * view `o` gets its gradient as a dense tensor of its rows and columns).
 */
export function sigmoidGateBackward(dy: Tensor, o: Tensor | MatrixView, h: Tensor): SigmoidGateGrads {
  const oRows = gateRows("sigmoidGateBackward", o, h);
  expectShape("sigmoidGateBackward dy", dy, h.shape);
  const dO = Tensor.empty(h.gpu, h.shape), dH = Tensor.empty(h.gpu, h.shape);
  pointwiseInto("sigmoidGateBackward", rowsOf(dO), {
    kernel: BACKWARD,
    entry: "sigmoid_gate_backward",
    inputs: [rowsOf(dy), oRows, rowsOf(h)],
    names: ["dy", "o", "h"],
    extras: [rowsOf(dH)],
  });
  return { do: dO, dh: dH };
}

/** Gradients of {@linkcode mul}. */
export interface MulGrads {
  /** `dy · b`, a's shape. */
  da: Tensor;
  /** `dy · a` summed over the broadcast rows, b's shape. */
  db: Tensor;
}

/** Gradients of {@linkcode mul} `a * b` (b broadcast over a's leading dimensions): one dispatch, plus a column sum. */
export function mulBackward(dy: Tensor, a: Tensor, b: Tensor): MulGrads {
  expectShape("mulBackward dy", dy, a.shape);
  const { rows, bRow, same } = broadcast("mulBackward", a, b);
  const da = Tensor.empty(a.gpu, a.shape), dyA = Tensor.empty(a.gpu, a.shape);
  pointwiseInto("mulBackward", rowsOf(da, rows.cols), {
    kernel: BACKWARD,
    entry: "mul_backward",
    inputs: [rowsOf(dy, rows.cols), bRow, rows],
    names: ["dy", "b", "a"],
    extras: [rowsOf(dyA, rows.cols)],
  });
  if (same) return { da, db: dyA };
  const sums = sumRows(rowsOf(dyA, rows.cols));
  dyA.dispose(); // recorded work still reads it; the pool hands it only to later commands
  const db = sums.reshape(b.shape);
  sums.dispose();
  return { da, db };
}

/** Gradients of {@linkcode mlstmOutputGate}. */
export interface OutputGateGrads {
  /** `dy · silu(z)`, hNorm's shape. */
  dhNorm: Tensor;
  /** `Σ_rows dhNorm · xConv`, `[D]`. */
  dskip: Tensor;
  /** `dhNorm · skip`, xConv's shape. */
  dxConv: Tensor;
  /** `dy · (hNorm + skip · xConv) · silu'(z)`, contiguous `[rows, D]` (hNorm's shape). */
  dz: Tensor;
}

/**
 * Gradients of {@linkcode mlstmOutputGate} `(hNorm + skip ⊙ xConv) ⊙ silu(z)` for the upstream `dy` (hNorm's
 * shape): one dispatch for dz, dhNorm and the rows of dskip, one for dxConv (eight storage bindings at most, the
 * WebGPU default), and a split column sum ({@linkcode sumRows}) for dskip.
 */
export function mlstmOutputGateBackward(
  dy: Tensor,
  hNorm: Tensor,
  skip: Tensor,
  xConv: Tensor,
  z: MatrixView,
): OutputGateGrads {
  const op = "mlstmOutputGateBackward";
  const { h, skipRow } = outputGateOperands(op, hNorm, skip, xConv);
  expectShape(`${op} dy`, dy, hNorm.shape);
  const gpu = hNorm.gpu;
  const [dz, dhNorm, dskipRows] = [0, 1, 2].map(() => Tensor.empty(gpu, hNorm.shape));
  pointwiseInto(op, rowsOf(dz), {
    kernel: BACKWARD,
    entry: "mlstm_output_gate_backward",
    inputs: [z, skipRow],
    names: ["z", "skip"],
    extras: [rowsOf(dy), h, rowsOf(xConv), rowsOf(dhNorm), rowsOf(dskipRows)],
  });
  const dxConv = Tensor.empty(gpu, hNorm.shape);
  pointwiseInto(op, rowsOf(dxConv), {
    kernel: KERNEL,
    entry: "mul",
    inputs: [rowsOf(dhNorm), skipRow],
    names: ["dhNorm", "skip"],
  });
  const dskip = sumRows(rowsOf(dskipRows));
  dskipRows.dispose();
  return { dhNorm, dskip, dxConv, dz };
}
