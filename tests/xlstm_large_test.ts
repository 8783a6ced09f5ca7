/**
 * xLSTM Large (spec C1–C4, B2.4, B2.6, E6, E9, E10, E14, G5): the golden forward (soft-capped logits and final
 * (C, n, m) states in the mlstm_kernels convention), the golden greedy generation with its prefill logits and
 * states, decoding from a state against one longer prefill, parameter names and shapes, and input errors.
 */

import assert from "node:assert/strict";
import { noGrad } from "../src/autograd.ts";
import { xLSTMLargeConfig } from "../src/config.ts";
import type { Gpu } from "../src/gpu/runtime.ts";
import type { HostTensor } from "../src/host_tensor.ts";
import { xLSTMLarge, type xLSTMLargeState } from "../src/models/xlstm_large.ts";
import { castHost, readSafetensors } from "../src/safetensors.ts";
import { Tensor } from "../src/tensor.ts";
import { assertClose, closeTestGpu, freshRng, limited, testGpu } from "./util.ts";

const GOLDEN = new URL("../../shared/golden/", import.meta.url);
const TOL = 1e-4;

interface Golden {
  config: Record<string, unknown>;
  tensors: Record<string, HostTensor>;
  params: Record<string, HostTensor>;
}

async function golden(name: string): Promise<Golden> {
  const side = JSON.parse(await Deno.readTextFile(new URL(`${name}.json`, GOLDEN)));
  const tensors = await readSafetensors(new URL(`${name}.safetensors`, GOLDEN));
  const params: Record<string, HostTensor> = {};
  // The sidecar lists the tensors in the reference's state_dict order (the safetensors header is sorted).
  for (const k of Object.keys(side.tensors)) if (k.startsWith("param.")) params[k.slice(6)] = tensors[k];
  return { config: side.config, tensors, params };
}

async function loaded(gpu: Gpu, g: Golden): Promise<xLSTMLarge> {
  const model = await xLSTMLarge.create(xLSTMLargeConfig(g.config), { gpu, seed: 1 });
  await model.loadStateDict(g.params, { strict: true });
  return model;
}

/** The float values of a host tensor (golden outputs and readbacks are float32). */
function f32(h: HostTensor): Float32Array {
  return h.data as Float32Array;
}

function ids(gpu: Gpu, h: HostTensor): Tensor {
  return Tensor.fromHost(gpu, castHost(h, "int32"));
}

async function assertState(state: xLSTMLargeState, want: Record<string, HostTensor>, prefix: string): Promise<void> {
  for (const [block, s] of Object.entries(state)) {
    const hosts = await Tensor.toHostAll(s);
    hosts.forEach((h, j) => {
      const ref = want[`${prefix}.${block}.${j}`];
      assert.deepEqual(h.shape, ref.shape, `${prefix}.${block}.${j} shape`);
      assertClose(f32(h), f32(ref), TOL, `${prefix}.${block}.${j}`);
    });
  }
}

function disposeState(state: xLSTMLargeState): void {
  for (const s of Object.values(state)) for (const t of s) t.dispose();
}

Deno.test("xlstm_large golden: soft-capped logits and final (C, n, m) states", async () => {
  const gpu = await testGpu(), g = await golden("xlstm_large");
  const model = await loaded(gpu, g);
  const [logits, state] = await model.forward(ids(gpu, g.tensors.input));
  assert.deepEqual(logits.shape, g.tensors.output.shape);
  assertClose(f32(await logits.toHost()), f32(g.tensors.output), TOL, "logits");
  assert.equal(Object.keys(state).length, 2);
  await assertState(state, g.tensors, "state");
  model.dispose();
});

Deno.test("xlstm_large_generate golden: greedy tokens exactly, prefill logits and states, step logits", async () => {
  const gpu = await testGpu(), g = await golden("xlstm_large_generate");
  const model = await loaded(gpu, g);
  const want = g.tensors["gen.tokens"];
  const N = want.shape[1];
  const tokens = await model.generate(ids(gpu, g.tensors.input), { maxNewTokens: N, sampling: "greedy" });
  const got = await tokens.toHost();
  assert.deepEqual(got.shape, want.shape);
  assert.deepEqual([...got.data], [...castHost(want, "int32").data]);
  // The prefill (16 + 5 tokens in the reference's cascade) and each single-token call, teacher-forced.
  await noGrad(async () => {
    let [logits, state] = model.apply(ids(gpu, g.tensors.input));
    assertClose(f32(await logits.toHost()), f32(g.tensors.output), TOL, "prefill logits");
    await assertState(state, g.tensors, "prefill_state");
    const B = want.shape[0], V = model.config.vocab_size, stepRef = g.tensors["gen.step_logits"];
    const wantTokens = castHost(want, "int32").data as Int32Array;
    for (let i = 1; i < N; i++) {
      const tok = Int32Array.from({ length: B }, (_, b) => wantTokens[b * N + i - 1]);
      const [l, s] = model.apply(Tensor.fromHost(gpu, { dtype: "int32", shape: [B, 1], data: tok }), state);
      disposeState(state);
      state = s;
      const data = f32(await l.toHost());
      const ref = new Float32Array(B * V);
      for (let b = 0; b < B; b++) {
        for (let b = 0; b < B; b++) {
          ref.set(f32(stepRef).subarray((b * (N - 1) + i - 1) * V, (b * (N - 1) + i) * V), b * V);
        }
      }
      assertClose(data, ref, TOL, `step ${i} logits`);
      logits = l;
    }
    await assertState(state, g.tensors, "state");
  });
  model.dispose();
});

Deno.test("xLSTMLarge: decoding from a prefill state equals one longer prefill", async () => {
  const gpu = await testGpu(), rng = freshRng("xlstm_large decode");
  const cfg = xLSTMLargeConfig({ embedding_dim: 32, num_heads: 2, num_blocks: 2, vocab_size: 50, qk_dim_factor: 0.25 });
  const model = await xLSTMLarge.create(cfg, { gpu, seed: Math.floor(rng.uniform() * 2 ** 31) });
  const B = 2, P = 5, T = 3;
  const all = Int32Array.from({ length: B * (P + T) }, () => Math.floor(rng.uniform() * 50));
  const slice = (t0: number, t1: number) => {
    const d = new Int32Array(B * (t1 - t0));
    for (let b = 0; b < B; b++) d.set(all.subarray(b * (P + T) + t0, b * (P + T) + t1), b * (t1 - t0));
    return Tensor.fromHost(gpu, { dtype: "int32", shape: [B, t1 - t0], data: d });
  };
  await noGrad(async () => {
    const [full, fullState] = model.apply(slice(0, P + T));
    const fullHost = f32(await full.toHost());
    const [, prefillState] = model.apply(slice(0, P));
    // T more tokens at once from the state, then the same one at a time.
    const [chunk, chunkState] = model.apply(slice(P, P + T), prefillState);
    const V = 50, want = new Float32Array(B * T * V);
    for (let b = 0; b < B; b++) {
      want.set(fullHost.subarray((b * (P + T) + P) * V, (b * (P + T) + P + T) * V), b * T * V);
    }
    assertClose(f32(await chunk.toHost()), want, 1e-5, "logits from a state");
    let state = prefillState;
    for (let t = 0; t < T; t++) {
      const [l, s] = model.apply(slice(P + t, P + t + 1), state);
      state = s;
      const h = f32(await l.toHost());
      const w = new Float32Array(B * V);
      for (let b = 0; b < B; b++) w.set(want.subarray((b * T + t) * V, (b * T + t + 1) * V), b * V);
      assertClose(h, w, 1e-5, `single-token logits ${t}`);
    }
    for (const [a, b] of [[fullState, chunkState], [fullState, state]]) {
      for (let i = 0; i < 2; i++) {
        const [x, y] = [await Tensor.toHostAll(a[i]), await Tensor.toHostAll(b[i])];
        x.forEach((h, j) => assertClose(f32(y[j]), f32(h), 1e-5, `state ${i}.${j}`));
      }
    }
  });
  model.dispose();
});

Deno.test("xLSTMLarge: lastLogitsOnly gives the last position's logits of the full forward, for inference only", async () => {
  const gpu = await testGpu(), rng = freshRng("xlstm_large last logits");
  const V = 40;
  for (const weight_mode of ["single", "fused"] as const) {
    const cfg = xLSTMLargeConfig({ embedding_dim: 32, num_heads: 2, num_blocks: 2, vocab_size: V, weight_mode });
    const model = await xLSTMLarge.create(cfg, { gpu, seed: Math.floor(rng.uniform() * 2 ** 31) });
    const B = 2, S = 1 + Math.floor(rng.uniform() * 40);
    const data = Int32Array.from({ length: B * S }, () => Math.floor(rng.uniform() * V));
    const ids = Tensor.fromHost(gpu, { dtype: "int32", shape: [B, S], data });
    await noGrad(async () => {
      const [full] = model.apply(ids);
      const [last] = model.apply(ids, undefined, { lastLogitsOnly: true });
      assert.deepEqual(last.shape, [B, 1, V]);
      const fullHost = f32(await full.toHost()), want = new Float32Array(B * V);
      for (let b = 0; b < B; b++) want.set(fullHost.subarray((b * S + S - 1) * V, (b * S + S) * V), b * V);
      assertClose(f32(await last.toHost()), want, 1e-6, `${weight_mode} S ${S}: last logits`);
    });
    if (S > 1) {
      assert.throws(() => model.apply(ids, undefined, { lastLogitsOnly: true }), /lastLogitsOnly is for inference/);
    }
    model.dispose();
  }
});

Deno.test("xLSTMLarge: a prompt too wide for one binding is prefilled in pieces, equal to the whole", async () => {
  const gpu = await testGpu(), rng = freshRng("xlstm_large pieces");
  const V = 40, B = 2, S = 130 + Math.floor(rng.uniform() * 60);
  const cfg = xLSTMLargeConfig({ embedding_dim: 32, num_heads: 2, num_blocks: 2, vocab_size: V, chunk_size: 32 });
  const model = await xLSTMLarge.create(cfg, { gpu, seed: Math.floor(rng.uniform() * 2 ** 31) });
  const data = Int32Array.from({ length: B * S }, () => Math.floor(rng.uniform() * V));
  const ids = Tensor.fromHost(gpu, { dtype: "int32", shape: [B, S], data });
  // 2·ffn_dim = 256 floats per token: 48 KiB bindings hold 24 tokens of B 2, so pieces of one chunk (32 tokens).
  const whole = await noGrad(async () => {
    const [l, st] = model.apply(ids);
    return {
      logits: f32(await l.toHost()),
      state: await Promise.all(Object.values(st).map((s) => Tensor.toHostAll(s))),
    };
  });
  const apply = model.apply.bind(model), lengths: number[] = [];
  model.apply = (x, state, options) => (lengths.push(x.shape[1]), apply(x, state, options));
  for (const lastLogitsOnly of [false, true]) {
    await limited(gpu, 48 * 1024, null, async () => {
      lengths.length = 0;
      const [l, st] = noGrad(() => model.apply(ids, undefined, { lastLogitsOnly }));
      const pieces = Array.from({ length: Math.ceil(S / 32) }, (_, i) => Math.min(32, S - 32 * i));
      assert.deepEqual(lengths, [S, ...pieces]);
      let want = whole.logits;
      if (lastLogitsOnly) {
        want = new Float32Array(B * V);
        for (let b = 0; b < B; b++) want.set(whole.logits.subarray((b * S + S - 1) * V, (b * S + S) * V), b * V);
      }
      assertClose(f32(await l.toHost()), want, 1e-5, `S ${S} in pieces: logits (last only: ${lastLogitsOnly})`);
      const got = await Promise.all(Object.values(st).map((s) => Tensor.toHostAll(s)));
      got.forEach((s, i) => s.forEach((h, j) => assertClose(f32(h), f32(whole.state[i][j]), 1e-5, `state ${i}.${j}`)));
    });
  }
  model.dispose();
});

Deno.test("xLSTMLarge: prefill through the chunk cascade and remainder equals step-by-step decoding", async () => {
  const gpu = await testGpu(), rng = freshRng("xlstm_large cascade");
  // chunk 16, S 21: 16 chunkwise + 5 steps (the golden generate case); S 37, B 2: 2×16 + 5 with per-sequence copies;
  // chunk 32, S 53: 32 + 16 + 5, the halving cascade.
  for (const [chunk, B, S] of [[16, 1, 21], [16, 2, 37], [32, 2, 53]]) {
    const cfg = xLSTMLargeConfig({
      embedding_dim: 16,
      num_heads: 2,
      num_blocks: 2,
      vocab_size: 20,
      qk_dim_factor: 0.5,
      chunk_size: chunk,
    });
    const model = await xLSTMLarge.create(cfg, { gpu, seed: Math.floor(rng.uniform() * 2 ** 31) });
    const all = Int32Array.from({ length: B * S }, () => Math.floor(rng.uniform() * 20));
    const step = (t: number) =>
      Tensor.fromHost(gpu, {
        dtype: "int32",
        shape: [B, 1],
        data: Int32Array.from({ length: B }, (_, b) => all[b * S + t]),
      });
    await noGrad(async () => {
      const [logits, prefillState] = model.apply(Tensor.fromHost(gpu, { dtype: "int32", shape: [B, S], data: all }));
      const got = f32(await logits.toHost()), V = 20, want = new Float32Array(B * S * V);
      let state: xLSTMLargeState | undefined;
      for (let t = 0; t < S; t++) {
        const [l, s] = model.apply(step(t), state);
        if (state) disposeState(state);
        state = s;
        const h = f32(await l.toHost());
        for (let b = 0; b < B; b++) want.set(h.subarray(b * V, (b + 1) * V), (b * S + t) * V);
      }
      assertClose(got, want, 1e-5, `chunk ${chunk} B ${B} S ${S} logits`);
      for (let i = 0; i < 2; i++) {
        const [x, y] = [await Tensor.toHostAll(prefillState[i]), await Tensor.toHostAll(state![i])];
        x.forEach((h, j) => assertClose(f32(h), f32(y[j]), 1e-5, `chunk ${chunk} B ${B} S ${S} state ${i}.${j}`));
      }
    });
    model.dispose();
  }
});

Deno.test("xLSTMLarge: 7B parameter names and shapes at small size; PyTorch-default init", async () => {
  const gpu = await testGpu();
  const cfg = xLSTMLargeConfig({ embedding_dim: 64, num_heads: 4, num_blocks: 1, vocab_size: 30 });
  const model = await xLSTMLarge.create(cfg, { gpu, seed: 3 });
  const sd = await model.stateDict();
  const g = await golden("xlstm_large");
  const wantKeys = Object.keys(g.params).filter((k) => !k.includes("blocks.1."));
  assert.deepEqual(Object.keys(sd), wantKeys);
  assert.deepEqual(sd["backbone.blocks.0.ffn.proj_up.weight"].shape, [192, 64]);
  assert.deepEqual(sd["backbone.blocks.0.mlstm_layer.igate_preact.bias"].shape, [4]);
  const bound = 1 / Math.sqrt(64), q = sd["backbone.blocks.0.mlstm_layer.q.weight"].data as Float32Array;
  assert.ok(q.every((x) => Math.abs(x) <= bound) && q.some((x) => Math.abs(x) > bound / 2));
  assert.ok((sd["backbone.out_norm.weight"].data as Float32Array).every((x) => x === 1));
  model.dispose();
});

Deno.test("xLSTMLarge: input, state and option errors", async () => {
  const gpu = await testGpu();
  const cfg = xLSTMLargeConfig({ embedding_dim: 32, num_heads: 2, num_blocks: 1, vocab_size: 20 });
  const model = await xLSTMLarge.create(cfg, { gpu, seed: 0 });
  const f = Tensor.fromHost(gpu, { dtype: "float32", shape: [1, 2], data: new Float32Array(2) });
  assert.throws(() => model.apply(f), /must be int32/);
  const x = Tensor.fromHost(gpu, { dtype: "int32", shape: [1, 2], data: new Int32Array([1, 2]) });
  assert.throws(() => model.apply(x.reshape([2])), /token ids: expected shape \[\*, \*\], got \[2\]/);
  const [, state] = noGrad(() => model.apply(x));
  const x2 = Tensor.fromHost(gpu, { dtype: "int32", shape: [2, 1], data: new Int32Array([1, 2]) });
  assert.throws(() => model.apply(x2, state), /state\[0\]\[0\] \(C\): expected shape \[2, 2, 8, 16\]/);
  assert.throws(() => model.apply(x, {}), /block 0 is missing/);
  await assert.rejects(() => model.generate(x, { maxNewTokens: 0 }), /maxNewTokens/);
  await assert.rejects(() => model.generate(x, { maxNewTokens: 1, sampling: "top-k" as "greedy" }), /greedy/);
  const bos = await model.generate(undefined, { maxNewTokens: 2, batchSize: 3 });
  assert.deepEqual(bos.shape, [3, 2]);
  model.dispose();
  await closeTestGpu();
});
