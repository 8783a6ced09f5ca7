/**
 * Learning-rate schedules.
 *
 * @module
 */

/** Parameters of {@linkcode linearWarmupCosine}. */
export interface LinearWarmupCosineOptions {
  /** Steps of linear warm-up from 0 to `maxLr`. */
  warmupSteps: number;
  /** Step at which the cosine decay reaches `minLr`; constant `minLr` from there on. */
  decayUntilStep: number;
  /** Peak learning rate, reached at step `warmupSteps`. */
  maxLr: number;
  /** Final learning rate. */
  minLr: number;
}

/**
 * The reference's `LinearWarmupCosineAnnealing` (spec D1): optimizer step `k` (0-based) uses
 * - `maxLr · k / warmupSteps` for `k < warmupSteps` (so step 0 uses learning rate 0),
 * - `minLr + 0.5 · (1 + cos(π · (k − warmupSteps) / (decayUntilStep − warmupSteps))) · (maxLr − minLr)` for
 *   `warmupSteps ≤ k < decayUntilStep`,
 * - `minLr` from `decayUntilStep` on.
 * Operations are evaluated in the reference's order, so the values match it to the last bit where `Math.cos` does.
 *
 * @example
 * ```ts
 * import { linearWarmupCosine } from "@xlstm/core";
 * const lr = linearWarmupCosine({ warmupSteps: 2000, decayUntilStep: 20000, maxLr: 1e-3, minLr: 1e-6 });
 * console.log(lr(0), lr(1000), lr(2000), lr(20000)); // 0 0.0005 0.001 0.000001
 * ```
 */
export function linearWarmupCosine(options: LinearWarmupCosineOptions): (step: number) => number {
  const { warmupSteps, decayUntilStep, maxLr, minLr } = options;
  if (!(warmupSteps >= 0) || !(decayUntilStep >= 0)) {
    throw new RangeError(`linearWarmupCosine: invalid steps warmup ${warmupSteps}, decay until ${decayUntilStep}`);
  }
  return (step: number): number => {
    if (step < warmupSteps) return (maxLr * step) / warmupSteps;
    if (step >= decayUntilStep) return minLr;
    const ratio = (step - warmupSteps) / (decayUntilStep - warmupSteps);
    return minLr + 0.5 * (1 + Math.cos(Math.PI * ratio)) * (maxLr - minLr);
  };
}
