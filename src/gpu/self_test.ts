/**
 * Platform self-test for the loop limit that shapes every kernel (see `shaders/README.md`).
 *
 * @module
 */

import code from "../../shaders/self_test_loop.wgsl" with { type: "text" };
import { type Gpu, Params } from "./runtime.ts";

/** What the loop self-test found. */
export interface LoopLimitReport {
  /** Iterations asked for. */
  requested: number;
  /** Iterations the device ran. */
  counted: number;
  /** True when the device cut the loop short (lavapipe stops at 65,535 iterations per invocation). */
  truncates: boolean;
}

/**
 * Runs one invocation of a `trips`-iteration loop and reports whether the device completed it.
 *
 * @example
 * ```ts
 * import { checkLoopLimit, getGpu } from "@xlstm/core";
 * const report = await checkLoopLimit(await getGpu());
 * console.log(report.truncates ? `loops stop after ${report.counted} iterations` : "loops run to completion");
 * ```
 */
export async function checkLoopLimit(gpu: Gpu, trips = 70_000): Promise<LoopLimitReport> {
  const out = gpu.alloc(4);
  try {
    gpu.dispatch(gpu.pipeline({ name: "self_test_loop", code }), [out], new Params().u32(trips), [1]);
    const [bytes] = await gpu.read([{ buffer: out, offset: 0, size: 4 }]);
    const counted = new Uint32Array(bytes)[0];
    return { requested: trips, counted, truncates: counted !== trips };
  } finally {
    gpu.release(out);
  }
}
