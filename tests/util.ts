/**
 * Test helpers: a seeded generator (the seed is printed so a failure can be replayed), float64 comparison, and one
 * lazily created GPU per test file.
 */

import { createGpu } from "../src/gpu/device.ts";
import { Gpu } from "../src/gpu/runtime.ts";
import type { HostTensor } from "../src/host_tensor.ts";
import { Rng } from "../src/random.ts";

export { Rng };

/** A fresh seed for this run, printed with the test's name so a failure can be replayed with `SEED=...`. */
export function freshRng(label: string): Rng {
  const fixed = Deno.env.get("SEED");
  const seed = fixed ? Number(fixed) : Math.floor(Math.random() * 2 ** 31);
  console.log(`${label}: seed ${seed}`);
  return new Rng(seed);
}

/** A float32 host tensor holding `data` (rounded from float64). */
export function host(shape: number[], data: ArrayLike<number>): HostTensor {
  return { dtype: "float32", shape, data: Float32Array.from(data) };
}

/** Random normal float32 host tensor and its exact float64 values. */
export function randomTensor(rng: Rng, shape: number[], std = 1): { host: HostTensor; values: Float64Array } {
  const n = shape.reduce((a, b) => a * b, 1);
  const t = host(shape, rng.normals(n, std));
  return { host: t, values: Float64Array.from(t.data as Float32Array) };
}

/** max |got − want| / max |want|: the metric of the conformance check. */
export function relativeError(got: ArrayLike<number>, want: ArrayLike<number>): number {
  if (got.length !== want.length) throw new RangeError(`length ${got.length} vs ${want.length}`);
  let maxRef = 0, maxDiff = 0;
  for (let i = 0; i < got.length; i++) {
    maxRef = Math.max(maxRef, Math.abs(want[i]));
    const d = Math.abs(got[i] - want[i]);
    if (!(d <= maxDiff)) maxDiff = Number.isNaN(d) ? Infinity : d;
  }
  return maxDiff / Math.max(maxRef, 1e-30);
}

/** Throws unless `got` is within `tol` of `want` in {@linkcode relativeError}. */
export function assertClose(got: ArrayLike<number>, want: ArrayLike<number>, tol: number, what = "values"): void {
  const err = relativeError(got, want);
  if (!(err <= tol)) throw new Error(`${what}: relative error ${err.toExponential(3)} exceeds ${tol.toExponential(1)}`);
}

/**
 * Runs `fn` with `gpu.maxBinding` lowered to `bytes` (and, when given, maxComputeWorkgroupsPerDimension to
 * `maxGroups`), checking that no binding exceeds the limit; returns the number of dispatches recorded.
 */
export async function limited(
  gpu: Gpu,
  bytes: number,
  maxGroups: number | null,
  fn: () => Promise<void>,
): Promise<number> {
  const saved = { maxBinding: gpu.maxBinding, limits: gpu.limits };
  const mutable = gpu as { maxBinding: number; limits: GPUSupportedLimits };
  mutable.maxBinding = bytes;
  if (maxGroups !== null) {
    const copy: Record<string, unknown> = {};
    for (const key in gpu.limits) copy[key] = gpu.limits[key as keyof GPUSupportedLimits];
    mutable.limits = { ...copy, maxComputeWorkgroupsPerDimension: maxGroups } as unknown as GPUSupportedLimits;
  }
  let dispatches = 0;
  gpu.dispatch = (pipeline, storage, params, workgroups) => {
    dispatches++;
    for (const { size } of storage) {
      if (size > gpu.maxBinding) throw new Error(`a binding of ${size} bytes exceeds maxBinding ${gpu.maxBinding}`);
    }
    Gpu.prototype.dispatch.call(gpu, pipeline, storage, params, workgroups);
  };
  try {
    await fn();
  } finally {
    Object.assign(mutable, saved);
    delete (gpu as { dispatch?: unknown }).dispatch;
  }
  return dispatches;
}

let gpuPromise: Promise<Gpu> | null = null;

/** The test file's GPU, created on first use; call {@linkcode closeTestGpu} in the file's last test. */
export function testGpu(): Promise<Gpu> {
  return gpuPromise ??= createGpu();
}

/** Destroys the test file's GPU. */
export async function closeTestGpu(): Promise<void> {
  if (gpuPromise) (await gpuPromise).destroy();
  gpuPromise = null;
}
