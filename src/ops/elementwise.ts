/**
 * Pointwise binary ops with a broadcast second operand: `out = a ∘ b[i % b.size]`.
 *
 * @module
 */

import code from "../../shaders/elementwise.wgsl" with { type: "text" };
import { grid, Params } from "../gpu/runtime.ts";
import { formatShape } from "../host_tensor.ts";
import { Tensor } from "../tensor.ts";

const KERNEL = { name: "elementwise", code };

function binary(entry: "add" | "mul", a: Tensor, b: Tensor): Tensor {
  if (
    b.size === 0 || a.size % b.size !== 0 || a.shape.slice(a.shape.length - b.shape.length).join() !== b.shape.join()
  ) {
    throw new RangeError(`${entry}: cannot broadcast b ${formatShape(b.shape)} over a ${formatShape(a.shape)}`);
  }
  const gpu = a.gpu;
  const out = Tensor.empty(gpu, a.shape);
  gpu.dispatch(
    gpu.pipeline(KERNEL, {}, entry),
    [a.binding("a"), b.binding("b"), out.binding("out")],
    new Params().u32(a.size).u32(b.size).f32(0),
    grid(a.size, 256),
  );
  return out;
}

/** `a + b`, with `b` broadcast over the leading dimensions of `a`. */
export function add(a: Tensor, b: Tensor): Tensor {
  return binary("add", a, b);
}

/** `a * b`, with `b` broadcast over the leading dimensions of `a`. */
export function mul(a: Tensor, b: Tensor): Tensor {
  return binary("mul", a, b);
}
