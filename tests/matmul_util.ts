/**
 * Helpers of the matmul tests: random operands in float32 or float16 with their exact values, and the kernels a
 * call dispatches (to check which of gemm's kernels ran).
 */

import type { Gpu } from "../src/gpu/runtime.ts";
import { f16ToNumber, type HostTensor, numberToF16 } from "../src/host_tensor.ts";
import { gemvMinK } from "../src/ops/matmul.ts";
import { Tensor } from "../src/tensor.ts";
import { randomTensor, type Rng } from "./util.ts";

/** The weight element types the adapter supports. */
export type Dtype = "float32" | "float16";

/** A random tensor on the GPU and its exact float64 values (float16 values rounded first). */
export function random(
  gpu: Gpu,
  rng: Rng,
  shape: number[],
  dtype: Dtype = "float32",
  std = 1,
): { t: Tensor; v: Float64Array } {
  const { host, values } = randomTensor(rng, shape, std);
  if (dtype === "float32") return { t: Tensor.fromHost(gpu, host), v: values };
  const bits = Uint16Array.from(values, numberToF16);
  const half: HostTensor = { dtype: "float16", shape, data: bits };
  return { t: Tensor.fromHost(gpu, half, { dtype: "float16" }), v: Float64Array.from(bits, f16ToNumber) };
}

/** float32, and float16 where the adapter has `shader-f16`. */
export function dtypes(gpu: Gpu): Dtype[] {
  return gpu.hasF16 ? ["float32", "float16"] : ["float32"];
}

/**
 * Runs `fn` and returns the shader names of the dispatches it records (`"matmul"`, `"matmul_gemv(f16 B)"`, …).
 * Inside `limited` (which replaces `gpu.dispatch` itself), call this within its function, not around it.
 */
export async function kernelsOf(gpu: Gpu, fn: () => Promise<void> | void): Promise<string[]> {
  const names: string[] = [];
  const own = Object.hasOwn(gpu, "dispatch"), inner = gpu.dispatch;
  gpu.dispatch = (pipeline, storage, params, workgroups) => {
    names.push(pipeline.label.split(":")[0]);
    inner.call(gpu, pipeline, storage, params, workgroups);
  };
  try {
    await fn();
  } finally {
    if (own) gpu.dispatch = inner;
    else delete (gpu as { dispatch?: unknown }).dispatch;
  }
  return names;
}

/**
 * The kernel gemm should pick for an `[m, k]` A (not transposed) and a `transposeB` B under the GPU policy (the
 * matmul test files set `gemvMinK.software = gemvMinK.gpu`, so every adapter takes the GEMV paths a GPU takes).
 */
export function expectedKernel(m: number, k: number, dtype: Dtype): string {
  const name = m <= 8 && k >= gemvMinK.gpu ? "matmul_gemv" : "matmul";
  return dtype === "float16" ? `${name}(f16 B)` : name;
}
