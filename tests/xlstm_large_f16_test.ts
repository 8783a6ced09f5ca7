/**
 * xLSTMLarge with float16 weights (`weightDtype: "float16"`): the same logits, states and greedy tokens as a float32
 * model holding the f16-rounded weights (same f32 arithmetic), close to the unrounded model; its state_dict in
 * stored dtypes and round trips; exact-size parameter buffers; and the errors around it.
 */

import assert from "node:assert/strict";
import { noGrad } from "../src/autograd.ts";
import { xLSTMLargeConfig, xLSTMLMModelConfig } from "../src/config.ts";
import { Gpu } from "../src/gpu/runtime.ts";
import { type HostTensor, numel } from "../src/host_tensor.ts";
import { xLSTMLMModel } from "../src/models/lm_model.ts";
import { xLSTMLarge } from "../src/models/xlstm_large.ts";
import { crossEntropy } from "../src/nn/functional.ts";
import { castHost } from "../src/safetensors.ts";
import { Tensor } from "../src/tensor.ts";
import { assertClose, closeTestGpu, freshRng, relativeError, testGpu } from "./util.ts";

const V = 40;
const cfg = (mode: "single" | "fused" = "single") =>
  xLSTMLargeConfig({ embedding_dim: 32, num_heads: 2, num_blocks: 2, vocab_size: V, weight_mode: mode });

Deno.test("xLSTMLarge float16: equals float32 on the rounded weights; near float32 on the originals", async () => {
  const gpu = await testGpu(), rng = freshRng("xlstm_large f16");
  for (const mode of ["single", "fused"] as const) {
    const original = await xLSTMLarge.create(cfg(mode), { gpu, seed: Math.floor(rng.uniform() * 2 ** 31) });
    const half = await xLSTMLarge.create(cfg(mode), { gpu, weightDtype: "float16", initialize: false });
    await half.loadStateDict(await original.stateDict()); // rounds to float16 on the way
    const rounded = await xLSTMLarge.create(cfg(mode), { gpu, initialize: false });
    await rounded.loadStateDict(await half.stateDict());
    const ids = Tensor.fromHost(gpu, {
      dtype: "int32",
      shape: [2, 19],
      data: Int32Array.from({ length: 38 }, () => Math.floor(rng.uniform() * V)),
    });
    await noGrad(async () => {
      const runs = [half, rounded, original].map((m) => m.apply(ids));
      const [h, r, o] = await Tensor.toHostAll(runs.map(([l]) => l));
      assertClose(h.data as Float32Array, r.data as Float32Array, 1e-5, `${mode}: f16 model vs rounded f32 model`);
      for (let b = 0; b < 2; b++) {
        const [sh, sr] = [await Tensor.toHostAll(runs[0][1][b]), await Tensor.toHostAll(runs[1][1][b])];
        sh.forEach((x, j) => assertClose(x.data as Float32Array, sr[j].data as Float32Array, 1e-5, `state ${b}.${j}`));
      }
      // Rounding every weight by up to 2^-11 relative moves the logits by about 1e-3 of their range here (random
      // weights, two blocks); 2e-2 bounds it with room while still catching a misread weight (errors of order 1).
      const err = relativeError(h.data as Float32Array, o.data as Float32Array);
      console.log(`${mode}: f16 vs f32 model logits, relative error ${err.toExponential(2)}`);
      assert.ok(err > 0 && err < 2e-2, `f16 vs f32 logits: relative error ${err}`);
    });
    const [gh, gr] = await Promise.all([half, rounded].map((m) => m.generate(ids, { maxNewTokens: 3 })));
    assert.deepEqual((await gh.toHost()).data, (await gr.toHost()).data, "greedy tokens");
    for (const m of [original, half, rounded]) m.dispose();
  }
});

Deno.test("xLSTMLarge float16 state_dict: stored dtypes, exact round trips, any float dtype loads", async () => {
  const gpu = await testGpu();
  const before = gpu.allocatedBytes;
  const half = await xLSTMLarge.create(cfg(), { gpu, weightDtype: "float16", initialize: false });
  // Parameters take buffers of their own size (rounded to 256 bytes), not pool classes.
  let want = 0;
  for (const [, p] of half.namedParameters({ removeDuplicate: true })) want += Math.ceil(p.bytes / 256) * 256;
  assert.equal(gpu.allocatedBytes - before, want);
  const zero = await half.stateDict();
  assert.ok(Object.values(zero).every((t) => t.data.every((x) => x === 0)), "initialize: false leaves zeros");
  const source = await xLSTMLarge.create(cfg(), { gpu, seed: 7 });
  const sd = await source.stateDict();
  await half.loadStateDict(sd);
  const stored = await half.stateDict();
  for (const [name, t] of Object.entries(stored)) {
    const weight = t.shape.length === 2;
    assert.equal(t.dtype, weight ? "float16" : "float32", name);
    assert.ok(t.data.length === numel(t.shape) && (weight ? t.data instanceof Uint16Array : true), name);
  }
  assert.deepEqual(stored["backbone.out_norm.weight"], sd["backbone.out_norm.weight"]);
  // float16 loads bit for bit; float64 and bfloat16 holding the same values convert to the same bits.
  const copy = await xLSTMLarge.create(cfg(), { gpu, weightDtype: "float16", initialize: false });
  for (const dtype of ["float16", "float64"] as const) {
    const cast: Record<string, HostTensor> = {};
    for (const [k, t] of Object.entries(stored)) cast[k] = castHost(t, t.shape.length === 2 ? dtype : "float32");
    await copy.loadStateDict(cast);
    assert.deepEqual(await copy.stateDict(), stored, `loaded from ${dtype}`);
  }
  const bf = castHost(sd["embedding.weight"], "bfloat16"); // bfloat16 values fit float16 here (|x| < 6)
  await copy.loadStateDict({ "embedding.weight": bf }, { strict: false });
  assert.deepEqual(
    (await copy.stateDict())["embedding.weight"].data,
    castHost(castHost(bf, "float32"), "float16").data,
  );
  for (const m of [half, source, copy]) m.dispose();
  assert.equal(gpu.allocatedBytes, before, "disposing the models destroyed their buffers");
});

Deno.test("xLSTMLarge float16: no gradients, other models refuse it, adapters without shader-f16 too", async () => {
  const gpu = await testGpu();
  const half = await xLSTMLarge.create(cfg(), { gpu, weightDtype: "float16", seed: 1 });
  const ids = Tensor.fromHost(gpu, { dtype: "int32", shape: [1, 3], data: new Int32Array([1, 2, 3]) });
  const [logits] = half.apply(ids);
  await assert.rejects(
    () => crossEntropy(logits, ids).loss.backward(),
    /backward through the float16 weight \[40, 32\] is not supported: float16 weights are for inference only/,
  );
  half.dispose();
  await assert.rejects(
    () =>
      xLSTMLMModel.create(
        xLSTMLMModelConfig({ mlstm_block: { mlstm: { num_heads: 1 } }, vocab_size: 8, embedding_dim: 16 }),
        { gpu, weightDtype: "float16" },
      ),
    /weightDtype "float16" is supported by xLSTMLarge only/,
  );
  await assert.rejects(
    () => xLSTMLarge.create(cfg(), { gpu: new Gpu(gpu.device, "plain adapter", []), weightDtype: "float16" }),
    /needs the WebGPU feature "shader-f16", which this adapter \(plain adapter\) lacks; use weightDtype "float32"/,
  );
  await closeTestGpu();
});
