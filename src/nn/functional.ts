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
import { gemm, linear as linearKernel } from "../ops/matmul.ts";
import { add as addKernel } from "../ops/pointwise.ts";
import { sumRows } from "../ops/reduce.ts";
import { matrix, type MatrixView, Tensor } from "../tensor.ts";

/** A partial gradient for `view`, or the whole gradient when the view covers its tensor contiguously. */
export function gradFor(view: MatrixView, grad: Tensor): InputGrad {
  const t = view.tensor;
  const whole = view.offset === 0 && view.stride === view.cols && view.rows * view.cols === t.size;
  return whole ? grad.reshape(t.shape) : { view, grad };
}

/** `x·Wᵀ + b` (PyTorch `nn.Linear`): x `[..., K]`, weight `[N, K]`, bias `[N]`. */
export function linear(x: Tensor, weight: Tensor, bias: Tensor | null = null): Tensor {
  const y = linearKernel(x, weight, bias);
  if (!needsGrad(x, weight, bias)) return y;
  const K = weight.shape[1], N = weight.shape[0];
  return record(y, "linear", [x, weight, bias], [x, weight], (dy, [xs, w]) => {
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
