/**
 * The run loop around a {@linkcode Trainer}: steps until `num_steps`, logs every `logEvery` steps (the only
 * readbacks besides evaluation and checkpoints), evaluates every `evalEvery` steps and at the end, checkpoints, and
 * stops on a non-finite loss keeping the last good checkpoint.
 *
 * @module
 */

import { readCheckpoint } from "./checkpoint.ts";
import { Progress, type RunSummary } from "./progress.ts";
import { type EvalMetrics, NonFiniteLossError, type Trainer, type TrainMetrics } from "./trainer.ts";

/** Options of {@linkcode runTraining}. */
export interface RunOptions {
  /** Read and report the training metrics every this many steps (default 20). */
  logEvery?: number;
  /** Evaluate every this many steps (default `training.val_every_step`) and after the last step. */
  evalEvery?: number;
  /** At most this many validation batches per split (default: the whole split). */
  evalBatches?: number;
  /** Write a checkpoint here every `checkpointEvery` steps and at the end. */
  checkpoint?: string | null;
  /** Checkpoint interval (default `evalEvery`). */
  checkpointEvery?: number;
  /** The reporter (default: a {@linkcode Progress} on stdout). */
  progress?: Progress;
}

/** Training stopped on a non-finite loss; the message names the last good checkpoint. */
export class TrainingStoppedError extends Error {
  /** The error class name. */
  override name = "TrainingStoppedError";
  /** Creates the error; `lastGood` is the checkpoint step kept, or null when none was written. */
  constructor(cause: NonFiniteLossError, readonly checkpoint: string | null, readonly lastGood: number | null) {
    const kept = checkpoint && lastGood !== null
      ? `The last good checkpoint, ${checkpoint} (step ${lastGood}), is kept: resume from it with ` +
        `--resume ${checkpoint} after lowering the learning rate (--lr) or enabling clipping (--clip).`
      : checkpoint
      ? `No checkpoint was written before it; ${checkpoint} was left as it was.`
      : "No checkpoint was being written (pass --checkpoint to keep one).";
    super(`training stopped: ${cause.message}. ${kept}`, { cause });
  }
}

function positive(name: string, v: number): number {
  if (!Number.isSafeInteger(v) || v < 1) throw new RangeError(`${name} must be a positive integer; got ${v}`);
  return v;
}

/**
 * Trains until `training.num_steps` (continuing from the trainer's step after a resume) and returns the summary,
 * which it also reports.
 *
 * @throws {TrainingStoppedError} when the loss or the parameters become NaN or infinite.
 */
export async function runTraining(trainer: Trainer, options: RunOptions = {}): Promise<RunSummary> {
  const total = trainer.experiment.training.numSteps;
  const logEvery = positive("logEvery", options.logEvery ?? 20);
  const evalEvery = positive("evalEvery", options.evalEvery ?? trainer.experiment.training.valEveryStep);
  const checkpointEvery = positive("checkpointEvery", options.checkpointEvery ?? evalEvery);
  const checkpoint = options.checkpoint ?? null;
  const progress = options.progress ?? new Progress();
  const startStep = trainer.step, started = performance.now();
  let trainSeconds = 0, windowSeconds = 0, windowStart = performance.now();
  let lastTrain: TrainMetrics | null = null, evals: EvalMetrics[] = [];
  let lastGood: number | null = null, written: string | null = null;
  const rate = () => (trainer.step - startStep) / Math.max(trainSeconds, 1e-9);
  try {
    while (trainer.step < total) {
      trainer.trainStep();
      const step = trainer.step;
      const evalNow = step % evalEvery === 0 || step === total;
      const saveNow = checkpoint !== null && (step % checkpointEvery === 0 || step === total);
      if (step % logEvery !== 0 && !evalNow && !saveNow) continue;
      const m = await trainer.readMetrics();
      const seconds = (performance.now() - windowStart) / 1000;
      trainSeconds += seconds;
      windowSeconds = seconds;
      lastTrain = m;
      progress.train({
        ...m,
        total,
        stepsPerSecond: m.steps / Math.max(windowSeconds, 1e-9),
        etaSeconds: (total - step) / rate(),
        elapsedSeconds: (performance.now() - started) / 1000,
      });
      if (evalNow) {
        evals = await trainer.evaluate(options.evalBatches);
        progress.eval(step, evals);
      }
      if (saveNow) {
        await trainer.save(checkpoint);
        lastGood = step;
        written = checkpoint;
      }
      windowStart = performance.now();
    }
  } catch (e) {
    if (e instanceof NonFiniteLossError) {
      progress.line("");
      throw new TrainingStoppedError(e, checkpoint, lastGood ?? (checkpoint ? await savedStep(checkpoint) : null));
    }
    throw e;
  }
  const summary: RunSummary = {
    step: trainer.step,
    stepsRun: trainer.step - startStep,
    seconds: (performance.now() - started) / 1000,
    stepsPerSecond: rate(),
    train: lastTrain,
    evals,
    checkpoint: written,
  };
  progress.summary(summary);
  return summary;
}

/** The step stored in an existing checkpoint (one this run did not write), or null. */
async function savedStep(path: string): Promise<number | null> {
  return await readCheckpoint(path).then((c) => c.step, () => null);
}
