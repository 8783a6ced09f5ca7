import assert from "node:assert/strict";
import { noGrad } from "../src/autograd.ts";
import { xLSTMLargeConfig, xLSTMLMModelConfig } from "../src/config.ts";
import { type GenerateOptions, generateTokens } from "../src/generate/generate.ts";
import { type Generatable, releaseState } from "../src/generate/model.ts";
import { loadGenerationState, saveGenerationState } from "../src/generate/state_file.ts";
import type { Gpu } from "../src/gpu/runtime.ts";
import type { HostTensor } from "../src/host_tensor.ts";
import { xLSTMLMModel } from "../src/models/lm_model.ts";
import { xLSTMLarge } from "../src/models/xlstm_large.ts";
import { resolveSampling, type Sampling, samplingUniform } from "../src/ops/sample.ts";
import { SafetensorsError } from "../src/safetensors.ts";
import { Tensor, tidy } from "../src/tensor.ts";
import { sampleRef } from "./cpu/sample.ts";
import { closeTestGpu, freshRng, type Rng, testGpu } from "./util.ts";

const V = 48;
const largeConfig = (E = 32) => xLSTMLargeConfig({ embedding_dim: E, num_heads: 2, num_blocks: 2, vocab_size: V });
const lmConfig = () =>
  xLSTMLMModelConfig({
    mlstm_block: { mlstm: { num_heads: 2 } },
    slstm_block: { slstm: { num_heads: 2, backend: "vanilla" } },
    slstm_at: [1],
    num_blocks: 2,
    embedding_dim: 32,
    vocab_size: V,
    context_length: 64,
  });

/** Both model kinds at test size, with random weights (logits of a few units, so sampling is not degenerate). */
async function models(gpu: Gpu, rng: Rng): Promise<[string, Generatable<unknown>][]> {
  const seed = rng.int(2 ** 31);
  return [
    ["xLSTMLarge", await xLSTMLarge.create(largeConfig(), { gpu, seed })],
    ["xLSTMLMModel", await xLSTMLMModel.create(lmConfig(), { gpu, seed })],
  ];
}

const hostIds = (rows: number[][]): HostTensor => ({
  dtype: "int32",
  shape: [rows.length, rows[0].length],
  data: Int32Array.from(rows.flat()),
});

/** Row b of an int32 [B, N] host tensor. */
const row = (t: HostTensor, b: number) => Array.from(t.data as Int32Array).slice(b * t.shape[1], (b + 1) * t.shape[1]);

/**
 * The reference loop on the host: feeds the prompt, then each chosen token, reading every step's last logits back
 * and choosing with the float64 sampler and the same draws. Returns the tokens per sequence and whether any draw
 * came within 1e-6 of a threshold (then the GPU may legitimately differ).
 */
async function hostLoop(
  model: Generatable<unknown>,
  gpu: Gpu,
  prompt: number[][],
  N: number,
  sampling: Sampling,
  seed: number,
): Promise<{ tokens: number[][]; ambiguous: boolean }> {
  const B = prompt.length, s = resolveSampling(sampling, V);
  const tokens: number[][] = prompt.map(() => []);
  let input = Tensor.fromHost(gpu, hostIds(prompt)), state: unknown, ambiguous = false;
  for (let step = 0; step < N; step++) {
    const [logits, next] = noGrad(() =>
      tidy(() =>
        model instanceof xLSTMLMModel
          ? teacherForce(model, input, state)
          : (model as xLSTMLarge).apply(input, state as never)
      )
    );
    releaseState(state, next);
    state = next;
    const data = (await logits.toHost()).data as Float32Array;
    const S = logits.shape[1];
    logits.dispose();
    input.dispose();
    for (let b = 0; b < B; b++) {
      const at = (b * S + S - 1) * V;
      const r = sampleRef(data.subarray(at, at + V), s, samplingUniform(seed, step, b));
      ambiguous ||= r.margin < 1e-6;
      tokens[b].push(r.token);
    }
    input = Tensor.fromHost(gpu, hostIds(tokens.map((t) => [t[step]])));
  }
  input.dispose();
  releaseState(state);
  return { tokens, ambiguous };
}

/** Ids `[B, S]` through S steps of the NeurIPS model (inside a tidy); returns the last logits `[B, 1, V]`. */
function teacherForce(model: xLSTMLMModel, ids: Tensor, state: unknown): [Tensor, unknown] {
  const [B, S] = ids.shape;
  let logits: Tensor | null = null, s = state;
  for (let t = 0; t < S; t++) {
    const col = Tensor.empty(ids.gpu, [B, 1], "int32");
    for (let b = 0; b < B; b++) ids.gpu.copy(ids.buffer, 4 * (b * S + t), col.buffer, 4 * b, 4);
    [logits, s] = model.applyStep(col, s as never);
  }
  return [logits!, s];
}

Deno.test("generateTokens equals the host loop (greedy and seeded top-k/top-p) for xLSTMLarge and xLSTMLMModel", async () => {
  const gpu = await testGpu();
  const rng = freshRng("generate vs host loop");
  const prompt = [[0, 5, 9, 3], [0, 7, 7, 1]];
  let compared = 0;
  for (const [name, model] of await models(gpu, rng)) {
    for (const sampling of ["greedy", { temperature: 1.2, topK: 30, topP: 0.9 }] as Sampling[]) {
      const seed = rng.int(2 ** 31), N = 7;
      const got = await generateTokens(model, hostIds(prompt), {
        maxNewTokens: N,
        sampling,
        seed,
        tokensPerReadback: 3,
      });
      releaseState(got.checkpoint.state);
      const want = await hostLoop(model, gpu, prompt, N, sampling, seed);
      if (want.ambiguous) continue; // a draw at a float32 threshold: no exact claim
      compared++;
      for (let b = 0; b < 2; b++) {
        assert.deepEqual(row(got.tokens, b), want.tokens[b], `${name} ${JSON.stringify(sampling)} row ${b}`);
      }
      assert.equal(got.timing.promptTokens, 4);
      assert.equal(got.checkpoint.step, N);
      assert.deepEqual([...got.checkpoint.lastTokens], [want.tokens[0][N - 1], want.tokens[1][N - 1]]);
    }
    (model as xLSTMLarge).dispose();
  }
  assert.ok(compared >= 2, `${compared} runs compared`); // greedy draws are never ambiguous
});

Deno.test("a run resumed from a saved state continues exactly as an uninterrupted one", async () => {
  const gpu = await testGpu();
  const rng = freshRng("generate resume");
  const dir = await Deno.makeTempDir();
  const N = 6, prompt = hostIds([[0, 11, 2]]);
  for (const [name, model] of await models(gpu, rng)) {
    for (const sampling of ["greedy", { temperature: 1, topP: 0.8 }] as Sampling[]) {
      const seed = rng.int(2 ** 31), what = `${name} ${JSON.stringify(sampling)}`;
      const whole = await generateTokens(model, prompt, { maxNewTokens: 2 * N, sampling, seed });
      const half = await generateTokens(model, prompt, { maxNewTokens: N, sampling, seed });
      const path = `${dir}/${name}.safetensors`;
      await saveGenerationState(path, model, half.checkpoint);
      const resume = await loadGenerationState(path, model);
      assert.deepEqual(resume.sampling, sampling);
      assert.equal(resume.seed, seed);
      assert.equal(resume.step, N);
      // A fresh loop: only the file's contents carry over (sampling and seed too).
      const rest = await generateTokens(model, undefined, { maxNewTokens: N, resume });
      assert.deepEqual([...row(half.tokens, 0), ...row(rest.tokens, 0)], row(whole.tokens, 0), what);
      assert.equal(rest.timing.promptTokens, 1);
      // The final states agree as well.
      const [a, b] = [whole.checkpoint.state, rest.checkpoint.state].map((s) => Tensor.toHostAll(stateList(s)));
      const [ha, hb] = await Promise.all([a, b]);
      ha.forEach((t, i) => assert.deepEqual(t.data, hb[i].data, `${what}: final state tensor ${i}`));
      for (const s of [whole, half, rest].map((r) => r.checkpoint.state)) releaseState(s);
      releaseState(resume.state);
    }
    (model as xLSTMLarge).dispose();
  }
  await Deno.remove(dir, { recursive: true });
});

function stateList(s: unknown): Tensor[] {
  return Object.values(s as Record<string, unknown>).flatMap((v) => v instanceof Tensor ? [v] : stateList(v));
}

Deno.test("tokens stream in chunks (the first alone) and memory stays flat over many tokens", async () => {
  const gpu = await testGpu();
  const rng = freshRng("generate chunks");
  const model = await xLSTMLarge.create(largeConfig(), { gpu, seed: rng.int(2 ** 31) });
  const starts: number[] = [], streamed: number[] = [], bytes = new Map<number, number>();
  const options: GenerateOptions<unknown> = {
    maxNewTokens: 64,
    sampling: { temperature: 1 },
    seed: 5,
    tokensPerReadback: 16,
    onTokens: (c) => {
      starts.push(c.start);
      streamed.push(...c.tokens[0]);
      bytes.set(c.start + c.tokens[0].length, gpu.allocatedBytes);
    },
  };
  const r = await generateTokens(model, hostIds([[0, 1]]), options);
  assert.deepEqual(starts, [0, 1, 17, 33, 49]);
  assert.deepEqual(streamed, row(r.tokens, 0));
  assert.equal(r.timing.readbacks, 5);
  // Chunks arrive one behind the recording: after token 17 the pool holds what the whole run needs.
  assert.equal(bytes.get(64), bytes.get(17), `GPU bytes after 17 tokens ${bytes.get(17)}, after 64 ${bytes.get(64)}`);
  assert.ok(r.timing.timeToFirstTokenMs > 0 && r.timing.decodeTokensPerSecond > 0);
  releaseState(r.checkpoint.state);
  model.dispose();
});

Deno.test("generation and state files reject bad input with clear errors", async () => {
  const gpu = await testGpu();
  const rng = freshRng("generate errors");
  const model = await xLSTMLarge.create(largeConfig(), { gpu, seed: rng.int(2 ** 31) });
  const ok = { maxNewTokens: 2 };
  await assert.rejects(
    () => generateTokens(model, hostIds([[0, V]]), ok),
    /prompt id 48 at 1 is outside the vocabulary \[0, 48\)/,
  );
  await assert.rejects(
    () => generateTokens(model, hostIds([[0]]), { ...ok, tokensPerReadback: 0 }),
    /tokensPerReadback/,
  );
  await assert.rejects(() => generateTokens(model, hostIds([[0]]), { ...ok, seed: -1 }), /seed must be an integer/);
  await assert.rejects(
    () => generateTokens(model, undefined, { ...ok, sampling: { temperature: 1, topP: 2 } }),
    /topP/,
  );
  const r = await generateTokens(model, hostIds([[0, 3]]), ok);
  await assert.rejects(
    () => generateTokens(model, hostIds([[1], [2]]), { ...ok, resume: r.checkpoint }),
    /prompt \[2, 1\] has 2 sequences, the resumed run 1/,
  );
  const dir = await Deno.makeTempDir(), path = `${dir}/s.safetensors`;
  await saveGenerationState(path, model, r.checkpoint);
  const other = await xLSTMLarge.create(largeConfig(16), { gpu, seed: 1 });
  await assert.rejects(() => loadGenerationState(path, other), (e: Error) => {
    assert.ok(e instanceof SafetensorsError);
    assert.match(e.message, /s\.safetensors: the state does not fit this xLSTMLarge/);
    assert.match(e.message, /tensor "state\.0\.0": the file has \[1, 2, 8, 16\], this model's is \[1, 2, 4, 8\]/);
    assert.match(e.message, /config\.embedding_dim: the file has 32, this model has 16/);
    assert.equal(e.tensor, "state.0.0");
    return true;
  });
  const lm = await xLSTMLMModel.create(lmConfig(), { gpu, seed: 1 });
  await assert.rejects(() => loadGenerationState(path, lm), /saved from an xLSTMLarge; this model is an xLSTMLMModel/);
  await Deno.writeFile(path, new Uint8Array(8));
  await assert.rejects(() => loadGenerationState(path, model), SafetensorsError);
  releaseState(r.checkpoint.state);
  for (const m of [model, other, lm]) m.dispose();
  await Deno.remove(dir, { recursive: true });
  await closeTestGpu();
});

/** Runs scripts/generate.ts; returns its exit code, stdout and stderr. */
async function script(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const script = new URL("../scripts/generate.ts", import.meta.url).pathname;
  const r = await new Deno.Command(Deno.execPath(), { args: ["run", "-A", script, ...args] }).output();
  const text = (b: Uint8Array) => new TextDecoder().decode(b);
  return { code: r.code, stdout: text(r.stdout), stderr: text(r.stderr) };
}

Deno.test("scripts/generate.ts streams text and timing, and --state-out/--state-in resume a session", async () => {
  const rng = freshRng("generate script");
  const dir = await Deno.makeTempDir();
  const config = `${dir}/tiny.yaml`, state = `${dir}/session.safetensors`;
  await Deno.writeTextFile(config, "embedding_dim: 32\nnum_heads: 2\nnum_blocks: 1\nvocab_size: 64\n");
  const tokenizer = new URL("./fixtures/tokenizer.json", import.meta.url).pathname;
  const common = ["--random-config", config, "--init-seed", String(rng.int(1000)), "--tokenizer", tokenizer];
  const sampling = ["--temperature", "1", "--top-k", "40", "--top-p", "0.95", "--seed", String(rng.int(1000))];
  const prompt = ["--prompt", "the long"];
  const whole = await script([...common, ...prompt, ...sampling, "--max-new-tokens", "24"]);
  assert.equal(whole.code, 0, whole.stderr);
  assert.match(whole.stderr, /time to first token [\d.]+ ms \(6 prompt tokens\), 24 tokens at [\d.]+ tokens\/s/);
  assert.ok(whole.stdout.trim().length > 0, "prints text");
  const first = await script([...common, ...prompt, ...sampling, "--max-new-tokens", "12", "--state-out", state]);
  assert.equal(first.code, 0, first.stderr);
  // The resumed run takes its sampling and seed from the session file.
  const rest = await script([...common, "--state-in", state, "--max-new-tokens", "12"]);
  assert.equal(rest.code, 0, rest.stderr);
  assert.match(rest.stderr, /\(1 prompt tokens\)/);
  assert.equal(first.stdout.slice(0, -1) + rest.stdout.slice(0, -1), whole.stdout.slice(0, -1));
  const fused = await script([...common, ...prompt, "--weight-mode", "fused", "--max-new-tokens", "4"]);
  assert.equal(fused.code, 0, fused.stderr);
  assert.match(fused.stderr, /4 tokens at/);
  const badMode = await script([...common, "--weight-mode", "stacked"]);
  assert.equal(badMode.code, 2);
  assert.match(badMode.stderr, /--weight-mode must be single or fused, got stacked/);
  const usage = await script(["--tokenizer", tokenizer]);
  assert.equal(usage.code, 2);
  assert.match(usage.stderr, /pass exactly one of --model and --random-config/);
  await Deno.remove(dir, { recursive: true });
});
