/**
 * The block-diagonal linear of the NeurIPS layers (spec A3.4 `LinearHeadwiseExpand`): the mLSTM q/k/v projections
 * and the four sLSTM gate projections.
 *
 * @module
 */

import code from "../../shaders/linear_headwise_forward.wgsl" with { type: "text" };
import { grid, type Kernel, Params } from "../gpu/runtime.ts";
import { formatShape } from "../host_tensor.ts";
import { expectShape, matrix, type MatrixView, Tensor } from "../tensor.ts";
import { checkView, rowChunks, viewShape } from "./pointwise.ts";

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
