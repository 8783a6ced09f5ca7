/**
 * Differentiable functions: each runs its forward kernel and, when an input needs a gradient, records the backward
 * kernels that pair with it (see `src/autograd.ts`). Models are written with these.
 *
 * Inputs given as views (`MatrixView`, e.g. a column slice of a fused projection) receive partial gradients into the
 * viewed part of their tensor.
 *
 * @module
 */

import { type InputGrad, needsGrad, record } from "../autograd.ts";
import { causalConv1d as causalConv1dKernel, causalConv1dBackward } from "../ops/conv1d.ts";
import { crossEntropy as crossEntropyKernel } from "../ops/cross_entropy.ts";
import { embedding as embeddingKernel, embeddingBackward } from "../ops/embedding.ts";
import {
  gatedActivation as gatedActivationKernel,
  gatedActivationBackward,
  type GatedActivationFn,
} from "../ops/gated_activation.ts";
import { linearHeadwise as linearHeadwiseKernel, linearHeadwiseBackward } from "../ops/linear_headwise.ts";
import { gemm, linear as linearKernel } from "../ops/matmul.ts";
import {
  mlstmParallelBackward,
  mlstmParallelForward,
  mlstmParallelForwardWithCache,
  type MlstmParallelOptions,
} from "../ops/mlstm.ts";
import { norm as normKernel, normBackward, type NormOptions } from "../ops/norm.ts";
import {
  add as addKernel,
  addInto,
  mlstmOutputGate as mlstmOutputGateKernel,
  mlstmOutputGateBackward,
} from "../ops/pointwise.ts";
import { sumRows } from "../ops/reduce.ts";
import { type SlstmFunction, slstmRecurrentBackward, slstmRecurrentForward } from "../ops/slstm.ts";
import { formatShape } from "../host_tensor.ts";
import { columns, matrix, type MatrixView, Tensor } from "../tensor.ts";

/** A partial gradient for `view`, or the whole gradient when the view covers its tensor contiguously. */
export function gradFor(view: MatrixView, grad: Tensor): InputGrad {
  const t = view.tensor;
  const whole = view.offset === 0 && view.stride === view.cols && view.rows * view.cols === t.size;
  return whole ? grad.reshape(t.shape) : { view, grad };
}

/**
 * Throws when a backward pass needs the gradient of a float16 weight: those are for inference only (the kernels
 * read them but write no float16 gradients).
 */
function refuseHalfGradient(op: string, weight: Tensor): void {
  if (weight.requiresGrad && weight.dtype === "float16") {
    throw new TypeError(
      `${op}: backward through the float16 weight ${formatShape(weight.shape)} is not supported: float16 weights ` +
        `are for inference only (run under noGrad(), or create the model with weightDtype "float32" to train)`,
    );
  }
}

/**
 * `x·Wᵀ + b` (PyTorch `nn.Linear`): x `[..., K]`, weight `[N, K]`, bias `[N]`. A float16 weight takes no gradient
 * (the backward throws if it would need one).
 */
export function linear(x: Tensor, weight: Tensor, bias: Tensor | null = null): Tensor {
  const y = linearKernel(x, weight, bias);
  if (!needsGrad(x, weight, bias)) return y;
  const K = weight.shape[1], N = weight.shape[0];
  return record(y, "linear", [x, weight, bias], [x, weight], (dy, [xs, w]) => {
    refuseHalfGradient("linear", weight);
    const dy2 = matrix(dy, N), x2 = matrix(xs, K);
    let dx: Tensor | null = null, dw: Tensor | null = null, db: Tensor | null = null;
    if (x.requiresGrad) {
      dx = Tensor.empty(dy.gpu, xs.shape);
      gemm(dy2, matrix(w, K), matrix(dx, K));
    }
    if (weight.requiresGrad) {
      dw = Tensor.empty(dy.gpu, w.shape);
      gemm(dy2, x2, matrix(dw, K), { transposeA: true });
    }
    if (bias?.requiresGrad) db = sumRows(dy2);
    return [dx, dw, db];
  });
}

/** `a + b` with `b` broadcast over `a`'s leading dimensions (residual connections, biases). */
export function add(a: Tensor, b: Tensor): Tensor {
  const y = addKernel(a, b);
  if (!needsGrad(a, b)) return y;
  return record(
    y,
    "add",
    [a, b],
    [],
    (dy) => [dy, b.size === a.size ? dy.reshape(b.shape) : sumRows(matrix(dy, b.size)).reshape(b.shape)],
  );
}

/** `norm` (LayerNorm, group norm, RMSNorm; see `src/ops/norm.ts`). */
export function norm(x: Tensor, weight: Tensor | null, bias: Tensor | null, options: NormOptions): Tensor {
  const y = normKernel(x, weight, bias, options);
  if (!needsGrad(x, weight, bias)) return y;
  return record(y, "norm", [x, weight, bias], [x], (dy, [xs]) => {
    const g = normBackward(dy, xs, weight, bias, options);
    return [g.dx, g.dweight, g.dbias];
  });
}

/** Token embedding: int32 ids `[...]` → `[..., E]`. A float16 table takes no gradient (the backward throws). */
export function embedding(ids: Tensor, weight: Tensor): Tensor {
  const y = embeddingKernel(ids, weight);
  if (!needsGrad(weight)) return y;
  return record(y, "embedding", [null, weight], [ids], (dy, [idsSaved]) => {
    refuseHalfGradient("embedding", weight);
    return [null, embeddingBackward(idsSaved, dy, weight.shape[0])];
  });
}

/** Mean cross-entropy over labels ≠ `ignoreIndex`, with argmax accuracy counts (not differentiable). */
export interface LossResult {
  /** Mean loss `[1]`; `loss.backward()` back-propagates it. */
  loss: Tensor;
  /** Number of rows whose argmax equals the label `[1]`. */
  correct: Tensor;
  /** Number of rows not ignored `[1]`. */
  count: Tensor;
}

/** `cross_entropy(logits.view(-1, V), labels.view(-1), ignore_index)`, as the reference's training loop. */
export function crossEntropy(logits: Tensor, labels: Tensor, ignoreIndex = -1): LossResult {
  const r = crossEntropyKernel(logits, labels, { ignoreIndex });
  // The backward re-runs the fused kernel with the upstream scalar as its gradient scale, so no [N, V] gradient
  // is held between forward and backward.
  const loss = record(r.loss, "crossEntropy", [logits], [logits, labels], (dl, [l, y]) => {
    const g = crossEntropyKernel(l, y, { ignoreIndex, withGrad: true, gradScale: dl.reshape([1]) });
    return [g.dLogits];
  });
  return { loss, correct: r.correct, count: r.count };
}

/** The sLSTM recurrence (spec A5.1); the gradient flows through `y` (not through the returned final state). */
export function slstm(
  wx: Tensor,
  recurrentKernel: Tensor,
  bias: Tensor,
  state: Tensor | null,
  options: { numHeads: number; fn?: SlstmFunction },
): { y: Tensor; state: Tensor } {
  const grad = needsGrad(wx, recurrentKernel, bias, state);
  const r = slstmRecurrentForward(wx, recurrentKernel, bias, state, { ...options, saveStates: grad });
  if (!grad) return r;
  const saved = [wx, recurrentKernel, bias, r.y, r.saved!, ...(state ? [state] : [])];
  const y = record(r.y, "slstm", [wx, recurrentKernel, bias, state], saved, (dy, [w, k, b, y, s, s0]) => {
    const g = slstmRecurrentBackward(
      dy,
      null,
      { wx: w, recurrentKernel: k, bias: b, state: s0 ?? null, y, saved: s },
      options,
    );
    return [g.dwx, g.dRecurrentKernel, g.dBias, state ? g.dState : null];
  });
  r.saved!.dispose();
  return { y, state: r.state };
}

/** Columns side by side: `[rows, c0]`, `[rows, c1]`, … → `[rows, c0 + c1 + …]`. */
export function concatColumns(parts: readonly Tensor[]): Tensor {
  const rows = matrix(parts[0]).rows;
  const widths = parts.map((p) => matrix(p).cols);
  const total = widths.reduce((a, b) => a + b, 0);
  const out = Tensor.zeros(parts[0].gpu, [rows, total]);
  let offset = 0;
  const views = parts.map((p, i) => {
    const v = columns(out, offset, widths[i]);
    offset += widths[i];
    addInto(v, p);
    return v;
  });
  if (!needsGrad(...parts)) return out;
  return record(out, "concatColumns", parts, [], (dy) =>
    views.map((v, i) => {
      const g = Tensor.zeros(dy.gpu, parts[i].shape);
      addInto(matrix(g, v.cols), { ...v, tensor: dy });
      return g;
    }));
}

/** Depthwise causal conv1d over a view of `B·S` rows (optionally fused swish); see `src/ops/conv1d.ts`. */
export function causalConv1d(
  x: MatrixView,
  weight: Tensor,
  bias: Tensor | null,
  options: { batch: number; activation?: "none" | "swish" },
): Tensor {
  const y = causalConv1dKernel(x, weight, bias, options);
  if (!needsGrad(x, weight, bias)) return y;
  return record(y, "causalConv1d", [x.tensor, weight, bias], [x.tensor], (dy, [xs]) => {
    const view = { ...x, tensor: xs };
    const g = causalConv1dBackward(dy, view, weight, bias, options);
    return [gradFor(x, g.dx), g.dweight, g.dbias];
  });
}

/** Block-diagonal (headwise) linear over a view; returns a new `[rows, NH·dout]` tensor. */
export function linearHeadwise(x: MatrixView, weight: Tensor, bias: Tensor | null): Tensor {
  const y = linearHeadwiseKernel(x, weight, bias);
  if (!needsGrad(x, weight, bias)) return y;
  return record(y, "linearHeadwise", [x.tensor, weight, bias], [x.tensor], (dy, [xs]) => {
    const g = linearHeadwiseBackward(matrix(dy), { ...x, tensor: xs }, weight, { bias: !!bias });
    return [gradFor(x, g.dx), g.dweight, g.dbias];
  });
}

/** `act(x[..., :P]) ⊙ x[..., P:]` (the gated feed-forward's activation). */
export function gatedActivation(x: Tensor, activation: GatedActivationFn): Tensor {
  const y = gatedActivationKernel(x, activation);
  if (!needsGrad(x)) return y;
  return record(y, "gatedActivation", [x], [x], (dy, [xs]) => [gatedActivationBackward(dy, xs, activation)]);
}

/** The NeurIPS mLSTM output path `(hNorm + skip ⊙ xConv) ⊙ silu(z)`, `z` a view. */
export function mlstmOutputGate(hNorm: Tensor, skip: Tensor, xConv: Tensor, z: MatrixView): Tensor {
  const y = mlstmOutputGateKernel(hNorm, skip, xConv, z);
  if (!needsGrad(hNorm, skip, xConv, z)) return y;
  return record(y, "mlstmOutputGate", [hNorm, skip, xConv, z.tensor], [hNorm, xConv, z.tensor], (dy, [h, xc, zt]) => {
    const view = { ...z, tensor: zt };
    const g = mlstmOutputGateBackward(dy, h, skip, xc, view);
    return [g.dhNorm, g.dskip, g.dxConv, gradFor(z, g.dz)];
  });
}

/**
 * The parallel stabilized mLSTM cell (spec A4.1) over views of `B·S` rows; returns h `[B, S, NH·DHV]`. The backward
 * differentiates through everything, normaliser and row max included, as PyTorch autograd does on the reference.
 */
export function mlstmParallel(
  q: MatrixView,
  k: MatrixView,
  v: MatrixView,
  igate: MatrixView,
  fgate: MatrixView,
  options: MlstmParallelOptions,
): Tensor {
  if (!needsGrad(q, k, v, igate, fgate)) return mlstmParallelForward(q, k, v, igate, fgate, options);
  const { h, cache } = mlstmParallelForwardWithCache(q, k, v, igate, fgate, options);
  const views = [q, k, v, igate, fgate];
  const cached = [cache.weights, cache.logForget, cache.m, cache.n];
  const out = record(
    h,
    "mlstmParallel",
    views.map((x) => x.tensor),
    [...views.map((x) => x.tensor), ...cached],
    (dh, s) => {
      const [qs, ks, vs, is, fs] = views.map((x, i) => ({ ...x, tensor: s[i] }));
      const [weights, logForget, m, n] = s.slice(5);
      const g = mlstmParallelBackward(dh, qs, ks, vs, is, fs, { weights, logForget, m, n }, options);
      return [gradFor(q, g.dq), gradFor(k, g.dk), gradFor(v, g.dv), gradFor(igate, g.digate), gradFor(fgate, g.dfgate)];
    },
  );
  for (const t of cached) t.dispose();
  return out;
}
