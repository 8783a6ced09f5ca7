/**
 * A small seeded random generator for parameter initialisation and tests (mulberry32 + Box–Muller).
 *
 * @module
 */

/**
 * Seeded uniform and normal floats.
 *
 * @example
 * ```ts
 * import { Rng } from "@xlstm/core";
 * const rng = new Rng(42);
 * console.log(rng.uniform(), rng.normal());
 * ```
 */
export class Rng {
  #state: number;
  /** Creates a generator; equal seeds give equal sequences. */
  constructor(readonly seed: number) {
    this.#state = seed >>> 0;
  }
  /** Uniform in [0, 1). */
  uniform(): number {
    let t = (this.#state = (this.#state + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  /** Standard normal. */
  normal(): number {
    return Math.sqrt(-2 * Math.log(1 - this.uniform())) * Math.cos(2 * Math.PI * this.uniform());
  }
  /** Integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.uniform() * n);
  }
  /** `n` normals scaled by `std`, as float64. */
  normals(n: number, std = 1): Float64Array {
    const out = new Float64Array(n);
    for (let i = 0; i < n; i++) out[i] = this.normal() * std;
    return out;
  }
}
