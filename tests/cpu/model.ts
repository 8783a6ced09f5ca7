/**
 * Float64 reference of the NeurIPS model family (spec A3–A6), composed from the kernel references of this folder:
 * the mLSTM and sLSTM layers, the residual block with its gated feed-forward, the block stack and the LM model, both
 * as a parallel forward and as the reference's token-by-token `step` loop from a zero state.
 *
 * Parameters come by their reference state_dict names, in the stored layouts (an sLSTM cell with `backend: cuda`
 * holds `_recurrent_kernel_` and `_bias_` in the cuda order of A5.4). Every parameter must be read by the model:
 * a leftover key is an error, so a state_dict with extra or misnamed entries does not pass unnoticed.
 * Activations are rows `[B·S, width]`, batch outer, heads contiguous inside a row (`h·DH + d`).
 */

import {
  blockConfigs,
  type FeedForwardConfig,
  type mLSTMLayerConfig,
  type sLSTMLayerConfig,
  type xLSTMBlockStackConfig,
  type xLSTMLMModelConfig,
} from "../../src/config.ts";
import { gatedActivationRef, mlstmOutputGateRef } from "./activations.ts";
import { causalConv1dRef, conv1dStepRef } from "./conv1d.ts";
import { embeddingRef } from "./embedding.ts";
import { linearHeadwiseRef } from "./linear_headwise.ts";
import { linearRef } from "./matmul.ts";
import { mlstmParallelRef, type MlstmStateRef, mlstmStepRef } from "./mlstm.ts";
import { normRef } from "./norm.ts";
import { slstmForwardRef } from "./slstm.ts";

/** The model kinds the reference covers. */
export type CpuModelKind = "stack" | "lm" | "mlstm_layer" | "slstm_layer";

/** The resolved config of each kind. */
export interface CpuModelConfigs {
  /** `xLSTMBlockStack`. */
  stack: xLSTMBlockStackConfig;
  /** `xLSTMLMModel`. */
  lm: xLSTMLMModelConfig;
  /** A standalone `mLSTMLayer`. */
  mlstm_layer: mLSTMLayerConfig;
  /** A standalone `sLSTMLayer` (its first output only). */
  slstm_layer: sLSTMLayerConfig;
}

/** The model input: x `[B, T, E]`, or token ids `[B, T]` for the LM. */
export interface CpuInput {
  /** `[B, T]` or `[B, T, E]`. */
  shape: readonly number[];
  /** Row-major values (ids as numbers). */
  data: ArrayLike<number>;
}

/** Reference parameters by state_dict name. */
export type CpuParams = Record<string, Float64Array>;

const NORM_EPS = 1e-5;

/** Reads parameters under a prefix and remembers which were read. */
class ParamReader {
  constructor(readonly params: CpuParams, readonly prefix = "", readonly used = new Set<string>()) {}

  child(name: string): ParamReader {
    return new ParamReader(this.params, `${this.prefix}${name}.`, this.used);
  }

  get(name: string): Float64Array {
    const key = this.prefix + name;
    const p = this.params[key];
    if (!p) throw new Error(`cpu model: missing parameter ${key}`);
    this.used.add(key);
    return p;
  }

  /** `get(name)` when `present`, else null (for biases the config switches on or off). */
  optional(name: string, present: boolean): Float64Array | null {
    return present ? this.get(name) : null;
  }

  /** Throws unless every parameter was read. */
  checkAllUsed(): void {
    const unused = Object.keys(this.params).filter((k) => !this.used.has(k));
    if (unused.length) throw new Error(`cpu model: parameters not used by the model: ${unused.join(", ")}`);
  }
}

/** nn.Linear over `rows` rows of x, weight `[out, in]`. */
function linear(
  x: ArrayLike<number>,
  rows: number,
  w: Float64Array,
  b: Float64Array | null,
  out: number,
): Float64Array {
  return linearRef(x, w, b, rows, out, w.length / out);
}

/**
 * The residual-weight LayerNorm (A3.1), or the MultiHeadLayerNorm (A3.2) with `groups` heads per row; a null weight
 * (a norm built with `weight=False`) scales by 1.
 */
function layerNorm(x: Float64Array, width: number, weight: Float64Array | null, groups = 1): Float64Array {
  return normRef(x, width, weight, null, { kind: "layer", groups, eps: NORM_EPS, weightOffset: 1 });
}

const silu = (v: number): number => v / (1 + Math.exp(-v));

/** Columns `[start, start + count)` of rows of `width`. */
function columnsOf(x: Float64Array, width: number, start: number, count: number): Float64Array {
  const rows = x.length / width, out = new Float64Array(rows * count);
  for (let r = 0; r < rows; r++) out.set(x.subarray(r * width + start, r * width + start + count), r * count);
  return out;
}

/** Concatenates row blocks side by side: rows of `parts[0]` then `parts[1]`, … */
function concatColumns(parts: Float64Array[], widths: number[], rows: number): Float64Array {
  const total = widths.reduce((a, b) => a + b, 0), out = new Float64Array(rows * total);
  for (let r = 0; r < rows; r++) {
    let at = r * total;
    parts.forEach((p, i) => {
      out.set(p.subarray(r * widths[i], (r + 1) * widths[i]), at);
      at += widths[i];
    });
  }
  return out;
}

/** Rows `[B, S, NH·DH]` (or `[B, S, NH]` with DH = 1) → `[B, NH, S, DH]`, and back with `inverse`. */
function headsMajor(x: Float64Array, B: number, S: number, NH: number, inverse = false): Float64Array {
  const DH = x.length / (B * S * NH), out = new Float64Array(x.length);
  for (let b = 0; b < B; b++) {
    for (let s = 0; s < S; s++) {
      for (let h = 0; h < NH; h++) {
        for (let d = 0; d < DH; d++) {
          const rowMajor = ((b * S + s) * NH + h) * DH + d, headMajor = ((b * NH + h) * S + s) * DH + d;
          if (inverse) out[rowMajor] = x[headMajor];
          else out[headMajor] = x[rowMajor];
        }
      }
    }
  }
  return out;
}

/**
 * The causal conv of a layer: the whole sequence (from zeros) without a step state, or one token through the
 * reference's `conv1d.step` window `[B, KS, F]` (updated in `state.window`). Swish applied.
 */
function conv(
  p: ParamReader,
  x: Float64Array,
  B: number,
  F: number,
  KS: number,
  state: { window: Float64Array } | null,
): Float64Array {
  const w = p.get("conv1d.conv.weight"), b = p.get("conv1d.conv.bias");
  if (!state) return causalConv1dRef(x, B, F, w, b, { swish: true });
  const step = conv1dStepRef(state.window, x, w, b, KS);
  state.window = step.state;
  return step.y.map(silu);
}

/** Step state of an mLSTM layer: conv window and (C, n, m); `cell` null before the first step. */
interface MlstmCpuState {
  window: Float64Array;
  cell: MlstmStateRef | null;
}

/** mLSTMLayer (A4) over x rows `[B·S, E]`: the parallel forward, or one step (S = 1) when `state` is given. */
function mlstmLayer(
  p: ParamReader,
  c: mLSTMLayerConfig,
  x: Float64Array,
  B: number,
  S: number,
  state: MlstmCpuState | null,
): Float64Array {
  const E = c.embedding_dim, D = c._inner_embedding_dim, NH = c.num_heads, DH = D / NH;
  const bs = c.qkv_proj_blocksize, NHp = D / bs, rows = B * S;
  const up = linear(x, rows, p.get("proj_up.weight"), p.optional("proj_up.bias", c.bias), 2 * D);
  const xm = columnsOf(up, 2 * D, 0, D);
  const xc = conv(p, xm, B, D, c.conv1d_kernel_size, state);
  const headwise = (name: string, input: Float64Array): Float64Array =>
    linearHeadwiseRef(input, rows, p.get(`${name}.weight`), NHp, bs, bs, p.optional(`${name}.bias`, c.bias));
  const q = headwise("q_proj", xc), k = headwise("k_proj", xc), v = headwise("v_proj", xm);
  const gateIn = concatColumns([q, k, v], [D, D, D], rows);
  const gate = (name: string): Float64Array =>
    linear(gateIn, rows, p.get(`mlstm_cell.${name}.weight`), p.get(`mlstm_cell.${name}.bias`), NH);
  const ig = gate("igate"), fg = gate("fgate");
  let h: Float64Array;
  if (state) {
    // rows [B, NH·DH] with S = 1 are already the step's [B, NH, DH]
    const step = mlstmStepRef(q, k, v, ig, fg, state.cell, { batch: B, heads: NH, dqk: DH, dv: DH }, true);
    state.cell = step;
    h = step.h;
  } else {
    const [qh, kh, vh, ih, fh] = [q, k, v, ig, fg].map((t) => headsMajor(t, B, S, NH));
    h = headsMajor(
      mlstmParallelRef(qh, kh, vh, ih, fh, { batch: B, heads: NH, seq: S, dqk: DH, dv: DH }).h,
      B,
      S,
      NH,
      true,
    );
  }
  const hn = layerNorm(h, D, p.get("mlstm_cell.outnorm.weight"), NH);
  const gated = mlstmOutputGateRef(hn, p.get("learnable_skip"), xc, up, D, 2 * D);
  return linear(gated, rows, p.get("proj_down.weight"), p.optional("proj_down.bias", c.bias), E);
}

/** Step state of an sLSTM layer: conv window `[B, KS, H]` and the cell state `[NS, B, H]` (null: zeros). */
interface SlstmCpuState {
  window: Float64Array;
  cell: Float64Array | null;
}

/** The cuda layouts of A5.4 → the vanilla ones the kernel reference reads. */
function vanillaCellParams(kernel: Float64Array, bias: Float64Array, NH: number, DH: number, cuda: boolean) {
  if (!cuda) return { kernel, bias };
  const H = NH * DH, k = new Float64Array(kernel.length), b = new Float64Array(bias.length);
  for (let h = 0; h < NH; h++) {
    for (let g = 0; g < 4; g++) {
      for (let o = 0; o < DH; o++) {
        // vanilla [h, g·DH + o, i] ← cuda [h, i, g·DH + o]; vanilla bias [g·H + h·DH + o] ← cuda [h·4DH + g·DH + o]
        for (let i = 0; i < DH; i++) k[(h * 4 * DH + g * DH + o) * DH + i] = kernel[(h * DH + i) * 4 * DH + g * DH + o];
        b[g * H + h * DH + o] = bias[h * 4 * DH + g * DH + o];
      }
    }
  }
  return { kernel: k, bias: b };
}

/**
 * sLSTMLayer (A5) over x rows `[B·S, H]` from a zero state, or one step (S = 1) through the conv window and the
 * cell from `state` (the reference's `step` runs the cell's forward with S = 1).
 */
function slstmLayer(
  p: ParamReader,
  c: sLSTMLayerConfig,
  x: Float64Array,
  B: number,
  S: number,
  state: SlstmCpuState | null,
): Float64Array {
  const H = c.embedding_dim, NH = c.num_heads, DH = H / NH, KS = c.conv1d_kernel_size, rows = B * S;
  const xc = KS > 0 ? conv(p, x, B, H, KS, state) : x;
  const headwise = (name: string, input: Float64Array): Float64Array =>
    linearHeadwiseRef(input, rows, p.get(`${name}.weight`), NH, DH, DH, null);
  // the name swap of A5: the i slot reads the module named fgate, the f slot the one named igate
  const gates = [headwise("fgate", xc), headwise("igate", xc), headwise("zgate", x), headwise("ogate", x)];
  const wx = concatColumns(gates, [H, H, H, H], rows);
  const cell = vanillaCellParams(
    p.get("slstm_cell._recurrent_kernel_"),
    p.get("slstm_cell._bias_"),
    NH,
    DH,
    c.backend === "cuda",
  );
  const out = slstmForwardRef(wx, cell.kernel, cell.bias, state?.cell ?? null, {
    batch: B,
    seq: S,
    hidden: H,
    numHeads: NH,
    fn: c.function,
  });
  if (state) state.cell = out.state;
  return layerNorm(out.y, H, p.optional("group_norm.weight", c.group_norm_weight), NH);
}

/** GatedFeedForward (A3.5) over rows `[rows, E]`. */
function feedForward(p: ParamReader, c: FeedForwardConfig, x: Float64Array, rows: number): Float64Array {
  const E = c.embedding_dim, P = c._proj_up_dim;
  const up = linear(x, rows, p.get("proj_up.weight"), p.optional("proj_up.bias", c.bias), 2 * P);
  const hidden = gatedActivationRef(up, 2 * P, c.act_fn);
  return linear(hidden, rows, p.get("proj_down.weight"), p.optional("proj_down.bias", c.bias), E);
}

/** `a + b`. */
function plus(a: Float64Array, b: Float64Array): Float64Array {
  return a.map((v, i) => v + b[i]);
}

/** Per-block step states of a stack, `null` before the first step. */
type StackCpuState = (MlstmCpuState | SlstmCpuState)[] | null;

/** xLSTMBlockStack (A6) over rows `[B·S, E]`: the forward, or one step (S = 1) when `state` is given. */
function stack(
  p: ParamReader,
  c: xLSTMBlockStackConfig,
  x: Float64Array,
  B: number,
  S: number,
  state: { blocks: StackCpuState } | null,
): Float64Array {
  const E = c.embedding_dim;
  const blocks = blockConfigs(c);
  if (state && !state.blocks) {
    state.blocks = blocks.map((b) => {
      const frames = b.kind === "mlstm" ? b.config.mlstm.conv1d_kernel_size : b.config.slstm.conv1d_kernel_size;
      const width = b.kind === "mlstm" ? b.config.mlstm._inner_embedding_dim : E;
      return { window: new Float64Array(B * frames * width), cell: null };
    });
  }
  let h = x;
  blocks.forEach((block, i) => {
    const bp = p.child(`blocks.${i}`);
    const normed = layerNorm(h, E, bp.get("xlstm_norm.weight"));
    const layerState = state ? state.blocks![i] : null;
    const y = block.kind === "mlstm"
      ? mlstmLayer(bp.child("xlstm"), block.config.mlstm, normed, B, S, layerState as MlstmCpuState | null)
      : slstmLayer(bp.child("xlstm"), block.config.slstm, normed, B, S, layerState as SlstmCpuState | null);
    h = plus(h, y);
    const ff = block.kind === "slstm" ? block.config.feedforward : null;
    if (ff) h = plus(h, feedForward(bp.child("ffn"), ff, layerNorm(h, E, bp.get("ffn_norm.weight")), B * S));
  });
  return c.add_post_blocks_norm ? layerNorm(h, E, p.get("post_blocks_norm.weight")) : h;
}

/** A model of one kind as a function of rows `[B·S, ·]` and an optional step state (created on first use). */
function model<K extends CpuModelKind>(
  kind: K,
  config: CpuModelConfigs[K],
  p: ParamReader,
): (x: Float64Array, B: number, S: number, state: Record<string, unknown> | null) => Float64Array {
  return (x, B, S, state) => {
    switch (kind) {
      case "mlstm_layer": {
        const c = config as mLSTMLayerConfig;
        const s = state && ((state.layer ??= {
          window: new Float64Array(B * c.conv1d_kernel_size * c._inner_embedding_dim),
          cell: null,
        }) as MlstmCpuState);
        return mlstmLayer(p, c, x, B, S, s);
      }
      case "slstm_layer": {
        const c = config as sLSTMLayerConfig;
        const s = state &&
          ((state.layer ??= {
            window: new Float64Array(B * c.conv1d_kernel_size * c.embedding_dim),
            cell: null,
          }) as SlstmCpuState);
        return slstmLayer(p, c, x, B, S, s);
      }
      case "stack":
        return stack(p, config as xLSTMBlockStackConfig, x, B, S, state && (state as { blocks: StackCpuState }));
      default: {
        const c = config as xLSTMLMModelConfig;
        const table = p.get("token_embedding.weight"), head = p.get("lm_head.weight");
        // a tied head is the embedding matrix itself; the state_dict lists it under both names
        if (c.tie_weights && head.some((v, i) => v !== table[i])) {
          throw new Error("cpu model: tied lm_head.weight differs from token_embedding.weight");
        }
        const st = state && (state as { blocks: StackCpuState });
        const h = stack(p.child("xlstm_block_stack"), c, embeddingRef(x, table, c.embedding_dim), B, S, st);
        return linear(h, B * S, head, null, c.vocab_size);
      }
    }
  };
}

function batchAndTime(input: CpuInput): [number, number] {
  return [input.shape[0], input.shape[1]];
}

/**
 * The parallel forward of a model: x `[B, T, E]` (ids `[B, T]` for the LM) → `[B, T, E]` (logits `[B, T, V]`).
 * Throws if a parameter is missing or left unused.
 */
export function cpuForward<K extends CpuModelKind>(
  kind: K,
  config: CpuModelConfigs[K],
  params: CpuParams,
  input: CpuInput,
): Float64Array {
  const [B, T] = batchAndTime(input);
  const p = new ParamReader(params);
  const y = model(kind, config, p)(Float64Array.from(input.data), B, T, null);
  p.checkAllUsed();
  return y;
}

/**
 * The reference's step loop: `step(input[:, t:t+1], state)` for t = 0..T−1 from `state=None`, outputs concatenated
 * along time (`[B, T, ·]` as {@linkcode cpuForward}). mLSTM cells run the recurrent step with k-scaled states and
 * m starting at 0; conv layers keep a window of `conv1d_kernel_size` frames; sLSTM cells carry (y, c, n, m).
 */
export function cpuStep<K extends CpuModelKind>(
  kind: K,
  config: CpuModelConfigs[K],
  params: CpuParams,
  input: CpuInput,
): Float64Array {
  const [B, T] = batchAndTime(input);
  const inner = input.data.length / (B * T);
  const p = new ParamReader(params);
  const run = model(kind, config, p);
  const state: Record<string, unknown> = {};
  let out: Float64Array | null = null;
  for (let t = 0; t < T; t++) {
    const xt = new Float64Array(B * inner);
    for (let b = 0; b < B; b++) {
      for (let i = 0; i < inner; i++) xt[b * inner + i] = input.data[(b * T + t) * inner + i];
    }
    const y = run(xt, B, 1, state);
    const width = y.length / B;
    out ??= new Float64Array(B * T * width);
    for (let b = 0; b < B; b++) out.set(y.subarray(b * width, (b + 1) * width), (b * T + t) * width);
  }
  p.checkAllUsed();
  return out ?? new Float64Array(0);
}
