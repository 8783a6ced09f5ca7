/**
 * Reverse-mode automatic differentiation over GPU tensors.
 *
 * Differentiable functions (`src/nn/functional.ts`) run a forward kernel and, when an input needs a gradient,
 * {@linkcode record} a node with the tensors the backward kernels need. `Tensor.backward(upstream)` walks the nodes
 * in reverse topological order and fills `.grad` of every leaf that requires it (parameters and inputs created with
 * `requiresGrad: true`), summing contributions — tied weights get the summed gradient.
 *
 * Saved tensors are separate handles on the same storage, so `tidy` may dispose the forward's own handles. They are
 * released after `backward`, or when the graph's output is garbage-collected.
 *
 * @module
 */

import { formatShape, type HostTensor } from "./host_tensor.ts";
import { addInto } from "./ops/pointwise.ts";
import { expectShape, matrix, type MatrixView, Tensor, tidy } from "./tensor.ts";

/** A gradient for part of an input: `grad` (`[view.rows, view.cols]`) belongs to `view` of the input tensor. */
export interface PartialGrad {
  /** Where in the input the gradient belongs (its `tensor` is the input). */
  view: MatrixView;
  /** The gradient of those elements, contiguous. */
  grad: Tensor;
}

/** The gradient for one input: a full tensor of the input's shape, a part of it, or none. */
export type InputGrad = Tensor | PartialGrad | null;

/** Computes input gradients from the output gradient and the saved tensors. */
export type BackwardFn = (grad: Tensor, saved: readonly Tensor[]) => InputGrad[];

/** A recorded operation: how to send an output gradient back to its inputs. */
export class GradNode {
  #saved: Tensor[];
  #backward: BackwardFn | null;

  /** A node for an op named `name` over `inputs` (null where no gradient is wanted). */
  constructor(
    readonly name: string,
    readonly inputs: readonly (Tensor | null)[],
    saved: Tensor[],
    backward: BackwardFn,
  ) {
    this.#saved = saved;
    this.#backward = backward;
  }

  /** Runs the backward once; afterwards the node's saved tensors are released. */
  apply(grad: Tensor): InputGrad[] {
    if (!this.#backward) throw new Error(`backward through ${this.name} a second time (its saved tensors are freed)`);
    const grads = this.#backward(grad, this.#saved);
    if (grads.length !== this.inputs.length) {
      throw new Error(`backward of ${this.name} returned ${grads.length} gradients for ${this.inputs.length} inputs`);
    }
    this.release();
    return grads;
  }

  /** Frees the saved tensors. */
  release(): void {
    for (const t of this.#saved) t.dispose();
    this.#saved = [];
    this.#backward = null;
  }
}

let enabled = true;
const graphs = new FinalizationRegistry<GradNode>((node) => node.release());

/** Whether operations record gradient nodes now (not inside {@linkcode noGrad}). */
export function isGradEnabled(): boolean {
  return enabled;
}

/**
 * Runs `fn` without recording gradients (evaluation, generation): no saved tensors, no graph.
 *
 * @example
 * ```ts
 * import { noGrad } from "@xlstm/core";
 * const y = noGrad(() => 1 + 1);
 * console.log(y);
 * ```
 */
export function noGrad<T>(fn: () => T): T {
  const before = enabled;
  enabled = false;
  try {
    return fn();
  } finally {
    enabled = before;
  }
}

/** True when gradients are being recorded and one of `inputs` needs one. */
export function needsGrad(...inputs: readonly (Tensor | MatrixView | null | undefined)[]): boolean {
  return enabled && inputs.some((t) => t && (t instanceof Tensor ? t.requiresGrad : t.tensor.requiresGrad));
}

/**
 * Attaches a gradient node to `output` when one of `inputs` needs a gradient. `saved` tensors are retained (new
 * handles on the same storage) until the backward has run.
 */
export function record(
  output: Tensor,
  name: string,
  inputs: readonly (Tensor | null)[],
  saved: readonly Tensor[],
  backward: BackwardFn,
): Tensor {
  if (!needsGrad(...inputs)) return output;
  const node = new GradNode(
    name,
    inputs.map((t) => t?.requiresGrad ? t : null),
    saved.map((t) => t.retain()),
    backward,
  );
  output.requiresGrad = true;
  output.gradFn = node;
  graphs.register(output, node, node);
  return output;
}

/** Reverse topological order of the nodes behind `root` (root first). */
function order(root: Tensor): Tensor[] {
  const seen = new Set<Tensor>(), post: Tensor[] = [];
  const stack: [Tensor, number][] = [[root, 0]];
  seen.add(root);
  while (stack.length) {
    const top = stack[stack.length - 1];
    const inputs = top[0].gradFn?.inputs ?? [];
    if (top[1] < inputs.length) {
      const next = inputs[top[1]++];
      if (next && !seen.has(next)) {
        seen.add(next);
        stack.push([next, 0]);
      }
    } else {
      post.push(top[0]);
      stack.pop();
    }
  }
  return post.reverse();
}

/**
 * Back-propagates `grad` (dL/d`root`, same shape) through the recorded graph. `accumulate(into, contribution)` adds a
 * full or partial gradient into a tensor in place; `zeros` makes a zero tensor like its argument.
 */
export function backpropagate(
  root: Tensor,
  grad: Tensor,
  accumulate: (into: Tensor, contribution: Tensor | PartialGrad) => void,
  zeros: (like: Tensor) => Tensor,
): void {
  const grads = new Map<Tensor, Tensor>([[root, grad]]);
  // Accumulators are written in place, so a gradient becomes one only if no other gradient shares its storage
  // (a backward may pass its upstream gradient, or a view of it, to several inputs).
  const owned = new Set<GPUBuffer>([grad.buffer]);
  const add = (t: Tensor, g: Tensor | PartialGrad) => {
    const leaf = !t.gradFn;
    const current = leaf ? t.grad : grads.get(t) ?? null;
    let next: Tensor;
    if (!current && g instanceof Tensor && !owned.has(g.buffer)) next = g;
    else {
      next = current ?? zeros(t);
      accumulate(next, g);
    }
    owned.add(next.buffer);
    if (leaf) {
      t.grad = next;
      next.keep();
    } else grads.set(t, next);
  };
  for (const t of order(root)) {
    const node = t.gradFn;
    const g = grads.get(t);
    if (!node || !g) continue;
    grads.delete(t);
    const inputGrads = node.apply(g);
    node.inputs.forEach((input, i) => {
      const ig = inputGrads[i];
      if (input && ig) add(input, ig);
    });
    t.gradFn = null;
    graphs.unregister(node);
  }
}

/**
 * `root.backward(upstream)`: back-propagates dL/d`root` = `upstream` (a ones scalar when `root` has one element and
 * no upstream is given) and waits until the gradients are computed.
 */
export async function backward(root: Tensor, upstream?: Tensor | HostTensor): Promise<void> {
  if (!root.requiresGrad) {
    throw new Error(`backward: the tensor ${formatShape(root.shape)} does not require a gradient (no graph behind it)`);
  }
  const gpu = root.gpu;
  tidy(() => {
    let grad: Tensor;
    if (upstream === undefined) {
      if (root.size !== 1) {
        throw new Error(`backward: an upstream gradient is needed for a non-scalar output ${formatShape(root.shape)}`);
      }
      grad = Tensor.fromHost(gpu, { dtype: "float32", shape: [...root.shape], data: new Float32Array([1]) });
    } else grad = upstream instanceof Tensor ? upstream : Tensor.fromHost(gpu, upstream);
    expectShape("backward: upstream gradient", grad, root.shape);
    backpropagate(root, grad, (into, g) => {
      if (g instanceof Tensor) addInto(matrix(into, into.size), g);
      else addInto({ ...g.view, tensor: into }, g.grad);
    }, (like) => Tensor.zeros(gpu, like.shape));
  });
  await gpu.check();
}
