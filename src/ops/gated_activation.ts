/**
 * Gated activations `act(gate) ⊙ up` (spec A3.5 `GatedFeedForward`, C2 SwiGLU), on the pointwise mechanism of
 * `pointwise.ts` with the activations of `shaders/gated_activation_forward.wgsl`.
 *
 * @module
 */

import code from "../../shaders/gated_activation_forward.wgsl" with { type: "text" };
import type { Kernel } from "../gpu/runtime.ts";
import { formatShape } from "../host_tensor.ts";
import { columns, matrix, Tensor } from "../tensor.ts";
import { POINTWISE_WGSL, pointwiseInto } from "./pointwise.ts";

const KERNEL: Kernel = { name: "gated_activation_forward", code: POINTWISE_WGSL + code };

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
  const constant = CODES[activation];
  if (constant === undefined) {
    throw new RangeError(`gatedActivation: unknown activation "${activation}"; expected one of ${Object.keys(CODES)}`);
  }
  const width = x.shape[x.shape.length - 1] ?? 0;
  if (width < 2 || width % 2 !== 0) {
    throw new RangeError(`gatedActivation x: expected shape [..., 2P] with P ≥ 1, got ${formatShape(x.shape)}`);
  }
  const p = width / 2;
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
