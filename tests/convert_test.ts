/**
 * scripts/convert.ts: HF ⇄ NX-AI conversions (dtype, sharding) load to the same logits; a NeurIPS state_dict in the
 * sLSTM cuda layout converts to the vanilla layout (and back) exactly as spec A5.4's index table says; the command
 * line reports what it did and rejects bad input with a clear message and exit code.
 */

import assert from "node:assert/strict";
import { xLSTMLargeConfig, xLSTMLMModelConfig } from "../src/config.ts";
import { xLSTMLMModel } from "../src/models/lm_model.ts";
import { loadPretrained, savePretrained } from "../src/models/pretrained.ts";
import { xLSTMLarge } from "../src/models/xlstm_large.ts";
import { readSafetensors, SafetensorsFile, writeSafetensors } from "../src/safetensors.ts";
import { main, parseSize } from "../scripts/convert.ts";
import {
  biasToCuda,
  CELL,
  halfRoundedLogits,
  inTempDir,
  kernelToCuda,
  LARGE,
  lmConfig,
  logitsOf,
  randomize,
  tokenIds,
} from "./checkpoint_util.ts";
import { closeTestGpu, freshRng, testGpu } from "./util.ts";

/** Runs the CLI in-process; returns its exit code and printed lines. */
async function convert(...args: string[]): Promise<{ code: number; out: string }> {
  const lines: string[] = [];
  const code = await main(args, (line) => lines.push(line));
  return { code, out: lines.join("\n") };
}

Deno.test("HF (sharded) → NX-AI → HF float16 in 4 KB shards: each gives the (half-rounded) logits", async () => {
  const gpu = await testGpu();
  const model = await xLSTMLarge.create(xLSTMLargeConfig(LARGE), { gpu, seed: 1 });
  try {
    await randomize(model, freshRng("convert hf ⇄ nx-ai"));
    const logits = await logitsOf(gpu, model, tokenIds(LARGE.vocab_size));
    await inTempDir(async (dir) => {
      await savePretrained(model, `${dir}/hf`, { format: "hf", maxShardBytes: 8192 });
      const toNx = await convert("--from", `${dir}/hf`, "--to", `${dir}/nx`, "--format", "xlstm");
      assert.equal(toNx.code, 0, toNx.out);
      assert.match(toNx.out, /wrote .*model\.safetensors: \d+ tensors/);
      assert.match(toNx.out, new RegExp(`converted .* ${model.stateDictShapes().size} tensors`));
      assert.deepEqual([...Deno.readDirSync(`${dir}/nx`)].map((f) => f.name).sort(), [
        "config.yaml",
        "model.safetensors",
      ]);
      using nx = await SafetensorsFile.open(`${dir}/nx/model.safetensors`);
      assert.ok(nx.has("embedding.weight") && !nx.has("backbone.embeddings.weight"));
      const loaded = await loadPretrained(`${dir}/nx`, { gpu });
      try {
        assert.deepEqual(await logitsOf(gpu, loaded, tokenIds(LARGE.vocab_size)), logits);
      } finally {
        loaded.dispose();
      }
      const args = ["--format", "hf", "--dtype", "float16", "--shard-size", "4KB"];
      const toHf = await convert("--from", `${dir}/nx`, "--to", `${dir}/hf16`, ...args);
      assert.equal(toHf.code, 0, toHf.out);
      const index = JSON.parse(await Deno.readTextFile(`${dir}/hf16/model.safetensors.index.json`));
      const shards = new Set(Object.values(index.weight_map) as string[]);
      assert.ok(shards.size >= 3, `${shards.size} shards`);
      for (const shard of shards) {
        using st = await SafetensorsFile.open(`${dir}/hf16/${shard}`);
        assert.ok(st.names().every((n) => st.info(n).dtype === "float16"), shard);
        const bytes = st.names().reduce((n, k) => n + st.info(k).byteLength, 0);
        assert.ok(bytes <= 4000 || st.names().length === 1, `${shard}: ${bytes} bytes`);
      }
      assert.equal(JSON.parse(await Deno.readTextFile(`${dir}/hf16/config.json`)).torch_dtype, "float16");
      const half = await loadPretrained(`${dir}/hf16`, { gpu });
      try {
        const want = await halfRoundedLogits(gpu, model, tokenIds(LARGE.vocab_size));
        assert.deepEqual(await logitsOf(gpu, half, tokenIds(LARGE.vocab_size)), want, "float16 conversion");
      } finally {
        half.dispose();
      }
    });
  } finally {
    model.dispose();
  }
});

Deno.test("NeurIPS state_dict: cuda → vanilla layout (and back) exactly per spec A5.4; config names it", async () => {
  const gpu = await testGpu();
  const model = await xLSTMLMModel.create(xLSTMLMModelConfig(lmConfig("cuda")), { gpu, seed: 1 });
  try {
    await randomize(model, freshRng("convert lm cuda"));
    const cuda = await model.stateDict(); // a cuda-backend model's state_dict is in the cuda layout
    await inTempDir(async (dir) => {
      await writeSafetensors(`${dir}/lm.safetensors`, cuda);
      await Deno.writeTextFile(`${dir}/lm.yaml`, JSON.stringify(lmConfig("cuda")));
      const from = ["--from", `${dir}/lm.safetensors`, "--config", `${dir}/lm.yaml`, "--format", "xlstm"];
      assert.equal((await convert(...from, "--to", `${dir}/vanilla`)).code, 0);
      const vanilla = await readSafetensors(`${dir}/vanilla/model.safetensors`);
      // Back to cuda with the test's own index formulas: the original tensors, bit for bit.
      assert.deepEqual(kernelToCuda(vanilla[CELL.kernel], CELL.NH, CELL.DH), cuda[CELL.kernel]);
      assert.deepEqual(biasToCuda(vanilla[CELL.bias], CELL.NH, CELL.DH), cuda[CELL.bias]);
      assert.deepEqual(vanilla[CELL.kernel].shape, [CELL.NH, 4 * CELL.DH, CELL.DH]);
      assert.match(await Deno.readTextFile(`${dir}/vanilla/config.yaml`), /backend: vanilla/);
      assert.equal((await convert(...from, "--to", `${dir}/cuda`, "--slstm-layout", "cuda")).code, 0);
      const again = await readSafetensors(`${dir}/cuda/model.safetensors`);
      assert.deepEqual(again, cuda);
      const loaded = await loadPretrained(`${dir}/vanilla`, { gpu });
      try {
        assert.deepEqual(await logitsOf(gpu, loaded, tokenIds(20)), await logitsOf(gpu, model, tokenIds(20)));
      } finally {
        loaded.dispose();
      }
    });
  } finally {
    model.dispose();
  }
});

Deno.test("command line: --help, missing and bad flags, sizes, bad checkpoints, in-place conversion", async () => {
  const help = await convert("--help");
  assert.equal(help.code, 0);
  assert.match(help.out, /^Usage: deno run -A scripts\/convert\.ts --from/);
  assert.match((await convert("--from", "x")).out, /--from, --to and --format are required/);
  assert.equal((await convert("--from", "x")).code, 2);
  assert.match(
    (await convert("--from", "a", "--to", "b", "--format", "gguf")).out,
    /--format must be one of hf, xlstm/,
  );
  assert.match(
    (await convert("--from", "a", "--to", "b", "--format", "hf", "--shard-size", "5 parsecs")).out,
    /not a size/,
  );
  assert.equal((await convert("--bogus")).code, 2);
  assert.equal(parseSize("5GB"), 5e9);
  assert.equal(parseSize("2GiB"), 2 ** 31);
  assert.equal(parseSize("1.5mb"), 1.5e6);
  assert.equal(parseSize("4096"), 4096);
  await inTempDir(async (dir) => {
    const missing = await convert("--from", `${dir}/nothing`, "--to", `${dir}/out`, "--format", "hf");
    assert.equal(missing.code, 1);
    assert.match(missing.out, /nothing/);
    await Deno.writeTextFile(`${dir}/config.yaml`, JSON.stringify(lmConfig("vanilla")));
    await writeSafetensors(`${dir}/model.safetensors`, {
      "token_embedding.weight": { dtype: "int64", shape: [1], data: new BigInt64Array(1) },
    });
    const intDtype = await convert("--from", dir, "--to", `${dir}/out`, "--format", "xlstm");
    assert.equal(intDtype.code, 1);
    assert.match(intDtype.out, new RegExp(`${dir}/model.safetensors: tensor "token_embedding.weight" has dtype int64`));
    await writeSafetensors(`${dir}/model.safetensors`, {});
    const inPlace = await convert("--from", dir, "--to", dir, "--format", "xlstm");
    assert.match(inPlace.out, /is the source directory/);
    const lmToHf = await convert("--from", dir, "--to", `${dir}/out`, "--format", "hf");
    assert.equal(lmToHf.code, 1);
    assert.match(lmToHf.out, /an xLSTMLMModel has no Hugging Face layout/);
  });
});

Deno.test("convert: release the GPU", async () => {
  await closeTestGpu();
});
