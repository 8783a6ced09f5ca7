/**
 * Pretrained checkpoints (spec C1, C3, A5.4, A8): round trips through the Hugging Face layout (sharded, and with
 * the query/key/value naming), the NX-AI internal layout and a NeurIPS xLSTMLMModel state_dict in the sLSTM cuda
 * layout give the same logits; the loader streams one tensor at a time; bad checkpoints are rejected with every
 * problem named by file and tensor.
 */

import assert from "node:assert/strict";
import { ConfigError, xLSTMLargeConfig, xLSTMLMModelConfig } from "../src/config.ts";
import type { HostTensor } from "../src/host_tensor.ts";
import { CheckpointError } from "../src/models/checkpoint_reader.ts";
import { xLSTMLMModel } from "../src/models/lm_model.ts";
import { loadPretrained, loadWeights, savePretrained } from "../src/models/pretrained.ts";
import { xLSTMLarge } from "../src/models/xlstm_large.ts";
import { readSafetensors, SafetensorsFile, writeSafetensors } from "../src/safetensors.ts";
import {
  biasToCuda,
  CELL,
  halfRoundedLogits,
  inTempDir,
  kernelToCuda,
  LARGE,
  LARGE_HF_CONFIG,
  lmConfig,
  logitsOf,
  randomize,
  rewrite,
  tokenIds,
} from "./checkpoint_util.ts";
import { assertClose, closeTestGpu, freshRng, testGpu } from "./util.ts";

/** A tiny xLSTMLarge with random weights, and its logits. */
async function sourceLarge(label: string): Promise<{ model: xLSTMLarge; logits: Float32Array }> {
  const gpu = await testGpu();
  const rng = freshRng(label);
  const model = await xLSTMLarge.create(xLSTMLargeConfig(LARGE), { gpu, seed: 1 });
  await randomize(model, rng);
  return { model, logits: await logitsOf(gpu, model, tokenIds(LARGE.vocab_size)) };
}

async function loadedLogits(path: string, options: { config?: string } = {}): Promise<Float32Array> {
  const gpu = await testGpu();
  const model = await loadPretrained(path, { gpu, ...options });
  try {
    return await logitsOf(gpu, model, tokenIds(model.config.vocab_size));
  } finally {
    model.dispose();
  }
}

/** Asserts that `promise` rejects with an error of `type` whose message contains every one of `parts`. */
async function rejectsNaming(promise: Promise<unknown>, type: new (...a: never[]) => Error, parts: string[]) {
  const e = await promise.then(() => null, (e) => e);
  assert.ok(e instanceof type, `expected a ${type.name}, got ${e}`);
  for (const p of parts) assert.ok(e.message.includes(p), `message lacks ${JSON.stringify(p)}:\n${e.message}`);
  return e;
}

Deno.test("HF layout, sharded: save → index + shards → loadPretrained gives identical logits", async () => {
  const { model, logits } = await sourceLarge("hf round trip");
  try {
    await inTempDir(async (dir) => {
      const report = await savePretrained(model, dir, { format: "hf", maxShardBytes: 8192 });
      const index = JSON.parse(await Deno.readTextFile(`${dir}/model.safetensors.index.json`));
      const shards = [...new Set(Object.values(index.weight_map) as string[])];
      assert.ok(shards.length >= 2, `${shards.length} shard(s)`);
      assert.ok(shards.every((s) => /^model-\d{5}-of-\d{5}\.safetensors$/.test(s)), shards.join());
      assert.equal(shards[0], `model-00001-of-${String(shards.length).padStart(5, "0")}.safetensors`);
      assert.equal(index.weight_map["backbone.embeddings.weight"], shards[0]);
      assert.ok(!("embedding.weight" in index.weight_map));
      assert.equal(index.metadata.total_size, report.bytes);
      assert.equal(report.files.at(-1), `${dir}/model.safetensors.index.json`, "the index is written last");
      const config = JSON.parse(await Deno.readTextFile(`${dir}/config.json`));
      assert.equal(config.hidden_size, 16);
      assert.equal(config.num_hidden_layers, 2);
      assert.equal(config.torch_dtype, "float32");
      assert.deepEqual(await loadedLogits(dir), logits);
    });
  } finally {
    model.dispose();
  }
});

Deno.test("HF layout in float16: half-precision shards give the logits of the half-rounded weights", async () => {
  const { model } = await sourceLarge("hf float16");
  try {
    await inTempDir(async (dir) => {
      await savePretrained(model, dir, { format: "hf", dtype: "float16" });
      using st = await SafetensorsFile.open(`${dir}/model.safetensors`);
      assert.equal(st.info("lm_head.weight").dtype, "float16");
      const want = await halfRoundedLogits(await testGpu(), model, tokenIds(LARGE.vocab_size));
      assert.deepEqual(await loadedLogits(dir), want);
    });
  } finally {
    model.dispose();
  }
});

Deno.test("HF naming query/key/value and a config.json with aliases and unknown fields load the same", async () => {
  const { model, logits } = await sourceLarge("hf query/key/value");
  try {
    await inTempDir(async (dir) => {
      const sd = await model.stateDict();
      const renamed: Record<string, HostTensor> = {};
      const hfName = (k: string) =>
        k === "embedding.weight" ? "backbone.embeddings.weight" : k.replace(
          /\.mlstm_layer\.([qkv])\./,
          (_, p) => `.mlstm_layer.${{ q: "query", k: "key", v: "value" }[p as "q" | "k" | "v"]}.`,
        );
      for (const [k, t] of Object.entries(sd)) renamed[hfName(k)] = t;
      assert.ok("backbone.blocks.1.mlstm_layer.value.weight" in renamed);
      await writeSafetensors(`${dir}/model.safetensors`, renamed);
      await Deno.writeTextFile(`${dir}/config.json`, JSON.stringify(LARGE_HF_CONFIG));
      assert.deepEqual(await loadedLogits(dir), logits);
    });
  } finally {
    model.dispose();
  }
});

Deno.test("NX-AI layout: config.yaml + model_{n}.safetensors (and one model.safetensors) load the same", async () => {
  const { model, logits } = await sourceLarge("nx-ai round trip");
  try {
    await inTempDir(async (dir) => {
      const report = await savePretrained(model, dir, { format: "xlstm", maxShardBytes: 8192 });
      const names = report.files.map((f) => f.slice(dir.length + 1));
      assert.equal(names.at(-1), "config.yaml");
      assert.deepEqual(names.slice(0, -1), names.slice(0, -1).map((_, k) => `model_${k}.safetensors`));
      assert.ok(names.length > 2);
      assert.deepEqual(await loadedLogits(dir), logits);
      // Rewriting the directory unsharded drops the old shards.
      await savePretrained(model, dir, { format: "xlstm" });
      const left = [...Deno.readDirSync(dir)].map((f) => f.name).sort();
      assert.deepEqual(left, ["config.yaml", "model.safetensors"]);
      using st = await SafetensorsFile.open(`${dir}/model.safetensors`);
      assert.ok(st.has("embedding.weight"));
      assert.deepEqual(await loadedLogits(dir), logits);
    });
  } finally {
    model.dispose();
  }
});

Deno.test("NeurIPS xLSTMLMModel in the sLSTM cuda layout (permuted in the test) loads to the same logits", async () => {
  const gpu = await testGpu();
  const rng = freshRng("lm cuda layout");
  const model = await xLSTMLMModel.create(xLSTMLMModelConfig(lmConfig("vanilla", true)), { gpu, seed: 1 });
  try {
    await randomize(model, rng);
    const logits = await logitsOf(gpu, model, tokenIds(20));
    const sd = await model.stateDict();
    const cuda = { ...sd };
    cuda[CELL.kernel] = kernelToCuda(sd[CELL.kernel], CELL.NH, CELL.DH);
    cuda[CELL.bias] = biasToCuda(sd[CELL.bias], CELL.NH, CELL.DH);
    delete cuda["lm_head.weight"]; // safetensors' save_model keeps one of a tied pair
    for (const backend of ["vanilla", "cuda"] as const) {
      await inTempDir(async (dir) => {
        await writeSafetensors(`${dir}/lm.safetensors`, cuda);
        await Deno.writeTextFile(`${dir}/lm.yaml`, JSON.stringify({ model: lmConfig(backend, true) }));
        const loaded = await loadPretrained(`${dir}/lm.safetensors`, { gpu, config: `${dir}/lm.yaml` });
        try {
          assert.ok(loaded instanceof xLSTMLMModel);
          assert.deepEqual(await logitsOf(gpu, loaded, tokenIds(20)), logits, `config backend ${backend}`);
        } finally {
          loaded.dispose();
        }
      });
    }
    // Written back: vanilla by default, cuda on request, each with a config naming that backend.
    for (const layout of ["vanilla", "cuda"] as const) {
      await inTempDir(async (dir) => {
        await savePretrained(model, dir, { format: "xlstm", slstmLayout: layout });
        const written = await readSafetensors(`${dir}/model.safetensors`);
        const want = layout === "cuda" ? cuda : sd;
        assert.deepEqual(written[CELL.kernel], want[CELL.kernel], `${layout} kernel`);
        assert.deepEqual(written[CELL.bias], want[CELL.bias], `${layout} bias`);
        assert.ok(written["lm_head.weight"], "the tied name is in the state_dict");
        assert.match(await Deno.readTextFile(`${dir}/config.yaml`), new RegExp(`backend: ${layout}`));
        assert.deepEqual(await loadedLogits(dir), logits, `${layout} round trip`);
      });
    }
  } finally {
    model.dispose();
  }
});

Deno.test("weight modes: single checkpoints load fused; a fused model saves fused (HF) or single (NX-AI)", async () => {
  const gpu = await testGpu();
  const { model, logits } = await sourceLarge("weight modes");
  try {
    await inTempDir(async (dir) => {
      await savePretrained(model, `${dir}/single`, { format: "hf" });
      const fused = await loadPretrained(`${dir}/single`, { gpu, architecture: "xLSTMLarge", weightMode: "fused" });
      try {
        assert.equal(fused.config.weight_mode, "fused");
        assertClose(await logitsOf(gpu, fused, tokenIds(LARGE.vocab_size)), logits, 1e-6, "fused from single");
        await savePretrained(fused, `${dir}/fused-hf`, { format: "hf", dtype: "float16" });
        await savePretrained(fused, `${dir}/fused-nx`, { format: "xlstm" });
      } finally {
        fused.dispose();
      }
      const hf = await readSafetensors(`${dir}/fused-hf/model.safetensors`);
      assert.deepEqual(hf["backbone.blocks.0.mlstm_layer.qkv_opreact.weight"].shape, [2 * 8 + 2 * 16, 16]);
      assert.equal(JSON.parse(await Deno.readTextFile(`${dir}/fused-hf/config.json`)).weight_mode, "fused");
      const half = await halfRoundedLogits(gpu, model, tokenIds(LARGE.vocab_size));
      assertClose(await loadedLogits(`${dir}/fused-hf`), half, 1e-6, "fused HF checkpoint (float16)");
      const nx = await readSafetensors(`${dir}/fused-nx/model.safetensors`);
      assert.deepEqual(Object.keys(nx).sort(), [...model.stateDictShapes().keys()].sort(), "NX-AI layout is single");
      assert.match(await Deno.readTextFile(`${dir}/fused-nx/config.yaml`), /weight_mode: single/);
      assertClose(await loadedLogits(`${dir}/fused-nx`), logits, 1e-6, "split back to single");
      const back = await loadPretrained(`${dir}/fused-hf`, { gpu, architecture: "xLSTMLarge", weightMode: "single" });
      try {
        assertClose(await logitsOf(gpu, back, tokenIds(LARGE.vocab_size)), half, 1e-6, "single from fused");
      } finally {
        back.dispose();
      }
      await rewrite(`${dir}/single/model.safetensors`, (t) => {
        delete t["backbone.blocks.1.mlstm_layer.k.weight"];
        return t;
      });
      await rejectsNaming(loadPretrained(`${dir}/single`, { gpu, weightMode: "fused" }), CheckpointError, [
        `${dir}/single: missing tensor "backbone.blocks.1.mlstm_layer.k.weight" (a part of ` +
        `backbone.blocks.1.mlstm_layer.qkv_opreact.weight)`,
      ]);
    });
  } finally {
    model.dispose();
  }
});

Deno.test("float16 weights on the GPU: loadPretrained passes weightDtype through", async () => {
  const gpu = await testGpu();
  if (!gpu.hasF16) return console.log("skipped: no shader-f16 on this adapter");
  const { model } = await sourceLarge("weightDtype float16");
  try {
    await inTempDir(async (dir) => {
      await savePretrained(model, dir, { format: "hf" });
      const half = await loadPretrained(dir, { gpu, architecture: "xLSTMLarge", weightDtype: "float16" });
      try {
        const stored = await half.stateDict();
        assert.equal(stored["lm_head.weight"].dtype, "float16");
        // The reference rounds what the model stores in float16 (weight matrices, embedding), not norms or biases.
        const isHalf = (key: string) => stored[key].dtype === "float16";
        const want = await halfRoundedLogits(gpu, model, tokenIds(LARGE.vocab_size), isHalf);
        assertClose(await logitsOf(gpu, half, tokenIds(LARGE.vocab_size)), want, 1e-5, "float16 weights");
      } finally {
        half.dispose();
      }
    });
  } finally {
    model.dispose();
  }
});

Deno.test("streaming: loadWeights holds one tensor at a time (peak = the largest tensor, far below all)", async () => {
  const gpu = await testGpu();
  const { model, logits } = await sourceLarge("streaming");
  try {
    await inTempDir(async (dir) => {
      const { files } = await savePretrained(model, dir, { format: "xlstm", maxShardBytes: 8192 });
      const target = await xLSTMLarge.create(xLSTMLargeConfig(LARGE), { gpu, initialize: false });
      try {
        let calls = 0;
        const report = await loadWeights(target, files.slice(0, -1), { onProgress: () => calls++ });
        assert.equal(calls, report.tensors);
        assert.equal(report.tensors, target.stateDictShapes().size);
        assert.equal(report.peakHostBytes, report.largestTensorBytes);
        assert.ok(report.peakHostBytes < report.bytes / 4, `${report.peakHostBytes} of ${report.bytes} bytes`);
        assert.deepEqual(await logitsOf(gpu, target, tokenIds(LARGE.vocab_size)), logits);
      } finally {
        target.dispose();
      }
    });
  } finally {
    model.dispose();
  }
});

Deno.test("bad checkpoints: every problem is listed, each naming the file and the tensor", async () => {
  const { model } = await sourceLarge("bad checkpoints");
  try {
    await inTempDir(async (dir) => {
      await savePretrained(model, dir, { format: "xlstm" });
      const file = `${dir}/model.safetensors`;
      await rewrite(file, (t) => {
        delete t["backbone.out_norm.weight"];
        t["lm_head.weight"] = { dtype: "float32", shape: [24, 17], data: new Float32Array(24 * 17) };
        t["backbone.blocks.0.norm_ffn.weight"] = { dtype: "int32", shape: [16], data: new Int32Array(16) };
        t["extra.weight"] = { dtype: "float32", shape: [2], data: new Float32Array(2) };
        return t;
      });
      const e = await rejectsNaming(loadPretrained(dir, { gpu: await testGpu() }), CheckpointError, [
        `${dir}: missing tensor "backbone.out_norm.weight" [16]`,
        `${file}: tensor "lm_head.weight" has shape [24, 17], the model expects [24, 16]`,
        `${file}: tensor "backbone.blocks.0.norm_ffn.weight" has dtype int32`,
        `${file}: tensor "extra.weight" is not a parameter of this xLSTMLarge`,
      ]);
      assert.equal((e as CheckpointError).problems.length, 4);
    });
    await inTempDir(async (dir) => {
      await savePretrained(model, dir, { format: "hf", maxShardBytes: 8192 });
      const index = JSON.parse(await Deno.readTextFile(`${dir}/model.safetensors.index.json`));
      const last = Object.values(index.weight_map).at(-1) as string;
      using st = await SafetensorsFile.open(`${dir}/${last}`);
      const tail = st.names().at(-1)!;
      st.close();
      await Deno.truncate(`${dir}/${last}`, (await Deno.stat(`${dir}/${last}`)).size - 4);
      await rejectsNaming(loadPretrained(dir, { gpu: await testGpu() }), CheckpointError, [
        `${dir}/${last}: truncated: tensor "${tail}"`,
      ]);
      index.weight_map["lm_head.weight"] = "model-00099-of-00099.safetensors";
      await Deno.writeTextFile(`${dir}/model.safetensors.index.json`, JSON.stringify(index));
      await rejectsNaming(loadPretrained(dir, { gpu: await testGpu() }), CheckpointError, [
        `${dir}/model.safetensors.index.json: weight_map points at model-00099-of-00099.safetensors`,
        `tensor "lm_head.weight"`,
      ]);
      const config = JSON.parse(await Deno.readTextFile(`${dir}/config.json`));
      delete config.num_heads;
      await Deno.writeTextFile(`${dir}/config.json`, JSON.stringify(config));
      await rejectsNaming(loadPretrained(dir), ConfigError, ["num_heads", `${dir}/config.json`]);
    });
    await inTempDir(async (dir) => {
      await savePretrained(model, dir, { format: "xlstm" });
      await rejectsNaming(
        loadPretrained(dir, { gpu: await testGpu(), architecture: "xLSTMLMModel" }),
        CheckpointError,
        [`${dir}: holds an xLSTMLarge, not an xLSTMLMModel`],
      );
      await rejectsNaming(savePretrained(model, `${dir}/x`, { format: "xlstm", maxShardBytes: 0 }), RangeError, []);
    });
  } finally {
    model.dispose();
  }
});

Deno.test("pretrained: release the GPU", async () => {
  await closeTestGpu();
});
