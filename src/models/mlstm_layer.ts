/**
 * The NeurIPS mLSTM layer (spec A4): up-projection, causal conv + swish, block-diagonal q/k/v, the stabilised
 * parallel mLSTM cell (or its recurrent step), multi-head norm, learnable skip, output gate and down-projection.
 *
 * @module
 */

import type { mLSTMLayerConfig } from "../config.ts";
import {
  causalConv1d,
  concatColumns,
  linear,
  linearHeadwise,
  mlstmOutputGate,
  mlstmParallel,
  norm,
} from "../nn/functional.ts";
import { causalConv1d as causalConv1dStep, conv1dStateUpdate } from "../ops/conv1d.ts";
import { mlstmRecurrentStep } from "../ops/mlstm.ts";
import { columns, expectShape, matrix, type MatrixView, type Tensor, tidy } from "../tensor.ts";
import { type CreateOptions, Module, rootScope } from "./module.ts";
import { inits, type Scope } from "./parameters.ts";

/** Recurrent state of an mLSTM layer, as the reference's `step` returns it. */
export interface mLSTMLayerState {
  /** `[window]`: the last `conv1d_kernel_size` conv inputs `[B, KS, D]`, oldest first. */
  conv_state: [Tensor];
  /** `[C, n, m]`: `[B, NH, DH, DH]`, `[B, NH, DH, 1]`, `[B, NH, 1, 1]` (keys scaled by 1/√DH, as the reference). */
  mlstm_state: [Tensor, Tensor, Tensor];
}

/** mLSTM cell and layer constants of the reference. */
const NORM_EPS = 1e-5;

/**
 * The mLSTM layer. Maps `[B, S, E]` to `[B, S, E]`.
 *
 * @example
 * ```ts
 * import { mLSTMLayer, mLSTMLayerConfig, Tensor } from "@xlstm/core";
 * const cfg = mLSTMLayerConfig({ embedding_dim: 32, num_heads: 2, context_length: 8 });
 * const layer = await mLSTMLayer.create(cfg, { seed: 0 });
 * const x = await Tensor.from({ dtype: "float32", shape: [1, 8, 32], data: new Float32Array(256).fill(0.1) });
 * console.log((await layer.forward(x)).shape); // [1, 8, 32]
 * layer.dispose();
 * ```
 */
export class mLSTMLayer extends Module {
  /** The resolved config. */
  readonly config: mLSTMLayerConfig;
  #w: Record<string, Tensor | null>;

  /** Registers the layer's parameters under `scope` with the reference's initialisation (spec A7). */
  constructor(scope: Scope, config: mLSTMLayerConfig) {
    super(scope);
    this.config = config;
    const E = config.embedding_dim, D = config._inner_embedding_dim!, NH = config.num_heads;
    const KS = config.conv1d_kernel_size, bs = config.qkv_proj_blocksize, NHp = D / bs;
    const small = inits.small(E);
    const linearBias = (s: Scope, n: number) => config.bias ? s.add("bias", [n], inits.zeros()) : null;
    const conv = scope.child("conv1d").child("conv");
    const cell = scope.child("mlstm_cell");
    const convBound = 1 / Math.sqrt(KS);
    const up = scope.child("proj_up"), q = scope.child("q_proj"), k = scope.child("k_proj"), v = scope.child("v_proj");
    const ig = cell.child("igate"), fg = cell.child("fgate"), down = scope.child("proj_down");
    // Registration order is the reference's state_dict order (own parameters first, then children).
    this.#w = {
      skip: scope.add("learnable_skip", [D], inits.constant(1)),
      up: up.add("weight", [2 * D, E], small),
      upBias: linearBias(up, 2 * D),
      q: q.add("weight", [NHp, bs, bs], small),
      qBias: linearBias(q, D),
      k: k.add("weight", [NHp, bs, bs], small),
      kBias: linearBias(k, D),
      v: v.add("weight", [NHp, bs, bs], small),
      vBias: linearBias(v, D),
      conv: conv.add("weight", [D, 1, KS], inits.uniform(convBound)),
      convBias: conv.add("bias", [D], inits.uniform(convBound)),
      ig: ig.add("weight", [NH, 3 * D], inits.zeros()),
      igBias: ig.add("bias", [NH], inits.normal(0.1)),
      fg: fg.add("weight", [NH, 3 * D], inits.zeros()),
      fgBias: fg.add("bias", [NH], inits.linspace(3, 6)),
      outnorm: cell.child("outnorm").add("weight", [D], inits.zeros()),
      down: down.add("weight", [E, D], inits.wang(E, config._num_blocks ?? 1)),
      downBias: linearBias(down, E),
    };
  }

  /** Creates a standalone layer with fresh parameters (state_dict keys without prefix). */
  static async create(config: mLSTMLayerConfig, options: CreateOptions = {}): Promise<mLSTMLayer> {
    return new mLSTMLayer(await rootScope(options), config);
  }

  /** Parallel forward over a whole sequence: `[B, S, E]` → `[B, S, E]`. */
  forward(x: Tensor): Promise<Tensor> {
    return Promise.resolve(this.apply(x));
  }

  /** {@linkcode mLSTMLayer.forward} without the promise, for composition inside blocks. */
  apply(x: Tensor): Tensor {
    const [B, S] = this.#checkInput(x, -1);
    const { NH } = this.#dims;
    return tidy(() =>
      this.#run(
        x,
        B,
        S,
        (xm) => causalConv1d(xm, this.#w.conv!, this.#w.convBias, { batch: B, activation: "swish" }),
        ([q, k, v], ig, fg) =>
          mlstmParallel(matrix(q), matrix(k), matrix(v), matrix(ig), matrix(fg), { batch: B, numHeads: NH }),
      )
    );
  }

  /** One recurrent step: `[B, 1, E]` and the previous state (undefined at the start) → `[y, state]`. */
  step(x: Tensor, state?: mLSTMLayerState): Promise<[Tensor, mLSTMLayerState]> {
    return Promise.resolve(this.applyStep(x, state));
  }

  /** {@linkcode mLSTMLayer.step} without the promise. The previous state is left untouched. */
  applyStep(x: Tensor, state?: mLSTMLayerState): [Tensor, mLSTMLayerState] {
    const [B] = this.#checkInput(x, 1);
    const { D, NH, DH, KS } = this.#dims;
    if (state) {
      expectShape("mLSTM state conv_state[0]", state.conv_state[0], [B, KS, D]);
      expectShape("mLSTM state mlstm_state[0] (C)", state.mlstm_state[0], [B, NH, DH, DH]);
      expectShape("mLSTM state mlstm_state[1] (n)", state.mlstm_state[1], [B, NH, DH, 1]);
      expectShape("mLSTM state mlstm_state[2] (m)", state.mlstm_state[2], [B, NH, 1, 1]);
    }
    return tidy(() => {
      const history = state?.conv_state[0] ?? null;
      let window: Tensor | undefined;
      let cell: { h: Tensor; c: Tensor; n: Tensor; m: Tensor } | undefined;
      const y = this.#run(x, B, 1, (xm) => {
        window = conv1dStateUpdate(history, xm, { batch: B, frames: KS });
        return causalConv1dStep(xm, this.#w.conv!, this.#w.convBias, { batch: B, activation: "swish", history });
      }, ([q, k, v], ig, fg) => {
        const prev = state && {
          c: state.mlstm_state[0].reshape([B, NH, DH, DH]),
          n: state.mlstm_state[1].reshape([B, NH, DH]),
          m: state.mlstm_state[2].reshape([B, NH]),
        };
        cell = mlstmRecurrentStep(matrix(q), matrix(k), matrix(v), matrix(ig), matrix(fg), prev ?? null, {
          numHeads: NH,
          keyScaledState: true,
        });
        return cell.h;
      });
      const next: mLSTMLayerState = {
        conv_state: [window!],
        mlstm_state: [
          cell!.c.reshape([B, NH, DH, DH]),
          cell!.n.reshape([B, NH, DH, 1]),
          cell!.m.reshape([B, NH, 1, 1]),
        ],
      };
      return [y, next];
    });
  }

  get #dims(): { E: number; D: number; NH: number; DH: number; KS: number } {
    const c = this.config, D = c._inner_embedding_dim!;
    return { E: c.embedding_dim, D, NH: c.num_heads, DH: D / c.num_heads, KS: c.conv1d_kernel_size };
  }

  #checkInput(x: Tensor, S: number): [number, number] {
    expectShape("mLSTMLayer input", x, [-1, S, this.config.embedding_dim]);
    return [x.shape[0], x.shape[1]];
  }

  /** The layer's pipeline (inside a `tidy`); `convolve` and `cell` are the parallel or the recurrent variants. */
  #run(
    x: Tensor,
    B: number,
    S: number,
    convolve: (xm: MatrixView) => Tensor,
    cell: (qkv: [Tensor, Tensor, Tensor], ig: Tensor, fg: Tensor) => Tensor,
  ): Tensor {
    const w = this.#w, { E, D, NH } = this.#dims;
    const up = linear(x.reshape([B * S, E]), w.up!, w.upBias);
    const xm = columns(up, 0, D);
    const xc = convolve(xm);
    const q = linearHeadwise(matrix(xc), w.q!, w.qBias);
    const k = linearHeadwise(matrix(xc), w.k!, w.kBias);
    const v = linearHeadwise(xm, w.v!, w.vBias);
    // The gates read concat(q, k, v), as the reference's cell does.
    const qkv = concatColumns([q, k, v]);
    const ig = linear(qkv, w.ig!, w.igBias);
    const fg = linear(qkv, w.fg!, w.fgBias);
    const h = cell([q, k, v], ig, fg);
    const hn = norm(h, w.outnorm, null, { kind: "layer", groups: NH, eps: NORM_EPS, weightOffset: 1 });
    const gated = mlstmOutputGate(hn.reshape([B * S, D]), w.skip!, xc.reshape([B * S, D]), columns(up, D, D));
    return linear(gated, w.down!, w.downBias).reshape([B, S, E]);
  }
}
