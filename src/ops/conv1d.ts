/**
 * Depthwise causal conv1d (spec A3.3, NeurIPS `CausalConv1d`) and its recurrent step window.
 *
 * A recurrent step on one frame per batch is
 * ```ts
 * const next = conv1dStateUpdate(state, x, { batch: B, frames: KS }); // the reference's rolled window [B, KS, F]
 * const y = causalConv1d(x, weight, bias, { batch: B, history: state }); // the OLD window supplies the past frames
 * ```
 * which equals the reference's `y = Σ_k next[:, k, :] · W[k, :] + bias`. Both return fresh tensors: unlike the
 * reference (pitfall E10), the state passed in is never modified.
 *
 * @module
 */

import code from "../../shaders/conv1d_forward.wgsl" with { type: "text" };
import backwardCode from "../../shaders/conv1d_backward.wgsl" with { type: "text" };
import { type BufferRange, type Gpu, grid, type Kernel, Params } from "../gpu/runtime.ts";
import { formatShape } from "../host_tensor.ts";
import { expectShape, type MatrixView, Tensor } from "../tensor.ts";
import { sumRows } from "./reduce.ts";

/** Taps per output: far below lavapipe's silent cut at 65,535 loop trips per invocation (see `timeBlock`). */
const MAX_TAPS = 4096;

/**
 * Consecutive times one invocation of `main` computes: 8 (sharing each tap's weights and each frame's load) when
 * the sequence has that many, else 1. Its loops run at most KS · (2T + 1) + 3T trips, so long kernels take T = 1.
 */
function timeBlock(seq: number, taps: number): number {
  return seq >= 8 && taps <= 256 ? 8 : 1;
}

const kernels = new Map<string, Kernel>();

/**
 * A shader with its prelude: vec4 units of features (`width` 4) or scalars, `times` outputs per invocation of the
 * forward's `main` and the backward's `input_grad`, and `taps` taps per invocation of the backward's `weight_grad`.
 */
function kernel(pass: "forward" | "backward", width: 1 | 4, times: number, taps = 1): Kernel {
  const key = `${pass}(W=${width},T=${times}${pass === "backward" ? `,KB=${taps}` : ""})`;
  let k = kernels.get(key);
  if (!k) {
    const tap = width === 4
      ? "let at = f * 4u * p.taps + k;\n  " +
        "return V(weight[at], weight[at + p.taps], weight[at + 2u * p.taps], weight[at + 3u * p.taps]);"
      : "return weight[f * p.taps + k];";
    let prelude = `alias V = ${width === 4 ? "vec4<f32>" : "f32"};\nconst W = ${width}u;\nconst T = ${times}u;\n` +
      `fn tap(f: u32, k: u32) -> V {\n  ${tap}\n}\n`;
    if (pass === "backward") {
      prelude += `const KB = ${taps}u;\nfn lane(v: V, i: u32) -> f32 {\n  return ${width === 4 ? "v[i]" : "v"};\n}\n`;
    }
    const source = pass === "forward" ? code : backwardCode;
    kernels.set(key, k = { name: `conv1d_${key}`, code: prelude + source });
  }
  return k;
}

/** Options of {@linkcode causalConv1d}. */
export interface CausalConv1dOptions {
  /** B: x's rows are `B · S` frames, row `b · S + t`. */
  batch: number;
  /** `"swish"` applies `y · sigmoid(y)` to the output (default `"none"`). */
  activation?: "none" | "swish";
  /** `[B, H, F]` with `H ≥ KS − 1`: its last `KS − 1` frames precede time 0 (zeros when absent). */
  history?: Tensor | null;
}

/** Options of {@linkcode conv1dStateUpdate}. */
export interface Conv1dStateOptions {
  /** B: x's rows are `B · S` frames, row `b · S + t`. */
  batch: number;
  /** Frames in the window: KS for the reference's step state, KS − 1 for its forward's `return_last_state`. */
  frames: number;
}

/**
 * `y[b, t, f] = bias[f] + Σ_{k<KS} weight[f, 0, k] · x[b, t − (KS − 1) + k, f]` (tap `KS − 1` multiplies the current
 * frame), with x zero before `t = 0` unless `history` is given. `x` is a view of `B · S` rows and F columns (it may be
 * a column slice of a wider tensor); `weight` is PyTorch's depthwise layout `[F, 1, KS]`; `bias` is `[F]`.
 * Returns a new contiguous `[B, S, F]` tensor.
 */
export function causalConv1d(x: MatrixView, weight: Tensor, bias: Tensor | null, options: CausalConv1dOptions): Tensor {
  const { batch, activation = "none", history = null } = options;
  const features = x.cols;
  checkBatch("causalConv1d", x, batch);
  const taps = weight.shape[2] ?? 0;
  expectShape("causalConv1d weight", weight, [features, 1, -1]);
  checkTaps("causalConv1d", taps);
  if (bias) expectShape("causalConv1d bias", bias, [features]);
  if (history) {
    expectShape("causalConv1d history", history, [batch, -1, features]);
    if (history.shape[1] < taps - 1) {
      throw new RangeError(
        `causalConv1d history: expected at least ${taps - 1} frames (kernel size ${taps}), got ` +
          formatShape(history.shape),
      );
    }
  }
  if (activation !== "none" && activation !== "swish") {
    throw new RangeError(`causalConv1d: activation must be "none" or "swish", got ${activation}`);
  }
  const seq = x.rows / batch;
  const out = Tensor.empty(x.tensor.gpu, [batch, seq, features]);
  const weightRange = weight.binding("causalConv1d weight");
  // An absent bias is never read, but its binding needs a buffer (a read-only one: not out's).
  const tail = [weightRange, bias?.binding("causalConv1d bias") ?? weightRange];
  record("main", { x, seq, taps, history }, out, tail, { hasBias: !!bias, swish: activation === "swish" });
  return out;
}

/**
 * The last `frames` frames, per batch, of `history` (`[B, H, F]`, any H; null = no frames, zeros before time 0)
 * followed by x (`B · S` rows). With S = 1 and a `[B, KS, F]` history this is the reference's step window rolled left
 * by one frame. Returns a fresh `[B, frames, F]` tensor; `history` is left as it was.
 */
export function conv1dStateUpdate(history: Tensor | null, x: MatrixView, options: Conv1dStateOptions): Tensor {
  const { batch, frames } = options;
  checkTaps("conv1dStateUpdate", frames);
  checkBatch("conv1dStateUpdate", x, batch);
  if (history) expectShape("conv1dStateUpdate history", history, [batch, -1, x.cols]);
  const out = Tensor.empty(x.tensor.gpu, [batch, frames, x.cols]);
  const seq = x.rows / batch;
  record("state_update", { x, seq, taps: frames, history }, out, [], { hasBias: false, swish: false });
  return out;
}

/** Options of {@linkcode causalConv1dBackward}: those the forward ran with. */
export interface CausalConv1dBackwardOptions {
  /** B: x's rows are `B · S` frames, row `b · S + t`. */
  batch: number;
  /** The forward's activation (default `"none"`); with `"swish"` the pre-activation is recomputed from x and weight. */
  activation?: "none" | "swish";
  /**
   * Must be absent or null: histories only serve inference steps, and no gradient flows through them (a forward with
   * a history would also need its frames here).
   */
  history?: null;
}

/** Gradients of {@linkcode causalConv1d}. */
export interface Conv1dGrads {
  /** `[B, S, F]`, contiguous (the caller places it into x's view). */
  dx: Tensor;
  /** `[F, 1, KS]`. */
  dweight: Tensor;
  /** `[F]`, or null without a bias. */
  dbias: Tensor | null;
}

/** Tuning of {@linkcode causalConv1dBackward}; exported so tests can force many chunks on small inputs. */
export const conv1dBackwardSettings: { timesPerChunk: number } = {
  /**
   * Times of one batch that one `weight_grad` invocation sums into a partial row (the rows are then summed by
   * {@linkcode sumRows}): bounds its loop trips (lavapipe cuts loops after 65,535) and the f32 rounding of its sum.
   */
  timesPerChunk: 256,
};

/** Loop trips allowed per invocation, well below lavapipe's silent cut at 65,535. */
const MAX_TRIPS = 32768;

/**
 * Gradients of `y = causalConv1d(x, weight, bias, { batch, activation })` (no history) for the upstream `dy`
 * `[B, S, F]`. With `"swish"` the pre-activation is recomputed by one forward dispatch rather than saved. `dx` takes
 * one dispatch (several times per invocation, like the forward); `dweight` and `dbias` are reductions over B · S,
 * split: one dispatch writes a row of partial sums per chunk of {@linkcode conv1dBackwardSettings}`.timesPerChunk`
 * times of one batch, and {@linkcode sumRows} adds the rows (no float atomics).
 */
export function causalConv1dBackward(
  dy: Tensor,
  x: MatrixView,
  weight: Tensor,
  bias: Tensor | null,
  options: CausalConv1dBackwardOptions,
): Conv1dGrads {
  const op = "causalConv1dBackward";
  const { batch, activation = "none", history = null } = options;
  if (history) {
    throw new RangeError(`${op}: histories serve inference steps only; no gradient flows through them`);
  }
  const features = x.cols;
  checkBatch(op, x, batch);
  const taps = weight.shape[2] ?? 0;
  expectShape(`${op} weight`, weight, [features, 1, -1]);
  checkTaps(op, taps);
  if (bias) expectShape(`${op} bias`, bias, [features]);
  if (activation !== "none" && activation !== "swish") {
    throw new RangeError(`${op}: activation must be "none" or "swish", got ${activation}`);
  }
  const seq = x.rows / batch;
  expectShape(`${op} dy`, dy, [batch, seq, features]);
  const chunkTimes = conv1dBackwardSettings.timesPerChunk;
  const tapBlock = Math.min(taps, 8);
  if (
    !(Number.isInteger(chunkTimes) && chunkTimes >= 1 && chunkTimes * (2 * tapBlock + 2) + 2 * tapBlock <= MAX_TRIPS)
  ) {
    throw new RangeError(
      `${op}: timesPerChunk ${chunkTimes} must be a positive integer of at most ${MAX_TRIPS} loop trips`,
    );
  }
  const gpu = weight.gpu;
  const dx = Tensor.empty(gpu, [batch, seq, features]);
  if (seq === 0) {
    return { dx, dweight: Tensor.zeros(gpu, weight.shape), dbias: bias ? Tensor.zeros(gpu, [features]) : null };
  }
  const width = [x.cols, x.offset, x.stride].every((n) => n % 4 === 0) ? 4 : 1;
  const units = features / width;
  const swish = activation === "swish";
  const pre = swish ? causalConv1d(x, weight, bias, { batch }) : null;
  const view = bindView(gpu, "x", x);
  const chunksPerBatch = Math.ceil(seq / chunkTimes);
  const dyRange = dy.binding(`${op} dy`);
  const preRange = pre ? pre.binding(`${op} pre-activation`) : dyRange; // never read without an activation
  const params = (total: number) =>
    new Params().u32(total).u32(seq).u32(units).u32(taps).u32(view.element / width).u32(x.stride / width)
      .u32(swish ? 1 : 0).u32(chunkTimes).u32(chunksPerBatch).u32(Math.ceil(taps / tapBlock));

  const times = timeBlock(seq, taps);
  const inputTotal = batch * Math.ceil(seq / times) * units;
  gpu.dispatch(
    gpu.pipeline(kernel("backward", width, times, tapBlock), {}, "input_grad"),
    [dyRange, preRange, weight.binding(`${op} weight`), dx.binding(`${op} dx`)],
    params(inputTotal),
    grid(inputTotal, 64, gpu.limits.maxComputeWorkgroupsPerDimension),
  );

  const chunks = batch * chunksPerBatch;
  const weightRows = Tensor.empty(gpu, [chunks, features * taps]);
  const biasRows = Tensor.empty(gpu, [chunks, features]);
  const weightTotal = chunks * Math.ceil(taps / tapBlock) * units;
  gpu.dispatch(
    gpu.pipeline(kernel("backward", width, times, tapBlock), {}, "weight_grad"),
    [
      dyRange,
      preRange,
      view.range,
      weightRows.binding(`${op} dweight partials`),
      biasRows.binding(`${op} dbias partials`),
    ],
    params(weightTotal),
    grid(weightTotal, 64, gpu.limits.maxComputeWorkgroupsPerDimension),
  );
  pre?.dispose(); // recorded work still reads these; the pool hands them only to later commands
  const dweight = columnSums(weightRows, weight.shape);
  const dbias = bias ? columnSums(biasRows, [features]) : null;
  if (!bias) biasRows.dispose();
  return { dx, dweight, dbias };
}

/** Sums the rows of `[chunks, n]` partials into a new tensor of `shape`; `rows` is consumed. */
function columnSums(rows: Tensor, shape: readonly number[]): Tensor {
  const sums = rows.shape[0] === 1 ? rows : sumRows(rows);
  const out = sums.reshape(shape);
  sums.dispose();
  if (sums !== rows) rows.dispose();
  return out;
}

/** Per batch, the frames both entry points read: `history` (zeros when null), then x's `seq` frames. */
interface Frames {
  x: MatrixView;
  seq: number;
  taps: number;
  history: Tensor | null;
}

/** Records one dispatch of `entry` into `out`; `tail` are the entry's storage bindings after x, history and out. */
function record(
  entry: "main" | "state_update",
  frames: Frames,
  out: Tensor,
  tail: BufferRange[],
  flags: { hasBias: boolean; swish: boolean },
): void {
  if (out.size === 0) return;
  const { x, seq, taps, history } = frames;
  const gpu = out.gpu;
  const width = [x.cols, x.offset, x.stride].every((n) => n % 4 === 0) ? 4 : 1;
  const times = entry === "main" ? timeBlock(seq, taps) : 1;
  const units = x.cols / width;
  const batch = out.shape[0];
  const invocations = entry === "main" ? batch * Math.ceil(seq / times) * units : out.size / width;
  const view = bindView(gpu, "x", x);
  // No history, or one of zero frames: x is bound in its place (read-only), never read.
  const historyRange = history?.size ? history.binding("history") : view.range;
  gpu.dispatch(
    gpu.pipeline(kernel("forward", width, times), {}, entry),
    [view.range, historyRange, out.binding("out"), ...tail],
    new Params().u32(invocations).u32(seq).u32(units).u32(taps).u32(view.element / width).u32(x.stride / width)
      .u32(history?.shape[1] ?? 0).u32(flags.hasBias ? 1 : 0).u32(flags.swish ? 1 : 0),
    grid(invocations, 64, gpu.limits.maxComputeWorkgroupsPerDimension),
  );
}

function checkBatch(op: string, x: MatrixView, batch: number): void {
  if (x.tensor.dtype !== "float32") throw new TypeError(`${op}: x must be float32, got ${x.tensor.dtype}`);
  const inside = x.rows >= 0 && x.cols > 0 && x.offset >= 0 && x.stride >= x.cols &&
    (x.rows === 0 || x.offset + (x.rows - 1) * x.stride + x.cols <= x.tensor.size);
  if (!inside) {
    throw new RangeError(
      `${op}: x view [${x.rows}, ${x.cols}] (offset ${x.offset}, stride ${x.stride}) lies outside its tensor ` +
        formatShape(x.tensor.shape),
    );
  }
  if (!Number.isInteger(batch) || batch < 1 || x.rows % batch !== 0) {
    throw new RangeError(`${op}: x view [${x.rows}, ${x.cols}] does not split into ${batch} batches of frames`);
  }
}

function checkTaps(op: string, taps: number): void {
  if (!Number.isInteger(taps) || taps < 1 || taps > MAX_TAPS) {
    throw new RangeError(`${op}: kernel size must be an integer in [1, ${MAX_TAPS}], got ${taps}`);
  }
}

/**
 * The byte range a view touches, its start aligned down to `minStorageBufferOffsetAlignment`; `element` is the
 * view's first element within that range.
 */
function bindView(gpu: Gpu, name: string, v: MatrixView): { range: BufferRange; element: number } {
  const start = v.offset, end = v.offset + Math.max(0, v.rows - 1) * v.stride + v.cols;
  const align = gpu.limits.minStorageBufferOffsetAlignment;
  const offset = Math.floor((start * 4) / align) * align;
  const size = end * 4 - offset;
  if (size > gpu.maxBinding) {
    throw new RangeError(
      `${name} view [${v.rows}, ${v.cols}] spans ${size} bytes, more than this adapter's storage binding limit of ` +
        `${gpu.maxBinding} bytes`,
    );
  }
  return { range: { buffer: v.tensor.buffer, offset, size }, element: start - offset / 4 };
}
