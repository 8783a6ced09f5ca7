/**
 * The block-diagonal linear of the NeurIPS layers (spec A3.4 `LinearHeadwiseExpand`): the mLSTM q/k/v projections
 * and the four sLSTM gate projections.
 *
 * @module
 */

import code from "../../shaders/linear_headwise_forward.wgsl" with { type: "text" };
import backwardCode from "../../shaders/linear_headwise_backward.wgsl" with { type: "text" };
import { type Gpu, grid, type Kernel, Params } from "../gpu/runtime.ts";
import { formatShape } from "../host_tensor.ts";
import { expectShape, matrix, type MatrixView, Tensor } from "../tensor.ts";
import { checkView, rowChunks, viewShape } from "./pointwise.ts";
import { sumRows } from "./reduce.ts";

/**
 * Loop trips one invocation may run (lavapipe silently ends loops after 65,535 trips): the op splits the reduction
 * over `in_per_head` into dispatches whose tiles stay within it. Tests lower it to exercise the split.
 */
export const headwiseLimits: { maxTrips: number } = { maxTrips: 16384 };

/** Rows per invocation tile: each weight load serves this many rows. */
const TILE_ROWS = 4;
/** Outputs per invocation tile (at most): each x load serves this many outputs. */
const TILE_OUTPUTS = 8;

/** One tile shape and element width, compiled as its own module (the shader's prelude). */
interface Variant {
  /** Elements per load: 4 (vec4) when din, dout and both views are multiples of 4, else 1. */
  width: 1 | 4;
  rows: number;
  outputs: number;
}

const kernels = new Map<string, Kernel>();

/** The shader with its prelude: the tile constants, the element type and its two helpers. */
function kernel(v: Variant): Kernel {
  const key = `W=${v.width},R=${v.rows},K=${v.outputs}`;
  let k = kernels.get(key);
  if (!k) {
    const lanes = v.width === 4 ? "V(a[4u * j], a[4u * j + 1u], a[4u * j + 2u], a[4u * j + 3u])" : "a[j]";
    const prelude = `alias V = ${v.width === 4 ? "vec4<f32>" : "f32"};
const W = ${v.width}u;
const R = ${v.rows}u;
const K = ${v.outputs}u;
fn dotv(a: V, b: V) -> f32 { return ${v.width === 4 ? "dot(a, b)" : "a * b"}; }
fn lanes(a: array<f32, K>, j: u32) -> V { return ${lanes}; }
`;
    kernels.set(key, k = { name: `linear_headwise_forward(${key})`, code: prelude + code });
  }
  return k;
}

/** Loop trips of one invocation over `steps` reduction steps (counting inner loops, in case they stay loops). */
function trips(v: Variant, steps: number): number {
  const setup = v.rows + v.outputs + v.outputs / v.width + v.rows * (1 + v.outputs / v.width);
  return setup + steps * (1 + v.rows + v.outputs * (1 + v.rows));
}

/**
 * `y[r, h·dout + o] = Σ_d x[r, h·din + d] · weight[h, o, d] + bias[h·dout + o]`, with `weight`
 * `[NH, dout, din]` (the reference's layout), `x` a view of `NH·din` columns (a column slice is fine; leading dims
 * flattened into rows by the caller) and `bias` `[NH·dout]` or null.
 *
 * Without `out`, returns a new `[rows, NH·dout]` tensor. With `out`, a view of `rows × NH·dout` (e.g. q's columns of
 * a `[rows, 3D]` q|k|v buffer, or one gate's columns of the sLSTM `[rows, 4H]` gate-major buffer), writes there and
 * returns `out.tensor` itself (not a new reference: other columns are left untouched). `out` must not share a buffer
 * with `x`, `weight` or `bias`.
 */
export function linearHeadwise(x: MatrixView, weight: Tensor, bias: Tensor | null, out?: MatrixView): Tensor {
  expectShape("linearHeadwise weight", weight, [-1, -1, -1]);
  const [heads, dout, din] = weight.shape;
  if (weight.size === 0) throw new RangeError(`linearHeadwise weight: empty shape ${formatShape(weight.shape)}`);
  checkView("linearHeadwise x", x);
  if (x.cols !== heads * din) {
    throw new RangeError(
      `linearHeadwise: x ${viewShape(x)} does not match weight ${formatShape(weight.shape)}, which needs ` +
        `${heads} × ${din} = ${heads * din} columns`,
    );
  }
  if (bias) expectShape("linearHeadwise bias", bias, [heads * dout]);
  const gpu = weight.gpu;
  const y = out ?? matrix(Tensor.empty(gpu, [x.rows, heads * dout]));
  if (out) {
    checkView("linearHeadwise out", out);
    if (out.rows !== x.rows || out.cols !== heads * dout) {
      throw new RangeError(
        `linearHeadwise: out ${viewShape(out)} does not match the result [${x.rows}, ${heads * dout}] of ` +
          `x ${viewShape(x)} and weight ${formatShape(weight.shape)}`,
      );
    }
    if (out.rows > 1 && out.stride < out.cols) {
      throw new RangeError(`linearHeadwise out: rows of ${viewShape(out)} overlap`);
    }
    for (const [name, t] of [["x", x.tensor], ["weight", weight], ["bias", bias]] as const) {
      if (t?.buffer === out.tensor.buffer) throw new RangeError(`linearHeadwise: out shares a buffer with ${name}`);
    }
  }
  if (x.rows === 0) return y.tensor;
  const aligned = [din, dout, x.offset, x.stride, y.offset, y.stride].every((n) => n % 4 === 0);
  const width = aligned ? 4 : 1;
  const v: Variant = { width, rows: TILE_ROWS, outputs: Math.ceil(Math.min(TILE_OUTPUTS, dout) / width) * width };
  const steps = din / width; // reduction steps of one tile
  const maxTrips = headwiseLimits.maxTrips;
  const perSlice = Math.floor((maxTrips - trips(v, 0)) / (trips(v, 1) - trips(v, 0)));
  if (!(perSlice >= 1)) {
    throw new RangeError(`linearHeadwise: headwiseLimits.maxTrips ${maxTrips} is below one step (${trips(v, 1)})`);
  }
  const pipeline = gpu.pipeline(kernel(v), {}, "forward");
  const tiles = Math.ceil(dout / v.outputs);
  const weightRange = weight.binding("linearHeadwise weight");
  const biasRange = bias ? bias.binding("linearHeadwise bias") : weightRange; // bound but never read without a bias
  for (const chunk of rowChunks(gpu, [y, x], ["linearHeadwise out", "linearHeadwise x"])) {
    const invocations = Math.ceil(chunk.rows / v.rows) * heads * tiles;
    for (let begin = 0; begin < steps; begin += perSlice) {
      const params = new Params().u32(chunk.rows).u32(heads).u32(steps).u32(dout)
        .u32(chunk.offsets[1] / width).u32(x.stride / width).u32(chunk.offsets[0] / width).u32(y.stride / width)
        .u32(begin).u32(Math.min(steps, begin + perSlice)).u32(begin > 0 ? 1 : 0).u32(bias && begin === 0 ? 1 : 0)
        .u32(tiles);
      gpu.dispatch(pipeline, [...chunk.bindings, weightRange, biasRange], params, grid(invocations, 64));
    }
  }
  return y.tensor;
}

/** Tuning of {@linkcode linearHeadwiseBackward}; exported so tests can force many chunks on small inputs. */
export const headwiseBackwardSettings: { rowsPerChunk: number } = {
  /**
   * Rows one `weight_grad` invocation sums into a partial row of dweight (the rows are then summed by
   * {@linkcode sumRows}): bounds its loop trips and the f32 rounding of its sum.
   */
  rowsPerChunk: 256,
};

/** Outputs (o) per weight-gradient tile. */
const GRAD_OUTPUTS = 4;
/** Inputs (d) per weight-gradient tile, in scalars. */
const GRAD_INPUTS = 8;

const backwardKernels = new Map<number, Kernel>();

/** The backward shader with its prelude for `width` (vec4 units of d, or scalars). */
function backwardKernel(width: 1 | 4): Kernel {
  let k = backwardKernels.get(width);
  if (!k) {
    const prelude = `alias V = ${width === 4 ? "vec4<f32>" : "f32"};\nconst W = ${width}u;\n` +
      `const KO = ${GRAD_OUTPUTS}u;\nconst KD = ${GRAD_INPUTS / width}u;\n`;
    backwardKernels.set(width, k = { name: `linear_headwise_backward(W=${width})`, code: prelude + backwardCode });
  }
  return k;
}

/** Options of {@linkcode linearHeadwiseBackward}. */
export interface LinearHeadwiseBackwardOptions {
  /** Whether the forward had a bias (then dbias is returned). */
  bias: boolean;
}

/** Gradients of {@linkcode linearHeadwise}. */
export interface LinearHeadwiseGrads {
  /** `[rows, NH·din]`, contiguous. */
  dx: Tensor;
  /** `[NH, dout, din]`. */
  dweight: Tensor;
  /** `[NH·dout]`, or null without a bias. */
  dbias: Tensor | null;
}

/**
 * Gradients of `y = linearHeadwise(x, weight, bias)` for the upstream `dy`, a view of `rows × NH·dout` (e.g. one
 * third of the `[rows, 3D]` q|k|v gradient, or one gate's columns of the sLSTM `[rows, 4H]` gate gradient):
 * `dx[r, h·din + d] = Σ_o dy[r, h·dout + o] · weight[h, o, d]` runs on the forward kernel with the weight transposed
 * (one small dispatch); `dweight[h, o, d] = Σ_r dy[r, h·dout + o] · x[r, h·din + d]` and `dbias = Σ_r dy` are
 * reductions over rows, split: one dispatch writes a row of partial sums per chunk of
 * {@linkcode headwiseBackwardSettings}`.rowsPerChunk` rows, and {@linkcode sumRows} adds the rows.
 */
export function linearHeadwiseBackward(
  dy: MatrixView,
  x: MatrixView,
  weight: Tensor,
  options: LinearHeadwiseBackwardOptions,
): LinearHeadwiseGrads {
  const op = "linearHeadwiseBackward";
  expectShape(`${op} weight`, weight, [-1, -1, -1]);
  const [heads, dout, din] = weight.shape;
  if (weight.size === 0) throw new RangeError(`${op} weight: empty shape ${formatShape(weight.shape)}`);
  checkView(`${op} x`, x);
  checkView(`${op} dy`, dy);
  if (x.cols !== heads * din || dy.cols !== heads * dout || dy.rows !== x.rows) {
    throw new RangeError(
      `${op}: dy ${viewShape(dy)} and x ${viewShape(x)} do not match weight ${formatShape(weight.shape)}, which ` +
        `needs [rows, ${heads * dout}] and [rows, ${heads * din}]`,
    );
  }
  const gpu = weight.gpu;
  const rowsPerChunk = headwiseBackwardSettings.rowsPerChunk;
  const width = [din, x.offset, x.stride].every((n) => n % 4 === 0) ? 4 : 1;
  const units = GRAD_INPUTS / width;
  const perRow = 1 + GRAD_OUTPUTS + units + GRAD_OUTPUTS * units;
  if (!(Number.isInteger(rowsPerChunk) && rowsPerChunk >= 1 && rowsPerChunk * perRow <= MAX_GRAD_TRIPS)) {
    throw new RangeError(
      `${op}: rowsPerChunk ${rowsPerChunk} must be a positive integer with at most ${MAX_GRAD_TRIPS} loop trips ` +
        `(${perRow} per row)`,
    );
  }
  const dbias = options.bias ? sumRows(dy) : null;
  if (x.rows === 0) {
    return { dx: Tensor.empty(gpu, [0, heads * din]), dweight: Tensor.zeros(gpu, weight.shape), dbias };
  }
  const transposed = transpose(gpu, weight);
  const dx = linearHeadwise(dy, transposed, null);
  transposed.dispose(); // recorded work still reads it; the pool hands it only to later commands

  const chunks = rowChunks(gpu, [dy, x], [`${op} dy`, `${op} x`]);
  // Longer chunks (up to the trip bound) when the partial rows would not fit one storage binding.
  const fit = Math.floor(gpu.maxBinding / (4 * weight.size));
  const chunkRows = Math.max(rowsPerChunk, Math.min(Math.floor(MAX_GRAD_TRIPS / perRow), Math.ceil(x.rows / fit)));
  const partialRows = chunks.reduce((n, c) => n + Math.ceil(c.rows / chunkRows), 0);
  const partials = Tensor.empty(gpu, [partialRows, weight.size]);
  const pipeline = gpu.pipeline(backwardKernel(width), {}, "weight_grad");
  const outTiles = Math.ceil(dout / GRAD_OUTPUTS), inTiles = Math.ceil(din / width / units);
  let chunk0 = 0;
  for (const c of chunks) {
    const rowChunksHere = Math.ceil(c.rows / chunkRows);
    const params = new Params().u32(c.rows).u32(heads).u32(din / width).u32(dout).u32(c.offsets[0])
      .u32(dy.stride).u32(c.offsets[1] / width).u32(x.stride / width).u32(chunkRows).u32(chunk0).u32(outTiles)
      .u32(inTiles);
    const invocations = rowChunksHere * heads * outTiles * inTiles;
    gpu.dispatch(pipeline, [...c.bindings, partials.binding(`${op} dweight partials`)], params, grid(invocations, 64));
    chunk0 += rowChunksHere;
  }
  const sums = partialRows === 1 ? partials : sumRows(partials);
  const dweight = sums.reshape(weight.shape);
  sums.dispose();
  if (sums !== partials) partials.dispose();
  return { dx, dweight, dbias };
}

/** Loop trips one weight-gradient invocation may run, well below lavapipe's silent cut at 65,535. */
const MAX_GRAD_TRIPS = 32768;

/** `weight [NH, dout, din]` transposed per head to a new `[NH, din, dout]` tensor. */
function transpose(gpu: Gpu, weight: Tensor): Tensor {
  const [heads, dout, din] = weight.shape;
  const out = Tensor.empty(gpu, [heads, din, dout]);
  gpu.dispatch(
    gpu.pipeline(backwardKernel(1), {}, "transpose"),
    [weight.binding("linearHeadwiseBackward weight"), out.binding("linearHeadwiseBackward transposed weight")],
    new Params().u32(weight.size).u32(heads).u32(din).u32(dout).u32(0).u32(0).u32(0).u32(0).u32(0).u32(0).u32(0)
      .u32(0), // the fields weight_grad uses: the uniform binding must cover all of Params
    grid(weight.size, 64, gpu.limits.maxComputeWorkgroupsPerDimension),
  );
  return out;
}
