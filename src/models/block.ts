/**
 * The residual xLSTM block (spec A6): `x + layer(norm(x))`, then `x + ffn(norm(x))` when it has a feed-forward.
 *
 * @module
 */

import type { BlockConfig } from "../config.ts";
import { add, norm } from "../nn/functional.ts";
import { type Tensor, tidy } from "../tensor.ts";
import { GatedFeedForward } from "./feedforward.ts";
import { mLSTMLayer, type mLSTMLayerState } from "./mlstm_layer.ts";
import { Module } from "./module.ts";
import { inits, type Scope } from "./parameters.ts";
import { sLSTMLayer, type sLSTMLayerState } from "./slstm_layer.ts";

/** Recurrent state of one block: its layer's state. */
export type xLSTMBlockState = mLSTMLayerState | sLSTMLayerState;

const NORM_EPS = 1e-5;

/** A pre-norm residual block around an mLSTM or sLSTM layer, with the sLSTM block's feed-forward. */
export class xLSTMBlock extends Module {
  /** The block's resolved config and kind. */
  readonly config: BlockConfig;
  #norm: Tensor;
  #layer: mLSTMLayer | sLSTMLayer;
  #ffnNorm: Tensor | null = null;
  #ffn: GatedFeedForward | null = null;

  /** Registers the block's parameters under `scope` in the reference's order. */
  constructor(scope: Scope, config: BlockConfig) {
    super(scope);
    this.config = config;
    const E = config.kind === "mlstm" ? config.config.mlstm.embedding_dim : config.config.slstm.embedding_dim;
    this.#norm = scope.child("xlstm_norm").add("weight", [E], inits.zeros());
    const layerScope = scope.child("xlstm");
    if (config.kind === "mlstm") {
      this.#layer = new mLSTMLayer(layerScope, config.config.mlstm);
    } else {
      this.#layer = new sLSTMLayer(layerScope, config.config.slstm);
      const ff = config.config.feedforward;
      if (ff) {
        this.#ffnNorm = scope.child("ffn_norm").add("weight", [E], inits.zeros());
        this.#ffn = new GatedFeedForward(scope.child("ffn"), ff);
      }
    }
  }

  /** Forward over a sequence `[B, S, E]`. */
  apply(x: Tensor): Tensor {
    return tidy(() => {
      const layer = this.#layer;
      const h = layer instanceof mLSTMLayer ? layer.apply(this.#normed(x)) : layer.apply(this.#normed(x))[0];
      return this.#feedForward(add(x, h));
    });
  }

  /** One step `[B, 1, E]` with the previous block state (undefined at the start). */
  applyStep(x: Tensor, state?: xLSTMBlockState): [Tensor, xLSTMBlockState] {
    return tidy(() => {
      const layer = this.#layer;
      const [h, next] = layer instanceof mLSTMLayer
        ? layer.applyStep(this.#normed(x), state as mLSTMLayerState | undefined)
        : layer.apply(this.#normed(x), state as sLSTMLayerState | undefined, layer.config.conv1d_kernel_size);
      return [this.#feedForward(add(x, h)), next];
    });
  }

  #normed(x: Tensor, weight: Tensor = this.#norm): Tensor {
    return norm(x, weight, null, { kind: "layer", eps: NORM_EPS, weightOffset: 1 });
  }

  #feedForward(x: Tensor): Tensor {
    if (!this.#ffn) return x;
    return add(x, this.#ffn.apply(this.#normed(x, this.#ffnNorm!)));
  }
}
