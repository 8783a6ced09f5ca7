/**
 * The one interface generation drives: a forward from a recurrent state to the last position's logits. Adapts
 * `xLSTMLarge` (a stateful forward over any number of tokens) and the NeurIPS `xLSTMLMModel` (a recurrent step,
 * through which a prompt runs token by token), and walks the nested recurrent states both return.
 *
 * @module
 */

import type { Gpu } from "../gpu/runtime.ts";
import { expectShape, matrix, type MatrixView, Tensor } from "../tensor.ts";

/** What the generation loop needs from a language model. */
export interface GenerativeModel<S> {
  /** The GPU holding the model. */
  readonly gpu: Gpu;
  /** Vocabulary size V. */
  readonly vocabSize: number;
  /** The model's class name, recorded in saved states. */
  readonly modelClass: string;
  /** The model's resolved config, recorded in saved states so that a state is not loaded into another model. */
  readonly config: unknown;
  /**
   * Runs int32 ids `[B, S]` from `state` (fresh when undefined; never modified) and returns the logits of the last
   * position as `[B, V]` rows and the state after the last token. Records GPU work only; the caller wraps it in
   * `noGrad` and `tidy`.
   */
  forward(ids: Tensor, state: S | undefined): [MatrixView, S];
}

/** A model with a stateful forward over a whole sequence, as `xLSTMLarge.apply(ids, state)`. */
export interface StatefulForwardModel<S> {
  /** The GPU holding the model. */
  readonly gpu: Gpu;
  /** The resolved config. */
  readonly config: { readonly vocab_size: number };
  /** Logits `[B, S, V]` (`[B, 1, V]`, the last position's, with `lastLogitsOnly`) and the state after the last token. */
  apply(ids: Tensor, state?: S, options?: { lastLogitsOnly?: boolean }): [Tensor, S];
}

/** A model with a one-token recurrent step, as `xLSTMLMModel.applyStep(ids, state)`. */
export interface StepModel<S> {
  /** The GPU holding the model. */
  readonly gpu: Gpu;
  /** The resolved config. */
  readonly config: { readonly vocab_size: number };
  /** Logits `[B, 1, V]` and the state after the token. */
  applyStep(ids: Tensor, state?: S): [Tensor, S];
}

/** Anything generation accepts: `xLSTMLarge`, `xLSTMLMModel`, or a custom {@linkcode GenerativeModel}. */
export type Generatable<S> = GenerativeModel<S> | StatefulForwardModel<S> | StepModel<S>;

/**
 * The {@linkcode GenerativeModel} of a model. An `xLSTMLMModel` has no stateful forward: a prompt of S tokens runs
 * as S recurrent steps (its parallel forward returns no state).
 *
 * @example
 * ```ts
 * import { generativeModel, xLSTMLarge, xLSTMLargeConfig } from "@xlstm/core";
 * const cfg = xLSTMLargeConfig({ embedding_dim: 32, num_heads: 2, num_blocks: 1, vocab_size: 40 });
 * const model = await xLSTMLarge.create(cfg, { seed: 0 });
 * console.log(generativeModel(model).vocabSize); // 40
 * model.dispose();
 * ```
 */
export function generativeModel<S>(model: Generatable<S>): GenerativeModel<S> {
  if ("forward" in model && "vocabSize" in model) return model;
  const common = {
    gpu: model.gpu,
    vocabSize: model.config.vocab_size,
    modelClass: model.constructor.name,
    config: model.config,
  };
  if ("applyStep" in model) return { ...common, forward: (ids, state) => stepThrough(model, ids, state) };
  if ("apply" in model) {
    return {
      ...common,
      forward: (ids, state) => {
        expectShape(`${common.modelClass} token ids`, ids, [-1, -1]);
        const [logits, next] = model.apply(ids, state, { lastLogitsOnly: true });
        const [B, S] = logits.shape, V = common.vocabSize;
        return [{ tensor: logits, rows: B, cols: V, offset: (S - 1) * V, stride: S * V }, next];
      },
    };
  }
  throw new TypeError("generation needs an xLSTMLarge, an xLSTMLMModel or a GenerativeModel");
}

/** Runs `[B, S]` ids through S recurrent steps; intermediate states and logits are freed as it goes. */
function stepThrough<S>(model: StepModel<S>, ids: Tensor, state: S | undefined): [MatrixView, S] {
  expectShape(`${model.constructor.name} token ids`, ids, [-1, -1]);
  const [B, S] = ids.shape;
  if (S < 1) throw new RangeError(`${model.constructor.name} token ids [${B}, 0] must not be empty`);
  let s = state, logits: Tensor | null = null;
  for (let t = 0; t < S; t++) {
    const col = S === 1 ? ids : timeStep(ids, t);
    const [l, next] = model.applyStep(col, s);
    if (s !== state) releaseState(s, next);
    if (col !== ids) col.dispose();
    logits?.dispose();
    [logits, s] = [l, next];
  }
  return [matrix(logits!), s!];
}

/** Column t of int32 ids `[B, S]` as a new `[B, 1]` tensor (one copy per sequence). */
function timeStep(ids: Tensor, t: number): Tensor {
  const [B, S] = ids.shape;
  const out = Tensor.empty(ids.gpu, [B, 1], "int32");
  for (let b = 0; b < B; b++) ids.gpu.copy(ids.buffer, 4 * (b * S + t), out.buffer, 4 * b, 4);
  return out;
}

/** Every tensor of a nested state (objects and arrays), with its dotted path, in key order. */
export function stateEntries(state: unknown, prefix = ""): [string, Tensor][] {
  if (state instanceof Tensor) return [[prefix, state]];
  if (state === null || typeof state !== "object") return [];
  return Object.entries(state).flatMap(([k, v]) => stateEntries(v, prefix ? `${prefix}.${k}` : k));
}

/** The same nested structure with every tensor replaced by `fn(tensor, path)`. */
export function mapState<T>(state: T, fn: (t: Tensor, path: string) => Tensor, prefix = ""): T {
  const at = (k: string) => (prefix ? `${prefix}.${k}` : k);
  if (state instanceof Tensor) return fn(state, prefix) as T;
  if (Array.isArray(state)) return state.map((v, i) => mapState(v, fn, at(String(i)))) as T;
  if (state === null || typeof state !== "object") return state;
  return Object.fromEntries(Object.entries(state).map(([k, v]) => [k, mapState(v, fn, at(k))])) as T;
}

/**
 * Disposes the tensors of `state` that `keep` (another state, or nothing) does not also hold.
 *
 * @example
 * ```ts
 * import { noGrad, releaseState, Tensor, xLSTMLarge, xLSTMLargeConfig } from "@xlstm/core";
 * const cfg = xLSTMLargeConfig({ embedding_dim: 32, num_heads: 2, num_blocks: 1, vocab_size: 40 });
 * const model = await xLSTMLarge.create(cfg, { seed: 0 });
 * const ids = await Tensor.from({ dtype: "int32", shape: [1, 2], data: new Int32Array([0, 3]) });
 * const [logits, state] = noGrad(() => model.apply(ids));
 * releaseState(state); // every C, n, m of every block
 * logits.dispose();
 * model.dispose();
 * ```
 */
export function releaseState(state: unknown, keep?: unknown): void {
  const kept = new Set(stateEntries(keep).map(([, t]) => t));
  for (const [, t] of stateEntries(state)) if (!kept.has(t)) t.dispose();
}
