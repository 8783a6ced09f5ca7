/**
 * The accurate f32 math of `shaders/accurate_math.wgsl` (exp, expm1, tanh, sigmoid, silu) for kernels that fuse a
 * pointwise step into their loads or stores, so that a fused result is computed exactly as the separate pointwise
 * kernel computes it.
 *
 * @module
 */

import math from "../../shaders/accurate_math.wgsl" with { type: "text" };

/**
 * WGSL source of the accurate math functions (`tanh_accurate`, `sigmoid`, `silu`, …) on element type `f32` or
 * `vec4f` (the functions are written for an alias `V`, which this declares with its integer companions).
 */
export function accurateMath(element: "f32" | "vec4f"): string {
  const [v, vi, vu] = element === "f32" ? ["f32", "i32", "u32"] : ["vec4f", "vec4i", "vec4u"];
  return `alias V = ${v};\nalias VI = ${vi};\nalias VU = ${vu};\n${math}\n`;
}
