/**
 * Matrix multiplication: `matmul` (2-D, optional transposes and bias), `linear` (PyTorch `nn.Linear`) and `gemm`
 * (strided views, accumulation, batches of products, triangular shortcuts), all recorded as dispatches of
 * `shaders/matmul.wgsl` (register-blocked) or, for products with few rows of C, `shaders/matmul_gemv.wgsl` (see
 * {@linkcode gemm}); both share `shaders/matmul_common.wgsl`.
 *
 * Operands larger than one storage binding (`gpu.maxBinding`) are split into blocks of rows of C, columns of C and
 * ranges of K; each block binds only the byte ranges it touches, and K blocks after the first accumulate into C.
 * A batch is split likewise into groups of products whose ranges fit one binding (and one grid dimension).
 *
 * B may hold float16 weights (on adapters with `shader-f16`): the shader converts them to f32 as it loads them, and
 * accumulates in f32. Everything else is float32.
 *
 * For inference, `gemm` folds neighbouring work into the product (see {@linkcode GemmFusion}): an RMSNorm of A's
 * rows, a SwiGLU of A, a soft cap of C, a second product sharing A; with a residual accumulated in place
 * (`accumulate`), a transformer block's feed-forward and projections take one dispatch each.
 *
 * @module
 */

import { Params } from "../gpu/runtime.ts";
import { formatShape } from "../host_tensor.ts";
import { type MatrixView, Tensor } from "../tensor.ts";
import { norm } from "./norm.ts";
import { softCap } from "./pointwise.ts";
import {
  batchGroups,
  bind,
  bindingCap,
  checkView,
  GEMV_ROWS,
  gemvMinK,
  type Layout,
  loadMode,
  NAMES,
  normalBatch,
  planBlocks,
  tiling,
} from "./matmul_plan.ts";

export { gemvMinK };

/** Options for {@linkcode matmul}. */
export interface MatmulOptions {
  /** Use Aᵀ: `a` is `[K, M]`. */
  transposeA?: boolean;
  /** Use Bᵀ: `b` is `[N, K]` (the layout of a Linear weight). */
  transposeB?: boolean;
  /** `[N]`, added to every row of C. */
  bias?: Tensor | null;
}

/**
 * A two-level batch of products for {@linkcode gemm}: `count[0] × count[1]` products, where product (o, i) uses
 * each view shifted by `o·x[0] + i·x[1]` elements (x being that operand's strides). Two levels let (batch, head)
 * pairs address a head's column slice inside a `[B·S, NH·DH]` buffer. The bias is shared by every product.
 */
export interface GemmBatch {
  /** `[outer, inner]` numbers of products. */
  count: [number, number];
  /** Element strides `[outer, inner]` between the A matrices of consecutive products (≥ 0). */
  a: [number, number];
  /** Element strides `[outer, inner]` between the B matrices. */
  b: [number, number];
  /** Element strides `[outer, inner]` between the C matrices; products must not write the same elements. */
  c: [number, number];
}

/**
 * Work {@linkcode gemm} folds into a product (for inference: nothing here records gradients). Each gives the result
 * of the separate ops within f32 rounding; where the product must be split over K (K > 65,536, or one row of an
 * operand exceeds a storage binding), the RMSNorm and the soft cap run as separate kernels instead.
 */
export interface GemmFusion {
  /**
   * RMSNorm of op(A)'s rows before the product: `A[m, k]·rsqrt(mean_k A[m, ·]² + eps)·weight[k]` (the xlstm_large
   * RMSNorm without bias; weight `[K]` float32). A must not be transposed; when K is split, it must be a whole
   * contiguous tensor (it is then normalised by the norm kernel first).
   */
  rmsNorm?: { weight: Tensor; eps: number };
  /**
   * SwiGLU of A: op(A)[m, k] = silu(A[m, k])·A[m, k + gatedA], e.g. `a` the gate half `[M, F]` of a `[M, 2F]`
   * `[gate | z]` projection and gatedA = F. A must not be transposed. Not with `rmsNorm`.
   */
  gatedA?: number;
  /** `C = cap·tanh(C / cap)` after the bias (a logit soft cap); not with `accumulate`. */
  softCap?: number;
  /**
   * A second product of the same A in the same dispatch: `c` is then `[M, N + N2]`, its first N columns
   * `op(A)·op(b) + bias`, the last N2 `op(A)·op(second.b) + second.bias` (second.b `[N2, K]` with `transposeB`, else
   * `[K, N2]`, b's dtype). Not with `batch`; runs as two dispatches where either product must be split.
   */
  second?: { b: MatrixView; bias?: Tensor | null };
}

/** Options for {@linkcode gemm}. */
export interface GemmOptions extends MatmulOptions, GemmFusion {
  /** Add the product to the existing contents of `c` instead of overwriting them. */
  accumulate?: boolean;
  /** Many products of the same shape in one call (dispatched along the grid's z); one product when absent. */
  batch?: GemmBatch;
  /**
   * Triangular structure to exploit in every product (causal score matrices): `"lowerA"`: op(A)[r, i] is zero for
   * i > r, so row r's sum stops soon after i = r (some of those zeros are still read and must be stored as zeros);
   * `"lowerC"`: only C[r, c] with c ≤ r is wanted, and blocks of C wholly above the diagonal are not written. About
   * half the work of a square product is skipped.
   */
  triangular?: "lowerA" | "lowerC";
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
  gemm(whole(a, a.shape[0], a.shape[1]), whole(b, b.shape[0], b.shape[1]), whole(out, m, n), {
    transposeA,
    transposeB,
    bias,
    label: "matmul",
  });
  return out;
}

/**
 * PyTorch `nn.Linear`: `y = x · weightᵀ + bias` with x `[..., K]`, weight `[N, K]` (float32, or float16 where the
 * adapter has `shader-f16`), bias `[N]` → y `[..., N]`.
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
 * `[K, N]` (`[N, K]` with `transposeB`), `c` is `[M, N]` and must not share a tensor with `a`, `b` or `bias`. `b` may
 * be float16 (weights, on adapters with `shader-f16`); the rest is float32. With
 * `batch`, the views describe the first of many products of the same shape (per-head products of attention-like
 * cells, for example), recorded as one dispatch where the bindings allow.
 *
 * Products with at most 8 rows of C, K ≥ {@linkcode gemvMinK} and B a weight in Linear layout (`transposeB`, A not transposed, not
 * `triangular`) — decoding — run a GEMV kernel: many workgroups of 8 columns of C each, whose 64 invocations split
 * K and stream B's rows. Other products run the register-blocked kernel, which gives each invocation a whole 8×16
 * block of C (at M = 1, N / 16 invocations for the whole product).
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
  const { triangular, second, rmsNorm, gatedA = 0, softCap: cap } = options;
  const batch = normalBatch(label, options.batch);
  for (const [name, v] of [["a", a], ["b", b], ["c", c]] as const) checkView(label, name, v, batch, batch[name]);
  const [m, k] = transposeA ? [a.cols, a.rows] : [a.rows, a.cols];
  const [kb, n] = transposeB ? [b.cols, b.rows] : [b.rows, b.cols];
  const b2 = second?.b, bias2 = second?.bias ?? null;
  const [kb2, n2] = !b2 ? [k, 0] : transposeB ? [b2.cols, b2.rows] : [b2.rows, b2.cols];
  if (kb !== k || kb2 !== k || c.rows !== m || c.cols !== n + n2) {
    const show = (name: string, v: MatrixView, t: boolean): string => `${name} [${v.rows}, ${v.cols}]${t ? "ᵀ" : ""}`;
    throw new RangeError(
      `${label}: ${show("a", a, transposeA)} · ${show("b", b, transposeB)}` +
        (b2 ? ` and ${show("second.b", b2, transposeB)}` : "") + ` does not fit ${show("c", c, false)}`,
    );
  }
  for (const [name, v, cols] of [["bias", bias, n], ["second.bias", bias2, n2]] as const) {
    if (v && (v.shape.length !== 1 || v.shape[0] !== cols)) {
      throw new RangeError(`${label}: ${name} ${formatShape(v.shape)} does not match the ${cols} output columns`);
    }
  }
  const operands: [string, Tensor | null | undefined][] = [
    ["a", a.tensor],
    ["b", b.tensor],
    ["bias", bias],
    ["c", c.tensor],
    ["second.b", b2?.tensor],
    ["second.bias", bias2],
    ["rmsNorm.weight", rmsNorm?.weight],
  ];
  for (const [name, t] of operands) {
    const half = (name === "b" || name === "second.b") && t?.dtype === "float16";
    if (t && t.dtype !== "float32" && !half) throw new TypeError(`${label}: ${name} is ${t.dtype}, not float32`);
    if (half && !t.gpu.hasF16) {
      throw new TypeError(
        `${label}: b is float16, but this adapter lacks the WebGPU feature "shader-f16"; use float32 weights`,
      );
    }
    if (t && name !== "c" && t.buffer === c.tensor.buffer) {
      throw new RangeError(`${label}: the output shares its storage with ${name}`);
    }
  }
  checkFusion(label, options, k);
  if (b2) {
    checkView(label, "second.b", b2, batch, [0, 0]);
    if (b2.tensor.dtype !== b.tensor.dtype) {
      throw new TypeError(`${label}: second.b is ${b2.tensor.dtype}, b is ${b.tensor.dtype}`);
    }
  }
  const aRead = gatedA ? { ...a, cols: a.cols + gatedA } : a; // the gate and its z
  if (gatedA) checkView(label, "a with its gated part", aRead, batch, batch.a);
  if (m === 0 || n + n2 === 0 || batch.count[0] === 0 || batch.count[1] === 0) return;
  const gpu = c.tensor.gpu;
  const layoutsFor = (bv: MatrixView, cv: MatrixView): Layout[] => [
    {
      ld: a.stride,
      rowsAre: transposeA ? "k" : "m",
      colsAre: transposeA ? "m" : "k",
      cap: bindingCap(gpu, a),
      extra: gatedA,
    },
    {
      ld: bv.stride,
      rowsAre: transposeB ? "n" : "k",
      colsAre: transposeB ? "k" : "n",
      cap: bindingCap(gpu, bv),
      extra: 0,
    },
    { ld: cv.stride, rowsAre: "m", colsAre: "n", cap: bindingCap(gpu, cv), extra: 0 },
  ];
  const first: MatrixView = { ...c, cols: n }, rest: MatrixView = { ...c, cols: n2, offset: c.offset + n };
  const minK = gpu.software ? gemvMinK.software : gemvMinK.gpu;
  const gemv = m <= GEMV_ROWS && k >= minK && transposeB && !transposeA && !triangular;
  if (b2) {
    const whole = (bv: MatrixView, cv: MatrixView, cols: number): boolean => {
      const p = planBlocks(gpu, m, cols, k, layoutsFor(bv, cv), gemv);
      return p.m >= m && p.n >= cols && p.k >= k;
    };
    const perX = tiling(gemv, b.tensor.dtype, m, n + n2, undefined).cols;
    const fits = whole(b, first, n) && whole(b2, rest, n2) && (m - 1) * c.stride + n + n2 <= bindingCap(gpu, c) &&
      Math.ceil(n / perX) + Math.ceil(n2 / perX) <= gpu.limits.maxComputeWorkgroupsPerDimension;
    if (!fits) {
      gemm(a, b, first, { ...options, second: undefined });
      gemm(a, b2, rest, { ...options, second: undefined, bias: bias2 });
      return;
    }
  }
  const layouts = layoutsFor(b, b2 ? first : c);
  const plan = planBlocks(gpu, m, n, k, layouts, gemv);
  if (plan.k < k && (rmsNorm || cap !== undefined)) return unfused(a, b, c, options, m, k);
  const groups = batchGroups(
    batch.count,
    layouts.map((l, i) => ({
      span: (plan[l.rowsAre] - 1) * l.ld + plan[l.colsAre] + l.extra,
      strides: batch[NAMES[i]],
      cap: l.cap,
    })),
    gpu.limits.maxComputeWorkgroupsPerDimension,
  );
  const tile = tiling(gemv, b.tensor.dtype, Math.min(m, plan.m), Math.min(n + n2, plan.n + n2), triangular);
  for (const g of groups) {
    // The group's first product and the extra elements its later products span, per operand.
    const at = (s: [number, number]): [number, number] => [
      g.o0 * s[0] + g.i0 * s[1],
      (g.oc - 1) * s[0] + (g.ic - 1) * s[1],
    ];
    const [ab, bb, cb] = [at(batch.a), at(batch.b), at(batch.c)];
    for (let m0 = 0; m0 < m; m0 += plan.m) {
      const mc = Math.min(plan.m, m - m0);
      for (let n0 = 0; n0 < n; n0 += plan.n) {
        const nc = Math.min(plan.n, n - n0);
        // At least one pass, so that K = 0 writes C = bias (or zeros).
        for (let k0 = 0; k0 === 0 || k0 < k; k0 += plan.k) {
          const kc = Math.min(plan.k, k - k0);
          const ra = bind(gpu, aRead, transposeA ? [k0, m0, kc, mc] : [m0, k0, mc, kc + gatedA], ab);
          const rb = bind(gpu, b, transposeB ? [n0, k0, nc, kc] : [k0, n0, kc, nc], bb);
          const rc = bind(gpu, c, [m0, n0, mc, nc + n2], cb);
          const rbias = bias ? bind(gpu, whole(bias, 1, n), [0, n0, 1, nc], [0, 0]) : ra;
          // The dual product's operands (absent: stand-ins the shader does not read).
          const rb2 = b2 ? bind(gpu, b2, transposeB ? [0, 0, n2, k] : [0, 0, k, n2], [0, 0]) : rb;
          const rbias2 = bias2 ? bind(gpu, whole(bias2, 1, n2), [0, 0, 1, n2], [0, 0]) : ra;
          const rnorm = rmsNorm ? bind(gpu, whole(rmsNorm.weight, 1, k), [0, 0, 1, k], [0, 0]) : ra;
          const params = new Params().u32(mc).u32(nc).u32(kc)
            .u32(transposeA ? 1 : a.stride).u32(transposeA ? a.stride : 1) // op(A): row and k strides
            .u32(transposeB ? 1 : b.stride).u32(transposeB ? b.stride : 1) // op(B): k and column strides
            .u32(c.stride).u32(ra.element).u32(rb.element).u32(rc.element).u32(rbias.element)
            .u32(bias && k0 === 0 ? 1 : 0).u32(accumulate || k0 > 0 ? 1 : 0).u32(tile.wgYLog2)
            .u32(g.ic).u32(batch.a[0]).u32(batch.a[1]).u32(batch.b[0]).u32(batch.b[1]).u32(batch.c[0])
            .u32(batch.c[1]).i32(triangular === "lowerA" ? m0 - k0 : m0 - n0)
            .f32(rmsNorm?.eps ?? 0).u32(gatedA).f32(cap ?? 1).u32(Math.ceil(nc / tile.cols)).u32(n2)
            .u32(transposeB ? 1 : b2?.stride ?? 0).u32(transposeB ? b2?.stride ?? 0 : 1).u32(rb2.element)
            .u32(rbias2.element).u32(bias2 ? 1 : 0);
          const bMode = (v: MatrixView, element: number): number =>
            loadMode(v.stride, element, batch.b, transposeB, kc, 0);
          const pipeline = gpu.pipeline(tile.kernel, {
            ...tile.constants,
            A_MODE: loadMode(a.stride, ra.element, batch.a, !transposeA, kc, gatedA),
            B_MODE: b2 && bMode(b2, rb2.element) !== bMode(b, rb.element) ? 0 : bMode(b, rb.element),
            A_NORM: rmsNorm ? 1 : 0,
            A_GLU: gatedA ? 1 : 0,
            C_CAP: cap !== undefined ? 1 : 0,
            DUAL: b2 ? 1 : 0,
          });
          gpu.dispatch(
            pipeline,
            [ra.range, rb.range, rbias.range, rc.range, rnorm.range, rb2.range, rbias2.range],
            params,
            [Math.ceil(nc / tile.cols) + Math.ceil(n2 / tile.cols), Math.ceil(mc / tile.rows), g.oc * g.ic],
          );
        }
      }
    }
  }
}

/** Throws unless the fusions asked for fit the product (see {@linkcode GemmFusion}). */
function checkFusion(label: string, o: GemmOptions, k: number): void {
  const problem = (what: string): never => {
    throw new RangeError(`${label}: ${what}`);
  };
  if ((o.rmsNorm || o.gatedA) && o.transposeA) problem("rmsNorm and gatedA need an untransposed a");
  if (o.rmsNorm && o.gatedA) problem("rmsNorm and gatedA cannot be combined");
  if (o.rmsNorm) {
    if (o.rmsNorm.weight.shape.length !== 1 || o.rmsNorm.weight.shape[0] !== k) {
      problem(`rmsNorm.weight ${formatShape(o.rmsNorm.weight.shape)} does not match K = ${k}`);
    }
    if (!(o.rmsNorm.eps >= 0)) problem(`rmsNorm.eps must be a non-negative number, got ${o.rmsNorm.eps}`);
  }
  if (o.gatedA !== undefined && !(Number.isInteger(o.gatedA) && o.gatedA > 0)) {
    problem(`gatedA must be a positive integer, got ${o.gatedA}`);
  }
  if (o.softCap !== undefined) {
    if (!(o.softCap > 0 && Number.isFinite(o.softCap))) {
      problem(`softCap must be positive and finite, got ${o.softCap}`);
    }
    if (o.accumulate) problem("softCap cannot be combined with accumulate");
  }
  if (o.second && (o.batch || o.triangular)) problem("second cannot be combined with batch or triangular");
}

/**
 * The RMSNorm and soft-cap fusions of a product that must be split over K: the norm kernel first (into a scratch
 * copy of A), or the soft-cap kernel after (through a scratch C).
 */
function unfused(a: MatrixView, b: MatrixView, c: MatrixView, options: GemmOptions, m: number, k: number): void {
  const gpu = c.tensor.gpu;
  if (options.rmsNorm) {
    if (a.offset !== 0 || a.stride !== k || a.tensor.size !== m * k) {
      throw new RangeError(
        `${options.label ?? "gemm"}: rmsNorm over K = ${k} in passes needs a to be a whole [${m}, ${k}] tensor`,
      );
    }
    const x = a.tensor.reshape([m, k]);
    const an = norm(x, options.rmsNorm.weight, null, { kind: "rms", eps: options.rmsNorm.eps });
    x.dispose();
    gemm(whole(an, m, k), b, c, { ...options, rmsNorm: undefined });
    an.dispose(); // the recorded product still reads it; the pool hands it out only to later commands
    return;
  }
  const raw = Tensor.empty(gpu, [m, c.cols]);
  gemm(a, b, whole(raw, m, c.cols), { ...options, softCap: undefined });
  const capped = softCap(raw, options.softCap!);
  if (c.stride === c.cols) gpu.copy(capped.buffer, 0, c.tensor.buffer, 4 * c.offset, 4 * m * c.cols);
  else {
    for (let r = 0; r < m; r++) {
      gpu.copy(capped.buffer, 4 * r * c.cols, c.tensor.buffer, 4 * (c.offset + r * c.stride), 4 * c.cols);
    }
  }
  raw.dispose();
  capped.dispose();
}
