/**
 * The NeurIPS sLSTM layer (spec A5): optional causal conv + swish, four block-diagonal gate projections, the fused
 * recurrent sLSTM cell, and a multi-head group norm.
 *
 * @module
 */

import type { sLSTMLayerConfig } from "../config.ts";
import { causalConv1d, concatColumns, linearHeadwise, norm, slstm } from "../nn/functional.ts";
import { causalConv1d as causalConv1dStep, conv1dStateUpdate } from "../ops/conv1d.ts";
import { expectShape, matrix, type Tensor, tidy } from "../tensor.ts";
import { type CreateOptions, Module, rootScope } from "./module.ts";
import { type Init, inits, type Layout, type Scope } from "./parameters.ts";

/** Recurrent state of an sLSTM layer, as the reference returns it. */
export interface sLSTMLayerState {
  /** `[window]`: recent conv inputs `[B, frames, H]`, oldest first (absent without a conv). */
  conv_state?: [Tensor];
  /** `[num_states, B, H]`: (y, c, n, m) for `slstm`, (y, c) for `lstm`; H head-major. */
  slstm_state: Tensor;
}

const NORM_EPS = 1e-5;

/**
 * The recurrent kernel and bias layouts of the reference's `cuda` backend (spec A5.4). We compute in the vanilla
 * layout; a `cuda` config stores and loads its state_dict in the cuda layout, as the reference does. Checkpoint
 * conversion (checkpoint_format.ts) uses the same mapping.
 */
export function cudaLayouts(NH: number, DH: number): { kernel: Layout; bias: Layout } {
  const H = NH * DH;
  // internal kernel [h, g·DH + o, i] ↔ cuda [h, i, g·DH + o]; internal bias [g·H + h·DH + d] ↔ cuda [h·4DH + g·DH + d]
  const kernelIndex = (h: number, r: number, i: number) => [(h * 4 * DH + r) * DH + i, (h * DH + i) * 4 * DH + r];
  const biasIndex = (g: number, h: number, d: number) => [g * H + h * DH + d, h * 4 * DH + g * DH + d];
  const permute = (visit: (f: (pair: number[]) => void) => void, toExternal: boolean) => (src: Float32Array) => {
    const out = new Float32Array(src.length);
    visit(([internal, external]) => {
      if (toExternal) out[external] = src[internal];
      else out[internal] = src[external];
    });
    return out;
  };
  const kernelVisit = (f: (pair: number[]) => void) => {
    for (let h = 0; h < NH; h++) for (let r = 0; r < 4 * DH; r++) for (let i = 0; i < DH; i++) f(kernelIndex(h, r, i));
  };
  const biasVisit = (f: (pair: number[]) => void) => {
    for (let g = 0; g < 4; g++) for (let h = 0; h < NH; h++) for (let d = 0; d < DH; d++) f(biasIndex(g, h, d));
  };
  return {
    kernel: {
      shape: [NH, DH, 4 * DH],
      toExternal: permute(kernelVisit, true),
      fromExternal: permute(kernelVisit, false),
    },
    bias: { shape: [4 * H], toExternal: permute(biasVisit, true), fromExternal: permute(biasVisit, false) },
  };
}

/** The sLSTM bias initialisation (spec A7), gate-major [i | f | z | o], each head-major. */
function biasInit(config: sLSTMLayerConfig, NH: number, DH: number): Init {
  const H = NH * DH;
  const forgetGate = (perHead: (d: number) => number): Init => () => {
    const b = new Float64Array(4 * H);
    for (let h = 0; h < NH; h++) for (let d = 0; d < DH; d++) b[H + h * DH + d] = perHead(d);
    return b;
  };
  switch (config.bias_init) {
    case "powerlaw_blockdependent": {
      const blocks = config._num_blocks ?? 1;
      const r = blocks > 1 ? (config._block_idx ?? 0) / (blocks - 1) : 0;
      return forgetGate((d) => -(-5 + 12 * (d / (DH - 1)) ** (0.3 + 1.3 * r)));
    }
    case "small_init":
      return forgetGate((d) => DH === 1 ? 3 : 3 + 3 * d / (DH - 1));
    case "standard":
      return inits.uniform(1 / Math.sqrt(H));
    default:
      return inits.zeros();
  }
}

/**
 * The sLSTM layer. `forward` maps `[B, S, H]` to `[[B, S, H], state]`.
 *
 * @example
 * ```ts
 * import { sLSTMLayer, sLSTMLayerConfig, Tensor } from "@xlstm/core";
 * const cfg = sLSTMLayerConfig({ embedding_dim: 16, num_heads: 2, backend: "vanilla" });
 * const layer = await sLSTMLayer.create(cfg, { seed: 0 });
 * const x = await Tensor.from({ dtype: "float32", shape: [1, 5, 16], data: new Float32Array(80).fill(0.5) });
 * const [y, state] = await layer.forward(x);
 * console.log(y.shape, state.slstm_state.shape); // [1, 5, 16] [4, 1, 16]
 * layer.dispose();
 * ```
 */
export class sLSTMLayer extends Module {
  /** The resolved config. */
  readonly config: sLSTMLayerConfig;
  #w: Record<"i" | "f" | "z" | "o" | "kernel" | "bias", Tensor> & { conv?: Tensor; convBias?: Tensor; norm?: Tensor };

  /**
   * Registers the parameters under `scope`. Inside a block the gate projections get small_init(E) (the block resets
   * them); a standalone layer keeps LinearHeadwiseExpand's own N(0, 2/5/DH) init, as the reference does.
   */
  constructor(scope: Scope, config: sLSTMLayerConfig, inBlock = true) {
    super(scope);
    this.config = config;
    const H = config.embedding_dim, NH = config.num_heads, DH = H / NH, KS = config.conv1d_kernel_size;
    const gateInit = inBlock ? inits.small(H) : inits.normal(Math.sqrt(2 / 5 / DH));
    const layouts = config.backend === "cuda" ? cudaLayouts(NH, DH) : { kernel: undefined, bias: undefined };
    const conv = KS > 0 ? scope.child("conv1d").child("conv") : null;
    const convBound = 1 / Math.sqrt(KS);
    const cell = scope.child("slstm_cell");
    const kernelInit = config.recurrent_weight_init === "standard" ? inits.uniform(1 / Math.sqrt(H)) : inits.zeros();
    // Registration order is the reference's state_dict order. The cell's i slot reads the module named `fgate`
    // and its f slot the module named `igate` (spec A5, verbatim in the reference).
    this.#w = {
      conv: conv?.add("weight", [H, 1, KS], inits.uniform(convBound)),
      convBias: conv?.add("bias", [H], inits.uniform(convBound)),
      i: scope.child("fgate").add("weight", [NH, DH, DH], gateInit),
      f: scope.child("igate").add("weight", [NH, DH, DH], gateInit),
      z: scope.child("zgate").add("weight", [NH, DH, DH], gateInit),
      o: scope.child("ogate").add("weight", [NH, DH, DH], gateInit),
      kernel: cell.add("_recurrent_kernel_", [NH, 4 * DH, DH], kernelInit, layouts.kernel),
      bias: cell.add("_bias_", [4 * H], biasInit(config, NH, DH), layouts.bias),
      // Without `group_norm_weight` the reference has no such parameter and scales by 1.
      norm: config.group_norm_weight ? scope.child("group_norm").add("weight", [H], inits.zeros()) : undefined,
    };
  }

  /** Creates a standalone layer with fresh parameters (state_dict keys without prefix). */
  static async create(config: sLSTMLayerConfig, options: CreateOptions = {}): Promise<sLSTMLayer> {
    return new sLSTMLayer(await rootScope(options), config, false);
  }

  /** Forward over a sequence from `state` (zeros when absent): `[B, S, H]` → `[y, final state]`. */
  forward(x: Tensor, state?: sLSTMLayerState): Promise<[Tensor, sLSTMLayerState]> {
    return Promise.resolve(this.apply(x, state));
  }

  /** One step: `[B, 1, H]` → `[y, state]`; the conv window keeps `conv1d_kernel_size` frames, as the reference. */
  step(x: Tensor, state?: sLSTMLayerState): Promise<[Tensor, sLSTMLayerState]> {
    expectShape("sLSTMLayer step input", x, [-1, 1, this.config.embedding_dim]);
    return Promise.resolve(this.apply(x, state, this.config.conv1d_kernel_size));
  }

  /**
   * The synchronous forward. The returned conv window holds `windowFrames` frames: `conv1d_kernel_size − 1` after a
   * forward (as the reference's `return_last_state`) and `conv1d_kernel_size` after a step.
   */
  apply(
    x: Tensor,
    state?: sLSTMLayerState,
    windowFrames = this.config.conv1d_kernel_size - 1,
  ): [Tensor, sLSTMLayerState] {
    const c = this.config, H = c.embedding_dim, NH = c.num_heads, KS = c.conv1d_kernel_size;
    expectShape("sLSTMLayer input", x, [-1, -1, H]);
    const [B, S] = x.shape;
    if (state) expectShape("sLSTM state slstm_state", state.slstm_state, [c.num_states, B, H]);
    const w = this.#w;
    return tidy(() => {
      const rows = matrix(x);
      const history = state?.conv_state?.[0] ?? null;
      const convOptions = { batch: B, activation: "swish" as const };
      // A carried conv window (recurrent steps) goes through the inference kernel; training runs from zeros.
      const convolved = !w.conv
        ? null
        : history
        ? causalConv1dStep(rows, w.conv, w.convBias!, { ...convOptions, history })
        : causalConv1d(rows, w.conv, w.convBias!, convOptions);
      const xc = convolved ? matrix(convolved) : rows;
      const gates = [[xc, w.i], [xc, w.f], [rows, w.z], [rows, w.o]] as const;
      const wx = concatColumns(gates.map(([input, weight]) => linearHeadwise(input, weight, null))).reshape([
        B,
        S,
        4 * H,
      ]);
      const cell = slstm(wx, w.kernel, w.bias, state?.slstm_state ?? null, { numHeads: NH, fn: c.function });
      const y = norm(cell.y, w.norm ?? null, null, { kind: "layer", groups: NH, eps: NORM_EPS, weightOffset: 1 });
      const next: sLSTMLayerState = { slstm_state: cell.state };
      // a forward with KS = 1 keeps no frames (the window is KS − 1), so there is no conv state to return
      if (KS > 0 && windowFrames > 0) {
        next.conv_state = [conv1dStateUpdate(history, rows, { batch: B, frames: windowFrames })];
      }
      return [y, next];
    });
  }
}
