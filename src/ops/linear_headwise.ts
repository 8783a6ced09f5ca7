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

const KERNEL: Kernel = { name: "linear_headwise_forward", code };

/**
 * Loop trips one invocation may run: each dispatch reduces at most this many of the `in_per_head` inputs (lavapipe
 * silently ends loops after 65,535 trips). Tests lower it to exercise the split.
 */
export const headwiseLimits: { maxTrips: number } = { maxTrips: 16384 };

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
  const maxTrips = headwiseLimits.maxTrips;
  if (!(maxTrips >= 1)) throw new RangeError(`linearHeadwise: headwiseLimits.maxTrips must be ≥ 1, got ${maxTrips}`);
  const weights = [weight.binding("linearHeadwise weight"), ...(bias ? [bias.binding("linearHeadwise bias")] : [])];
  for (const chunk of rowChunks(gpu, [y, x], ["linearHeadwise out", "linearHeadwise x"])) {
    for (let begin = 0; begin < din; begin += maxTrips) {
      const withBias = bias !== null && begin === 0;
      const params = new Params().u32(chunk.rows).u32(heads).u32(din).u32(dout)
        .u32(chunk.offsets[1]).u32(x.stride).u32(chunk.offsets[0]).u32(y.stride)
        .u32(begin).u32(Math.min(din, begin + maxTrips)).u32(begin > 0 ? 1 : 0);
      gpu.dispatch(
        gpu.pipeline(KERNEL, {}, withBias ? "forward_bias" : "forward"),
        [...chunk.bindings, ...(withBias ? weights : weights.slice(0, 1))],
        params,
        grid(chunk.rows * heads * dout, 256),
      );
    }
  }
  return y.tensor;
}
