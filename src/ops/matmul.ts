/**
 * Matrix multiplication: `matmul` (2-D, optional transposes and bias), `linear` (PyTorch `nn.Linear`) and `gemm`
 * (strided views, accumulation), all recorded as dispatches of `shaders/matmul.wgsl`.
 *
 * Operands larger than one storage binding (`gpu.maxBinding`) are split into blocks of rows of C, columns of C and
 * ranges of K; each block binds only the byte ranges it touches, and K blocks after the first accumulate into C.
 *
 * @module
 */

import code from "../../shaders/matmul.wgsl" with { type: "text" };
import { type BufferRange, type Gpu, Params } from "../gpu/runtime.ts";
import { formatShape } from "../host_tensor.ts";
import { type MatrixView, Tensor } from "../tensor.ts";

const KERNEL = { name: "matmul", code };

/** Rows and columns of C per invocation (`TM`, `TN` in the shader). */
const TM = 8, TN = 16;
/** Invocations per workgroup. */
const WG = 64;
/**
 * Largest K per dispatch: the shader's K loop takes K / 4 trips, and lavapipe silently ends loops after 65,535.
 * Larger K is split into accumulating passes.
 */
const K_PER_PASS = 65536;

/** Options for {@linkcode matmul}. */
export interface MatmulOptions {
  /** Use Aᵀ: `a` is `[K, M]`. */
  transposeA?: boolean;
  /** Use Bᵀ: `b` is `[N, K]` (the layout of a Linear weight). */
  transposeB?: boolean;
  /** `[N]`, added to every row of C. */
  bias?: Tensor | null;
}

/** Options for {@linkcode gemm}. */
export interface GemmOptions extends MatmulOptions {
  /** Add the product to the existing contents of `c` instead of overwriting them. */
  accumulate?: boolean;
  /** Name used in error messages. */
  label?: string;
}

/**
 * `C[M, N] = op(A) · op(B) (+ bias)` for 2-D tensors; A is `[M, K]` (`[K, M]` with `transposeA`), B is `[K, N]`
 * (`[N, K]` with `transposeB`), bias is `[N]`.
 *
 * @example
 * ```ts
 * import { getGpu, matmul, Tensor } from "@xlstm/core";
 * const gpu = await getGpu();
 * const a = Tensor.fromHost(gpu, { dtype: "float32", shape: [2, 3], data: new Float32Array([1, 2, 3, 4, 5, 6]) });
 * const c = matmul(a, a, { transposeB: true }); // [2, 2]
 * console.log((await c.toHost()).data); // 14, 32, 32, 77
 * ```
 */
export function matmul(a: Tensor, b: Tensor, options: MatmulOptions = {}): Tensor {
  const { transposeA = false, transposeB = false, bias = null } = options;
  if (a.shape.length !== 2 || b.shape.length !== 2) {
    throw new RangeError(`matmul: a ${formatShape(a.shape)} and b ${formatShape(b.shape)} must both be 2-D`);
  }
  const [m, ka] = transposeA ? [a.shape[1], a.shape[0]] : [a.shape[0], a.shape[1]];
  const [kb, n] = transposeB ? [b.shape[1], b.shape[0]] : [b.shape[0], b.shape[1]];
  if (ka !== kb) {
    const opA = transposeA ? "aᵀ" : "a", opB = transposeB ? "bᵀ" : "b";
    throw new RangeError(
      `matmul: ${opA} of a ${formatShape(a.shape)} has K = ${ka} columns but ${opB} of b ${formatShape(b.shape)} ` +
        `has K = ${kb} rows`,
    );
  }
  const out = Tensor.empty(a.gpu, [m, n]);
  gemm(whole(a, a.shape[0], a.shape[1]), whole(b, b.shape[0], b.shape[1]), whole(out, m, n), { transposeA, transposeB, bias, label: "matmul" });
  return out;
}

/**
 * PyTorch `nn.Linear`: `y = x · weightᵀ + bias` with x `[..., K]`, weight `[N, K]`, bias `[N]` → y `[..., N]`.
 *
 * @example
 * ```ts
 * import { getGpu, linear, Tensor } from "@xlstm/core";
 * const gpu = await getGpu();
 * const x = Tensor.zeros(gpu, [2, 5, 16]), w = Tensor.zeros(gpu, [32, 16]);
 * console.log(linear(x, w).shape); // [2, 5, 32]
 * ```
 */
export function linear(x: Tensor, weight: Tensor, bias: Tensor | null = null): Tensor {
  const k = x.shape[x.shape.length - 1];
  if (x.shape.length < 1 || weight.shape.length !== 2 || weight.shape[1] !== k) {
    throw new RangeError(
      `linear: weight ${formatShape(weight.shape)} does not match x ${formatShape(x.shape)} ` +
        `(last dim ${k} vs ${weight.shape[1]})`,
    );
  }
  const n = weight.shape[0], rows = x.shape.slice(0, -1).reduce((p, d) => p * d, 1);
  const out = Tensor.empty(x.gpu, [...x.shape.slice(0, -1), n]);
  gemm(whole(x, rows, k), whole(weight, n, k), whole(out, rows, n), { transposeB: true, bias, label: "linear" });
  return out;
}

/** A tensor as a dense `[rows, cols]` view (also for zero columns, which `matrix()` refuses). */
function whole(t: Tensor, rows: number, cols: number): MatrixView {
  return { tensor: t, rows, cols, offset: 0, stride: cols };
}

/**
 * The general form: `c = op(a) · op(b) (+ bias) (+ c when accumulating)` on strided matrix views, so that column
 * slices of fused projections are read and written in place. `a` is `[M, K]` (`[K, M]` with `transposeA`), `b` is
 * `[K, N]` (`[N, K]` with `transposeB`), `c` is `[M, N]` and must not share a tensor with `a`, `b` or `bias`.
 *
 * @example
 * ```ts
 * import { gemm, getGpu, matrix, Tensor } from "@xlstm/core";
 * const gpu = await getGpu();
 * const dy = Tensor.zeros(gpu, [8, 4]), x = Tensor.zeros(gpu, [8, 3]), dw = Tensor.zeros(gpu, [4, 3]);
 * gemm(matrix(dy), matrix(x), matrix(dw), { transposeA: true, accumulate: true }); // dW += dYᵀ·X
 * ```
 */
export function gemm(a: MatrixView, b: MatrixView, c: MatrixView, options: GemmOptions = {}): void {
  const { transposeA = false, transposeB = false, bias = null, accumulate = false, label = "gemm" } = options;
  for (const [name, v] of [["a", a], ["b", b], ["c", c]] as const) checkView(label, name, v);
  const [m, k] = transposeA ? [a.cols, a.rows] : [a.rows, a.cols];
  const [kb, n] = transposeB ? [b.cols, b.rows] : [b.rows, b.cols];
  if (kb !== k || c.rows !== m || c.cols !== n) {
    const show = (name: string, v: MatrixView, t: boolean): string => `${name} [${v.rows}, ${v.cols}]${t ? "ᵀ" : ""}`;
    throw new RangeError(
      `${label}: ${show("a", a, transposeA)} · ${show("b", b, transposeB)} does not fit ${show("c", c, false)}`,
    );
  }
  if (bias && (bias.shape.length !== 1 || bias.shape[0] !== n)) {
    throw new RangeError(`${label}: bias ${formatShape(bias.shape)} does not match the ${n} output columns`);
  }
  for (const [name, t] of [["a", a.tensor], ["b", b.tensor], ["bias", bias]] as const) {
    if (t?.buffer === c.tensor.buffer) throw new RangeError(`${label}: the output shares its storage with ${name}`);
  }
  if (m === 0 || n === 0) return;
  const gpu = c.tensor.gpu;
  const plan = planBlocks(gpu, m, n, k, [
    { ld: a.stride, rowsAre: transposeA ? "k" : "m", colsAre: transposeA ? "m" : "k" },
    { ld: b.stride, rowsAre: transposeB ? "n" : "k", colsAre: transposeB ? "k" : "n" },
    { ld: c.stride, rowsAre: "m", colsAre: "n" },
  ]);
  const wgY = workgroupRows(Math.min(m, plan.m), Math.min(n, plan.n));
  for (let m0 = 0; m0 < m; m0 += plan.m) {
    const mc = Math.min(plan.m, m - m0);
    for (let n0 = 0; n0 < n; n0 += plan.n) {
      const nc = Math.min(plan.n, n - n0);
      // At least one pass, so that K = 0 writes C = bias (or zeros).
      for (let k0 = 0; k0 === 0 || k0 < k; k0 += plan.k) {
        const kc = Math.min(plan.k, k - k0);
        const ra = bind(gpu, a, transposeA ? [k0, m0, kc, mc] : [m0, k0, mc, kc]);
        const rb = bind(gpu, b, transposeB ? [n0, k0, nc, kc] : [k0, n0, kc, nc]);
        const rc = bind(gpu, c, [m0, n0, mc, nc]);
        const rbias = bias ? bind(gpu, whole(bias, 1, n), [0, n0, 1, nc]) : ra;
        const params = new Params().u32(mc).u32(nc).u32(kc)
          .u32(transposeA ? 1 : a.stride).u32(transposeA ? a.stride : 1) // op(A): row and k strides
          .u32(transposeB ? 1 : b.stride).u32(transposeB ? b.stride : 1) // op(B): k and column strides
          .u32(c.stride).u32(ra.element).u32(rb.element).u32(rc.element).u32(rbias.element)
          .u32(bias && k0 === 0 ? 1 : 0).u32(accumulate || k0 > 0 ? 1 : 0).u32(Math.log2(wgY));
        const pipeline = gpu.pipeline(KERNEL, {
          A_MODE: loadMode(a.stride, ra.element, !transposeA, kc),
          B_MODE: loadMode(b.stride, rb.element, transposeB, kc),
        });
        gpu.dispatch(pipeline, [ra.range, rb.range, rbias.range, rc.range], params, [
          Math.ceil(nc / (TN * (WG / wgY))),
          Math.ceil(mc / (TM * wgY)),
        ]);
      }
    }
  }
}

function checkView(label: string, name: string, v: MatrixView): void {
  const ok = v.rows >= 0 && v.cols >= 0 && v.offset >= 0 && v.stride >= v.cols &&
    (v.rows === 0 || v.cols === 0 || v.offset + (v.rows - 1) * v.stride + v.cols <= v.tensor.size);
  if (!ok) {
    throw new RangeError(
      `${label}: ${name} view [${v.rows}, ${v.cols}] (offset ${v.offset}, stride ${v.stride}) lies outside ` +
        `its tensor ${formatShape(v.tensor.shape)}`,
    );
  }
}

/**
 * How an operand is loaded (the shader's A_MODE / B_MODE): 1 = vec4 along K, 2 = vec4 along M or N, 0 = f32. vec4
 * loads need 16-byte aligned rows, and whole vec4 steps where the contiguous dimension is K.
 */
function loadMode(stride: number, first: number, alongK: boolean, k: number): number {
  if (stride % 4 !== 0 || first % 4 !== 0) return 0;
  if (!alongK) return 2;
  return k % 4 === 0 ? 1 : 0;
}

/**
 * Invocations of the 64-invocation workgroup along M: 8 (a 64×128 block of C, both operands reused across the
 * workgroup) unless C is too thin for that; then the workgroup stretches along the long side so that its
 * invocations still have work (M = 1 decoding, N = 1).
 */
function workgroupRows(m: number, n: number): number {
  const rows = Math.ceil(m / TM), cols = Math.ceil(n / TN);
  if (rows < 8) return 2 ** Math.ceil(Math.log2(rows));
  if (cols < 8) return WG / 2 ** Math.ceil(Math.log2(cols));
  return 8;
}

/** How one operand's stored rows and columns map onto the problem's M, N and K. */
interface Layout {
  ld: number;
  rowsAre: "m" | "n" | "k";
  colsAre: "m" | "n" | "k";
}

/**
 * Block sizes along M, N and K such that every operand's block fits one storage binding (after its offset is
 * aligned down) and one dispatch (workgroup counts, loop trips). Shrinking a dimension never enlarges any block,
 * so fixing the operands one at a time until all fit terminates.
 */
function planBlocks(gpu: Gpu, m: number, n: number, k: number, layouts: Layout[]): Record<"m" | "n" | "k", number> {
  const maxGroups = gpu.limits.maxComputeWorkgroupsPerDimension;
  const size = {
    m: Math.min(m, maxGroups * TM),
    n: Math.min(n, maxGroups * TN),
    k: Math.max(1, Math.min(k, K_PER_PASS)),
  };
  // Elements one binding may span: less the slack of aligning its start down and of rounding its end up to a vec4.
  const cap = Math.floor(gpu.maxBinding / 16) * 4 - (gpu.limits.minStorageBufferOffsetAlignment / 4 - 1) - 3;
  if (cap < 1) throw new RangeError(`matmul: a storage binding limit of ${gpu.maxBinding} bytes is too small`);
  for (let changed = true; changed;) {
    changed = false;
    for (const { ld, rowsAre, colsAre } of layouts) {
      const rows = size[rowsAre], cols = size[colsAre];
      if ((rows - 1) * ld + cols <= cap) continue;
      if (cols > cap) {
        size[rowsAre] = 1;
        size[colsAre] = cap;
      } else {
        size[rowsAre] = Math.floor((cap - cols) / ld) + 1;
      }
      changed = true;
    }
  }
  // Blocks of whole tiles and whole vec4 steps keep the later blocks' offsets aligned for vec4 loads.
  for (const [d, unit] of [["m", TM], ["n", TN], ["k", 4]] as const) {
    if (size[d] > unit) size[d] -= size[d] % unit;
  }
  return size;
}

/** The binding covering block `[r0, r0 + rows) × [c0, c0 + cols)` of a view, and its first element within it. */
function bind(
  gpu: Gpu,
  v: MatrixView,
  [r0, c0, rows, cols]: [number, number, number, number],
): { range: BufferRange; element: number } {
  const start = v.offset + r0 * v.stride + c0;
  const end = rows > 0 && cols > 0 ? start + (rows - 1) * v.stride + cols : start + 1;
  const align = gpu.limits.minStorageBufferOffsetAlignment;
  const offset = Math.floor((start * 4) / align) * align;
  // Whole vec4s: A and B are bound as vec4 arrays (pooled buffers are multiples of 64 bytes).
  const size = Math.min(Math.ceil(end / 4) * 16, v.tensor.buffer.size) - offset;
  return { range: { buffer: v.tensor.buffer, offset, size }, element: start - offset / 4 };
}
