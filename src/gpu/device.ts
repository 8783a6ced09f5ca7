/**
 * WebGPU adapter and device acquisition.
 *
 * The device is requested with the adapter's own limits (otherwise WebGPU hands out its small defaults, e.g. 128 MiB
 * storage bindings and 256 MiB buffers) and with the optional features the kernels can use.
 *
 * @module
 */

import { Gpu } from "./runtime.ts";

/** Optional adapter features the kernels use when present. */
export const OPTIONAL_FEATURES: readonly GPUFeatureName[] = ["shader-f16", "timestamp-query"];

/** Raised when no WebGPU adapter or device can be had; the message says what to install. */
export class GpuUnavailableError extends Error {
  /** The error class name. */
  override name = "GpuUnavailableError";
}

/** What to install when WebGPU finds no adapter. */
export const NO_ADAPTER_HELP: string =
  "WebGPU found no adapter. Install a GPU driver with Vulkan, Metal or D3D12 support; " +
  "on a Linux machine without a GPU install Mesa's software rasterizer (lavapipe): " +
  "`apt-get install -y mesa-vulkan-drivers`, then run with DENO_WEBGPU_BACKEND=vulkan.";

/** A navigator-like source of adapters, so tests can simulate a machine without one. */
export interface AdapterSource {
  /** Same contract as `navigator.gpu.requestAdapter`. */
  requestAdapter(options?: GPURequestAdapterOptions): Promise<GPUAdapter | null>;
}

/**
 * Requests an adapter and a device with the adapter's limits and optional features.
 *
 * @example
 * ```ts
 * import { createGpu } from "@xlstm/core";
 * const gpu = await createGpu();
 * console.log(gpu.adapterName, gpu.hasF16);
 * gpu.destroy();
 * ```
 */
export async function createGpu(source: AdapterSource | null = globalThis.navigator?.gpu ?? null): Promise<Gpu> {
  if (!source) throw new GpuUnavailableError(`navigator.gpu is not available in this runtime. ${NO_ADAPTER_HELP}`);
  const adapter = await source.requestAdapter({ powerPreference: "high-performance" });
  if (!adapter) throw new GpuUnavailableError(NO_ADAPTER_HELP);
  const requiredLimits: Record<string, number> = {};
  for (const key in adapter.limits) {
    const value = (adapter.limits as unknown as Record<string, unknown>)[key];
    if (typeof value === "number") requiredLimits[key] = value;
  }
  const requiredFeatures = OPTIONAL_FEATURES.filter((f) => adapter.features.has(f));
  let device: GPUDevice;
  try {
    device = await adapter.requestDevice({ requiredLimits, requiredFeatures });
  } catch (e) {
    throw new GpuUnavailableError(`the WebGPU adapter refused a device: ${(e as Error).message}`);
  }
  return new Gpu(device, adapter.info?.description || adapter.info?.vendor || "unknown adapter", requiredFeatures);
}

let shared: Promise<Gpu> | null = null;

/**
 * The process-wide default GPU, created on first use. Models and tensors use it unless given another.
 *
 * @example
 * ```ts
 * import { getGpu } from "@xlstm/core";
 * const gpu = await getGpu();
 * console.log(gpu.limits.maxStorageBufferBindingSize);
 * ```
 */
export function getGpu(): Promise<Gpu> {
  if (!shared) {
    shared = createGpu();
    shared.catch(() => (shared = null));
  }
  return shared;
}

/**
 * Destroys the default GPU (all its buffers become invalid); the next {@linkcode getGpu} creates a fresh one.
 *
 * @example
 * ```ts
 * import { getGpu, releaseGpu } from "@xlstm/core";
 * await getGpu();
 * await releaseGpu();
 * ```
 */
export async function releaseGpu(): Promise<void> {
  const current = shared;
  shared = null;
  if (current) (await current.catch(() => null))?.destroy();
}
