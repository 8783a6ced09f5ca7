/**
 * The kernels of `gemm` (src/ops/matmul.ts) and its planning: tile constants, operand checks, load modes, and the
 * split of a product into blocks and batch groups whose byte ranges fit one storage binding.
 *
 * @module
 */

import code from "../../shaders/matmul.wgsl" with { type: "text" };
import common from "../../shaders/matmul_common.wgsl" with { type: "text" };
import gemvCode from "../../shaders/matmul_gemv.wgsl" with { type: "text" };
import type { BufferRange, Gpu, Kernel } from "../gpu/runtime.ts";
import { formatShape } from "../host_tensor.ts";
import { type DType, elementBytes, type MatrixView } from "../tensor.ts";
import type { GemmBatch, GemmOptions } from "./matmul.ts";
import { accurateMath } from "./wgsl_math.ts";

/** A matmul kernel for each element type of B: B's alias, the pointwise math and the shared part prepended. */
function variants(name: string, kernel: string): Partial<Record<DType, Kernel>> {
  const source = accurateMath("vec4f") + common + kernel;
  return {
    float32: { name, code: "alias BW = f32;\n" + source },
    float16: { name: `${name}(f16 B)`, code: "enable f16;\nalias BW = f16;\n" + source },
  };
}

const BLOCKED = variants("matmul", code);
const GEMV = variants("matmul_gemv", gemvCode);

/** Rows and columns of C per invocation of matmul.wgsl (`TM`, `TN` there). */
const TM = 8, TN = 16;
/** Invocations per workgroup of matmul.wgsl. */
const WG = 64;
/** Most rows of C for matmul_gemv.wgsl (its largest `ROWS`), and its columns of C per workgroup (`COLS`). */
export const GEMV_ROWS = 8, GEMV_COLS = 8;
/**
 * Least K for matmul_gemv.wgsl, by adapter kind. On a GPU, 256: a step of four k for each of its 64 invocations (below,
 * splitting K leaves invocations idle). A CPU software adapter pays ~5–9 µs per workgroup, so there the GEMV kernel only
 * wins on long rows (lavapipe, M = 1: 0.84× the blocked kernel's time at K 4096 with f16 weights, about 1.05× with
 * f32, 3× at K 512). Exported so tests can take either path on any adapter.
 */
export const gemvMinK: { gpu: number; software: number } = { gpu: 256, software: 2048 };
/**
 * Largest K per dispatch: matmul.wgsl's K loop takes K / 4 trips (matmul_gemv.wgsl's K / 2048 rounds of 8 steps),
 * and lavapipe silently ends loops after 65,535. Larger K is split into accumulating passes.
 */
const K_PER_PASS = 65536;

export const NAMES = ["a", "b", "c"] as const;

/** The batch option with defaults filled in, checked; strides of levels with one product are zeroed. */
export function normalBatch(label: string, batch: GemmBatch | undefined): GemmBatch {
  if (!batch) return { count: [1, 1], a: [0, 0], b: [0, 0], c: [0, 0] };
  const out = { ...batch };
  const ok = (x: [number, number]): boolean => x.length === 2 && x.every((v) => Number.isInteger(v) && v >= 0);
  for (const name of ["count", ...NAMES] as const) {
    if (!ok(batch[name])) {
      throw new RangeError(`${label}: batch.${name} must be two non-negative integers, got [${batch[name]}]`);
    }
    if (name !== "count") {
      out[name] = [batch.count[0] > 1 ? batch[name][0] : 0, batch.count[1] > 1 ? batch[name][1] : 0];
    }
  }
  return out;
}

/** Throws unless the view of every product of the batch lies inside its tensor. */
export function checkView(
  label: string,
  name: string,
  v: MatrixView,
  batch: GemmBatch,
  strides: [number, number],
): void {
  const last = (batch.count[0] - 1) * strides[0] + (batch.count[1] - 1) * strides[1];
  const empty = v.rows === 0 || v.cols === 0 || batch.count[0] === 0 || batch.count[1] === 0;
  const ok = v.rows >= 0 && v.cols >= 0 && v.offset >= 0 && v.stride >= v.cols &&
    (empty || v.offset + last + (v.rows - 1) * v.stride + v.cols <= v.tensor.size);
  if (!ok) {
    const products = last > 0 ? ` in product [${batch.count[0] - 1}, ${batch.count[1] - 1}] of the batch` : "";
    throw new RangeError(
      `${label}: ${name} view [${v.rows}, ${v.cols}] (offset ${v.offset}, stride ${v.stride}) lies outside ` +
        `its tensor ${formatShape(v.tensor.shape)}${products}`,
    );
  }
}

/**
 * How an operand is loaded (the shader's A_MODE / B_MODE): 1 = vec4 along K, 2 = vec4 along M or N, 0 = f32. vec4
 * loads need 16-byte aligned rows in every product of the batch (and a `shift` to a second block, the gated
 * part, of whole vec4s), and whole vec4 steps where the contiguous dimension is K.
 */
export function loadMode(
  stride: number,
  first: number,
  batch: [number, number],
  alongK: boolean,
  k: number,
  shift: number,
): number {
  if (stride % 4 !== 0 || first % 4 !== 0 || batch[0] % 4 !== 0 || batch[1] % 4 !== 0 || shift % 4 !== 0) return 0;
  if (!alongK) return 2;
  return k % 4 === 0 ? 1 : 0;
}

/**
 * Invocations of the 64-invocation workgroup along M: 8 (a 64×128 block of C, both operands reused across the
 * workgroup) unless C is too thin for that; then the workgroup stretches along the long side so that its
 * invocations still have work (M = 1 decoding, N = 1). With `lowerC`, 32: lavapipe runs 8 consecutive invocations
 * as one SIMD batch, and only whole batches above the diagonal are skipped; 2 × 4 invocations cover a 32×32 square
 * of C instead of an 8×128 strip, so more batches lie wholly above it (measured: 13 % less time for Q·Kᵀ at S 256).
 */
function workgroupRows(m: number, n: number, lowerC: boolean): number {
  const rows = Math.ceil(m / TM), cols = Math.ceil(n / TN);
  if (rows < 8) return 2 ** Math.ceil(Math.log2(rows));
  if (cols < 8) return WG / 2 ** Math.ceil(Math.log2(cols));
  return lowerC && rows >= 32 ? 32 : 8;
}

/** The kernel of a product (see {@linkcode gemm}) and how its workgroups cover C. */
export interface Tiling {
  kernel: Kernel;
  /** Columns and rows of C per workgroup (the grid's x and y units). */
  cols: number;
  rows: number;
  /** matmul.wgsl's `wg_y_log2` (unused by the GEMV kernel). */
  wgYLog2: number;
  /** Override constants of the kernel's shape (the loads and fusions aside). */
  constants: Record<string, number>;
}

/** The tiling of an `[m, n]` block of C (n counting both products of a `second` fusion). */
export function tiling(
  gemv: boolean,
  dtype: DType,
  m: number,
  n: number,
  triangular: GemmOptions["triangular"],
): Tiling {
  if (gemv) {
    // One row: A as a vector, no work on clamped rows; else one or two 4×4 blocks of A.
    const rows = m === 1 ? 1 : m <= 4 ? 4 : GEMV_ROWS;
    return { kernel: GEMV[dtype]!, cols: GEMV_COLS, rows, wgYLog2: 0, constants: { ROWS: rows } };
  }
  const wgY = workgroupRows(m, n, triangular === "lowerC");
  return {
    kernel: BLOCKED[dtype]!,
    cols: TN * (WG / wgY),
    rows: TM * wgY,
    wgYLog2: Math.log2(wgY),
    constants: { TRIANGLE: triangular === "lowerA" ? 1 : triangular === "lowerC" ? 2 : 0 },
  };
}

/**
 * Elements of a view's tensor one binding may span: `gpu.maxBinding` less the slack of aligning its start down and
 * of rounding its end up to a vec4.
 */
export function bindingCap(gpu: Gpu, v: MatrixView): number {
  const e = elementBytes(v.tensor.dtype);
  const cap = Math.floor(gpu.maxBinding / (4 * e)) * 4 - (gpu.limits.minStorageBufferOffsetAlignment / e - 1) - 3;
  if (cap < 1) throw new RangeError(`matmul: a storage binding limit of ${gpu.maxBinding} bytes is too small`);
  return cap;
}

/**
 * How one operand's stored rows and columns map onto the problem's M, N and K, the elements it may bind, and the
 * elements it reads past a block's last column (A's gated part).
 */
export interface Layout {
  ld: number;
  rowsAre: "m" | "n" | "k";
  colsAre: "m" | "n" | "k";
  cap: number;
  extra: number;
}

/**
 * Block sizes along M, N and K such that every operand's block fits one storage binding (after its offset is
 * aligned down) and one dispatch (workgroup counts, loop trips) of the blocked kernel, or of the GEMV kernel
 * (`gemv`: fewer columns per workgroup). Shrinking a dimension never enlarges any block, so fixing the operands one
 * at a time until all fit terminates.
 */
export function planBlocks(
  gpu: Gpu,
  m: number,
  n: number,
  k: number,
  layouts: Layout[],
  gemv: boolean,
): Record<"m" | "n" | "k", number> {
  const maxGroups = gpu.limits.maxComputeWorkgroupsPerDimension;
  const [tm, tn] = gemv ? [GEMV_ROWS, GEMV_COLS] : [TM, TN];
  const size = {
    m: Math.min(m, maxGroups * tm),
    n: Math.min(n, maxGroups * tn),
    k: Math.max(1, Math.min(k, K_PER_PASS)),
  };
  for (let changed = true; changed;) {
    changed = false;
    for (const { ld, rowsAre, colsAre, cap, extra } of layouts) {
      const rows = size[rowsAre], cols = size[colsAre];
      if ((rows - 1) * ld + cols + extra <= cap) continue;
      if (cols + extra > cap) {
        if (cap - extra < 1) {
          throw new RangeError(`matmul: a storage binding limit of ${gpu.maxBinding} bytes is too small`);
        }
        size[rowsAre] = 1;
        size[colsAre] = cap - extra;
      } else {
        size[rowsAre] = Math.floor((cap - cols - extra) / ld) + 1;
      }
      changed = true;
    }
  }
  // Where a dimension is split, blocks of whole tiles and whole vec4 steps keep later offsets aligned for vec4 loads.
  const full = { m, n, k };
  for (const [d, unit] of [["m", tm], ["n", tn], ["k", 4]] as const) {
    if (size[d] < full[d] && size[d] > unit) size[d] -= size[d] % unit;
  }
  return size;
}

/**
 * The binding covering block `[r0, r0 + rows) × [c0, c0 + cols)` of a view in a group of products, the first
 * starting `first` elements and the last `extra` elements further on, and the first product's first element within
 * the binding.
 */
export function bind(
  gpu: Gpu,
  v: MatrixView,
  [r0, c0, rows, cols]: [number, number, number, number],
  [first, extra]: [number, number],
): { range: BufferRange; element: number } {
  const start = v.offset + first + r0 * v.stride + c0;
  const end = (rows > 0 && cols > 0 ? start + (rows - 1) * v.stride + cols : start + 1) + extra;
  const align = gpu.limits.minStorageBufferOffsetAlignment, e = elementBytes(v.tensor.dtype);
  const offset = Math.floor((start * e) / align) * align;
  // Whole vec4s: A and B are bound as vec4 arrays (buffers are multiples of 64 bytes).
  const size = Math.min(Math.ceil(end / 4) * 4 * e, v.tensor.buffer.size) - offset;
  return { range: { buffer: v.tensor.buffer, offset, size }, element: start - offset / e };
}

/** Products `[o0, o0 + oc) × [i0, i0 + ic)` of a batch, recorded as one dispatch. */
export interface BatchGroup {
  o0: number;
  oc: number;
  i0: number;
  ic: number;
}

/**
 * Splits a batch into groups whose bindings fit: each operand's block (`span` elements) plus the distance to its
 * last product must stay within its `cap`, and a group may hold at most `maxZ` products (one workgroup layer each).
 * Groups take whole runs of inner products and as many outer ones as fit, or else runs of inner products within one
 * outer product (at least one fits: `planBlocks` sized the blocks to).
 */
export function batchGroups(
  [outer, inner]: [number, number],
  operands: { span: number; strides: [number, number]; cap: number }[],
  maxZ: number,
): BatchGroup[] {
  /** Most products along `level` that fit every operand, with `fixed(strides)` elements already spanned. */
  const fit = (level: 0 | 1, fixed: (s: [number, number]) => number, limit: number): number => {
    let most = limit;
    for (const { span, strides, cap } of operands) {
      const room = cap - span - fixed(strides);
      if (room < 0) return 0;
      if (strides[level] > 0) most = Math.min(most, Math.floor(room / strides[level]) + 1);
    }
    return most;
  };
  const groups: BatchGroup[] = [];
  const outers = fit(0, (s) => (inner - 1) * s[1], Math.min(outer, Math.floor(maxZ / inner)));
  if (outers >= 1) {
    for (let o = 0; o < outer; o += outers) groups.push({ o0: o, oc: Math.min(outers, outer - o), i0: 0, ic: inner });
    return groups;
  }
  const inners = Math.max(1, fit(1, () => 0, Math.min(inner, maxZ)));
  for (let o = 0; o < outer; o++) {
    for (let i = 0; i < inner; i += inners) groups.push({ o0: o, oc: 1, i0: i, ic: Math.min(inners, inner - i) });
  }
  return groups;
}
