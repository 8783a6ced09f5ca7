/**
 * `xLSTMLMModel` (spec A6): token embedding, block stack, LM head (optionally tied to the embedding).
 *
 * @module
 */

import type { xLSTMLMModelConfig } from "../config.ts";
import { formatShape } from "../host_tensor.ts";
import { embedding, linear } from "../nn/functional.ts";
import { expectShape, type Tensor, tidy } from "../tensor.ts";
import { xLSTMBlockStack, type xLSTMBlockStackState } from "./block_stack.ts";
import { type CreateOptions, Module, rootScope } from "./module.ts";
import { inits, type Scope } from "./parameters.ts";

/**
 * A language model over an xLSTM block stack: int32 ids `[B, S]` → logits `[B, S, V]`.
 *
 * As in the reference, construction does not call `reset_parameters()`: the embedding starts N(0, 1) and an untied
 * head U(±1/√E). Call {@linkcode xLSTMLMModel.resetParameters} for the training initialisation.
 *
 * @example
 * ```ts
 * import { Tensor, xLSTMLMModel, xLSTMLMModelConfig } from "@xlstm/core";
 * const cfg = xLSTMLMModelConfig({
 *   mlstm_block: { mlstm: { num_heads: 2 } }, context_length: 8, num_blocks: 1, embedding_dim: 32, vocab_size: 50,
 * });
 * const lm = await xLSTMLMModel.create(cfg, { seed: 0 });
 * const ids = await Tensor.from({ dtype: "int32", shape: [1, 8], data: new Int32Array([1, 2, 3, 4, 5, 6, 7, 8]) });
 * const logits = await lm.forward(ids);
 * console.log(logits.shape); // [1, 8, 50]
 * lm.dispose();
 * ```
 */
export class xLSTMLMModel extends Module {
  /** The resolved config. */
  readonly config: xLSTMLMModelConfig;
  /** The block stack (`xlstm_block_stack.…`). */
  readonly stack: xLSTMBlockStack;
  #embedding: Tensor;
  #head: Tensor;

  /** Registers the model's parameters under `scope` in the reference's order. */
  constructor(scope: Scope, config: xLSTMLMModelConfig) {
    super(scope);
    this.config = config;
    const E = config.embedding_dim, V = config.vocab_size;
    this.stack = new xLSTMBlockStack(scope.child("xlstm_block_stack"), config);
    this.#embedding = scope.child("token_embedding").add("weight", [V, E], inits.normal(1));
    if (config.tie_weights) {
      scope.store.alias(`${scope.prefix}lm_head.weight`, `${scope.prefix}token_embedding.weight`);
      this.#head = this.#embedding;
    } else {
      this.#head = scope.child("lm_head").add("weight", [V, E], inits.uniform(1 / Math.sqrt(E)));
    }
  }

  /** Creates a model with fresh parameters (state_dict keys as the reference's `xLSTMLMModel`). */
  static async create(config: xLSTMLMModelConfig, options: CreateOptions = {}): Promise<xLSTMLMModel> {
    return new xLSTMLMModel(await rootScope(options), config);
  }

  /** The reference's `reset_parameters()`: small init of the embedding and the untied head. */
  resetParameters(): void {
    const small = inits.small(this.config.embedding_dim), p = this.scope.prefix;
    this.scope.store.reinit(`${p}token_embedding.weight`, small);
    if (!this.config.tie_weights) this.scope.store.reinit(`${p}lm_head.weight`, small);
  }

  /** Logits for int32 token ids `[B, S]` → `[B, S, V]`. Ids outside `[0, V)` give NaN logits for that position. */
  forward(ids: Tensor): Promise<Tensor> {
    return Promise.resolve(this.apply(ids));
  }

  /** One step: ids `[B, 1]` → `[logits [B, 1, V], state]`; `state` is undefined at the start. */
  step(ids: Tensor, state?: xLSTMBlockStackState): Promise<[Tensor, xLSTMBlockStackState]> {
    return Promise.resolve(this.applyStep(ids, state));
  }

  /** The synchronous step (what generation records token after token). */
  applyStep(ids: Tensor, state?: xLSTMBlockStackState): [Tensor, xLSTMBlockStackState] {
    this.#checkIds(ids, 1);
    return tidy(() => {
      const [h, next] = this.stack.applyStep(embedding(ids, this.#embedding), state);
      return [this.#logits(h), next];
    });
  }

  /** The synchronous forward. */
  apply(ids: Tensor): Tensor {
    this.#checkIds(ids, -1);
    return tidy(() => this.#logits(this.stack.apply(embedding(ids, this.#embedding))));
  }

  #checkIds(ids: Tensor, S: number): void {
    expectShape("xLSTMLMModel token ids", ids, [-1, S]);
    if (ids.dtype !== "int32") {
      throw new TypeError(`xLSTMLMModel token ids ${formatShape(ids.shape)} must be int32, got ${ids.dtype}`);
    }
  }

  #logits(h: Tensor): Tensor {
    return linear(h, this.#head, null);
  }
}
