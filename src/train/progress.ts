/**
 * Reporting for training runs: a live progress line (rewritten in place on a terminal, one line per log
 * otherwise), evaluation lines, a final summary, and an optional JSON-lines metrics log.
 *
 * @module
 */

import type { EvalMetrics, TrainMetrics } from "./trainer.ts";

/** A training log entry with timing. */
export interface ProgressEntry extends TrainMetrics {
  /** Steps of the whole run. */
  total: number;
  /** Training steps per second over the window (evaluation and checkpoint time excluded). */
  stepsPerSecond: number;
  /** Estimated seconds to the end of training. */
  etaSeconds: number;
  /** Seconds since the run started. */
  elapsedSeconds: number;
}

/** What a finished run reports. */
export interface RunSummary {
  /** Optimizer steps done (including those before a resume). */
  step: number;
  /** Steps run in this process. */
  stepsRun: number;
  /** Wall time of this process's run, seconds. */
  seconds: number;
  /** Training steps per second (evaluation and checkpoint time excluded). */
  stepsPerSecond: number;
  /** The last training log entry. */
  train: TrainMetrics | null;
  /** The last evaluation. */
  evals: EvalMetrics[];
  /** The checkpoint written last, if any. */
  checkpoint: string | null;
}

/** Options of {@linkcode Progress}. */
export interface ProgressOptions {
  /** Rewrite the progress line in place (default: whether stdout is a terminal). */
  tty?: boolean;
  /** Where text goes (default: stdout). */
  write?: (text: string) => void;
  /** Append JSON lines here (`{"type":"train"|"eval"|"summary", …}`). */
  metricsPath?: string | null;
}

const encoder = new TextEncoder();

/** `1:02:03` or `2:03`. */
export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds)) return "?";
  const s = Math.round(seconds), h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
  const mm = h ? String(m).padStart(2, "0") : String(m);
  return `${h ? `${h}:` : ""}${mm}:${String(s % 60).padStart(2, "0")}`;
}

const pct = (x: number): string => Number.isFinite(x) ? `${(100 * x).toFixed(1)}%` : "n/a";

/** The progress line for one log entry. */
export function formatProgress(e: ProgressEntry): string {
  const width = String(e.total).length;
  return `step ${String(e.step).padStart(width)}/${e.total}  loss ${e.loss.toFixed(4)}  acc ${pct(e.accuracy)}  ` +
    `lr ${e.lr.toExponential(2)}  ${e.stepsPerSecond.toFixed(2)} steps/s  ETA ${formatDuration(e.etaSeconds)}`;
}

/** Writes progress, evaluations and the summary to the console and, optionally, a JSON-lines file. */
export class Progress {
  readonly #tty: boolean;
  readonly #write: (text: string) => void;
  readonly #metricsPath: string | null;
  #lineOpen = false;

  /** A reporter; see {@linkcode ProgressOptions}. */
  constructor(options: ProgressOptions = {}) {
    this.#tty = options.tty ?? Deno.stdout.isTerminal();
    this.#write = options.write ?? ((text) => Deno.stdout.writeSync(encoder.encode(text)));
    this.#metricsPath = options.metricsPath ?? null;
  }

  /** A training log entry: the live line. */
  train(e: ProgressEntry): void {
    const line = formatProgress(e);
    if (this.#tty) {
      this.#write(`\r\x1b[2K${line}`);
      this.#lineOpen = true;
    } else this.#write(`${line}\n`);
    this.#record({
      type: "train",
      step: e.step,
      loss: e.loss,
      accuracy: e.accuracy,
      running_loss: e.runningLoss,
      running_accuracy: e.runningAccuracy,
      lr: e.lr,
      steps_per_s: e.stepsPerSecond,
      elapsed_s: e.elapsedSeconds,
    });
  }

  /** Evaluation results at `step`. */
  eval(step: number, results: readonly EvalMetrics[]): void {
    for (const r of results) {
      this.line(
        `eval ${r.split} @ step ${step}: loss ${r.loss.toFixed(4)}  acc ${pct(r.accuracy)}  ` +
          `(${r.sequences} sequences, ${r.targets} targets)`,
      );
      this.#record({ type: "eval", step, ...r });
    }
  }

  /** A plain line (below the live line, which it first ends). */
  line(text: string): void {
    if (this.#lineOpen) this.#write("\n");
    this.#lineOpen = false;
    this.#write(`${text}\n`);
  }

  /** The final summary. */
  summary(s: RunSummary): void {
    this.line(
      `done: step ${s.step} (${s.stepsRun} this run) in ${formatDuration(s.seconds)}, ` +
        `${s.stepsPerSecond.toFixed(2)} training steps/s`,
    );
    if (s.train) {
      this.line(
        `  train (last ${s.train.steps} steps): loss ${s.train.loss.toFixed(4)}  acc ${pct(s.train.accuracy)}` +
          `  | since start: loss ${s.train.runningLoss.toFixed(4)}  acc ${pct(s.train.runningAccuracy)}`,
      );
    }
    for (const r of s.evals) {
      this.line(`  ${r.split}: loss ${r.loss.toFixed(4)}  acc ${pct(r.accuracy)} (${r.sequences} sequences)`);
    }
    if (s.checkpoint) this.line(`  checkpoint: ${s.checkpoint}`);
    this.#record({
      type: "summary",
      step: s.step,
      steps_run: s.stepsRun,
      seconds: s.seconds,
      steps_per_s: s.stepsPerSecond,
      train: s.train,
      evals: s.evals,
      checkpoint: s.checkpoint,
    });
  }

  #record(entry: Record<string, unknown>): void {
    if (this.#metricsPath) Deno.writeTextFileSync(this.#metricsPath, `${JSON.stringify(entry)}\n`, { append: true });
  }
}
