/**
 * The chunkwise mLSTM forward (spec B2.3, the `mlstm_kernels` convention: keys unscaled in the state, q·k, q·C and
 * q·n scaled by DHQK^(-1/2), m_0 = 0 without a state), as used by xLSTM Large for prefill with a final state.
 *
 * Views as in `./mlstm.ts`: rows are `b·S + t`, head `h` owns columns `[h·DH, (h+1)·DH)`, one gate column per
 * head. The work is split into groups of batch elements and, per group, segments of whole chunks, the state
 * carried between segments; a group's segment binds only the rows it touches, so views larger than one storage
 * binding (a 16k-token 7B prefill: v alone is 268 MB in f32) work too. Per segment: a gate scan, the chunk-local
 * states Ĉ = (wK)ᵀ·V by batched gemm, a scan over the chunks giving the state before each chunk, batched gemms
 * Q·[C|n] and Q·Kᵀ, a row pass (stabiliser, normaliser, intra-chunk weights, inter-chunk part of h) and a batched
 * gemm adding W·V to h. See shaders/mlstm_chunkwise_forward.wgsl.
 *
 * @module
 */

import code from "../../shaders/mlstm_chunkwise_forward.wgsl" with { type: "text" };
import { type BufferRange, type Gpu, grid, Params } from "../gpu/runtime.ts";
import { formatShape } from "../host_tensor.ts";
import { expectShape, type MatrixView, Tensor } from "../tensor.ts";
import { gemm, type GemmOptions } from "./matmul.ts";
import {
  bindRows,
  checkGateCap,
  checkView,
  headDim,
  MLSTM_MAX_LOOP,
  type MlstmState,
  positive,
  quadAlignment,
} from "./mlstm.ts";
import { accurateMath } from "./wgsl_math.ts";

const KERNEL = { name: "mlstm_chunkwise_forward", code: accurateMath("f32") + code };
const WORKGROUP = 64;
const DEFAULT_EPS = 1e-6;
/** Bytes one scratch buffer of a segment may take at most (beside the binding limit), to bound memory. */
const SEGMENT_BYTES = 256 << 20;

/** Options of {@linkcode mlstmChunkwiseForward}. */
export interface MlstmChunkwiseOptions {
  /** Batch size B; the views have B·S rows. */
  batch: number;
  /** Number of heads NH. */
  numHeads: number;
  /** Chunk length L; S must be a multiple of it. */
  chunkSize: number;
  /** Added to the normaliser (default 1e-6, as the reference). */
  eps?: number;
  /**
   * Most chunks per segment (one round of dispatches). By default as many as the storage bindings, 256 MiB of
   * scratch per buffer and the loop bound allow; tests lower it to exercise the carried state.
   */
  chunksPerSegment?: number;
  /**
   * Soft-caps the gate pre-activations as they are loaded: `cap·tanh(x / cap)` (xlstm_large's gate soft cap,
   * saving its separate kernel). Default: none.
   */
  gateSoftCap?: number;
}

/** The output and final state of {@linkcode mlstmChunkwiseForward}. */
export interface MlstmChunkwiseResult extends MlstmState {
  /** Cell output h̃ [B, S, NH·DHV]. */
  h: Tensor;
}

/**
 * The chunkwise mLSTM forward: h̃ `[B, S, NH·DHV]` and the final state (C [B,NH,DHQK,DHV], n [B,NH,DHQK], m [B,NH],
 * fresh tensors) from q, k `[B·S, NH·DHQK]`, v `[B·S, NH·DHV]`, gate pre-activations `[B·S, NH]` and an initial
 * state (null: zeros, m = 0), which is only read. S must be a multiple of `chunkSize` (the caller runs a remainder
 * through smaller chunks or the recurrent step, as the reference's inference wrapper does).
 */
export function mlstmChunkwiseForward(
  q: MatrixView,
  k: MatrixView,
  v: MatrixView,
  igate: MatrixView,
  fgate: MatrixView,
  state: MlstmState | null,
  options: MlstmChunkwiseOptions,
): MlstmChunkwiseResult {
  const op = "mlstmChunkwiseForward";
  const { batch, numHeads: heads, chunkSize: len, eps = DEFAULT_EPS, gateSoftCap = 0 } = options;
  positive(op, "batch", batch);
  checkGateCap(op, options.gateSoftCap);
  positive(op, "numHeads", heads);
  positive(op, "chunkSize", len);
  if (options.chunksPerSegment !== undefined) positive(op, "chunksPerSegment", options.chunksPerSegment);
  const rows = q.rows;
  if (rows === 0 || rows % batch !== 0) {
    throw new RangeError(`${op}: q has ${rows} rows, not a positive multiple of batch ${batch}`);
  }
  const seq = rows / batch;
  if (seq % len !== 0) {
    throw new RangeError(`${op}: S = ${seq} is not a multiple of chunkSize ${len}; run the remainder separately`);
  }
  const dqk = headDim(op, "q", q, heads);
  const dv = headDim(op, "v", v, heads);
  const inputs = { q, k, v, igate, fgate };
  const widths = { q: q.cols, k: q.cols, v: v.cols, igate: heads, fgate: heads };
  for (const [name, x] of Object.entries(inputs)) checkView(op, name, x, rows, widths[name as keyof typeof widths]);
  if (3 * len + dv > MLSTM_MAX_LOOP) {
    throw new RangeError(
      `${op}: chunkSize ${len} and DHV ${dv} need ${3 * len + dv} loop trips per invocation, more than ` +
        `${MLSTM_MAX_LOOP}`,
    );
  }
  const gpu = q.tensor.gpu;
  const width = dqk * (dv + 1); // an augmented state [C | n]
  const shapes = { c: [batch, heads, dqk, dv], n: [batch, heads, dqk], m: [batch, heads] };
  if (state) {
    expectShape(`${op}: state.c`, state.c, shapes.c);
    expectShape(`${op}: state.n`, state.n, shapes.n);
    expectShape(`${op}: state.m`, state.m, shapes.m);
  }
  const out = { h: Tensor.empty(gpu, [batch, seq, heads * dv]), ...fresh(gpu, shapes) };
  const hView: MatrixView = { tensor: out.h, rows, cols: heads * dv, offset: 0, stride: heads * dv };
  const { batches: nb, perSegment } = plan(op, gpu, {
    batch,
    heads,
    seq,
    len,
    dqk,
    dv,
    views: { ...inputs, h: hView },
    limit: options.chunksPerSegment,
  });
  const chunks = seq / len, segLen = perSegment * len, pairs = nb * heads;
  const scratch = {
    gate: Tensor.empty(gpu, [pairs, segLen, 3]),
    chunk: Tensor.empty(gpu, [pairs, perSegment, 2]),
    weighted: Tensor.empty(gpu, [pairs, segLen, dqk]),
    local: Tensor.empty(gpu, [pairs, perSegment, width]),
    before: Tensor.empty(gpu, [pairs, perSegment, width]),
    mBefore: Tensor.empty(gpu, [pairs, perSegment]),
    inter: Tensor.empty(gpu, [pairs, segLen, dv + 1]),
    scores: Tensor.empty(gpu, [pairs, segLen, len]),
  };
  const zeros = state
    ? null
    : { c: Tensor.zeros(gpu, shapes.c), n: Tensor.zeros(gpu, shapes.n), m: Tensor.zeros(gpu, shapes.m) };
  const segments = Math.ceil(chunks / perSegment);
  const spare = segments > 1 ? fresh(gpu, shapes) : null;
  const [gates, keys, scan, rowPass] = ["gates", "keys", "scan", "rows"].map((e) => gpu.pipeline(KERNEL, {}, e));
  const bind = (t: Tensor, name: string): BufferRange => t.binding(`${op}: ${name}`);
  try {
    for (let b0 = 0; b0 < batch; b0 += nb) {
      const nbg = Math.min(nb, batch - b0), groupPairs = nbg * heads;
      let from = (state ?? zeros)!;
      for (let s = 0; s < segments; s++) {
        const t0 = s * segLen;
        const nc = Math.min(perSegment, chunks - s * perSegment);
        // The last segment writes the returned state; earlier ones alternate so that none reads what it writes.
        const to = (segments - 1 - s) % 2 === 0 ? out : spare!;
        // The segment's rows of every sequence of the group, from (b0, t0) to (b0 + nbg − 1, t0 + nc·L − 1).
        const rowsOf = (x: MatrixView, name: string) =>
          bindRows(op, name, x, b0 * seq + t0, (nbg - 1) * seq + nc * len);
        const [ks, is, fs, hs] = [rowsOf(k, "k"), rowsOf(igate, "igate"), rowsOf(fgate, "fgate"), rowsOf(hView, "h")];
        const params = (total: number): Params =>
          new Params().u32(heads).u32(len).u32(nc).u32(seq).u32(b0 * heads).u32(dqk).u32(dv).u32(total)
            .u32(ks.base).u32(k.stride).u32(is.base).u32(igate.stride).u32(fs.base).u32(fgate.stride)
            .u32(hs.base).u32(hView.stride).f32(1 / Math.sqrt(dqk)).f32(eps).f32(gateSoftCap);
        const run = (pipe: GPUComputePipeline, bindings: BufferRange[], total: number): void =>
          gpu.dispatch(pipe, bindings, params(total), grid(total, WORKGROUP));
        run(
          gates,
          [is.range, fs.range, bind(scratch.gate, "gates"), bind(scratch.chunk, "chunk gates")],
          groupPairs * nc,
        );
        run(keys, [
          ks.range,
          bind(scratch.gate, "gates"),
          bind(scratch.chunk, "chunk gates"),
          bind(scratch.weighted, "weighted keys"),
          bind(scratch.local, "chunk states"),
        ], groupPairs * nc * dqk);

        // Per batch element, a (head, chunk) batch of products on [L, ·] chunks of the views and scratch.
        const perBatch = (a: Operand, bm: Operand, c: Operand, opts: GemmOptions): void => {
          gemm(a[0], bm[0], c[0], { ...opts, batch: { count: [heads, nc], a: a[1], b: bm[1], c: c[1] } });
        };
        // Batch element b (of the group) in a view: rows (b0 + b)·S + t0 + ….
        const input = (x: MatrixView, b: number, dh: number): Operand => [
          {
            tensor: x.tensor,
            rows: len,
            cols: dh,
            offset: x.offset + ((b0 + b) * seq + t0) * x.stride,
            stride: x.stride,
          },
          [dh, len * x.stride],
        ];
        // [r, cols] blocks in rows of ld, one per chunk, chunks of a pair consecutive (the segment's compact layout).
        const pairMajor = (t: Tensor, b: number, r: number, cols: number, ld: number): Operand => [
          { tensor: t, rows: r, cols, offset: b * heads * nc * r * ld, stride: ld },
          [nc * r * ld, r * ld],
        ];
        for (let b = 0; b < nbg; b++) {
          const local = pairMajor(scratch.local, b, dqk, dv, dv + 1);
          perBatch(pairMajor(scratch.weighted, b, len, dqk, dqk), input(v, b, dv), local, {
            transposeA: true,
            label: `${op} (wkᵀ·v)`,
          });
        }
        run(scan, [
          bind(scratch.chunk, "chunk gates"),
          bind(scratch.local, "chunk states"),
          bind(from.c, "state.c"),
          bind(from.n, "state.n"),
          bind(from.m, "state.m"),
          bind(scratch.before, "states before the chunks"),
          bind(scratch.mBefore, "m before the chunks"),
          bind(to.c, "c"),
          bind(to.n, "n"),
          bind(to.m, "m"),
        ], groupPairs * width);
        for (let b = 0; b < nbg; b++) {
          const before = pairMajor(scratch.before, b, dqk, dv + 1, dv + 1);
          const inter = pairMajor(scratch.inter, b, len, dv + 1, dv + 1);
          perBatch(input(q, b, dqk), before, inter, { label: `${op} (q·[c|n])` });
          const scores = pairMajor(scratch.scores, b, len, len, len);
          perBatch(input(q, b, dqk), input(k, b, dqk), scores, {
            transposeB: true,
            triangular: "lowerC",
            label: `${op} (q·kᵀ)`,
          });
        }
        run(rowPass, [
          bind(scratch.gate, "gates"),
          bind(scratch.mBefore, "m before the chunks"),
          bind(scratch.inter, "q·[c|n]"),
          bind(scratch.scores, "weights"),
          hs.range,
        ], groupPairs * nc * len);
        for (let b = 0; b < nbg; b++) {
          const weights = pairMajor(scratch.scores, b, len, len, len);
          perBatch(weights, input(v, b, dv), input(hView, b, dv), {
            accumulate: true,
            triangular: "lowerA",
            label: `${op} (w·v)`,
          });
        }
        from = to;
      }
    }
  } catch (e) {
    for (const t of Object.values(out)) t.dispose();
    throw e;
  } finally {
    for (const t of [...Object.values(scratch), ...Object.values(spare ?? {}), ...Object.values(zeros ?? {})]) {
      t.dispose();
    }
  }
  return out;
}

/** Fresh (uninitialised) state tensors. */
function fresh(gpu: Gpu, shapes: Record<"c" | "n" | "m", number[]>): MlstmState {
  return { c: Tensor.empty(gpu, shapes.c), n: Tensor.empty(gpu, shapes.n), m: Tensor.empty(gpu, shapes.m) };
}

/** Sizes that {@linkcode plan} splits the work by. */
interface PlanInput {
  batch: number;
  heads: number;
  seq: number;
  len: number;
  dqk: number;
  dv: number;
  /** The row views bound per segment (q and v too: their gemms would split further otherwise). */
  views: Record<string, MatrixView>;
  /** The caller's `chunksPerSegment`. */
  limit?: number;
}

/**
 * Batch elements per group and chunks per segment: the most batch elements (then the most chunks) such that a
 * segment's rows of every view fit one storage binding after aligning its start down, each scratch buffer fits
 * `min(maxBinding, 256 MiB)`, and the scan's loop over the chunks stays within the loop bound.
 */
function plan(op: string, gpu: Gpu, p: PlanInput): { batches: number; perSegment: number } {
  const { heads, seq, len, dqk, dv } = p;
  const chunks = seq / len;
  const room = Math.min(gpu.maxBinding, SEGMENT_BYTES);
  // Scratch bytes per chunk per batch element, of the largest buffer: the augmented states, weighted keys,
  // Q·[C|n] or the scores.
  const perChunk = 4 * heads * Math.max(dqk * (dv + 1), len * Math.max(dqk, dv + 1, len, 3));
  // Most rows of a view one binding holds: (rows − 1)·stride + cols elements after up to one alignment of slack.
  const fits = Object.entries(p.views).map(([name, x]) => ({
    name,
    x,
    rows: Math.floor((gpu.maxBinding / 4 - quadAlignment(gpu) - x.cols) / Math.max(x.stride, 1)) + 1,
  }));
  const rowsFit = Math.min(...fits.map((f) => f.rows));
  for (let nb = p.batch; nb >= 1; nb--) {
    const byViews = Math.floor((rowsFit - (nb - 1) * seq) / len);
    const perSegment = Math.min(chunks, Math.floor(room / (nb * perChunk)), MLSTM_MAX_LOOP, p.limit ?? chunks, byViews);
    if (perSegment >= 1) return { batches: nb, perSegment };
  }
  if (perChunk > room) {
    throw new RangeError(
      `${op}: one chunk of one batch element (${heads} heads) needs ${perChunk} bytes of scratch, more than ${room}`,
    );
  }
  const worst = fits.find((f) => f.rows === rowsFit)!;
  throw new RangeError(
    `${op}: one chunk of ${len} rows of ${worst.name} ${formatShape([worst.x.rows, worst.x.cols])} (stride ` +
      `${worst.x.stride}) does not fit this adapter's storage binding limit of ${gpu.maxBinding} bytes`,
  );
}

/** A view of the first product of a (head, chunk) batch and its strides [next head, next chunk]. */
type Operand = [MatrixView, [number, number]];
