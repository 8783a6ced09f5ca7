/**
 * mLSTM cell forward: the parallel stabilized form (spec A4.1 / B2.2) and one recurrent step (A4.2 / B2.4).
 *
 * Inputs are matrix views, so q, k and v may be column slices of one fused buffer. Rows are time steps (row
 * `b·S + t` in the parallel form, row `b` in a step); head `h` owns columns `[h·DH, (h+1)·DH)` of q, k (DHQK per
 * head) and v (DHV per head); the gate views hold one pre-activation column per head.
 *
 * @module
 */

import parallelCode from "../../shaders/mlstm_parallel_forward.wgsl" with { type: "text" };
import stepCode from "../../shaders/mlstm_recurrent_step_forward.wgsl" with { type: "text" };
import { type BufferRange, type Gpu, grid, Params } from "../gpu/runtime.ts";
import { formatShape } from "../host_tensor.ts";
import { expectShape, type MatrixView, Tensor } from "../tensor.ts";
import { gemm } from "./matmul.ts";

const PARALLEL = { name: "mlstm_parallel_forward", code: parallelCode };
const STEP = { name: "mlstm_recurrent_step_forward", code: stepCode };
const WORKGROUP = 64;
const DEFAULT_EPS = 1e-6;

/**
 * Most loop trips one kernel invocation may run: S in the parallel form's gate scan (its weight pass runs about
 * S / 2, its gemms split long K themselves), DHQK in a step. lavapipe silently ends every invocation after 65,535
 * trips in total.
 */
export const MLSTM_MAX_LOOP = 16384;

/** Options of {@linkcode mlstmParallelForward}. */
export interface MlstmParallelOptions {
  /** Batch size B; the views have B·S rows. */
  batch: number;
  /** Number of heads NH. */
  numHeads: number;
  /** Added to the normaliser (default 1e-6, as the reference). */
  eps?: number;
}

/**
 * What the parallel forward keeps for a backward pass, all per (batch, head) pair in `b·NH + h` order.
 */
export interface MlstmParallelCache {
  /**
   * Normalised weights `W[t,s] = C[t,s] / (n_t + eps)`, zero above the diagonal: [B,NH,S,LD] with LD = S rounded up
   * to a multiple of 4 (columns s ≥ S are zero), so that `h = W·V`. The stabilised scores
   * `C[t,s] = (q_t·k_s/√DHQK)·exp(F_t − F_s + ĩ_s − m_t)` are `W[t,s]·(n_t + eps)`.
   */
  weights: Tensor;
  /** Inclusive cumulative sums `F_t` of logsigmoid(f̃): [B,NH,S]. */
  logForget: Tensor;
  /** Row maxima `m_t` of log D: [B,NH,S]. */
  m: Tensor;
  /** Normalisers `n_t = max(|Σ_s C[t,s]|, exp(−m_t))`, before eps is added: [B,NH,S]. */
  n: Tensor;
}

/** A recurrent mLSTM state: C [B,NH,DHQK,DHV], n [B,NH,DHQK], m [B,NH]. */
export interface MlstmState {
  /** Matrix memory C [B,NH,DHQK,DHV]; rows are indexed by the key dimension. */
  c: Tensor;
  /** Normaliser state n [B,NH,DHQK]. */
  n: Tensor;
  /** Stabiliser state m [B,NH]. */
  m: Tensor;
}

/** Options of {@linkcode mlstmRecurrentStep}. */
export interface MlstmStepOptions {
  /** Number of heads NH. */
  numHeads: number;
  /** Added to the normaliser (default 1e-6). */
  eps?: number;
  /**
   * true: keys enter the state scaled by DHQK^(-1/2) (NeurIPS xlstm, A4.2); false: keys unscaled and queries
   * scaled when reading (mlstm_kernels, B2.4). h is the same; C and n differ by a factor √DHQK.
   */
  keyScaledState: boolean;
}

/** The output and fresh state of one recurrent step. */
export interface MlstmStepResult extends MlstmState {
  /** Cell output h̃ [B, NH·DHV]. */
  h: Tensor;
}

/**
 * The parallel stabilized mLSTM cell (spec A4.1): `h̃ [B, S, NH·DHV]` from q, k `[B·S, NH·DHQK]`, v `[B·S, NH·DHV]`
 * and the gate pre-activations `[B·S, NH]`.
 */
export function mlstmParallelForward(
  q: MatrixView,
  k: MatrixView,
  v: MatrixView,
  igate: MatrixView,
  fgate: MatrixView,
  options: MlstmParallelOptions,
): Tensor {
  const { h, cache } = mlstmParallelForwardWithCache(q, k, v, igate, fgate, options);
  for (const t of Object.values(cache)) t.dispose();
  return h;
}

/**
 * {@linkcode mlstmParallelForward} that also returns the weight matrix and the per-row F, m and n a backward pass
 * needs. The caller owns (and disposes) every returned tensor.
 *
 * Per group of (batch, head) pairs: a gate scan, a batched `gemm` Q·Kᵀ into the cache's [S, LD] weight matrices
 * (lower triangle only), a row pass turning those raw scores into normalised weights in place, and a batched `gemm`
 * W·V (stopping at the diagonal) straight into h.
 */
export function mlstmParallelForwardWithCache(
  q: MatrixView,
  k: MatrixView,
  v: MatrixView,
  igate: MatrixView,
  fgate: MatrixView,
  options: MlstmParallelOptions,
): { h: Tensor; cache: MlstmParallelCache } {
  const op = "mlstmParallelForward";
  const { batch, numHeads: heads, eps = DEFAULT_EPS } = options;
  positive(op, "batch", batch);
  positive(op, "numHeads", heads);
  const rows = q.rows;
  if (rows === 0 || rows % batch !== 0) {
    throw new RangeError(`${op}: q has ${rows} rows, not a positive multiple of batch ${batch}`);
  }
  const seq = rows / batch;
  const dqk = headDim(op, "q", q, heads);
  checkView(op, "q", q, rows, q.cols);
  checkView(op, "k", k, rows, q.cols);
  checkView(op, "v", v, rows, v.cols);
  const dv = headDim(op, "v", v, heads);
  checkView(op, "igate", igate, rows, heads);
  checkView(op, "fgate", fgate, rows, heads);
  if (seq > MLSTM_MAX_LOOP) {
    throw new RangeError(
      `${op}: S = ${seq}: the parallel form loops over S per invocation, limited to ${MLSTM_MAX_LOOP}; use the ` +
        `chunkwise form (or the recurrent step) for sequences this long`,
    );
  }

  const gpu = q.tensor.gpu;
  // Score rows padded to whole vec4s (the weight pass moves vec4s). A pair binds S·LD scores and 2·LD of F and ĩ.
  const ld = Math.ceil(seq / 4) * 4;
  const pairBytes = Math.max(seq, 2) * ld * 4;
  // Every bound range starts aligned down, so it may begin up to one alignment before the data it is for.
  const room = gpu.maxBinding - quadAlignment(gpu) * 4;
  if (pairBytes > room) {
    throw new RangeError(
      `${op}: S = ${seq} needs a ${seq}×${ld} score matrix per head (${pairBytes} bytes), more than this ` +
        `adapter's storage binding limit of ${gpu.maxBinding} bytes; use the chunkwise form for sequences this long`,
    );
  }
  const h = Tensor.empty(gpu, [batch, seq, heads * dv]);
  const cache: MlstmParallelCache = {
    weights: Tensor.empty(gpu, [batch, heads, seq, ld]),
    logForget: Tensor.empty(gpu, [batch, heads, seq]),
    m: Tensor.empty(gpu, [batch, heads, seq]),
    n: Tensor.empty(gpu, [batch, heads, seq]),
  };
  const fi = Tensor.empty(gpu, [batch, heads, 2, ld]);
  const hView: MatrixView = { tensor: h, rows, cols: heads * dv, offset: 0, stride: heads * dv };
  const gateBytes = Math.max(...[igate, fgate].map((x) => seq * x.stride * 4));
  const gates = gpu.pipeline(PARALLEL, {}, "gates");
  const weights = gpu.pipeline(PARALLEL, {}, "weights");
  try {
    for (const g of pairGroups(batch, heads, pairBytes, gateBytes, room)) {
      const pairs = g.batches * g.heads;
      const pair0 = g.batch0 * heads + g.head0;
      const rowsOf = (name: string, x: MatrixView): Slice => bindRows(op, name, x, g.batch0 * seq, g.batches * seq);
      const [is, fs] = [rowsOf("igate", igate), rowsOf("fgate", fgate)];
      const per = (t: Tensor, name: string, size: number): Slice =>
        bindElements(op, name, t, pair0 * size, (pair0 + pairs) * size);
      const [cs, fis] = [per(cache.weights, "weights", seq * ld), per(fi, "F and ĩ", 2 * ld)];
      const [lfs, ms, ns] = [per(cache.logForget, "F", seq), per(cache.m, "m", seq), per(cache.n, "n", seq)];
      const params = new Params().u32(seq).u32(ld).u32(g.heads).u32(g.head0).u32(pairs)
        .u32(is.base).u32(igate.stride).u32(fs.base).u32(fgate.stride)
        .u32(cs.base).u32(fis.base).u32(lfs.base).u32(ms.base).u32(ns.base).f32(1 / Math.sqrt(dqk)).f32(eps);
      gpu.dispatch(gates, [is.range, fs.range, lfs.range, ms.range, fis.range], params, grid(pairs, WORKGROUP));

      // Pair (b, h) of the group: rows b·S.. of a view, columns h·DH..; the scores are [S, LD] per pair.
      const head = (x: MatrixView, dh: number): MatrixView => ({
        tensor: x.tensor,
        rows: seq,
        cols: dh,
        offset: x.offset + g.batch0 * seq * x.stride + g.head0 * dh,
        stride: x.stride,
      });
      const strides = (x: MatrixView, dh: number): [number, number] => [seq * x.stride, dh];
      const w: MatrixView = { tensor: cache.weights, rows: seq, cols: seq, offset: pair0 * seq * ld, stride: ld };
      const wStrides: [number, number] = [heads * seq * ld, seq * ld];
      const count: [number, number] = [g.batches, g.heads];
      // Only s ≤ t of the scores is used (the weight pass zeroes the rest), and W is zero for s > t.
      gemm(head(q, dqk), head(k, dqk), w, {
        transposeB: true,
        triangular: "lowerC",
        batch: { count, a: strides(q, dqk), b: strides(k, dqk), c: wStrides },
        label: `${op} (q·kᵀ)`,
      });
      gpu.dispatch(weights, [fis.range, ms.range, cs.range, ns.range], params, grid(pairs * seq, WORKGROUP));
      gemm(w, head(v, dv), head(hView, dv), {
        triangular: "lowerA",
        batch: { count, a: wStrides, b: strides(v, dv), c: strides(hView, dv) },
        label: `${op} (w·v)`,
      });
    }
  } catch (e) {
    for (const t of [h, ...Object.values(cache)]) t.dispose();
    throw e;
  } finally {
    fi.dispose();
  }
  return { h, cache };
}

/**
 * One recurrent mLSTM step (spec A4.2 with `keyScaledState: true`, B2.4 with false) for q, k `[B, NH·DHQK]`, v
 * `[B, NH·DHV]` and gate pre-activations `[B, NH]`. A null state means zeros (m = 0, as in the reference). Returns
 * h `[B, NH·DHV]` and a fresh state; the input state is left untouched.
 */
export function mlstmRecurrentStep(
  q: MatrixView,
  k: MatrixView,
  v: MatrixView,
  igate: MatrixView,
  fgate: MatrixView,
  state: MlstmState | null,
  options: MlstmStepOptions,
): MlstmStepResult {
  const op = "mlstmRecurrentStep";
  const { numHeads: heads, eps = DEFAULT_EPS, keyScaledState } = options;
  positive(op, "numHeads", heads);
  const batch = q.rows;
  positive(op, "the batch (rows of q)", batch);
  const dqk = headDim(op, "q", q, heads);
  checkView(op, "q", q, batch, q.cols);
  checkView(op, "k", k, batch, q.cols);
  checkView(op, "v", v, batch, v.cols);
  const dv = headDim(op, "v", v, heads);
  checkView(op, "igate", igate, batch, heads);
  checkView(op, "fgate", fgate, batch, heads);
  if (dqk > MLSTM_MAX_LOOP) {
    throw new RangeError(`${op}: DHQK = ${dqk} exceeds the ${MLSTM_MAX_LOOP} loop trips one invocation may run`);
  }
  const gpu = q.tensor.gpu;
  const shapes = { c: [batch, heads, dqk, dv], n: [batch, heads, dqk], m: [batch, heads] };
  if (state) {
    expectShape(`${op}: state.c`, state.c, shapes.c);
    expectShape(`${op}: state.n`, state.n, shapes.n);
    expectShape(`${op}: state.m`, state.m, shapes.m);
  }
  const input = state ?? {
    c: Tensor.zeros(gpu, shapes.c),
    n: Tensor.zeros(gpu, shapes.n),
    m: Tensor.zeros(gpu, shapes.m),
  };
  const out: MlstmStepResult = {
    h: Tensor.empty(gpu, [batch, heads * dv]),
    c: Tensor.empty(gpu, shapes.c),
    n: Tensor.empty(gpu, shapes.n),
    m: Tensor.empty(gpu, shapes.m),
  };
  const views = [q, k, v, igate, fgate];
  const slices = views.map((x, i) => bindRows(op, ["q", "k", "v", "igate", "fgate"][i], x, 0, batch));
  const params = new Params().u32(heads).u32(dqk).u32(dv).u32(batch * heads * dv);
  slices.forEach((s, i) => params.u32(s.base).u32(views[i].stride));
  const scale = 1 / Math.sqrt(dqk);
  params.f32(keyScaledState ? 1 : scale).f32(keyScaledState ? scale : 1).f32(eps);
  gpu.dispatch(
    gpu.pipeline(STEP),
    [
      ...slices.map((s) => s.range),
      input.c.binding("state.c"),
      input.n.binding("state.n"),
      input.m.binding("state.m"),
      out.h.binding("h"),
      out.c.binding("c"),
      out.n.binding("n"),
      out.m.binding("m"),
    ],
    params,
    grid(batch * heads * dv, WORKGROUP),
  );
  if (!state) { for (const t of Object.values(input)) t.dispose(); }
  return out;
}

/** A bound byte range and the element index, within it, of the first element asked for. */
interface Slice {
  range: BufferRange;
  base: number;
}

/**
 * Binding offsets in elements: the adapter's storage offset alignment, and at least 4 elements, so that vec4 rows
 * keep their alignment in the bound range (both are powers of two).
 */
function quadAlignment(gpu: Gpu): number {
  return Math.max(gpu.limits.minStorageBufferOffsetAlignment / 4, 4);
}

/** Binds elements `[first, end)` of a tensor, its start aligned down to {@linkcode quadAlignment}. */
function bindElements(op: string, name: string, t: Tensor, first: number, end: number): Slice {
  const align = quadAlignment(t.gpu);
  const start = Math.floor(first / align) * align;
  const bytes = (end - start) * 4;
  if (bytes > t.gpu.maxBinding) {
    throw new RangeError(
      `${op}: ${name} ${formatShape(t.shape)} elements [${first}, ${end}) take ${bytes} bytes, more than this ` +
        `adapter's storage binding limit of ${t.gpu.maxBinding} bytes`,
    );
  }
  return { range: { buffer: t.buffer, offset: start * 4, size: Math.max(4, bytes) }, base: first - start };
}

/** Binds rows `[row0, row0 + count)` of a view. */
function bindRows(op: string, name: string, x: MatrixView, row0: number, count: number): Slice {
  const first = x.offset + row0 * x.stride;
  return bindElements(op, name, x.tensor, first, first + (count - 1) * x.stride + x.cols);
}

/** A rectangle of (batch, head) pairs processed by one round of dispatches. */
interface Group {
  batch0: number;
  batches: number;
  head0: number;
  heads: number;
}

/**
 * Splits the B·NH pairs into groups whose score matrices (`pairBytes` each) and per-batch gate views (`batchBytes`
 * per batch) fit `room` bytes: whole batches when one batch fits, otherwise runs of heads within one batch. (The
 * gemms bind q, k, v and h themselves, splitting further where those do not fit.)
 */
function pairGroups(batch: number, heads: number, pairBytes: number, batchBytes: number, room: number): Group[] {
  const groups: Group[] = [];
  const perBatch = Math.max(heads * pairBytes, batchBytes);
  if (perBatch <= room) {
    const step = Math.floor(room / perBatch);
    for (let b = 0; b < batch; b += step) {
      groups.push({ batch0: b, batches: Math.min(step, batch - b), head0: 0, heads });
    }
    return groups;
  }
  const step = Math.floor(room / pairBytes);
  for (let b = 0; b < batch; b++) {
    for (let h = 0; h < heads; h += step) {
      groups.push({ batch0: b, batches: 1, head0: h, heads: Math.min(step, heads - h) });
    }
  }
  return groups;
}

function positive(op: string, name: string, value: number): void {
  if (!Number.isInteger(value) || value < 1) {
    throw new RangeError(`${op}: ${name} must be a positive integer, got ${value}`);
  }
}

/** Columns per head of a view, which must split evenly over the heads. */
function headDim(op: string, name: string, x: MatrixView, heads: number): number {
  if (x.cols % heads !== 0) {
    throw new RangeError(`${op}: ${name} has ${x.cols} columns, which numHeads ${heads} does not divide`);
  }
  return x.cols / heads;
}

/** Throws unless the view is `[rows, cols]` of float32 and lies inside its tensor; messages name the view. */
function checkView(op: string, name: string, x: MatrixView, rows: number, cols: number): void {
  if (x.rows !== rows || x.cols !== cols) {
    throw new RangeError(
      `${op}: ${name}: expected shape ${formatShape([rows, cols])}, got ${formatShape([x.rows, x.cols])}`,
    );
  }
  if (x.tensor.dtype !== "float32") throw new TypeError(`${op}: ${name} must be float32, got ${x.tensor.dtype}`);
  const end = x.offset + (rows - 1) * x.stride + cols;
  if (x.offset < 0 || (rows > 1 && x.stride < cols) || end > x.tensor.size) {
    throw new RangeError(
      `${op}: ${name} view [${rows}, ${cols}] (offset ${x.offset}, stride ${x.stride}) does not fit in its tensor ` +
        formatShape(x.tensor.shape),
    );
  }
}
