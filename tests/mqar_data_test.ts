// MQAR stream (Zoology's multiquery_ar) and the MQAR YAML config.
import assert from "node:assert/strict";
// deno-lint-ignore no-import-prefix
import { parse } from "npm:yaml@^2.8.1";
import { xLSTMLMModelConfig } from "../src/config.ts";
import { resolveInterpolations } from "../src/data/interpolate.ts";
import { MqarData, type MqarOptions, mqarSplits } from "../src/data/mqar.ts";
import type { TokenBatch } from "../src/data/random.ts";
import { freshRng } from "./util.ts";

/** Asserts the MQAR invariants of one row and returns the query gaps (in pairs after the kv block). */
function checkRow(batch: TokenBatch, b: number, N: number, V: number): number[] {
  const L = batch.seqLen, half = Math.floor(V / 2);
  const inputs = batch.inputs.subarray(b * L, (b + 1) * L), labels = batch.labels.subarray(b * L, (b + 1) * L);
  const value = new Map<number, number>();
  for (let i = 0; i < N; i++) {
    const k = inputs[2 * i], v = inputs[2 * i + 1];
    assert.ok(1 <= k && k < half, `row ${b}: key ${k} outside [1, ${half})`);
    assert.ok(half <= v && v < V, `row ${b}: value ${v} outside [${half}, ${V})`);
    assert.ok(!value.has(k), `row ${b}: duplicate key ${k}`);
    value.set(k, v);
  }
  assert.equal(new Set(value.values()).size, N, `row ${b}: duplicate values`);
  for (let p = 0; p < 2 * N; p++) assert.equal(labels[p], -1, `row ${b}: no label inside the kv block`);
  const queried = new Set<number>(), gaps: number[] = [];
  for (let p = 2 * N; p < L; p++) {
    if (labels[p] === -1) {
      assert.ok(0 <= inputs[p] && inputs[p] < V, `row ${b}: token ${inputs[p]} at ${p}`);
      continue;
    }
    // a query: an even offset after the kv block, a stored key, labelled with exactly its value
    assert.equal((p - 2 * N) % 2, 0, `row ${b}: query at odd offset ${p}`);
    assert.equal(labels[p], value.get(inputs[p]), `row ${b}: label at ${p} is not the value of key ${inputs[p]}`);
    queried.add(inputs[p]);
    gaps.push((p - 2 * N) / 2);
  }
  assert.equal(gaps.length, N, `row ${b}: ${gaps.length} labels, want ${N}`);
  assert.equal(queried.size, N, `row ${b}: every key queried once`);
  return gaps;
}

const SMALL: MqarOptions = { contextLength: 64, numPairs: 4, vocabSize: 128, seed: 0 };

Deno.test("mqar: keys/values in range and distinct, each key queried once with its value as label", () => {
  const seed = freshRng("mqar format").seed;
  for (
    const opts of [SMALL, { contextLength: 32, numPairs: 8, vocabSize: 20, seed }, {
      contextLength: 128,
      numPairs: 16,
      vocabSize: 512,
      seed,
    }]
  ) {
    const data = new MqarData({ ...opts, seed });
    const batch = data.batch(64);
    assert.deepEqual([batch.batchSize, batch.seqLen], [64, opts.contextLength]);
    for (let b = 0; b < 64; b++) checkRow(batch, b, opts.numPairs, opts.vocabSize);
  }
});

Deno.test("mqar: gaps follow the power law (short gaps likelier); random fill covers the vocabulary", () => {
  // one pair per example makes each gap a single draw from p(g) ∝ (g+1)^(a−1) over 0..space−1
  const a = 0.3, space = 8;
  const data = new MqarData({ contextLength: 2 + 2 * space, numPairs: 1, vocabSize: 64, powerA: a, seed: 5 });
  const counts = new Array(space).fill(0);
  const batch = data.batch(20000);
  const filled = new Set<number>();
  for (let b = 0; b < 20000; b++) {
    counts[checkRow(batch, b, 1, 64)[0]]++;
    const row = b * batch.seqLen;
    for (let p = 2; p < batch.seqLen; p++) if (batch.labels[row + p] === -1) filled.add(batch.inputs[row + p]);
  }
  const w = counts.map((_, g) => (g + 1) ** (a - 1)), total = w.reduce((s, x) => s + x, 0);
  const chi2 = counts.reduce((s, c, g) => s + (c - (20000 * w[g]) / total) ** 2 / ((20000 * w[g]) / total), 0);
  // 7 degrees of freedom; 45 is beyond the 1e-7 tail (a = 1 would put ~2500 in every bin: chi2 in the thousands)
  assert.ok(chi2 < 45, `gap counts ${counts} vs power law: chi2 ${chi2.toFixed(1)}`);
  assert.ok(filled.size > 60, `random fill used ${filled.size} of 64 tokens`);

  // with 4N = L every gap is used exactly once; without random fill the rest stay 0
  const full = new MqarData({ contextLength: 16, numPairs: 4, vocabSize: 20, randomNonQueries: false, seed: 1 });
  const fb = full.batch(50);
  for (let b = 0; b < 50; b++) {
    assert.deepEqual(checkRow(fb, b, 4, 20).sort(), [0, 1, 2, 3]);
    for (let p = 9; p < 16; p += 2) assert.equal(fb.inputs[b * 16 + p], 0);
  }
});

Deno.test("mqar: a seed fixes the stream; state survives JSON and resumes it; bad options are rejected", () => {
  const seed = freshRng("mqar determinism").seed;
  const a = new MqarData({ ...SMALL, seed }), b = new MqarData({ ...SMALL, seed });
  assert.deepEqual(a.batch(5), b.batch(5));
  assert.notDeepEqual(new MqarData({ ...SMALL, seed: seed + 1 }).batch(5).inputs, b.batch(5).inputs);
  a.batch(5);
  const saved = JSON.parse(JSON.stringify(a.state()));
  const want = [a.batch(3), a.batch(6)];
  const resumed = new MqarData({ ...SMALL, seed: seed + 7 });
  resumed.setState(saved);
  assert.deepEqual([resumed.batch(3), resumed.batch(6)], want);
  assert.throws(() => resumed.setState({ ...saved, task: "parity" }), /not an mqar stream state/);

  assert.throws(() => new MqarData({ ...SMALL, contextLength: 63 }), /even/);
  assert.throws(() => new MqarData({ ...SMALL, numPairs: 17 }), /4·numPairs/);
  assert.throws(() => new MqarData({ ...SMALL, vocabSize: 8 }), /keys for 4 pairs/);
  assert.throws(() => new MqarData({ ...SMALL, powerA: 0 }), /powerA/);
});

Deno.test("mqar_xlstm11.yaml: resolves, builds a model config, and gives valid MQAR splits", async () => {
  const text = await Deno.readTextFile(new URL("../scripts/configs/mqar_xlstm11.yaml", import.meta.url));
  const doc = resolveInterpolations(parse(text));
  assert.equal(doc.dataset.name, "mqar");
  assert.equal(doc.training.lr_decay_until_steps, doc.training.num_steps);
  const model = xLSTMLMModelConfig(doc.model);
  const kw = doc.dataset.kwargs;
  assert.deepEqual([model.vocab_size, model.context_length, model._block_map], [
    kw.vocab_size,
    kw.context_length,
    "0,1",
  ]);
  const splits = mqarSplits(kw);
  assert.deepEqual(Object.keys(splits), ["train", "validation"]);
  assert.equal(splits.train.count, doc.training.num_steps * doc.training.batch_size, "one epoch, like the parity runs");
  assert.notEqual(splits.train.options.seed, splits.validation.options.seed);
  const batch = new MqarData(splits.validation.options).batch(4);
  assert.equal(batch.seqLen, model.context_length);
  for (let b = 0; b < 4; b++) checkRow(batch, b, kw.num_kv_pairs, kw.vocab_size);
  assert.throws(() => mqarSplits({ ...kw, num_pairs: 3 }), /unknown keys num_pairs/);
});
