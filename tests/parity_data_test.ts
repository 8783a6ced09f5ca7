// Parity stream, the shared data generator/splits, the interpolation resolver and the three parity YAMLs.
import assert from "node:assert/strict";
// deno-lint-ignore no-import-prefix
import { parse } from "npm:yaml@^2.8.1";
import { xLSTMLMModelConfig } from "../src/config.ts";
import { resolveInterpolations } from "../src/data/interpolate.ts";
import { ParityData, paritySplits } from "../src/data/parity.ts";
import { DataRng, planSplits, splitBatches, type TokenBatch } from "../src/data/random.ts";
import { freshRng } from "./util.ts";

/** One parity example decoded from a batch row, asserting the format invariants on the way. */
function checkRow(batch: TokenBatch, b: number): { size: number; ones: number } {
  const T = batch.seqLen;
  const inputs = batch.inputs.subarray(b * T, (b + 1) * T), labels = batch.labels.subarray(b * T, (b + 1) * T);
  const targets = [...labels.keys()].filter((t) => labels[t] !== -1);
  assert.equal(targets.length, 1, `row ${b}: exactly one label`);
  const size = targets[0] + 2; // the label sits at size − 2
  let twos = 0;
  for (let t = 0; t < size - 1; t++) {
    assert.ok(inputs[t] === 1 || inputs[t] === 2, `row ${b}: bit token at ${t} is ${inputs[t]}`);
    if (inputs[t] === 2) twos++;
  }
  // the parity slot (size − 1) and everything after it is pad: the input never holds the answer
  for (let t = size - 1; t < T; t++) assert.equal(inputs[t], 0, `row ${b}: pad at ${t}`);
  assert.equal(labels[size - 2], (twos % 2) + 1, `row ${b}: parity token`);
  return { size, ones: size - 1 - twos };
}

/** Pearson chi-square of integer samples against the uniform distribution on [lo, hi]. */
function chiSquareUniform(samples: number[], lo: number, hi: number): number {
  const counts = new Array(hi - lo + 1).fill(0);
  for (const s of samples) counts[s - lo]++;
  const want = samples.length / counts.length;
  return counts.reduce((acc, c) => acc + (c - want) ** 2 / want, 0);
}

const TRAIN = { contextLength: 256, minLength: 3, maxLength: 40 };

Deno.test("parity: format, parity token, one label at size−2, lengths uniform in [min, max]", () => {
  const data = new ParityData({ ...TRAIN, seed: freshRng("parity format").seed });
  assert.equal(data.seqLen, 255);
  const sizes: number[] = [];
  let bits = 0, ones = 0, odd = 0;
  for (let i = 0; i < 16; i++) {
    const batch = data.batch(256);
    assert.deepEqual([batch.batchSize, batch.seqLen, batch.inputs.length, batch.labels.length], [
      256,
      255,
      65280,
      65280,
    ]);
    for (let b = 0; b < 256; b++) {
      const row = checkRow(batch, b);
      sizes.push(row.size);
      bits += row.size - 1;
      ones += row.ones;
      odd += batch.labels[b * 255 + row.size - 2] === 2 ? 1 : 0;
    }
  }
  assert.ok(Math.min(...sizes) >= 3 && Math.max(...sizes) <= 40);
  // 37 degrees of freedom: mean 37, sd 8.6; 110 is beyond the 1e-9 tail, so a failure means a real bias
  const chi2 = chiSquareUniform(sizes, 3, 40);
  assert.ok(chi2 < 110, `lengths not uniform on 3..40: chi2 ${chi2.toFixed(1)}`);
  // bits and answers are fair coins (6 sigma bounds)
  assert.ok(Math.abs(ones / bits - 0.5) < 6 * Math.sqrt(0.25 / bits), `bit balance ${ones / bits}`);
  assert.ok(Math.abs(odd / sizes.length - 0.5) < 6 * Math.sqrt(0.25 / sizes.length), `parity balance`);
});

Deno.test("parity: the validation lengths 40..256 reach both ends (256 = no pad, label at 254)", () => {
  const data = new ParityData({ contextLength: 256, minLength: 40, maxLength: 256, seed: freshRng("parity val").seed });
  const sizes: number[] = [];
  for (let i = 0; i < 16; i++) {
    const batch = data.batch(256);
    for (let b = 0; b < 256; b++) sizes.push(checkRow(batch, b).size);
  }
  // each end is missed by 4096 draws with probability (216/217)^4096 ≈ 6e-9
  assert.equal(Math.min(...sizes), 40);
  assert.equal(Math.max(...sizes), 256);
});

Deno.test("parity: vocab > 3 sums symbols mod V−1; the shortest example (size 2) has its label at 0", () => {
  const data = new ParityData({ contextLength: 8, minLength: 2, maxLength: 5, vocabSize: 5, seed: 3 });
  const { inputs, labels } = data.batch(200);
  let short = 0;
  for (let b = 0; b < 200; b++) {
    const at = labels.subarray(b * 7, b * 7 + 7).findIndex((l) => l !== -1);
    let sum = 0;
    for (let t = 0; t <= at; t++) sum += inputs[b * 7 + t] - 1;
    assert.equal(labels[b * 7 + at], (sum % 4) + 1);
    if (at === 0) short++;
  }
  assert.ok(short > 0);
});

Deno.test("parity: a seed fixes the stream; batches split the same stream; state survives JSON and resumes it", () => {
  const seed = freshRng("parity determinism").seed;
  const a = new ParityData({ ...TRAIN, seed }), b = new ParityData({ ...TRAIN, seed });
  assert.deepEqual(a.batch(8), b.batch(8));
  const other = new ParityData({ ...TRAIN, seed: seed + 1 }).batch(8);
  assert.notDeepEqual(new ParityData({ ...TRAIN, seed }).batch(8).inputs, other.inputs);
  // batch boundaries do not matter: 3 + 5 examples equal the next 8 of an identical stream
  const whole = b.batch(8), first = a.batch(3), rest = a.batch(5);
  assert.deepEqual([...first.inputs, ...rest.inputs], [...whole.inputs]);
  assert.deepEqual([...first.labels, ...rest.labels], [...whole.labels]);
  // resume: a stream built with another seed continues exactly after setState
  const saved = JSON.parse(JSON.stringify(a.state()));
  assert.equal(saved.examples, 16);
  const want = [a.batch(4), a.batch(7)];
  const resumed = new ParityData({ ...TRAIN, seed: seed + 99 });
  resumed.setState(saved);
  assert.deepEqual([resumed.batch(4), resumed.batch(7)], want);
  assert.deepEqual(resumed.state(), a.state());
  assert.throws(() => resumed.setState({ ...saved, task: "mqar" }), /not a parity stream state/);
  assert.throws(() => resumed.setState({ ...saved, rng: [0, 0, 0, 0] }), /rng state/);
});

Deno.test("parity: options outside 2 <= min <= max <= contextLength are rejected", () => {
  for (const [minLength, maxLength] of [[1, 10], [10, 9], [3, 257]]) {
    assert.throws(() => new ParityData({ contextLength: 256, minLength, maxLength, seed: 0 }), RangeError);
  }
  assert.throws(() => new ParityData({ ...TRAIN, vocabSize: 2, seed: 0 }), /vocabSize/);
  assert.throws(() => new ParityData({ ...TRAIN, seed: 0 }).batch(0), /batchSize/);
});

Deno.test("DataRng: int(n) is uniform and in range, uniform() in [0, 1), state round-trips", () => {
  const rng = new DataRng(freshRng("DataRng").seed);
  const draws = Array.from({ length: 7000 }, () => rng.int(7));
  assert.ok(draws.every((d) => d >= 0 && d < 7));
  // 6 degrees of freedom; 45 is beyond the 1e-7 tail
  assert.ok(chiSquareUniform(draws, 0, 6) < 45);
  const floats = Array.from({ length: 1000 }, () => rng.uniform());
  assert.ok(floats.every((u) => u >= 0 && u < 1));
  assert.ok(Math.abs(floats.reduce((s, u) => s + u, 0) / 1000 - 0.5) < 0.06);
  const saved = rng.state();
  const next = [rng.u32(), rng.u32()];
  rng.setState(saved);
  assert.deepEqual([rng.u32(), rng.u32()], next);
  // seeds above 2^32 are not truncated
  assert.notEqual(new DataRng(2 ** 32 + 5).u32(), new DataRng(5).u32());
  assert.throws(() => new DataRng(-1), RangeError);
  assert.throws(() => rng.int(0), RangeError);
});

Deno.test("planSplits/splitBatches: subparts, overrides, distinct seeds, a partial last batch", () => {
  const parts = planSplits({
    seed: 1,
    n: 1,
    count: { test: 5, train: 10, validation: 4 },
    subpar: { validation_a: { n: 2 }, validation_b: { n: 3 } },
  });
  assert.deepEqual(parts.map((p) => [p.name, p.subset, p.count, p.kwargs.n]), [
    ["train", "train", 10, 1],
    ["validation_a", "validation", 4, 2],
    ["validation_b", "validation", 4, 3],
    ["test", "test", 5, 1],
  ]);
  assert.equal(new Set(parts.map((p) => p.seed)).size, 4);
  assert.deepEqual(planSplits({ seed: 1, count: { train: 1 } })[0].seed, parts[0].seed);
  assert.throws(() => planSplits({ seed: 1, count: { dev: 1 } }), /unknown subset/);
  assert.throws(() => planSplits({ count: { train: 1 } }), /seed/);
  const data = new ParityData({ contextLength: 16, minLength: 3, maxLength: 16, seed: 1 });
  assert.deepEqual([...splitBatches(data, 10, 4)].map((b) => b.batchSize), [4, 4, 2]);
});

Deno.test("resolveInterpolations: absolute, relative, chained, embedded, list index; errors", () => {
  const doc = {
    a: { n: 3, m: "${.n}", up: "${..top}", s: "len-${a.n}-${.n}", list: [1, "${b.list.0}"] },
    b: { list: ["${top}"], copy: "${a}" },
    top: 7,
  };
  const before = structuredClone(doc);
  const out = resolveInterpolations(doc);
  assert.deepEqual(out, {
    a: { n: 3, m: 3, up: 7, s: "len-3-3", list: [1, 7] },
    b: { list: [7], copy: { n: 3, m: 3, up: 7, s: "len-3-3", list: [1, 7] } },
    top: 7,
  });
  assert.deepEqual(doc, before, "input not modified");
  assert.throws(() => resolveInterpolations({ a: "${b}" }), /a: interpolation target b does not exist/);
  assert.throws(() => resolveInterpolations({ a: "${b}", b: "${.a}" }), /cycle/);
  assert.throws(() => resolveInterpolations({ a: "${oc.env:HOME}" }), /unsupported interpolation/);
  assert.throws(() => resolveInterpolations({ a: "${...x}" }), /above the document root/);
  assert.throws(() => resolveInterpolations({ a: "x${b}", b: {} }), /cannot embed/);
  assert.throws(() => resolveInterpolations({ a: "\\${b}" }), /escaped/);
});

const CONFIGS: Record<string, number[]> = { parity_xlstm01: [0, 1], parity_xlstm10: [], parity_xlstm11: [1] };

for (const [name, slstmAt] of Object.entries(CONFIGS)) {
  Deno.test(`${name}.yaml: reference values (spec D3), a valid model config, and parity splits`, async () => {
    const text = await Deno.readTextFile(new URL(`../scripts/configs/${name}.yaml`, import.meta.url));
    const doc = resolveInterpolations(parse(text));
    assert.deepEqual(doc.training, {
      batch_size: 256,
      lr: 0.001,
      seed: 42,
      val_every_step: 200,
      lr_warmup_steps: 2000,
      lr_decay_until_steps: 20000,
      lr_decay_factor: 0.001,
      weight_decay: 0.1,
      num_steps: 20000,
      device: "cuda",
      amp_precision: "bfloat16",
      weight_precision: "float32",
      enable_mixed_precision: true,
    });
    assert.equal(doc.dataset.name, "form_language");
    const model = xLSTMLMModelConfig(doc.model);
    assert.deepEqual(
      [model.vocab_size, model.context_length, model.num_blocks, model.embedding_dim, model.slstm_at],
      [3, 256, 2, 64, slstmAt],
    );
    assert.equal(model._block_map, [0, 1].map((i) => (slstmAt.includes(i) ? 1 : 0)).join(","));
    assert.equal(model.mlstm_block?.mlstm.num_heads, 1);
    if (slstmAt.length > 0) assert.equal(model.slstm_block?.slstm.num_heads, 1);
    assert.equal(model.tie_weights, false);

    const splits = paritySplits(doc.dataset.kwargs);
    const hasTest = name !== "parity_xlstm10"; // that file has no subpar.test: its test split keeps 3..40
    assert.deepEqual(Object.keys(splits), ["train", "validation", "test"]);
    assert.deepEqual(
      Object.values(splits).map((s) => [s.count, s.options.contextLength, s.options.minLength, s.options.maxLength]),
      [[5120000, 256, 3, 40], [8192, 256, 40, 256], [8192, 256, hasTest ? 40 : 3, hasTest ? 256 : 40]],
    );
    assert.equal(new Set(Object.values(splits).map((s) => s.options.seed)).size, 3);
    // a fresh validation stream replays the same examples, so every evaluation sees the same set
    const v = splits.validation.options;
    assert.deepEqual(new ParityData(v).batch(4), new ParityData(v).batch(4));
  });
}

Deno.test("paritySplits: rejects other languages and unmasked data", () => {
  const kwargs = {
    synth_lang_type: "parity",
    vocab_size: 3,
    seed: 1,
    enable_mask: true,
    context_length: 256,
    min_sequence_length: 3,
    max_sequence_length: 40,
    count: { train: 10 },
  };
  assert.equal(paritySplits(kwargs).train.count, 10);
  assert.throws(() => paritySplits({ ...kwargs, synth_lang_type: "even_pairs" }), /only "parity"/);
  assert.throws(() => paritySplits({ ...kwargs, enable_mask: false }), /enable_mask/);
  assert.throws(() => paritySplits({ ...kwargs, max_sequence_length: 300 }), RangeError);
});
