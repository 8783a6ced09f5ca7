/**
 * `xLSTMLarge` (spec C1–C4): the xLSTM 7B architecture. Embedding, a stack of mLSTM blocks (RMSNorm → mLSTM layer
 * with soft-capped gates, sigmoid output gate and multi-head norm → residual; RMSNorm → SwiGLU FFN → residual), an
 * output RMSNorm and a soft-capped LM head; greedy generation over the recurrent state.
 *
 * @module
 */

import { needsGrad, noGrad, record } from "../autograd.ts";
import type { xLSTMLargeConfig } from "../config.ts";
import { formatShape } from "../host_tensor.ts";
import { add, concatColumns, embedding, gatedActivation, linear, mlstmParallel, norm } from "../nn/functional.ts";
import { mlstmRecurrentStep, type MlstmState } from "../ops/mlstm.ts";
import { mlstmChunkwiseForward } from "../ops/mlstm_chunkwise.ts";
import type { NormOptions } from "../ops/norm.ts";
import {
  addInto,
  sigmoidGate as sigmoidGateKernel,
  sigmoidGateBackward,
  softCap as softCapKernel,
  softCapBackward,
} from "../ops/pointwise.ts";
import { expectShape, matrix, type MatrixView, Tensor, tidy } from "../tensor.ts";
import { type CreateOptions, Module, rootScope } from "./module.ts";
import { inits, type Scope } from "./parameters.ts";

/**
 * Recurrent state of an `xLSTMLarge`, as the reference's dict `{block_idx: (C, n, m)}`: per block, C
 * `[B, NH, DHQK, DHV]`, n `[B, NH, DHQK]`, m `[B, NH, 1]`, in the mlstm_kernels convention (keys unscaled in C and
 * n, queries scaled by DHQK^(-1/2) when read; spec B2.1).
 */
export type xLSTMLargeState = Record<number, [Tensor, Tensor, Tensor]>;

/** Options of {@linkcode xLSTMLarge.generate}. */
export interface xLSTMLargeGenerateOptions {
  /** Number of tokens to generate N ≥ 1 (the reference's `max_length`): N forward calls. */
  maxNewTokens: number;
  /** Only `"greedy"` (the reference's only sampler). */
  sampling?: "greedy";
  /** State to continue from (the reference's `state`); fresh zeros when absent. */
  state?: xLSTMLargeState;
  /** Start token when there is no prefill (default 0, the reference's BOS). */
  bosTokenId?: number;
  /** Batch size when there is no prefill (default 1). */
  batchSize?: number;
}

/** `cap·tanh(x / cap)`, differentiable; identity for a null cap (the reference's `soft_cap(x, None)`). */
function softCap(x: Tensor, cap: number | null): Tensor {
  if (cap === null) return x;
  return record(softCapKernel(x, cap), "softCap", [x], [x], (dy, [xs]) => [softCapBackward(dy, xs, cap)]);
}

/** `sigmoid(o) ⊙ h`, differentiable. */
function sigmoidGate(o: Tensor, h: Tensor): Tensor {
  return record(sigmoidGateKernel(o, h), "sigmoidGate", [o, h], [o, h], (dy, [os, hs]) => {
    const g = sigmoidGateBackward(dy, os, hs);
    return [g.do, g.dh];
  });
}

/** A PyTorch-default `nn.Linear(inF, outF, bias)` under `scope`: weight and bias U(±1/√inF). */
interface LinearWeights {
  weight: Tensor;
  bias: Tensor | null;
}

function linearParams(scope: Scope, inF: number, outF: number, bias: boolean): LinearWeights {
  const init = inits.uniform(1 / Math.sqrt(inF));
  return { weight: scope.add("weight", [outF, inF], init), bias: bias ? scope.add("bias", [outF], init) : null };
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

/** The parameters of one `mLSTMBlock` (spec C2), in the reference's state_dict order. */
interface BlockWeights {
  normMlstm: LinearWeights;
  q: LinearWeights;
  k: LinearWeights;
  v: LinearWeights;
  o: LinearWeights;
  i: LinearWeights;
  f: LinearWeights;
  headNorm: LinearWeights;
  out: LinearWeights;
  normFfn: LinearWeights;
  upGate: LinearWeights;
  up: LinearWeights;
  down: LinearWeights;
}

function blockParams(scope: Scope, c: xLSTMLargeConfig): BlockWeights {
  const E = c.embedding_dim, NH = c.num_heads, bias = c.use_bias;
  const layer = scope.child("mlstm_layer"), ffn = scope.child("ffn");
  return {
    normMlstm: normParams(scope.child("norm_mlstm"), E, bias),
    q: linearParams(layer.child("q"), E, c.qk_dim, bias),
    k: linearParams(layer.child("k"), E, c.qk_dim, bias),
    v: linearParams(layer.child("v"), E, c.v_dim, bias),
    o: linearParams(layer.child("ogate_preact"), E, c.v_dim, bias),
    i: linearParams(layer.child("igate_preact"), E, NH, true),
    f: linearParams(layer.child("fgate_preact"), E, NH, true),
    headNorm: normParams(layer.child("multihead_norm"), c.v_dim, bias),
    out: linearParams(layer.child("out_proj"), c.v_dim, E, bias),
    normFfn: normParams(scope.child("norm_ffn"), E, bias),
    upGate: linearParams(ffn.child("proj_up_gate"), E, c.ffn_dim, bias),
    up: linearParams(ffn.child("proj_up"), E, c.ffn_dim, bias),
    down: linearParams(ffn.child("proj_down"), c.ffn_dim, E, bias),
  };
}

/** Rows `b·S + t` (b = 0..B−1) of a `[B, S, X]` tensor: time step t of every sequence. */
function timeRows(x: Tensor, B: number, S: number, t: number): MatrixView {
  const X = x.size / (B * S);
  return { tensor: x, rows: B, cols: X, offset: t * X, stride: S * X };
}

/**
 * The xLSTM Large language model: int32 ids `[B, S]` → `[logits [B, S, V], state]`.
 *
 * Parameters carry the names of NX-AI's `xlstm.xlstm_large.model.xLSTMLarge` state_dict (`embedding.weight`,
 * `backbone.blocks.{i}.…`, `backbone.out_norm.weight`, `lm_head.weight`) with PyTorch's default initialisation (the
 * reference has no custom init). Only `weight_mode: "single"` is supported.
 *
 * The cell follows the reference's inference math in every mode: the stabiliser starts at m = 0 and the states keep
 * keys unscaled. Inference (from a state, or without gradients) runs the reference's inference wrapper: the
 * chunkwise kernel over a cascade of chunk sizes, then the recurrent step for a remainder under 16 tokens; it records
 * no gradients (neither has a backward). A forward that needs gradients computes h with the parallel kernel
 * (differentiable) and only the final state with that cascade. The returned states are fresh tensors: the caller's are never overwritten (unlike the
 * reference's in-place `copy_`, spec E10).
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

  /** Registers the model's parameters under `scope` in the reference's state_dict order. */
  constructor(scope: Scope, config: xLSTMLargeConfig) {
    super(scope);
    if (config.weight_mode !== "single") {
      throw new RangeError(
        `xLSTMLarge: weight_mode "${config.weight_mode}" is not supported; use "single" (convert fused checkpoints ` +
          `by splitting qkv_opreact, ifgate_preact and proj_up_gate_z along dim 0)`,
      );
    }
    this.config = config;
    const E = config.embedding_dim, V = config.vocab_size;
    this.#embedding = scope.child("embedding").add("weight", [V, E], inits.normal(1));
    const backbone = scope.child("backbone"), blocks = backbone.child("blocks");
    this.#blocks = Array.from({ length: config.num_blocks }, (_, i) => blockParams(blocks.child(String(i)), config));
    this.#outNorm = config.add_out_norm ? normParams(backbone.child("out_norm"), E, config.use_bias) : null;
    this.#head = linearParams(scope.child("lm_head"), E, V, false).weight;
  }

  /** Creates a model with fresh parameters (state_dict keys as the reference's `xLSTMLarge`). */
  static async create(config: xLSTMLargeConfig, options: CreateOptions = {}): Promise<xLSTMLarge> {
    return new xLSTMLarge(await rootScope(options), config);
  }

  /**
   * Logits for int32 ids `[B, S]`, continuing from `state` when given: `[logits [B, S, V], state]`. The input state
   * is left untouched.
   */
  forward(ids: Tensor, state?: xLSTMLargeState): Promise<[Tensor, xLSTMLargeState]> {
    return Promise.resolve(this.apply(ids, state));
  }

  /** {@linkcode xLSTMLarge.forward} without the promise. */
  apply(ids: Tensor, state?: xLSTMLargeState): [Tensor, xLSTMLargeState] {
    expectShape("xLSTMLarge token ids", ids, [-1, -1]);
    if (ids.dtype !== "int32") {
      throw new TypeError(`xLSTMLarge token ids ${formatShape(ids.shape)} must be int32, got ${ids.dtype}`);
    }
    const [B, S] = ids.shape;
    if (B < 1 || S < 1) throw new RangeError(`xLSTMLarge token ids ${formatShape(ids.shape)} must not be empty`);
    if (state) this.#checkState(state, B);
    const run = (): [Tensor, xLSTMLargeState] =>
      tidy(() => {
        let x = embedding(ids, this.#embedding);
        const next: xLSTMLargeState = {};
        this.#blocks.forEach((w, i) => {
          const [y, s] = this.#block(x, w, B, S, state?.[i]);
          x = y;
          next[i] = s;
        });
        const c = this.config;
        if (this.#outNorm) x = norm(x, this.#outNorm.weight, this.#outNorm.bias, this.#rms);
        return [softCap(linear(x, this.#head, null), c.output_logit_soft_cap), next];
      });
    // The recurrent step has no backward: a stateful call is inference only, and says so by recording nothing.
    return state ? noGrad(run) : run();
  }

  /**
   * Greedy generation (spec C4): `maxNewTokens` forward calls, the prefill `[B, P]` (or one BOS token per sequence
   * when absent) and then one call per generated token. Returns the generated int32 ids `[B, maxNewTokens]`, without
   * the prefill.
   */
  async generate(prefill: Tensor | undefined, options: xLSTMLargeGenerateOptions): Promise<Tensor> {
    const { maxNewTokens: N, sampling = "greedy", bosTokenId = 0, batchSize = 1 } = options;
    if (!Number.isInteger(N) || N < 1) throw new RangeError(`generate: maxNewTokens must be an integer ≥ 1, got ${N}`);
    if (sampling !== "greedy") throw new RangeError(`generate: sampling "${sampling}" is not supported; use "greedy"`);
    const V = this.config.vocab_size, gpu = this.gpu;
    const ids = (B: number, data: Int32Array) => Tensor.fromHost(gpu, { dtype: "int32", shape: [B, 1], data });
    let input = prefill ?? ids(batchSize, new Int32Array(batchSize).fill(bosTokenId));
    const B = input.shape[0];
    const out = new Int32Array(B * N);
    let state = options.state;
    try {
      for (let step = 0; step < N; step++) {
        const [last, next] = noGrad(() =>
          tidy(() => {
            const [logits, s] = this.apply(input, state);
            const S = logits.shape[1];
            const row = Tensor.zeros(gpu, [B, V]);
            addInto(matrix(row), timeRows(logits, B, S, S - 1));
            return [row, s] as const;
          })
        );
        if (state !== options.state) disposeState(state!);
        state = next;
        const host = (await last.toHost()).data as Float32Array;
        last.dispose();
        const tokens = new Int32Array(B);
        for (let b = 0; b < B; b++) tokens[b] = out[b * N + step] = argmax(host, b * V, V);
        if (input !== prefill) input.dispose();
        input = ids(B, tokens);
      }
    } finally {
      if (input !== prefill) input.dispose();
      if (state && state !== options.state) disposeState(state);
    }
    return Tensor.fromHost(gpu, { dtype: "int32", shape: [B, N], data: out });
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
    const [q, k, v, o] = [w.q, w.k, w.v, w.o].map((p) => applyLinear(xn, p));
    const i = softCap(applyLinear(xn, w.i), cap), f = softCap(applyLinear(xn, w.f), cap);
    const { h, state } = this.#cell(q, k, v, i, f, B, S, prev);
    const hn = norm(h, w.headNorm.weight, w.headNorm.bias, {
      kind: "layer",
      groups: NH,
      eps: c.norm_eps,
      weightOffset: 0,
    });
    const x1 = add(x, applyLinear(sigmoidGate(o, hn), w.out));
    const xf = norm(x1, w.normFfn.weight, w.normFfn.bias, this.#rms);
    const gu = concatColumns([applyLinear(xf, w.upGate), applyLinear(xf, w.up)]);
    const y = applyLinear(gatedActivation(gu, "swish"), w.down).reshape([B, S, c.embedding_dim]);
    return [add(x1, y), state];
  }

  /**
   * The mLSTM cell: h `[B, S, NH·DHV]` and the final state (C, n, m). Training (gradients needed, no state) takes h
   * from the differentiable parallel kernel and only the state from the inference cascade.
   */
  #cell(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    i: Tensor,
    f: Tensor,
    B: number,
    S: number,
    prev?: [Tensor, Tensor, Tensor],
  ): { h: Tensor; state: [Tensor, Tensor, Tensor] } {
    const c = this.config, NH = c.num_heads, eps = c.eps;
    if (prev || !needsGrad(q, k, v, i, f)) return this.#cascade(q, k, v, i, f, B, S, prev);
    const h = mlstmParallel(matrix(q), matrix(k), matrix(v), matrix(i), matrix(f), { batch: B, numHeads: NH, eps });
    // Neither the chunkwise kernel nor the step has a backward: they give the state only, and their h is dropped.
    const { h: hInfer, state } = noGrad(() => this.#cascade(q, k, v, i, f, B, S));
    hInfer.dispose();
    return { h, state };
  }

  /**
   * The reference's inference wrapper (spec B2.6): for cs = chunk_size, chunk_size/2, … while cs ≥ 16 the chunkwise
   * kernel takes ⌊remaining/cs⌋·cs tokens, the state carried through; the remainder (< 16 tokens) runs through the
   * recurrent step (m₀ = 0 without a state). Records no gradients.
   */
  #cascade(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    i: Tensor,
    f: Tensor,
    B: number,
    S: number,
    prev?: [Tensor, Tensor, Tensor],
  ): { h: Tensor; state: [Tensor, Tensor, Tensor] } {
    const c = this.config, NH = c.num_heads, DV = c.v_dim, gpu = q.gpu;
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
      // A time range of every sequence: a row range when B = 1 (or the whole sequence), else copied out contiguously.
      const whole = n === S || B === 1;
      const copies: Tensor[] = [];
      const seg = (x: Tensor): MatrixView => {
        const X = x.size / (B * S);
        if (whole) return { tensor: x, rows: B * n, cols: X, offset: t0 * X, stride: X };
        const y = Tensor.empty(gpu, [B, n, X]);
        copyTime(x, S, t0, y, n, 0, B, n);
        copies.push(y);
        return matrix(y);
      };
      const r = mlstmChunkwiseForward(seg(q), seg(k), seg(v), seg(i), seg(f), st, {
        batch: B,
        numHeads: NH,
        chunkSize: cs,
        eps: c.eps,
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
      const row = (x: Tensor) => timeRows(x, B, S, t);
      const r = mlstmRecurrentStep(row(q), row(k), row(v), row(i), row(f), st, {
        numHeads: NH,
        eps: c.eps,
        keyScaledState: false,
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

/** Index of the first maximum of `data[start, start + n)` (torch.argmax's tie rule). */
function argmax(data: Float32Array, start: number, n: number): number {
  let best = 0;
  for (let j = 1; j < n; j++) if (data[start + j] > data[start + best]) best = j;
  return best;
}

function disposeState(state: xLSTMLargeState): void {
  for (const s of Object.values(state)) for (const t of s) t.dispose();
}
