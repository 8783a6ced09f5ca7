/**
 * Gated activations `act(gate) ⊙ up` (spec A3.5 `GatedFeedForward`, C2 SwiGLU), on the pointwise mechanism of
 * `pointwise.ts` with the activations of `shaders/gated_activation_forward.wgsl`.
 *
 * @module
 */

import code from "../../shaders/gated_activation_forward.wgsl" with { type: "text" };
import backwardCode from "../../shaders/gated_activation_backward.wgsl" with { type: "text" };
import type { Kernel } from "../gpu/runtime.ts";
import { formatShape } from "../host_tensor.ts";
import { columns, expectShape, matrix, Tensor } from "../tensor.ts";
import { POINTWISE_BACKWARD_WGSL, POINTWISE_WGSL, pointwiseInto } from "./pointwise.ts";

const KERNEL: Kernel = { name: "gated_activation_forward", code: POINTWISE_WGSL + code };
const BACKWARD: Kernel = {
  name: "gated_activation_backward",
  code: POINTWISE_WGSL + code + POINTWISE_BACKWARD_WGSL + backwardCode,
};

/**
 * The reference's `FeedForwardConfig.act_fn` registry: exact erf GELU, relu, relu² (= relu(x)²), sigmoid, swish
 * (= silu, x·sigmoid(x)) and selu (PyTorch's α and scale).
 */
export type GatedActivationFn = "gelu" | "relu" | "relu^2" | "sigmoid" | "swish" | "selu";

/** The shader's `ACTIVATION` override for each function. */
const CODES: Record<GatedActivationFn, number> = { gelu: 0, relu: 1, "relu^2": 2, sigmoid: 3, swish: 4, selu: 5 };

/**
 * `act(x[..., :P]) ⊙ x[..., P:]` for `x` of shape `[..., 2P]`: the first half is the gate, the second the
 * up-projection (the reference's split order). Returns a new `[..., P]` tensor. With `"swish"` this is the SwiGLU
 * of xlstm_large's feed-forward (`proj_up_gate_z` fused as `[gate | z]`).
 */
export function gatedActivation(x: Tensor, activation: GatedActivationFn): Tensor {
  const { constant, p } = operands("gatedActivation", x, activation);
  const out = Tensor.empty(x.gpu, [...x.shape.slice(0, -1), p]);
  if (x.size === 0) return out;
  pointwiseInto("gatedActivation", matrix(out, p), {
    kernel: KERNEL,
    entry: "gated_activation",
    constants: { ACTIVATION: constant },
    inputs: [columns(x, 0, p), columns(x, p, p)],
    names: ["gate", "up"],
  });
  return out;
}

/**
 * Gradient of {@linkcode gatedActivation} for the upstream `dy` (`[..., P]`): returns a new `[..., 2P]` tensor
 * `[dy · up · act'(gate) | dy · act(gate)]`, both halves from one dispatch. The derivatives are exact (GELU's is
 * Φ(x) + x·φ(x) with the accurate Φ); at the kinks relu and relu² take 0 and selu takes scale·α, as PyTorch does.
 */
export function gatedActivationBackward(dy: Tensor, x: Tensor, activation: GatedActivationFn): Tensor {
  const { constant, p } = operands("gatedActivationBackward", x, activation);
  expectShape("gatedActivationBackward dy", dy, [...x.shape.slice(0, -1), p]);
  const dx = Tensor.empty(x.gpu, x.shape);
  if (x.size === 0) return dx;
  pointwiseInto("gatedActivationBackward", columns(dx, 0, p), {
    kernel: BACKWARD,
    entry: "gated_activation_backward",
    constants: { ACTIVATION: constant },
    inputs: [matrix(dy, p), columns(x, 0, p), columns(x, p, p)],
    names: ["dy", "gate", "up"],
    outSpan: 2 * p,
  });
  return dx;
}

/** Validates x `[..., 2P]` and the activation's name; returns the shader constant and P. */
function operands(op: string, x: Tensor, activation: GatedActivationFn): { constant: number; p: number } {
  const constant = CODES[activation];
  if (constant === undefined) {
    throw new RangeError(`${op}: unknown activation "${activation}"; expected one of ${Object.keys(CODES)}`);
  }
  const width = x.shape[x.shape.length - 1] ?? 0;
  if (width < 2 || width % 2 !== 0) {
    throw new RangeError(`${op} x: expected shape [..., 2P] with P ≥ 1, got ${formatShape(x.shape)}`);
  }
  return { constant, p: width / 2 };
}
