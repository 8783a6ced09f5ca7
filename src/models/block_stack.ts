/**
 * `xLSTMBlockStack` (spec A6): blocks by the block map, then the post-blocks LayerNorm.
 *
 * @module
 */

import { blockConfigs, type xLSTMBlockStackConfig } from "../config.ts";
import { norm } from "../nn/functional.ts";
import { expectShape, type Tensor, tidy } from "../tensor.ts";
import { xLSTMBlock, type xLSTMBlockState } from "./block.ts";
import { type CreateOptions, Module, rootScope } from "./module.ts";
import { inits, type Scope } from "./parameters.ts";

/** Recurrent state of a stack: `{ block_0: ..., block_1: ... }`, as the reference names it. */
export type xLSTMBlockStackState = Record<string, xLSTMBlockState>;

/**
 * A stack of mLSTM and sLSTM blocks. Maps `[B, S, E]` to `[B, S, E]`.
 *
 * @example
 * ```ts
 * import { Tensor, xLSTMBlockStack, xLSTMBlockStackConfig } from "@xlstm/core";
 * const cfg = xLSTMBlockStackConfig({
 *   mlstm_block: { mlstm: { num_heads: 2 } },
 *   slstm_block: { slstm: { num_heads: 2, backend: "vanilla" } },
 *   context_length: 8, num_blocks: 2, embedding_dim: 32, slstm_at: [1],
 * });
 * const stack = await xLSTMBlockStack.create(cfg, { seed: 0 });
 * const x = await Tensor.from({ dtype: "float32", shape: [1, 8, 32], data: new Float32Array(256).fill(0.1) });
 * const y = await stack.forward(x);
 * console.log(y.shape); // [1, 8, 32]
 * stack.dispose();
 * ```
 */
export class xLSTMBlockStack extends Module {
  /** The resolved config. */
  readonly config: xLSTMBlockStackConfig;
  /** The blocks, in order. */
  readonly blocks: readonly xLSTMBlock[];
  #postNorm: Tensor | null;

  /** Registers the stack's parameters under `scope` (`blocks.{i}.…`, `post_blocks_norm.weight`). */
  constructor(scope: Scope, config: xLSTMBlockStackConfig) {
    super(scope);
    this.config = config;
    const blocks = scope.child("blocks");
    this.blocks = blockConfigs(config).map((b, i) => new xLSTMBlock(blocks.child(String(i)), b));
    this.#postNorm = config.add_post_blocks_norm
      ? scope.child("post_blocks_norm").add("weight", [config.embedding_dim], inits.zeros())
      : null;
  }

  /** Creates a stack with fresh parameters (state_dict keys as the reference's `xLSTMBlockStack`). */
  static async create(config: xLSTMBlockStackConfig, options: CreateOptions = {}): Promise<xLSTMBlockStack> {
    return new xLSTMBlockStack(await rootScope(options), config);
  }

  /** Parallel forward `[B, S, E]` → `[B, S, E]`. */
  forward(x: Tensor): Promise<Tensor> {
    return Promise.resolve(this.apply(x));
  }

  /** One recurrent step `[B, 1, E]` → `[y, state]`; `state` is undefined at the start and never modified. */
  step(x: Tensor, state?: xLSTMBlockStackState): Promise<[Tensor, xLSTMBlockStackState]> {
    return Promise.resolve(this.applyStep(x, state));
  }

  /** The synchronous forward. */
  apply(x: Tensor): Tensor {
    expectShape("xLSTMBlockStack input", x, [-1, -1, this.config.embedding_dim]);
    return tidy(() => this.#post(this.blocks.reduce((h, block) => block.apply(h), x)));
  }

  /** The synchronous step. */
  applyStep(x: Tensor, state?: xLSTMBlockStackState): [Tensor, xLSTMBlockStackState] {
    expectShape("xLSTMBlockStack step input", x, [-1, 1, this.config.embedding_dim]);
    return tidy(() => {
      const next: xLSTMBlockStackState = {};
      let h = x;
      this.blocks.forEach((block, i) => {
        [h, next[`block_${i}`]] = block.applyStep(h, state?.[`block_${i}`]);
      });
      return [this.#post(h), next];
    });
  }

  #post(h: Tensor): Tensor {
    return this.#postNorm ? norm(h, this.#postNorm, null, { kind: "layer", eps: 1e-5, weightOffset: 1 }) : h;
  }
}
