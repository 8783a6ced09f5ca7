/**
 * `xLSTMLarge` (spec C1–C4): the xLSTM 7B architecture. Embedding, a stack of mLSTM blocks (RMSNorm → mLSTM layer
 * with soft-capped gates, sigmoid output gate and multi-head norm → residual; RMSNorm → SwiGLU FFN → residual), an
 * output RMSNorm and a soft-capped LM head; greedy generation over the recurrent state.
 *
 * @module
 */

import { needsGrad, noGrad, record } from "../autograd.ts";
import type { xLSTMLargeConfig } from "../config.ts";
import { type GenerateOptions, generateTokens } from "../generate/generate.ts";
import { releaseState } from "../generate/model.ts";
import { formatShape } from "../host_tensor.ts";
import {
  add,
  concatColumns,
  embedding,
  gatedActivation,
  gradFor,
  linear,
  mlstmParallel,
  norm,
} from "../nn/functional.ts";
import { gemm } from "../ops/matmul.ts";
import { mlstmRecurrentStep, type MlstmState } from "../ops/mlstm.ts";
import { mlstmChunkwiseForward } from "../ops/mlstm_chunkwise.ts";
import { norm as normKernel, type NormOptions } from "../ops/norm.ts";
import {
  addInto,
  sigmoidGate as sigmoidGateKernel,
  sigmoidGateBackward,
  softCap as softCapKernel,
  softCapBackward,
} from "../ops/pointwise.ts";
import { columns, expectShape, matrix, type MatrixView, Tensor, tidy } from "../tensor.ts";
import { type CreateOptions, Module, rootScope } from "./module.ts";
import { inits, type Scope } from "./parameters.ts";

/**
 * Recurrent state of an `xLSTMLarge`, as the reference's dict `{block_idx: (C, n, m)}`: per block, C
 * `[B, NH, DHQK, DHV]`, n `[B, NH, DHQK]`, m `[B, NH, 1]`, in the mlstm_kernels convention (keys unscaled in C and
 * n, queries scaled by DHQK^(-1/2) when read; spec B2.1).
 */
export type xLSTMLargeState = Record<number, [Tensor, Tensor, Tensor]>;

/**
 * Options of {@linkcode xLSTMLarge.generate}: those of `generateTokens` (greedy by default, as the reference;
 * `state` continues from a recurrent state, the reference's `state`).
 */
export type xLSTMLargeGenerateOptions = GenerateOptions<xLSTMLargeState>;

/** `cap·tanh(x / cap)`, differentiable; identity for a null cap (the reference's `soft_cap(x, None)`). */
function softCap(x: Tensor, cap: number | null): Tensor {
  if (cap === null) return x;
  return record(softCapKernel(x, cap), "softCap", [x], [x], (dy, [xs]) => [softCapBackward(dy, xs, cap)]);
}

/** `sigmoid(o) ⊙ h`, differentiable; `o` a view of h's rows (the o columns of a fused projection). */
function sigmoidGate(o: MatrixView, h: Tensor): Tensor {
  return record(sigmoidGateKernel(o, h), "sigmoidGate", [o.tensor, h], [o.tensor, h], (dy, [os, hs]) => {
    const g = sigmoidGateBackward(dy, { ...o, tensor: os }, hs);
    return [gradFor(o, g.do), g.dh];
  });
}

/** A Linear's (or a norm's) weight and optional bias. */
interface LinearWeights {
  weight: Tensor;
  bias: Tensor | null;
}

/**
 * A PyTorch-default `nn.Linear(inF, outF, bias)` under `scope`: weight and bias U(±1/√inF); the weight in the
 * model's weight dtype, the bias float32.
 */
function linearParams(scope: Scope, inF: number, outF: number, bias: boolean): LinearWeights {
  const init = inits.uniform(1 / Math.sqrt(inF));
  return {
    weight: scope.addWeight("weight", [outF, inF], init),
    bias: bias ? scope.add("bias", [outF], init) : null,
  };
}

/** A norm's weight (ones) and optional bias (zeros) under `scope`. */
function normParams(scope: Scope, n: number, bias: boolean): LinearWeights {
  return {
    weight: scope.add("weight", [n], inits.constant(1)),
    bias: bias ? scope.add("bias", [n], inits.zeros()) : null,
  };
}

function applyLinear(x: Tensor, w: LinearWeights): Tensor {
  return linear(x, w.weight, w.bias);
}

/**
 * The outputs of a group of projections of `x`, `fn` applied to each, as one column view per width: the separate
 * Linears of single mode, or the column slices of fused mode's one Linear (the same values: its weight is theirs
 * stacked by rows; `fn` must be elementwise).
 */
function project(x: Tensor, ws: LinearWeights[], widths: number[], fn = (y: Tensor) => y): MatrixView[] {
  const ys = ws.map((w) => fn(applyLinear(x, w)));
  if (ys.length === widths.length) return ys.map((y) => matrix(y));
  let at = 0;
  return widths.map((n) => columns(ys[0], (at += n) - n, n));
}

/**
 * The parameters of one `mLSTMBlock` (spec C2), in the reference's state_dict order. Projection groups hold the
 * single mode's Linears or fused mode's one.
 */
interface BlockWeights {
  normMlstm: LinearWeights;
  /** [q, k, v, ogate_preact], or [qkv_opreact] (rows [q|k|v|o]). */
  qkvo: LinearWeights[];
  /** [igate_preact, fgate_preact], or [ifgate_preact] (rows [i|f]). */
  gates: LinearWeights[];
  headNorm: LinearWeights;
  out: LinearWeights;
  normFfn: LinearWeights;
  /** [proj_up_gate, proj_up], or [proj_up_gate_z] (rows [gate|z]). */
  up: LinearWeights[];
  down: LinearWeights;
}

function blockParams(scope: Scope, c: xLSTMLargeConfig): BlockWeights {
  const E = c.embedding_dim, NH = c.num_heads, bias = c.use_bias, F = c.ffn_dim;
  const layer = scope.child("mlstm_layer"), ffn = scope.child("ffn");
  const fused = c.weight_mode === "fused";
  const lin = (s: Scope, name: string, inF: number, outF: number, b = bias) =>
    linearParams(s.child(name), inF, outF, b);
  return {
    normMlstm: normParams(scope.child("norm_mlstm"), E, bias),
    qkvo: fused ? [lin(layer, "qkv_opreact", E, 2 * c.qk_dim + 2 * c.v_dim)] : [
      lin(layer, "q", E, c.qk_dim),
      lin(layer, "k", E, c.qk_dim),
      lin(layer, "v", E, c.v_dim),
      lin(layer, "ogate_preact", E, c.v_dim),
    ],
    gates: fused
      ? [lin(layer, "ifgate_preact", E, 2 * NH, true)]
      : [lin(layer, "igate_preact", E, NH, true), lin(layer, "fgate_preact", E, NH, true)],
    headNorm: normParams(layer.child("multihead_norm"), c.v_dim, bias),
    out: lin(layer, "out_proj", c.v_dim, E),
    normFfn: normParams(scope.child("norm_ffn"), E, bias),
    up: fused ? [lin(ffn, "proj_up_gate_z", E, 2 * F)] : [lin(ffn, "proj_up_gate", E, F), lin(ffn, "proj_up", E, F)],
    down: lin(ffn, "proj_down", F, E),
  };
}

/**
 * Whether inference forwards (no gradients: from a state, under `noGrad`, or with frozen parameters) run the fused
 * kernels (see {@linkcode xLSTMLarge}); tests switch it off to compare with the unfused path.
 */
export const xlstmLargeInference: { fused: boolean } = { fused: true };

/**
 * `[RMSNorm →] x·Wⱼᵀ + bⱼ` for each Linear j, side by side in one new `[rows, ΣN]` tensor: the norm folded into the
 * products when it has no bias (else its own kernel), the Linears two per dispatch. `cap` soft-caps the outputs.
 */
function normedLinears(x: Tensor, rms: LinearWeights | null, eps: number, ws: LinearWeights[], cap?: number): Tensor {
  const E = x.shape[x.shape.length - 1], rows = x.size / E;
  const N = ws.reduce((n, w) => n + w.weight.shape[0], 0);
  const out = Tensor.empty(x.gpu, [...x.shape.slice(0, -1), N]);
  const fold = rms !== null && rms.bias === null;
  const a = rms && !fold ? normKernel(x, rms.weight, rms.bias, { kind: "rms", eps }) : x;
  for (let j = 0, col = 0; j < ws.length; j += 2) {
    const [w1, w2] = [ws[j], ws[j + 1]];
    const n = w1.weight.shape[0] + (w2?.weight.shape[0] ?? 0);
    gemm(matrix(a, E), matrix(w1.weight), { tensor: out, rows, cols: n, offset: col, stride: N }, {
      transposeB: true,
      bias: w1.bias,
      rmsNorm: fold ? { weight: rms.weight, eps } : undefined,
      softCap: cap,
      second: w2 && { b: matrix(w2.weight), bias: w2.bias },
      label: "xLSTMLarge projection",
    });
    col += n;
  }
  if (a !== x) a.dispose();
  return out;
}

/** Rows `b·S + t` (b = 0..B−1) of a `[B, S, X]` tensor or a column view of one: time step t of every sequence. */
function timeRows(x: Tensor | MatrixView, B: number, S: number, t: number): MatrixView {
  const v = x instanceof Tensor ? matrix(x, x.size / (B * S)) : x;
  return { ...v, rows: B, offset: v.offset + t * v.stride, stride: S * v.stride };
}

/**
 * The xLSTM Large language model: int32 ids `[B, S]` → `[logits [B, S, V], state]`.
 *
 * Parameters carry the names of NX-AI's `xlstm.xlstm_large.model.xLSTMLarge` state_dict (`embedding.weight`,
 * `backbone.blocks.{i}.…`, `backbone.out_norm.weight`, `lm_head.weight`) with PyTorch's default initialisation (the
 * reference has no custom init). `weight_mode: "fused"` stores each block's q|k|v|o, i|f and gate|z projections
 * as one Linear each (`qkv_opreact`, `ifgate_preact`, `proj_up_gate_z`), so a token takes fewer dispatches; the
 * cell reads column views of their outputs. `weightDtype: "float16"` (option of {@linkcode xLSTMLarge.create})
 * stores the Linear weights and the embedding in float16 for inference (f32 arithmetic, f32 norms, biases and
 * states); such a model takes no gradients.
 *
 * The cell follows the reference's inference math in every mode: the stabiliser starts at m = 0 and the states keep
 * keys unscaled. Inference (from a state, or without gradients) runs the reference's inference wrapper: the
 * chunkwise kernel over a cascade of chunk sizes, then the recurrent step for a remainder under 16 tokens; it records
 * no gradients (neither has a backward). A forward that needs gradients computes h with the parallel kernel
 * (differentiable) and only the final state with that cascade. The returned states are fresh tensors: the caller's are never overwritten (unlike the
 * reference's in-place `copy_`, spec E10).
 *
 * Inference forwards (from a state, under `noGrad`, or with frozen parameters) fuse kernels: each RMSNorm without
 * bias is folded into the projection after it, two Linears of one input share a dispatch, the gate soft cap runs
 * inside the cell, the output gate inside the multi-head norm, SwiGLU inside proj_down, the logit soft cap inside the
 * LM head, and residuals accumulate in place: a decoded token takes 6 dispatches per block in fused weight mode
 * without biases (plus the embedding and the LM head), within f32 rounding of the unfused path.
 *
 * @example
 * ```ts
 * import { Tensor, xLSTMLarge, xLSTMLargeConfig } from "@xlstm/core";
 * const cfg = xLSTMLargeConfig({ embedding_dim: 32, num_heads: 2, num_blocks: 1, vocab_size: 40 });
 * const model = await xLSTMLarge.create(cfg, { seed: 0 });
 * const ids = await Tensor.from({ dtype: "int32", shape: [1, 4], data: new Int32Array([1, 2, 3, 4]) });
 * const [logits] = await model.forward(ids);
 * console.log(logits.shape); // [1, 4, 40]
 * const tokens = await model.generate(ids, { maxNewTokens: 3 });
 * console.log(tokens.shape); // [1, 3]
 * model.dispose();
 * ```
 */
export class xLSTMLarge extends Module {
  /** The resolved config. */
  readonly config: xLSTMLargeConfig;
  #embedding: Tensor;
  #blocks: BlockWeights[];
  #outNorm: LinearWeights | null;
  #head: Tensor;

  /** Registers the model's parameters under `scope` in the reference's state_dict order (of its weight mode). */
  constructor(scope: Scope, config: xLSTMLargeConfig) {
    super(scope);
    if (config.weight_mode !== "single" && config.weight_mode !== "fused") {
      throw new RangeError(`xLSTMLarge: weight_mode must be "single" or "fused", got "${config.weight_mode}"`);
    }
    this.config = config;
    const E = config.embedding_dim, V = config.vocab_size;
    this.#embedding = scope.child("embedding").addWeight("weight", [V, E], inits.normal(1));
    const backbone = scope.child("backbone"), blocks = backbone.child("blocks");
    this.#blocks = Array.from({ length: config.num_blocks }, (_, i) => blockParams(blocks.child(String(i)), config));
    this.#outNorm = config.add_out_norm ? normParams(backbone.child("out_norm"), E, config.use_bias) : null;
    this.#head = linearParams(scope.child("lm_head"), E, V, false).weight;
  }

  /**
   * Creates a model with fresh parameters (state_dict keys as the reference's `xLSTMLarge`). `options.weightDtype`
   * `"float16"` stores the weights in half precision (inference only; needs `shader-f16`).
   */
  static async create(config: xLSTMLargeConfig, options: CreateOptions = {}): Promise<xLSTMLarge> {
    return new xLSTMLarge(await rootScope(options, { float16: true }), config);
  }

  /**
   * Logits for int32 ids `[B, S]`, continuing from `state` when given: `[logits [B, S, V], state]`. The input state
   * is left untouched.
   */
  forward(ids: Tensor, state?: xLSTMLargeState): Promise<[Tensor, xLSTMLargeState]> {
    return Promise.resolve(this.apply(ids, state));
  }

  /**
   * {@linkcode xLSTMLarge.forward} without the promise. With `lastLogitsOnly` (inference only), the LM head runs on the
   * last position alone and the logits are `[B, 1, V]`: what generation needs, without a `[B, S, V]` tensor (3.3 GB in
   * float32 for a 16k-token prompt of the 7B). An inference forward over a prompt whose activations would exceed one
   * storage binding runs in pieces of whole chunks, the state carried between them.
   */
  apply(ids: Tensor, state?: xLSTMLargeState, options: { lastLogitsOnly?: boolean } = {}): [Tensor, xLSTMLargeState] {
    expectShape("xLSTMLarge token ids", ids, [-1, -1]);
    if (ids.dtype !== "int32") {
      throw new TypeError(`xLSTMLarge token ids ${formatShape(ids.shape)} must be int32, got ${ids.dtype}`);
    }
    const [B, S] = ids.shape;
    if (B < 1 || S < 1) throw new RangeError(`xLSTMLarge token ids ${formatShape(ids.shape)} must not be empty`);
    if (state) this.#checkState(state, B);
    const piece = this.#prefillPiece(B);
    if (S > piece && (state !== undefined || !needsGrad(...this.#parameters()))) {
      return noGrad(() => this.#applyInPieces(ids, state, piece, options.lastLogitsOnly ?? false));
    }
    const run = (): [Tensor, xLSTMLargeState] =>
      tidy(() => {
        let x = embedding(ids, this.#embedding);
        const next: xLSTMLargeState = {};
        const c = this.config;
        const fused = xlstmLargeInference.fused && !needsGrad(...this.#parameters());
        this.#blocks.forEach((w, i) => {
          const [y, s] = fused ? this.#fusedBlock(x, w, B, S, state?.[i]) : this.#block(x, w, B, S, state?.[i]);
          x = y;
          next[i] = s;
        });
        if (options.lastLogitsOnly && S > 1) {
          if (needsGrad(x)) throw new RangeError("xLSTMLarge: lastLogitsOnly is for inference (no gradients)");
          const last = Tensor.empty(x.gpu, [B, 1, c.embedding_dim]);
          copyTime(x, S, S - 1, last, 1, 0, B, 1);
          x = last;
        }
        if (fused) {
          const cap = c.output_logit_soft_cap ?? undefined;
          return [normedLinears(x, this.#outNorm, c.norm_eps, [{ weight: this.#head, bias: null }], cap), next];
        }
        if (this.#outNorm) x = norm(x, this.#outNorm.weight, this.#outNorm.bias, this.#rms);
        return [softCap(linear(x, this.#head, null), c.output_logit_soft_cap), next];
      });
    // The recurrent step has no backward: a stateful call is inference only, and says so by recording nothing.
    return state ? noGrad(run) : run();
  }

  #parameters(): Tensor[] {
    return [...this.namedParameters({ removeDuplicate: true })].map(([, p]) => p);
  }

  /**
   * Tokens per prefill piece: the widest activation of a piece (`[B·n, 2·ffn_dim]`, or the fused projections) fits one
   * storage binding, since the norm and pointwise kernels bind their operands whole; whole chunks of `chunk_size`, so
   * the chunkwise cascade runs as on the whole prompt. (HF's inference wrapper also prefills in pieces, of 16,384.)
   */
  #prefillPiece(B: number): number {
    const c = this.config;
    const widest = Math.max(2 * c.ffn_dim, 2 * c.qk_dim + 2 * c.v_dim + 2 * c.num_heads, c.embedding_dim);
    const tokens = Math.floor(this.gpu.maxBinding / (4 * widest * B));
    return Math.max(c.chunk_size, Math.floor(tokens / c.chunk_size) * c.chunk_size);
  }

  /** An inference forward over a long prompt, `piece` tokens at a time, the state carried from piece to piece. */
  #applyInPieces(
    ids: Tensor,
    state: xLSTMLargeState | undefined,
    piece: number,
    lastOnly: boolean,
  ): [Tensor, xLSTMLargeState] {
    const [B, S] = ids.shape, gpu = ids.gpu;
    const logits = lastOnly ? null : Tensor.empty(gpu, [B, S, this.config.vocab_size]);
    let st = state, last: Tensor | null = null;
    for (let t0 = 0; t0 < S; t0 += piece) {
      const n = Math.min(piece, S - t0);
      const part = Tensor.empty(gpu, [B, n], "int32");
      copyTime(ids, S, t0, part, n, 0, B, n);
      const [l, next] = this.apply(part, st, { lastLogitsOnly: lastOnly });
      part.dispose();
      if (st !== state) { for (const s of Object.values(st!)) for (const t of s) t.dispose(); }
      st = next;
      if (logits) {
        copyTime(l, n, 0, logits, S, t0, B, n);
        l.dispose();
      } else {
        last?.dispose();
        last = l;
      }
    }
    return [logits ?? last!, st!];
  }

  /**
   * Generation (spec C4) through `generateTokens`: `maxNewTokens` forward calls, the prefill `[B, P]` (or one BOS
   * token per sequence when absent) and then one call per generated token, each token chosen on the GPU (greedy
   * unless `sampling` says otherwise). Returns the generated int32 ids `[B, maxNewTokens]`, without the prefill; the
   * final state is freed (use `generateTokens` to keep it).
   */
  async generate(prefill: Tensor | undefined, options: xLSTMLargeGenerateOptions): Promise<Tensor> {
    const { tokens, checkpoint } = await generateTokens(this, prefill, options);
    releaseState(checkpoint.state, options.state ?? options.resume?.state);
    return Tensor.fromHost(this.gpu, tokens);
  }

  get #rms(): NormOptions {
    return { kind: "rms", eps: this.config.norm_eps, weightOffset: 0 };
  }

  #checkState(state: xLSTMLargeState, B: number): void {
    const c = this.config, NH = c.num_heads;
    for (let i = 0; i < c.num_blocks; i++) {
      const s = state[i];
      if (!s) throw new RangeError(`xLSTMLarge state: block ${i} is missing`);
      expectShape(`xLSTMLarge state[${i}][0] (C)`, s[0], [B, NH, c.qk_head_dim, c.v_head_dim]);
      expectShape(`xLSTMLarge state[${i}][1] (n)`, s[1], [B, NH, c.qk_head_dim]);
      expectShape(`xLSTMLarge state[${i}][2] (m)`, s[2], [B, NH, 1]);
    }
  }

  /** One `mLSTMBlock` on `x [B, S, E]` (inside a `tidy`). */
  #block(
    x: Tensor,
    w: BlockWeights,
    B: number,
    S: number,
    prev?: [Tensor, Tensor, Tensor],
  ): [Tensor, [Tensor, Tensor, Tensor]] {
    const c = this.config, NH = c.num_heads, cap = c.gate_soft_cap;
    const xn = norm(x, w.normMlstm.weight, w.normMlstm.bias, this.#rms);
    const [q, k, v, o] = project(xn, w.qkvo, [c.qk_dim, c.qk_dim, c.v_dim, c.v_dim]);
    // The soft cap is elementwise: capping the fused [i|f] output at once is capping each.
    const [i, f] = project(xn, w.gates, [NH, NH], (y) => softCap(y, cap));
    const { h, state } = this.#cell(q, k, v, i, f, B, S, prev);
    const hn = norm(h, w.headNorm.weight, w.headNorm.bias, {
      kind: "layer",
      groups: NH,
      eps: c.norm_eps,
      weightOffset: 0,
    });
    const x1 = add(x, applyLinear(sigmoidGate(o, hn), w.out));
    const xf = norm(x1, w.normFfn.weight, w.normFfn.bias, this.#rms);
    // [gate | z]: fused mode's output as it is, single mode's two outputs side by side.
    const ups = w.up.map((p) => applyLinear(xf, p));
    const gu = ups.length === 1 ? ups[0] : concatColumns(ups);
    const y = applyLinear(gatedActivation(gu, "swish"), w.down).reshape([B, S, c.embedding_dim]);
    return [add(x1, y), state];
  }

  /**
   * The block for inference (no gradients), in 6 dispatches per token and block in fused weight
   * mode (plus the cell's): RMSNorm folded into one product of q|k|v|o and i|f; the gate soft cap inside the cell;
   * the multi-head norm with the output gate; out_proj accumulated into x; RMSNorm folded into proj_up_gate_z;
   * SwiGLU read by proj_down, accumulated into x. `x` (the residual stream, which only this forward holds) is
   * updated in place and returned.
   */
  #fusedBlock(
    x: Tensor,
    w: BlockWeights,
    B: number,
    S: number,
    prev?: [Tensor, Tensor, Tensor],
  ): [Tensor, [Tensor, Tensor, Tensor]] {
    const c = this.config, NH = c.num_heads, E = c.embedding_dim, F = c.ffn_dim;
    const projected = normedLinears(x, w.normMlstm, c.norm_eps, [...w.qkvo, ...w.gates]);
    let at = 0;
    const [q, k, v, o, i, f] = [c.qk_dim, c.qk_dim, c.v_dim, c.v_dim, NH, NH].map((n) =>
      columns(projected, (at += n) - n, n)
    );
    const { h, state } = this.#cascade(q, k, v, i, f, B, S, prev, c.gate_soft_cap ?? undefined);
    const gated = normKernel(h, w.headNorm.weight, w.headNorm.bias, {
      kind: "layer",
      groups: NH,
      eps: c.norm_eps,
      outputGate: o,
    });
    const residual = matrix(x, E), accumulate = { transposeB: true, accumulate: true };
    gemm(matrix(gated), matrix(w.out.weight), residual, { ...accumulate, bias: w.out.bias, label: "out_proj" });
    const gu = normedLinears(x, w.normFfn, c.norm_eps, w.up);
    const gate: MatrixView = { tensor: gu, rows: B * S, cols: F, offset: 0, stride: 2 * F };
    gemm(gate, matrix(w.down.weight), residual, { ...accumulate, bias: w.down.bias, gatedA: F, label: "proj_down" });
    return [x, state];
  }

  /**
   * The mLSTM cell: h `[B, S, NH·DHV]` and the final state (C, n, m). Training (gradients needed, no state) takes h
   * from the differentiable parallel kernel and only the state from the inference cascade.
   */
  #cell(
    q: MatrixView,
    k: MatrixView,
    v: MatrixView,
    i: MatrixView,
    f: MatrixView,
    B: number,
    S: number,
    prev?: [Tensor, Tensor, Tensor],
  ): { h: Tensor; state: [Tensor, Tensor, Tensor] } {
    const c = this.config, NH = c.num_heads, eps = c.eps;
    if (prev || !needsGrad(q, k, v, i, f)) return this.#cascade(q, k, v, i, f, B, S, prev);
    const h = mlstmParallel(q, k, v, i, f, { batch: B, numHeads: NH, eps });
    // Neither the chunkwise kernel nor the step has a backward: they give the state only, and their h is dropped.
    const { h: hInfer, state } = noGrad(() => this.#cascade(q, k, v, i, f, B, S));
    hInfer.dispose();
    return { h, state };
  }

  /**
   * The reference's inference wrapper (spec B2.6): for cs = chunk_size, chunk_size/2, … while cs ≥ 16 the chunkwise
   * kernel takes ⌊remaining/cs⌋·cs tokens, the state carried through; the remainder (< 16 tokens) runs through the
   * recurrent step (m₀ = 0 without a state). Records no gradients. The views' tensors hold exactly the B·S rows
   * (a projection's output, or column slices of one). `gateSoftCap` caps the gate pre-activations in the kernels.
   */
  #cascade(
    q: MatrixView,
    k: MatrixView,
    v: MatrixView,
    i: MatrixView,
    f: MatrixView,
    B: number,
    S: number,
    prev?: [Tensor, Tensor, Tensor],
    gateSoftCap?: number,
  ): { h: Tensor; state: [Tensor, Tensor, Tensor] } {
    const c = this.config, NH = c.num_heads, DV = c.v_dim, gpu = q.tensor.gpu;
    let st: MlstmState | null = prev ? { c: prev[0], n: prev[1], m: prev[2].reshape([B, NH]) } : null;
    // Replaces the carried state, freeing the previous one unless it is the caller's (a 7B state is MBs per step).
    const advance = (next: MlstmState): void => {
      if (st && st.c !== prev?.[0]) [st.c, st.n, st.m].forEach((x) => x.dispose());
      st = next;
    };
    let h: Tensor | null = null;
    const output = (): Tensor => h ??= Tensor.zeros(gpu, [B, S, DV]);
    let t0 = 0;
    for (let cs = c.chunk_size; cs >= 16 && S > 1; cs = Math.floor(cs / 2)) {
      const n = Math.floor((S - t0) / cs) * cs;
      if (n === 0) continue;
      // A time range of every sequence: a row range when B = 1 (or the whole sequence), else copied out contiguously
      // (whole rows, once per tensor: q, k, v may share one).
      const whole = n === S || B === 1;
      const copies = new Map<Tensor, Tensor>();
      const seg = (x: MatrixView): MatrixView => {
        if (whole) return { ...x, rows: B * n, offset: x.offset + t0 * x.stride };
        let y = copies.get(x.tensor);
        if (!y) {
          copies.set(x.tensor, y = Tensor.empty(gpu, [B, n, x.stride]));
          copyTime(x.tensor, S, t0, y, n, 0, B, n);
        }
        return { ...x, tensor: y, rows: B * n };
      };
      const r = mlstmChunkwiseForward(seg(q), seg(k), seg(v), seg(i), seg(f), st, {
        batch: B,
        numHeads: NH,
        chunkSize: cs,
        eps: c.eps,
        gateSoftCap,
      });
      copies.forEach((x) => x.dispose());
      if (n === S) h = r.h;
      else {
        copyTime(r.h, n, 0, output(), S, t0, B, n);
        r.h.dispose();
      }
      advance(r);
      t0 += n;
    }
    for (let t = t0; t < S; t++) {
      const row = (x: MatrixView) => timeRows(x, B, S, t);
      const r = mlstmRecurrentStep(row(q), row(k), row(v), row(i), row(f), st, {
        numHeads: NH,
        eps: c.eps,
        keyScaledState: false,
        gateSoftCap,
      });
      if (S === 1) h = r.h.reshape([B, 1, DV]);
      else {
        addInto(timeRows(output(), B, S, t), r.h);
        r.h.dispose();
      }
      advance(r);
    }
    const s = st!;
    return { h: h!, state: [s.c, s.n, s.m.reshape([B, NH, 1])] };
  }
}

/**
 * Copies time steps `[from, from + n)` of every sequence of a contiguous `[B, srcS, X]` tensor to steps
 * `[to, to + n)` of a `[B, dstS, X]` one: one buffer copy per sequence.
 */
function copyTime(
  src: Tensor,
  srcS: number,
  from: number,
  dst: Tensor,
  dstS: number,
  to: number,
  B: number,
  n: number,
): void {
  const X = src.size / (B * srcS);
  for (let b = 0; b < B; b++) {
    src.gpu.copy(src.buffer, 4 * (b * srcS + from) * X, dst.buffer, 4 * (b * dstS + to) * X, 4 * n * X);
  }
}
