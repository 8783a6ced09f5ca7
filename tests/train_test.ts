import assert from "node:assert/strict";
import { mergeConfig, readExperiment } from "../src/train/experiment.ts";
import { readCheckpoint } from "../src/train/checkpoint.ts";
import { trainCli } from "../src/train/cli.ts";
import { runTraining, TrainingStoppedError } from "../src/train/loop.ts";
import { formatDuration, formatProgress, Progress } from "../src/train/progress.ts";
import { NonFiniteLossError, Trainer } from "../src/train/trainer.ts";
import { closeTestGpu, testGpu } from "./util.ts";

const PARITY = new URL("../scripts/configs/parity_xlstm01.yaml", import.meta.url);
const same = { context_length: 12, min_sequence_length: 3, max_sequence_length: 12 };
/** A tiny xLSTM[1:1] parity run (an mLSTM block, then an sLSTM block). */
const TINY = {
  training: { batch_size: 8, num_steps: 6, lr: 0.01, lr_warmup_steps: 2, val_every_step: 3 },
  model: { num_blocks: 2, embedding_dim: 16, slstm_at: [1], context_length: 12 },
  dataset: {
    kwargs: { ...same, count: { train: 1000, validation: 16, test: 16 }, subpar: { validation: same, test: same } },
  },
};

async function tiny(overrides: Record<string, unknown> = {}): Promise<Trainer> {
  return Trainer.create(await readExperiment(PARITY, mergeConfig(TINY, overrides)), { gpu: await testGpu() });
}

/** Runs steps until `until`, reading the loss after every step. */
async function losses(trainer: Trainer, until: number): Promise<number[]> {
  const out: number[] = [];
  while (trainer.step < until) {
    trainer.trainStep();
    out.push((await trainer.readMetrics()).loss);
  }
  return out;
}

const quiet = (): Progress => new Progress({ tty: false, write: () => {} });

Deno.test("a training step records one command buffer and reads nothing back; metrics read once", async () => {
  const trainer = await tiny();
  const queue = trainer.gpu.device.queue;
  const submit = queue.submit.bind(queue);
  const mapAsync = GPUBuffer.prototype.mapAsync;
  let submits = 0, maps = 0;
  queue.submit = (buffers) => (submits++, submit(buffers));
  GPUBuffer.prototype.mapAsync = function (...args) {
    maps++;
    return mapAsync.apply(this, args);
  };
  try {
    trainer.trainStep(); // compiles pipelines, creates buffers
    submits = 0;
    for (let i = 0; i < 3; i++) trainer.trainStep();
    assert.equal(submits, 3, "one command buffer per step");
    assert.equal(maps, 0, "no readback during steps");
    const m = await trainer.readMetrics();
    assert.equal(maps, 1, "one readback per log");
    assert.equal(m.steps, 4);
    assert.ok(Number.isFinite(m.loss) && m.loss > 0, `loss ${m.loss}`);
    assert.ok(m.accuracy >= 0 && m.accuracy <= 1);
    assert.equal(m.lr, trainer.schedule(3));
    assert.equal(trainer.schedule(0), 0, "step 0 uses lr 0 (warm-up)");
  } finally {
    queue.submit = submit;
    GPUBuffer.prototype.mapAsync = mapAsync;
    trainer.dispose();
  }
});

Deno.test("resume from a checkpoint continues the same loss curve, bit for bit", async () => {
  const dir = await Deno.makeTempDir();
  const path = `${dir}/run.safetensors`;
  const straight = await tiny();
  const want = await losses(straight, 6);
  const wantParams = await straight.model.stateDict();
  const wantEval = await straight.evaluate();
  straight.dispose();

  const first = await tiny();
  const got = await losses(first, 3);
  first.trainStep(); // an unread window is saved too
  await first.save(path);
  first.dispose();
  const ckpt = await readCheckpoint(path);
  assert.equal(ckpt.step, 4);
  assert.equal(ckpt.metrics.windowSteps, 1);
  assert.deepEqual(Object.keys(ckpt.model).sort(), Object.keys(wantParams).sort());
  const optimizerKeys = Object.keys(ckpt.optimizer);
  assert.equal(optimizerKeys.length, 3 * Object.keys(wantParams).length, "exp_avg, exp_avg_sq, step per parameter");
  assert.ok(optimizerKeys.every((k) => /\.(exp_avg|exp_avg_sq|step)$/.test(k)));
  assert.equal((ckpt.data as { task: string }).task, "parity");
  assert.equal((ckpt.experiment.training as { num_steps: number }).num_steps, 6);

  const resumed = await Trainer.resume(path, { gpu: await testGpu() });
  assert.equal(resumed.step, 4);
  got.push((await resumed.readMetrics()).loss, ...await losses(resumed, 6));
  console.log(`losses straight ${want.map((l) => l.toFixed(6))}`);
  assert.deepEqual(got, want);
  assert.deepEqual(await resumed.model.stateDict(), wantParams);
  assert.deepEqual(await resumed.evaluate(), wantEval);
  resumed.dispose();
  await Deno.remove(dir, { recursive: true });
});

Deno.test("a non-finite loss stops training with a clear message and keeps the last good checkpoint", async () => {
  const dir = await Deno.makeTempDir();
  const path = `${dir}/run.safetensors`;
  // An absurd learning rate sends the parameters to ~1e30 after one step; the next forward overflows.
  const trainer = await tiny({ training: { lr: 1e30, lr_warmup_steps: 0 } });
  const error = await runTraining(trainer, { logEvery: 1, checkpoint: path, checkpointEvery: 1, progress: quiet() })
    .then(() => null, (e) => e);
  trainer.dispose();
  assert.ok(error instanceof TrainingStoppedError, `got ${error}`);
  console.log(error.message);
  assert.match(error.message, /non-finite/);
  assert.ok(error.message.includes(path), "names the checkpoint");
  const kept = await readCheckpoint(path);
  assert.equal(kept.step, error.lastGood);
  assert.ok(kept.step >= 1 && kept.step < 6, `kept step ${kept.step}`);
  for (const t of Object.values(kept.model)) assert.ok((t.data as Float32Array).every(Number.isFinite));

  // Injected NaN: save refuses and leaves the good file alone.
  const resumed = await Trainer.resume(path, { gpu: await testGpu() });
  const [name, weight] = [...resumed.model.namedParameters()][0];
  resumed.gpu.upload(weight.buffer, 0, new Float32Array(weight.size).fill(NaN));
  await assert.rejects(resumed.save(path), (e) => e instanceof NonFiniteLossError && e.message.includes(name));
  resumed.trainStep();
  await assert.rejects(resumed.readMetrics(), NonFiniteLossError);
  resumed.dispose();
  assert.equal((await readCheckpoint(path)).step, kept.step);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("runTraining logs, evaluates, clips and summarizes; metrics go to a JSON-lines file", async () => {
  const dir = await Deno.makeTempDir();
  const metricsPath = `${dir}/m.jsonl`;
  const lines: string[] = [];
  const progress = new Progress({ tty: false, write: (t) => lines.push(t), metricsPath });
  const trainer = await Trainer.create(await readExperiment(PARITY, TINY), { gpu: await testGpu(), clip: 0.5 });
  const summary = await runTraining(trainer, { logEvery: 2, progress });
  trainer.dispose();
  assert.equal(summary.step, 6);
  assert.equal(summary.evals.length, 1);
  assert.equal(summary.evals[0].sequences, 16);
  const records = (await Deno.readTextFile(metricsPath)).trim().split("\n").map((l) => JSON.parse(l));
  assert.deepEqual(records.map((r) => r.type), ["train", "train", "eval", "train", "train", "eval", "summary"]);
  assert.deepEqual(records.filter((r) => r.type === "train").map((r) => r.step), [2, 3, 4, 6]);
  const text = lines.join("");
  assert.match(text, /step 2\/6 {2}loss \d\.\d{4} {2}acc [\d.]+% {2}lr [\d.e+-]+ {2}[\d.]+ steps\/s {2}ETA /);
  assert.match(text, /done: step 6 \(6 this run\)/);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("progress line: rewritten in place on a terminal", () => {
  const out: string[] = [];
  const p = new Progress({ tty: true, write: (t) => out.push(t) });
  const entry = {
    step: 5,
    steps: 5,
    loss: 0.5,
    accuracy: 0.75,
    runningLoss: 0.6,
    runningAccuracy: 0.7,
    lr: 1e-3,
    total: 100,
    stepsPerSecond: 2,
    etaSeconds: 3725,
    elapsedSeconds: 2.5,
  };
  p.train(entry);
  p.train({ ...entry, step: 10 });
  p.line("eval");
  assert.equal(out[0], `\r\x1b[2K${formatProgress(entry)}`);
  assert.equal(out[2], "\n");
  assert.equal(formatProgress(entry), "step   5/100  loss 0.5000  acc 75.0%  lr 1.00e-3  2.00 steps/s  ETA 1:02:05");
  assert.equal(formatDuration(59.6), "1:00");
});

Deno.test("bad command lines and configs give clear errors", async () => {
  const errors: string[] = [];
  const error = console.error;
  console.error = (msg: string) => errors.push(msg);
  const task = {
    script: "x.ts",
    description: "x",
    defaultConfig: PARITY,
    reduced: {},
    reducedLayout: {},
    reducedNote: "",
  };
  try {
    assert.equal(await trainCli(["--bogus"], task), 2);
    assert.match(errors.at(-1)!, /^error: .*--bogus.*\n\n.*usage: deno run -A x\.ts/s);
    assert.equal(await trainCli(["--steps", "ten"], task), 2);
    assert.match(errors.at(-1)!, /--steps must be a positive integer; got "ten"/);
    assert.equal(await trainCli(["--lr=0"], task), 2);
    assert.match(errors.at(-1)!, /--lr must be a number > 0/);
    assert.equal(await trainCli(["--resume", "a.safetensors", "--seed", "1"], task), 2);
    assert.match(errors.at(-1)!, /--seed cannot be combined with --resume/);
  } finally {
    console.error = error;
  }
  await assert.rejects(readExperiment(PARITY, { training: { batch_size: "x" } }), /training\.batch_size must be/);
  await assert.rejects(readExperiment(PARITY, { dataset: { name: "copy" } }), /dataset\.name must be/);
  await assert.rejects(readExperiment(PARITY, { model: { vocab_size: 2 } }), /model\.vocab_size 2 is smaller/);
  await closeTestGpu();
});
