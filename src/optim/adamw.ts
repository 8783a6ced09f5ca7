/**
 * AdamW with the reference's weight-decay groups, and global-norm gradient clipping. Optimizer state (first and
 * second moments) lives on the GPU; a step records one dispatch per parameter (per binding-sized range of it) into
 * the open command buffer and reads nothing back.
 *
 * @module
 */

import code from "../../shaders/adamw.wgsl" with { type: "text" };
import { type Gpu, grid, Params } from "../gpu/runtime.ts";
import { formatShape } from "../host_tensor.ts";
import { expectShape, Tensor } from "../tensor.ts";

const KERNEL = { name: "adamw", code };
/** Elements per invocation of the elementwise kernels (`PER` in the shader). */
const PER = 4;
/** Elements summed per invocation of each level of the norm reduction (loop trips, well below 65,535). */
const NORM_CHUNK = 1024;

/** A parameter handed to {@linkcode AdamW}. */
export interface NamedParameter {
  /** Its name (`named_parameters()` style); keys the optimizer state. */
  name: string;
  /** The float32 parameter; its `.grad` is read by `step`. */
  tensor: Tensor;
  /** Weight decay for this parameter, overriding the optimizer's `decay` rule. */
  weightDecay?: number;
}

/** Options of {@linkcode AdamW}; defaults are PyTorch's. */
export interface AdamWOptions {
  /** Learning rate used when `step()` gets none. */
  lr: number;
  /** Moment decay rates (default `[0.9, 0.999]`). */
  betas?: [number, number];
  /** Added to the bias-corrected root second moment (default 1e-8). */
  eps?: number;
  /** Decoupled weight decay for parameters the `decay` rule selects (PyTorch's default is 0.01; give it). */
  weightDecay: number;
  /** Which parameters decay, by name (default {@linkcode referenceDecay}); the others get weight decay 0. */
  decay?: (name: string) => boolean;
}

/** Whether `name` names the LM's token embedding (possibly under a prefix). */
function isTokenEmbedding(name: string): boolean {
  return name === "token_embedding.weight" || name.endsWith(".token_embedding.weight");
}

/**
 * The reference's weight-decay rule (spec A7): decay iff the name contains `weight` and not `norm`; the LM's
 * `token_embedding.weight` does not decay unless `weightDecayOnEmbedding`.
 */
export function referenceDecay(name: string, weightDecayOnEmbedding = false): boolean {
  if (isTokenEmbedding(name)) return weightDecayOnEmbedding;
  return name.includes("weight") && !name.includes("norm");
}

/** The two parameter groups of {@linkcode weightDecayGroups}. */
export interface WeightDecayGroups {
  /** Parameters that get weight decay. */
  decay: { name: string; tensor: Tensor }[];
  /** Parameters that do not. */
  noDecay: { name: string; tensor: Tensor }[];
}

/**
 * Splits named parameters into the reference's decay / no-decay groups (spec A7, {@linkcode referenceDecay}). A
 * tensor listed under several names (tied weights) appears once, under its first name; it counts as the token
 * embedding if any of its names does. Unlike the reference, parameters with `requiresGrad` false are kept (the
 * optimizer skips parameters without a gradient anyway), and the groups keep the input order.
 */
export function weightDecayGroups(
  named: Iterable<[string, Tensor]>,
  options: { weightDecayOnEmbedding?: boolean } = {},
): WeightDecayGroups {
  const names = new Map<Tensor, string[]>();
  for (const [name, tensor] of named) {
    const list = names.get(tensor);
    if (list) list.push(name);
    else names.set(tensor, [name]);
  }
  const groups: WeightDecayGroups = { decay: [], noDecay: [] };
  for (const [tensor, list] of names) {
    const embedding = list.find(isTokenEmbedding);
    const decays = referenceDecay(embedding ?? list[0], options.weightDecayOnEmbedding);
    (decays ? groups.decay : groups.noDecay).push({ name: list[0], tensor });
  }
  return groups;
}

interface Slot {
  name: string;
  param: Tensor;
  weightDecay: number;
  m: Tensor;
  v: Tensor;
  step: number;
}

/**
 * PyTorch `torch.optim.AdamW` (no amsgrad): for each parameter with a gradient, `t += 1`,
 * `p ← p·(1 − lr·wd)`, `m ← β1·m + (1 − β1)·g`, `v ← β2·v + (1 − β2)·g²`,
 * `p ← p − lr/(1 − β1^t) · m / (√v/√(1 − β2^t) + eps)`. Step counts are per parameter, as in PyTorch (a parameter
 * without a gradient is skipped and its count does not advance). Bias corrections are computed in float64 on the host.
 *
 * @example
 * ```ts
 * import { AdamW, Tensor, weightDecayGroups } from "@xlstm/core";
 * const w = await Tensor.from({ dtype: "float32", shape: [2], data: new Float32Array([1, -1]) });
 * const groups = weightDecayGroups([["proj.weight", w]]);
 * const opt = new AdamW([...groups.decay, ...groups.noDecay], { lr: 1e-3, weightDecay: 0.1 });
 * w.grad = await Tensor.from({ dtype: "float32", shape: [2], data: new Float32Array([0.5, 0.5]) });
 * opt.step();
 * console.log((await w.toHost()).data); // ≈ [0.9989, -1.0009]
 * ```
 */
export class AdamW {
  /** Learning rate used by `step()` without an argument. */
  lr: number;
  readonly #betas: [number, number];
  readonly #eps: number;
  readonly #slots: Slot[] = [];

  /** Creates zeroed moment buffers on the GPU for every parameter. */
  constructor(params: readonly NamedParameter[], options: AdamWOptions) {
    const { lr, betas = [0.9, 0.999], eps = 1e-8, weightDecay, decay = (n: string) => referenceDecay(n) } = options;
    const checks: [string, number, boolean][] = [
      ["lr", lr, lr >= 0],
      ["eps", eps, eps >= 0],
      ["weightDecay", weightDecay, weightDecay >= 0],
      ["betas[0]", betas[0], betas[0] >= 0 && betas[0] < 1],
      ["betas[1]", betas[1], betas[1] >= 0 && betas[1] < 1],
    ];
    const bad = checks.find(([, , ok]) => !ok);
    if (bad) throw new RangeError(`AdamW: invalid ${bad[0]} ${bad[1]}`);
    this.lr = lr;
    this.#betas = [betas[0], betas[1]];
    this.#eps = eps;
    const seen = new Set<Tensor>(), names = new Set<string>();
    for (const { name, tensor, weightDecay: own } of params) {
      if (names.has(name)) throw new RangeError(`AdamW: parameter name ${name} appears twice`);
      if (seen.has(tensor)) throw new RangeError(`AdamW: parameter ${name} is listed twice (under another name)`);
      if (own !== undefined && !(own >= 0)) throw new RangeError(`AdamW: invalid weightDecay ${own} for ${name}`);
      if (tensor.dtype !== "float32") {
        throw new TypeError(
          `AdamW: parameter ${name} must be float32, got ${tensor.dtype} ${formatShape(tensor.shape)}`,
        );
      }
      names.add(name);
      seen.add(tensor);
      const gpu = tensor.gpu;
      this.#slots.push({
        name,
        param: tensor,
        weightDecay: own ?? (decay(name) ? weightDecay : 0),
        m: Tensor.zeros(gpu, tensor.shape).keep(),
        v: Tensor.zeros(gpu, tensor.shape).keep(),
        step: 0,
      });
    }
  }

  /** The weight decay each parameter gets, by name. */
  get weightDecays(): Record<string, number> {
    return Object.fromEntries(this.#slots.map((s) => [s.name, s.weightDecay]));
  }

  /** Records one update of every parameter that has a gradient, with learning rate `lr` (default `this.lr`). */
  step(lr: number = this.lr): void {
    if (!(lr >= 0)) throw new RangeError(`AdamW.step: invalid learning rate ${lr}`);
    const [beta1, beta2] = this.#betas;
    for (const slot of this.#slots) {
      const grad = slot.param.grad;
      if (!grad) continue;
      expectShape(`AdamW gradient of ${slot.name}`, grad, slot.param.shape);
      const t = ++slot.step;
      const gpu = slot.param.gpu;
      const pipeline = gpu.pipeline(KERNEL, {}, "adamw");
      for (const [start, count] of elementRanges(gpu, slot.param.size)) {
        gpu.dispatch(
          pipeline,
          [
            slot.param.range(start, count),
            grad.range(start, count),
            slot.m.range(start, count),
            slot.v.range(start, count),
          ],
          new Params().u32(count).f32(1 - lr * slot.weightDecay).f32(beta1).f32(beta2)
            .f32(lr / (1 - beta1 ** t)).f32(Math.sqrt(1 - beta2 ** t)).f32(this.#eps),
          grid(Math.ceil(count / PER), 64, gpu.limits.maxComputeWorkgroupsPerDimension),
        );
      }
    }
  }

  /** Drops every parameter's gradient (PyTorch `zero_grad(set_to_none=True)`). */
  zeroGrad(): void {
    for (const { param } of this.#slots) {
      param.grad?.dispose();
      param.grad = null;
    }
  }

  /**
   * The optimizer state for a checkpoint: `<name>.exp_avg` and `<name>.exp_avg_sq` (float32, the parameter's shape)
   * and `<name>.step` (int32 `[1]`) per parameter. The moment tensors are new handles on the live state (dispose them
   * when done; read them before the next `step`).
   */
  state(): Record<string, Tensor> {
    const out: Record<string, Tensor> = {};
    for (const s of this.#slots) {
      out[`${s.name}.exp_avg`] = s.m.retain();
      out[`${s.name}.exp_avg_sq`] = s.v.retain();
      out[`${s.name}.step`] = Tensor.fromHost(s.param.gpu, {
        dtype: "int32",
        shape: [1],
        data: new Int32Array([s.step]),
      });
    }
    return out;
  }

  /** Restores a {@linkcode AdamW.state} (copied on the GPU; the step counts are read back). */
  async loadState(state: Record<string, Tensor>): Promise<void> {
    const get = (key: string, shape: readonly number[], dtype: string): Tensor => {
      const t = state[key];
      if (!t) throw new RangeError(`AdamW.loadState: missing ${key}`);
      expectShape(`AdamW.loadState ${key}`, t, shape);
      if (t.dtype !== dtype) throw new TypeError(`AdamW.loadState: ${key} must be ${dtype}, got ${t.dtype}`);
      return t;
    };
    const parts = this.#slots.map((s) => ({
      m: get(`${s.name}.exp_avg`, s.param.shape, "float32"),
      v: get(`${s.name}.exp_avg_sq`, s.param.shape, "float32"),
      step: get(`${s.name}.step`, [1], "int32"),
    }));
    const steps = await Tensor.toHostAll(parts.map((p) => p.step));
    this.#slots.forEach((s, i) => {
      const gpu = s.param.gpu;
      gpu.copy(parts[i].m.buffer, 0, s.m.buffer, 0, s.m.bytes);
      gpu.copy(parts[i].v.buffer, 0, s.v.buffer, 0, s.v.bytes);
      s.step = Number(steps[i].data[0]);
    });
  }

  /** Frees the moment buffers. */
  dispose(): void {
    for (const s of this.#slots) {
      s.m.dispose();
      s.v.dispose();
    }
  }
}

/**
 * Scales the gradients of `params` in place so that their global L2 norm is at most `maxNorm` (PyTorch
 * `clip_grad_norm_`: factor `min(1, maxNorm / (norm + 1e-6))`), entirely on the GPU. Parameters without a gradient
 * are skipped. Returns the norm before clipping as a new float32 `[1]` tensor.
 *
 * The norm is a split reduction: sums of squares over chunks of 1024 elements, then sums of those, level by level,
 * in a fixed order (deterministic, no atomics).
 */
export function clipGradNorm(params: Iterable<Tensor>, maxNorm: number): Tensor {
  if (!(maxNorm >= 0)) throw new RangeError(`clipGradNorm: invalid maxNorm ${maxNorm}`);
  const list = [...params];
  const grads = list.map((p) => p.grad).filter((g): g is Tensor => g !== null && g.size > 0);
  for (const g of grads) {
    if (g.dtype !== "float32") throw new TypeError(`clipGradNorm: gradients must be float32, got ${g.dtype}`);
  }
  if (!grads.length) {
    if (!list.length) throw new RangeError("clipGradNorm: no parameters (the result needs a GPU)");
    return Tensor.zeros(list[0].gpu, [1]);
  }
  const gpu = grads[0].gpu;
  // Sum level by level; the level that leaves one value writes its square root, the norm.
  let norm = sumLevel(gpu, grads, true);
  while (norm.size > 1) {
    const next = sumLevel(gpu, [norm], false);
    norm.dispose();
    norm = next;
  }
  const scale = gpu.pipeline(KERNEL, {}, "scale");
  for (const g of grads) {
    for (const [start, n] of elementRanges(gpu, g.size)) {
      gpu.dispatch(
        scale,
        [norm.range(), g.range(start, n)],
        new Params().u32(n).f32(maxNorm),
        grid(Math.ceil(n / PER), 64, gpu.limits.maxComputeWorkgroupsPerDimension),
      );
    }
  }
  return norm;
}

/**
 * One level of the norm reduction: the sums (of squares when `square`) of each chunk of 1024 elements of every
 * binding-sized range of `sources`, in order, as a new tensor; its square root when that leaves a single value.
 */
function sumLevel(gpu: Gpu, sources: readonly Tensor[], square: boolean): Tensor {
  const chunks = (n: number) => Math.ceil(n / NORM_CHUNK);
  const parts = sources.flatMap((t) => elementRanges(gpu, t.size).map(([start, n]) => ({ t, start, n })));
  const total = parts.reduce((acc, part) => acc + chunks(part.n), 0);
  const out = Tensor.empty(gpu, [total]);
  const pipeline = gpu.pipeline(KERNEL, {}, "sum_squares");
  const alignElems = gpu.limits.minStorageBufferOffsetAlignment / 4;
  let at = 0;
  for (const { t, start, n } of parts) {
    // The outputs [at, at + chunks) bound from an aligned-down offset, `skip` elements before `at`.
    const first = Math.floor(at / alignElems) * alignElems;
    gpu.dispatch(
      pipeline,
      [t.range(start, n), out.range(first, at + chunks(n) - first)],
      new Params().u32(n).u32(NORM_CHUNK).u32(at - first).u32(square ? 1 : 0).u32(total === 1 ? 1 : 0),
      grid(chunks(n), 64, gpu.limits.maxComputeWorkgroupsPerDimension),
    );
    at += chunks(n);
  }
  return out;
}

/**
 * `[start, count]` element ranges covering `size` float32 elements, each within one storage binding and starting at
 * an offset that satisfies the binding alignment (one range when the tensor fits).
 */
function elementRanges(gpu: Gpu, size: number): [number, number][] {
  const alignElems = gpu.limits.minStorageBufferOffsetAlignment / 4;
  const most = Math.floor(gpu.maxBinding / 4 / alignElems) * alignElems;
  if (most < 1) throw new RangeError(`the storage binding limit of ${gpu.maxBinding} bytes is below its alignment`);
  const ranges: [number, number][] = [];
  for (let start = 0; start < size; start += most) ranges.push([start, Math.min(most, size - start)]);
  return ranges;
}
