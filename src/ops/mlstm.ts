/**
 * mLSTM cell: the parallel stabilized form (spec A4.1 / B2.2) with its backward (autograd convention, B2.5), and
 * one recurrent step (A4.2 / B2.4).
 *
 * Inputs are matrix views, so q, k and v may be column slices of one fused buffer. Rows are time steps (row
 * `b·S + t` in the parallel form, row `b` in a step); head `h` owns columns `[h·DH, (h+1)·DH)` of q, k (DHQK per
 * head) and v (DHV per head); the gate views hold one pre-activation column per head.
 *
 * @module
 */

import backwardCode from "../../shaders/mlstm_parallel_backward.wgsl" with { type: "text" };
import parallelCode from "../../shaders/mlstm_parallel_forward.wgsl" with { type: "text" };
import stepCode from "../../shaders/mlstm_recurrent_step_forward.wgsl" with { type: "text" };
import { type BufferRange, type Gpu, grid, Params } from "../gpu/runtime.ts";
import { formatShape } from "../host_tensor.ts";
import { expectShape, matrix, type MatrixView, Tensor } from "../tensor.ts";
import { gemm, type GemmOptions } from "./matmul.ts";
import { accurateMath } from "./wgsl_math.ts";

const PARALLEL = { name: "mlstm_parallel_forward", code: parallelCode };
const STEP = { name: "mlstm_recurrent_step_forward", code: accurateMath("f32") + stepCode };
const BACKWARD = { name: "mlstm_parallel_backward", code: backwardCode };
const WORKGROUP = 64;
const DEFAULT_EPS = 1e-6;

/**
 * Most loop trips one kernel invocation may run: S in the parallel form's gate scan (its weight pass runs about
 * S / 2, the backward's passes at most 1.25·S, the gemms split long K themselves), DHQK in a step. lavapipe
 * silently ends every invocation after 65,535 trips in total.
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
  /**
   * Soft-caps the gate pre-activations as they are loaded: `cap·tanh(x / cap)` (xlstm_large's gate soft cap,
   * saving its separate kernel). Default: none.
   */
  gateSoftCap?: number;
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
  const { batch, heads, seq, dqk, dv, eps, ld, pairBytes, room } = parallelShape(op, q, k, v, igate, fgate, options);
  const rows = batch * seq;
  const gpu = q.tensor.gpu;
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

      const w = scoreOperand(cache.weights, pair0, heads, seq, ld);
      const head = (x: MatrixView, dh: number): Operand => headOperand(x, g, seq, dh);
      // Only s ≤ t of the scores is used (the weight pass zeroes the rest), and W is zero for s > t.
      groupGemm(head(q, dqk), head(k, dqk), w, g, { transposeB: true, triangular: "lowerC", label: `${op} (q·kᵀ)` });
      gpu.dispatch(weights, [fis.range, ms.range, cs.range, ns.range], params, grid(pairs * seq, WORKGROUP));
      groupGemm(w, head(v, dv), head(hView, dv), g, { triangular: "lowerA", label: `${op} (w·v)` });
    }
  } catch (e) {
    for (const t of [h, ...Object.values(cache)]) t.dispose();
    throw e;
  } finally {
    fi.dispose();
  }
  return { h, cache };
}

/** Gradients returned by {@linkcode mlstmParallelBackward}, each a new contiguous tensor. */
export interface MlstmParallelGrads {
  /** d q: [B·S, NH·DHQK]. */
  dq: Tensor;
  /** d k: [B·S, NH·DHQK]. */
  dk: Tensor;
  /** d v: [B·S, NH·DHV]. */
  dv: Tensor;
  /** d ĩ (input gate pre-activations): [B·S, NH]. */
  digate: Tensor;
  /** d f̃ (forget gate pre-activations): [B·S, NH]. */
  dfgate: Tensor;
}

/**
 * Backward of {@linkcode mlstmParallelForwardWithCache}: the gradients of q, k, v and both gate pre-activations for
 * an upstream gradient `dh` [B, S, NH·DHV] of h̃, given the same inputs and the forward's (unchanged) cache, which
 * is only read. It differentiates through everything as PyTorch autograd does on `parallel_stabilized_simple` (spec
 * A4.1, B2.5 `*_autograd`): the normaliser max(|Σ_s C|, exp(−m)) on whichever side is larger, and the row max m
 * at its argmax. (`*_custbw` and Triton kernels treat n as a constant and give different gradients.)
 *
 * Per group of (batch, head) pairs: batched gemms G = dH·Vᵀ (the gradient of the weights W) and dV = Wᵀ·dH, a row
 * pass (per-row normaliser and max gradients), a column pass (dĩ, and the score gradients dS in place of G), a gate
 * scan (d f̃), and batched gemms dQ = dS·K and dK = dSᵀ·Q; see shaders/mlstm_parallel_backward.wgsl.
 */
export function mlstmParallelBackward(
  dh: Tensor,
  q: MatrixView,
  k: MatrixView,
  v: MatrixView,
  igate: MatrixView,
  fgate: MatrixView,
  cache: MlstmParallelCache,
  options: MlstmParallelOptions,
): MlstmParallelGrads {
  const op = "mlstmParallelBackward";
  const { batch, heads, seq, dqk, dv, eps, ld, pairBytes, room } = parallelShape(op, q, k, v, igate, fgate, options);
  expectShape(`${op}: dh`, dh, [batch, seq, heads * dv]);
  expectShape(`${op}: cache.weights`, cache.weights, [batch, heads, seq, ld]);
  for (const name of ["logForget", "m", "n"] as const) {
    expectShape(`${op}: cache.${name}`, cache[name], [batch, heads, seq]);
  }
  const gpu = q.tensor.gpu;
  const rows = batch * seq;
  const out: MlstmParallelGrads = {
    dq: Tensor.empty(gpu, [rows, heads * dqk]),
    dk: Tensor.empty(gpu, [rows, heads * dqk]),
    dv: Tensor.empty(gpu, [rows, heads * dv]),
    digate: Tensor.empty(gpu, [rows, heads]),
    dfgate: Tensor.empty(gpu, [rows, heads]),
  };
  const [dhView, dqView, dkView, dvView, diView, dfView] = [dh, out.dq, out.dk, out.dv, out.digate, out.dfgate].map((
    t,
  ) => matrix(t));
  const gateBytes = Math.max(...[igate, fgate, diView].map((x) => seq * x.stride * 4));
  const groups = pairGroups(batch, heads, pairBytes, gateBytes, room);
  // Scratch for one group at a time (groups run in order): dS over G, and per row (n + eps, a, dm, b) and s*.
  const most = Math.max(...groups.map((g) => g.batches * g.heads));
  const scratch = {
    scores: Tensor.empty(gpu, [most, seq, ld]),
    info: Tensor.empty(gpu, [most, seq, 4]),
    argmax: Tensor.empty(gpu, [most, seq], "int32"),
  };
  const [rowPass, columnPass, gatePass] = ["rows", "columns", "gates"].map((e) => gpu.pipeline(BACKWARD, {}, e));
  try {
    for (const g of groups) {
      const pairs = g.batches * g.heads;
      const pair0 = g.batch0 * heads + g.head0;
      const rowsOf = (name: string, x: MatrixView): Slice => bindRows(op, name, x, g.batch0 * seq, g.batches * seq);
      const [is, fs, dis, dfs] = [
        rowsOf("igate", igate),
        rowsOf("fgate", fgate),
        rowsOf("digate", diView),
        rowsOf("dfgate", dfView),
      ];
      const per = (t: Tensor, name: string, size: number, first = pair0): Slice =>
        bindElements(op, name, t, first * size, (first + pairs) * size);
      const [ws, lfs, ms, ns] = [
        per(cache.weights, "cache.weights", seq * ld),
        per(cache.logForget, "cache.logForget", seq),
        per(cache.m, "cache.m", seq),
        per(cache.n, "cache.n", seq),
      ];
      const [gs, infos, args] = [
        per(scratch.scores, "score gradients", seq * ld, 0),
        per(scratch.info, "row gradients", seq * 4, 0),
        per(scratch.argmax, "row argmax", seq, 0),
      ];
      const params = new Params().u32(seq).u32(ld).u32(g.heads).u32(g.head0).u32(pairs)
        .u32(is.base).u32(igate.stride).u32(fs.base).u32(fgate.stride)
        .u32(gs.base).u32(ws.base).u32(lfs.base).u32(ms.base).u32(ns.base)
        .u32(dis.base).u32(heads).u32(dfs.base).u32(heads).f32(1 / Math.sqrt(dqk)).f32(eps);

      const head = (x: MatrixView, dh: number): Operand => headOperand(x, g, seq, dh);
      const w = scoreOperand(cache.weights, pair0, heads, seq, ld);
      const ds = scoreOperand(scratch.scores, 0, g.heads, seq, ld);
      // G = dH·Vᵀ, wanted for s ≤ t only (the row pass zeroes the rest); dV = Wᵀ·dH.
      groupGemm(head(dhView, dv), head(v, dv), ds, g, {
        transposeB: true,
        triangular: "lowerC",
        label: `${op} (dh·vᵀ)`,
      });
      groupGemm(w, head(dhView, dv), head(dvView, dv), g, { transposeA: true, label: `${op} (wᵀ·dh)` });
      gpu.dispatch(
        rowPass,
        [is.range, lfs.range, ms.range, ns.range, ws.range, gs.range, infos.range, args.range],
        params,
        grid(pairs * seq, WORKGROUP),
      );
      gpu.dispatch(
        columnPass,
        [is.range, lfs.range, ms.range, ws.range, infos.range, args.range, gs.range, dis.range],
        params,
        grid(pairs * (ld / 4), WORKGROUP),
      );
      gpu.dispatch(gatePass, [fs.range, infos.range, dis.range, dfs.range], params, grid(pairs, WORKGROUP));
      // dS is zero above the diagonal: dQ's sums stop there; dSᵀ is upper triangular, which gemm cannot skip.
      groupGemm(ds, head(k, dqk), head(dqView, dqk), g, { triangular: "lowerA", label: `${op} (ds·k)` });
      groupGemm(ds, head(q, dqk), head(dkView, dqk), g, { transposeA: true, label: `${op} (dsᵀ·q)` });
    }
  } catch (e) {
    for (const t of Object.values(out)) t.dispose();
    throw e;
  } finally {
    for (const t of Object.values(scratch)) t.dispose();
  }
  return out;
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
  const { numHeads: heads, eps = DEFAULT_EPS, keyScaledState, gateSoftCap = 0 } = options;
  positive(op, "numHeads", heads);
  checkGateCap(op, options.gateSoftCap);
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
  params.f32(keyScaledState ? 1 : scale).f32(keyScaledState ? scale : 1).f32(eps).f32(gateSoftCap);
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

/** Sizes of a parallel-form call, checked: see {@linkcode parallelShape}. */
interface ParallelShape {
  batch: number;
  heads: number;
  seq: number;
  dqk: number;
  dv: number;
  eps: number;
  /** S rounded up to a multiple of 4: the row length of the score matrices. */
  ld: number;
  /** Bytes one (batch, head) pair binds at most: S·LD scores (or 2·LD of F and ĩ). */
  pairBytes: number;
  /** Bytes of data one binding may hold after aligning its start down. */
  room: number;
}

/** Validates the views of a parallel-form call and the loop and binding limits it must fit. */
function parallelShape(
  op: string,
  q: MatrixView,
  k: MatrixView,
  v: MatrixView,
  igate: MatrixView,
  fgate: MatrixView,
  options: MlstmParallelOptions,
): ParallelShape {
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
  // Score rows padded to whole vec4s (the row passes move vec4s). A pair binds S·LD scores and 2·LD of F and ĩ.
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
  return { batch, heads, seq, dqk, dv, eps, ld, pairBytes, room };
}

/** A bound byte range and the element index, within it, of the first element asked for. */
export interface Slice {
  range: BufferRange;
  base: number;
}

/**
 * Binding offsets in elements: the adapter's storage offset alignment, and at least 4 elements, so that vec4 rows
 * keep their alignment in the bound range (both are powers of two).
 */
export function quadAlignment(gpu: Gpu): number {
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
export function bindRows(op: string, name: string, x: MatrixView, row0: number, count: number): Slice {
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

/** One operand of a batched gemm over a group of pairs: the view of its first pair and the strides to the rest. */
interface Operand {
  view: MatrixView;
  /** Element strides [next batch, next head]. */
  strides: [number, number];
}

/** Pair (b, h) of a group in a `[B·S, NH·DH]` view: rows b·S.., columns h·DH... */
function headOperand(x: MatrixView, g: Group, seq: number, dh: number): Operand {
  const offset = x.offset + g.batch0 * seq * x.stride + g.head0 * dh;
  return { view: { tensor: x.tensor, rows: seq, cols: dh, offset, stride: x.stride }, strides: [seq * x.stride, dh] };
}

/** [S, S] score matrices in rows of LD, one per pair, from pair `first` on, with `heads` pairs per batch. */
function scoreOperand(t: Tensor, first: number, heads: number, seq: number, ld: number): Operand {
  const view = { tensor: t, rows: seq, cols: seq, offset: first * seq * ld, stride: ld };
  return { view, strides: [heads * seq * ld, seq * ld] };
}

/** `gemm` once per pair of a group, as one batch. */
function groupGemm(a: Operand, b: Operand, c: Operand, g: Group, options: GemmOptions): void {
  const batch = { count: [g.batches, g.heads] as [number, number], a: a.strides, b: b.strides, c: c.strides };
  gemm(a.view, b.view, c.view, { ...options, batch });
}

/** Throws unless `value` is a positive integer; the message names the op and the option. */
export function positive(op: string, name: string, value: number): void {
  if (!Number.isInteger(value) || value < 1) {
    throw new RangeError(`${op}: ${name} must be a positive integer, got ${value}`);
  }
}

/** Throws unless a gate soft cap is absent or positive and finite. */
export function checkGateCap(op: string, cap: number | undefined): void {
  if (cap !== undefined && !(cap > 0 && Number.isFinite(cap))) {
    throw new RangeError(`${op}: gateSoftCap must be positive and finite, got ${cap}`);
  }
}

/** Columns per head of a view, which must split evenly over the heads. */
export function headDim(op: string, name: string, x: MatrixView, heads: number): number {
  if (x.cols % heads !== 0 || x.cols === 0) {
    throw new RangeError(`${op}: ${name} has ${x.cols} columns, which numHeads ${heads} does not divide`);
  }
  return x.cols / heads;
}

/** Throws unless the view is `[rows, cols]` of float32 and lies inside its tensor; messages name the view. */
export function checkView(op: string, name: string, x: MatrixView, rows: number, cols: number): void {
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
