/**
 * The gated feed-forward of the sLSTM block (spec A3.5): `proj_down(act(g) ⊙ u)` with `[g, u] = proj_up(x)`.
 *
 * @module
 */

import type { FeedForwardConfig } from "../config.ts";
import { gatedActivation, linear } from "../nn/functional.ts";
import { type Tensor, tidy } from "../tensor.ts";
import { Module } from "./module.ts";
import { inits, type Scope } from "./parameters.ts";

/** `GatedFeedForward`: `[..., E]` → `[..., E]`. */
export class GatedFeedForward extends Module {
  /** The resolved config. */
  readonly config: FeedForwardConfig;
  #up: Tensor;
  #upBias: Tensor | null;
  #down: Tensor;
  #downBias: Tensor | null;

  /** Registers `proj_up` (small init) and `proj_down` (Wang init) under `scope`. */
  constructor(scope: Scope, config: FeedForwardConfig) {
    super(scope);
    this.config = config;
    const E = config.embedding_dim, P = config._proj_up_dim;
    const up = scope.child("proj_up"), down = scope.child("proj_down");
    this.#up = up.add("weight", [2 * P, E], inits.small(E));
    this.#upBias = config.bias ? up.add("bias", [2 * P], inits.zeros()) : null;
    this.#down = down.add("weight", [E, P], inits.wang(E, config._num_blocks ?? 1));
    this.#downBias = config.bias ? down.add("bias", [E], inits.zeros()) : null;
  }

  /** The synchronous forward. */
  apply(x: Tensor): Tensor {
    return tidy(() => {
      const hidden = gatedActivation(linear(x, this.#up, this.#upBias), this.config.act_fn);
      return linear(hidden, this.#down, this.#downBias);
    });
  }
}
