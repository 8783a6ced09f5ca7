/**
 * The reference's training loop (spec D1, experiments/main.py) on WebGPU: an `xLSTMLMModel` built from the
 * experiment's `model` section and `reset_parameters()`, AdamW (betas 0.9/0.999, eps 1e-8) over the reference's
 * weight-decay groups, the linear warm-up + cosine schedule stepped once per optimizer step (step 0 uses lr 0), and
 * per batch: zero_grad, logits, cross-entropy (ignore index −1), backward, optional global-norm clipping, step.
 *
 * A step records into one command buffer and reads nothing back: loss and accuracy accumulate in a small GPU
 * tensor until {@linkcode Trainer.readMetrics} reads them (one readback per logged step).
 *
 * @module
 */

import { backpropagate, noGrad } from "../autograd.ts";
import type { TokenBatch, TokenStream } from "../data/random.ts";
import { getGpu } from "../gpu/device.ts";
import type { Gpu } from "../gpu/runtime.ts";
import type { HostTensor } from "../host_tensor.ts";
import { xLSTMLMModel } from "../models/lm_model.ts";
import { crossEntropy } from "../nn/functional.ts";
import { addInto } from "../ops/pointwise.ts";
import { AdamW, clipGradNorm, weightDecayGroups } from "../optim/adamw.ts";
import { linearWarmupCosine } from "../optim/schedule.ts";
import { matrix, type MatrixView, Tensor, tidy } from "../tensor.ts";
import { type Checkpoint, type MetricState, readCheckpoint, writeCheckpoint } from "./checkpoint.ts";
import { type Experiment, experiment, mergeConfig } from "./experiment.ts";

/** Options of {@linkcode Trainer.create}. */
export interface TrainerOptions {
  /** The GPU to train on; the default GPU when absent. */
  gpu?: Gpu;
  /** Clip the global gradient norm to this value before each step; off (as in the reference) when absent. */
  clip?: number | null;
}

/** Training loss and accuracy since the previous {@linkcode Trainer.readMetrics}. */
export interface TrainMetrics {
  /** Optimizer steps done. */
  step: number;
  /** Steps in this window. */
  steps: number;
  /** Mean step loss over the window. */
  loss: number;
  /** Accuracy over the window's targets. */
  accuracy: number;
  /** Mean step loss since the start (the reference's `running_loss`). */
  runningLoss: number;
  /** Accuracy since the start (the reference's cumulative train accuracy). */
  runningAccuracy: number;
  /** Learning rate of the last step. */
  lr: number;
}

/** Evaluation of one validation split. */
export interface EvalMetrics {
  /** Split name. */
  split: string;
  /** Mean batch loss. */
  loss: number;
  /** Accuracy over non-ignored targets. */
  accuracy: number;
  /** Sequences evaluated. */
  sequences: number;
  /** Targets counted. */
  targets: number;
}

/** The loss (or the parameters) became NaN or infinite. */
export class NonFiniteLossError extends Error {
  /** The error class name. */
  override name = "NonFiniteLossError";
  /** Creates the error for steps `(firstStep − 1, lastStep]`. */
  constructor(readonly firstStep: number, readonly lastStep: number, what = "the training loss") {
    super(
      `${what} became non-finite (NaN or infinite) ` +
        (firstStep === lastStep ? `at step ${lastStep}` : `between steps ${firstStep} and ${lastStep}`),
    );
  }
}

/** Element `i` of a small float32 vector as a 1×1 view (accumulators). */
function cell(t: Tensor, i: number): MatrixView {
  return { tensor: t, rows: 1, cols: 1, offset: i, stride: t.size };
}

/** Adds each `[1]` tensor of `values` into the matching element of `into`. */
function accumulate(into: Tensor, values: readonly Tensor[]): void {
  values.forEach((v, i) => addInto(cell(into, i), v));
}

/** Records the backward of a scalar `loss` with upstream `one` (no wait, unlike `Tensor.backward`). */
function recordBackward(loss: Tensor, one: Tensor): void {
  backpropagate(loss, one, (into, g) => {
    if (g instanceof Tensor) addInto(matrix(into, into.size), g);
    else addInto({ ...g.view, tensor: into }, g.grad);
  }, (like) => Tensor.zeros(loss.gpu, like.shape));
}

/**
 * A training run: model, optimizer, schedule, data stream and metric accumulators.
 *
 * @example
 * ```ts
 * import { readExperiment } from "./experiment.ts";
 * import { Trainer } from "./trainer.ts";
 * const exp = await readExperiment("scripts/configs/parity_xlstm01.yaml", {
 *   training: { batch_size: 8, num_steps: 4 },
 *   model: { num_blocks: 1, embedding_dim: 16, slstm_at: [0] },
 *   dataset: { kwargs: { context_length: 12, max_sequence_length: 12 } },
 * });
 * const trainer = await Trainer.create(exp);
 * for (let i = 0; i < 4; i++) trainer.trainStep();
 * console.log(await trainer.readMetrics()); // { step: 4, steps: 4, loss: …, accuracy: …, … }
 * trainer.dispose();
 * ```
 */
export class Trainer {
  /** The experiment being run. */
  readonly experiment: Experiment;
  /** The model. */
  readonly model: xLSTMLMModel;
  /** The optimizer. */
  readonly optimizer: AdamW;
  /** Learning rate of optimizer step k (0-based). */
  readonly schedule: (step: number) => number;
  /** Global-norm clipping threshold, or null. */
  readonly clip: number | null;
  #step = 0;
  #data: TokenStream<unknown>;
  #params: Tensor[];
  /** GPU window accumulators: loss sum, correct, count. */
  #window: Tensor;
  #one: Tensor;
  #metrics: Omit<MetricState, "window"> = { lossSum: 0, correct: 0, count: 0, steps: 0, windowSteps: 0 };

  private constructor(exp: Experiment, model: xLSTMLMModel, clip: number | null) {
    const t = exp.training;
    this.experiment = exp;
    this.model = model;
    this.clip = clip;
    const named = [...model.namedParameters({ removeDuplicate: true })];
    this.#params = named.map(([, p]) => p);
    const groups = weightDecayGroups(named, { weightDecayOnEmbedding: model.config.weight_decay_on_embedding });
    this.optimizer = new AdamW([
      ...groups.decay.map((p) => ({ ...p, weightDecay: t.weightDecay })),
      ...groups.noDecay.map((p) => ({ ...p, weightDecay: 0 })),
    ], { lr: t.lr, weightDecay: t.weightDecay });
    this.schedule = linearWarmupCosine({
      warmupSteps: t.warmupSteps,
      decayUntilStep: t.decayUntilStep,
      maxLr: t.lr,
      minLr: t.lr * t.decayFactor,
    });
    this.#data = exp.splits.find((s) => s.subset === "train")!.stream();
    const gpu = model.gpu;
    this.#window = Tensor.zeros(gpu, [3]).keep();
    this.#one = Tensor.fromHost(gpu, { dtype: "float32", shape: [1], data: new Float32Array([1]) }).keep();
  }

  /** Builds the model (seeded by `training.seed`, then `resetParameters()`), the optimizer and the data stream. */
  static async create(exp: Experiment, options: TrainerOptions = {}): Promise<Trainer> {
    const clip = options.clip ?? null;
    if (clip !== null && !(clip > 0)) throw new RangeError(`clip must be > 0; got ${clip}`);
    const gpu = options.gpu ?? await getGpu();
    const model = await xLSTMLMModel.create(exp.model, { seed: exp.training.seed, gpu });
    model.resetParameters();
    return new Trainer(exp, model, clip);
  }

  /**
   * Continues the run saved in a checkpoint. `overrides` are merged into its stored config (e.g.
   * `{ training: { num_steps: 30000 } }` to train longer; the stored config is resolved, so the schedule stays).
   */
  static async resume(
    path: string | URL,
    options: TrainerOptions & { overrides?: Record<string, unknown> } = {},
  ): Promise<Trainer> {
    const fail = (e: unknown) => new Error(`cannot resume from ${path}: ${(e as Error).message}`, { cause: e });
    let exp: Experiment, ckpt: Checkpoint;
    try {
      ckpt = await readCheckpoint(path);
      exp = experiment(mergeConfig(ckpt.experiment, options.overrides ?? {}));
    } catch (e) {
      throw fail(e);
    }
    const trainer = await Trainer.create(exp, options);
    try {
      await trainer.#restore(ckpt);
    } catch (e) {
      trainer.dispose();
      throw fail(e);
    }
    return trainer;
  }

  /** The GPU. */
  get gpu(): Gpu {
    return this.model.gpu;
  }

  /** Optimizer steps done. */
  get step(): number {
    return this.#step;
  }

  /** Records one optimizer step on the next training batch; reads nothing back. */
  trainStep(): void {
    const batch = this.#data.batch(this.experiment.training.batchSize);
    const lr = this.schedule(this.#step);
    tidy(() => {
      const [ids, labels] = this.#upload(batch);
      this.optimizer.zeroGrad();
      const { loss, correct, count } = crossEntropy(this.model.apply(ids), labels, -1);
      accumulate(this.#window, [loss, correct, count]);
      recordBackward(loss, this.#one);
      if (this.clip !== null) clipGradNorm(this.#params, this.clip);
      this.optimizer.step(lr);
      this.optimizer.zeroGrad();
    });
    this.gpu.flush();
    this.#step++;
    this.#metrics.windowSteps++;
  }

  /**
   * Reads and resets the window accumulators (one readback). Throws {@linkcode NonFiniteLossError} when a step
   * loss in the window was NaN or infinite.
   */
  async readMetrics(): Promise<TrainMetrics> {
    const [w] = await Tensor.toHostAll([this.#window]);
    this.gpu.clear(this.#window.buffer, 0, 12);
    const m = this.#metrics;
    const [lossSum, correct, count] = w.data as Float32Array;
    const steps = m.windowSteps;
    m.windowSteps = 0;
    if (!Number.isFinite(lossSum)) throw new NonFiniteLossError(this.#step - steps + 1, this.#step);
    m.lossSum += lossSum;
    m.correct += correct;
    m.count += count;
    m.steps += steps;
    return {
      step: this.#step,
      steps,
      loss: steps ? lossSum / steps : NaN,
      accuracy: count ? correct / count : NaN,
      runningLoss: m.steps ? m.lossSum / m.steps : NaN,
      runningAccuracy: m.count ? m.correct / m.count : NaN,
      lr: this.schedule(Math.max(0, this.#step - 1)),
    };
  }

  /**
   * Evaluates every `validation` split under `noGrad` on at most `maxBatches` batches of `batch_size` (all of
   * `count` by default), from the split's first example: mean batch loss and accuracy over non-ignored targets.
   * One readback for all splits.
   */
  async evaluate(maxBatches = Infinity): Promise<EvalMetrics[]> {
    const B = this.experiment.training.batchSize, gpu = this.gpu;
    const splits = this.experiment.splits.filter((s) => s.subset === "validation");
    const sums = splits.map(() => Tensor.zeros(gpu, [3]).keep());
    const sizes = splits.map((split, i) => {
      const stream = split.stream();
      let sequences = 0, batches = 0;
      while (sequences < split.count && batches < maxBatches) {
        const batch = stream.batch(Math.min(B, split.count - sequences));
        noGrad(() =>
          tidy(() => {
            const [ids, labels] = this.#upload(batch);
            const r = crossEntropy(this.model.apply(ids), labels, -1);
            accumulate(sums[i], [r.loss, r.correct, r.count]);
          })
        );
        gpu.flush();
        sequences += batch.batchSize;
        batches++;
      }
      return { sequences, batches };
    });
    try {
      const hosts = await Tensor.toHostAll(sums);
      return splits.map((split, i) => {
        const [loss, correct, count] = hosts[i].data as Float32Array;
        return {
          split: split.name,
          loss: loss / Math.max(1, sizes[i].batches),
          accuracy: count ? correct / count : NaN,
          sequences: sizes[i].sequences,
          targets: count,
        };
      });
    } finally {
      for (const s of sums) s.dispose();
    }
  }

  /**
   * Writes a checkpoint (atomically). Refuses, with {@linkcode NonFiniteLossError}, when a loss in the unread
   * window or a parameter is not finite, so an existing checkpoint at `path` stays the last good one.
   */
  async save(path: string | URL): Promise<void> {
    const model = await this.model.stateDict();
    const state = this.optimizer.state();
    const names = Object.keys(state);
    let hosts: HostTensor[];
    try {
      hosts = await Tensor.toHostAll([this.#window, ...names.map((n) => state[n])]);
    } finally {
      for (const t of Object.values(state)) t.dispose();
    }
    const window = [...(hosts[0].data as Float32Array)] as MetricState["window"];
    const from = this.#step - this.#metrics.windowSteps + 1;
    if (!Number.isFinite(window[0])) throw new NonFiniteLossError(from, this.#step);
    const bad = Object.entries(model).find(([, t]) => !(t.data as Float32Array).every(Number.isFinite));
    if (bad) throw new NonFiniteLossError(this.#step, this.#step, `parameter ${bad[0]}`);
    const optimizer = Object.fromEntries(names.map((n, i) => [n, hosts[i + 1]]));
    const metrics = { ...this.#metrics, window };
    await writeCheckpoint(path, {
      step: this.#step,
      experiment: this.experiment.doc,
      data: this.#data.state(),
      metrics,
      model,
      optimizer,
    });
  }

  /** Frees the model, the optimizer state and the accumulators. */
  dispose(): void {
    this.optimizer.dispose();
    this.model.dispose();
    this.#window.dispose();
    this.#one.dispose();
  }

  async #restore(ckpt: Checkpoint): Promise<void> {
    await this.model.loadStateDict(ckpt.model);
    const gpu = this.gpu;
    const state = tidy(() =>
      Object.fromEntries(Object.entries(ckpt.optimizer).map(([k, t]) => [k, Tensor.fromHost(gpu, t)]))
    );
    try {
      await this.optimizer.loadState(state);
    } finally {
      for (const t of Object.values(state)) t.dispose();
    }
    this.#data.setState(ckpt.data);
    this.#step = ckpt.step;
    // The unread window goes back into the GPU accumulators, so the next readMetrics sees it as if never saved.
    const { window, ...sums } = ckpt.metrics;
    this.#metrics = sums;
    gpu.upload(this.#window.buffer, 0, Float32Array.from(window));
  }

  #upload(batch: TokenBatch): [Tensor, Tensor] {
    const { batchSize: B, seqLen: T } = batch;
    return [
      Tensor.fromHost(this.gpu, { dtype: "int32", shape: [B, T], data: batch.inputs }),
      Tensor.fromHost(this.gpu, { dtype: "int32", shape: [B * T], data: batch.labels }),
    ];
  }
}
