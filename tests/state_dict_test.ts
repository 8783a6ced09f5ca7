/**
 * state_dict export and loading (spec A5.4, A8, E3, E11): the README configs' exact keys, shapes and counts; the
 * golden cases' parameter names; strict-loading errors; the cuda vs vanilla sLSTM layouts; round trips through
 * `loadStateDict` and through safetensors files.
 */

import assert from "node:assert/strict";
import { mLSTMLayerConfig, sLSTMLayerConfig, xLSTMBlockStackConfig, xLSTMLMModelConfig } from "../src/config.ts";
import type { Gpu } from "../src/gpu/runtime.ts";
import { type HostTensor, numel } from "../src/host_tensor.ts";
import { xLSTMBlockStack } from "../src/models/block_stack.ts";
import { xLSTMLMModel } from "../src/models/lm_model.ts";
import { mLSTMLayer } from "../src/models/mlstm_layer.ts";
import type { Module } from "../src/models/module.ts";
import { StateDictError } from "../src/models/parameters.ts";
import { sLSTMLayer } from "../src/models/slstm_layer.ts";
import { readSafetensors, SafetensorsError, writeSafetensors } from "../src/safetensors.ts";
import { Tensor } from "../src/tensor.ts";
import { README_LM_YAML, README_STACK_YAML } from "../scripts/readme_config.ts";
import { closeTestGpu, freshRng, host, type Rng, testGpu } from "./util.ts";

type StateDict = Record<string, HostTensor>;
type KeyShapes = [string, number[]][];

const GOLDEN = new URL("../../shared/golden/", import.meta.url);

/** The README mLSTM block (spec A8), keys relative to `blocks.{i}.`. */
const README_MLSTM_BLOCK: KeyShapes = [
  ["xlstm_norm.weight", [128]],
  ["xlstm.learnable_skip", [256]],
  ["xlstm.proj_up.weight", [512, 128]],
  ["xlstm.q_proj.weight", [64, 4, 4]],
  ["xlstm.k_proj.weight", [64, 4, 4]],
  ["xlstm.v_proj.weight", [64, 4, 4]],
  ["xlstm.conv1d.conv.weight", [256, 1, 4]],
  ["xlstm.conv1d.conv.bias", [256]],
  ["xlstm.mlstm_cell.igate.weight", [4, 768]],
  ["xlstm.mlstm_cell.igate.bias", [4]],
  ["xlstm.mlstm_cell.fgate.weight", [4, 768]],
  ["xlstm.mlstm_cell.fgate.bias", [4]],
  ["xlstm.mlstm_cell.outnorm.weight", [256]],
  ["xlstm.proj_down.weight", [128, 256]],
];

/** The README sLSTM block (spec A8); only the recurrent kernel's shape depends on the backend. */
function readmeSlstmBlock(backend: "cuda" | "vanilla"): KeyShapes {
  return [
    ["xlstm_norm.weight", [128]],
    ["xlstm.conv1d.conv.weight", [128, 1, 4]],
    ["xlstm.conv1d.conv.bias", [128]],
    ["xlstm.fgate.weight", [4, 32, 32]],
    ["xlstm.igate.weight", [4, 32, 32]],
    ["xlstm.zgate.weight", [4, 32, 32]],
    ["xlstm.ogate.weight", [4, 32, 32]],
    ["xlstm.slstm_cell._recurrent_kernel_", backend === "cuda" ? [4, 32, 128] : [4, 128, 32]],
    ["xlstm.slstm_cell._bias_", [512]],
    ["xlstm.group_norm.weight", [128]],
    ["ffn_norm.weight", [128]],
    ["ffn.proj_up.weight", [384, 128]],
    ["ffn.proj_down.weight", [128, 192]],
  ];
}

/** The README stack's state_dict: block map 0,1,0,0,0,0,0, then the post-blocks norm. */
function readmeStackKeys(backend: "cuda" | "vanilla"): KeyShapes {
  const blocks = [0, 1, 2, 3, 4, 5, 6].flatMap((i) =>
    (i === 1 ? readmeSlstmBlock(backend) : README_MLSTM_BLOCK).map((
      [k, s],
    ): [string, number[]] => [`blocks.${i}.${k}`, s])
  );
  return [...blocks, ["post_blocks_norm.weight", [128]]];
}

const keyShapes = (sd: StateDict): KeyShapes => Object.entries(sd).map(([k, t]) => [k, t.shape]);
const count = (entries: KeyShapes, prefix = ""): number =>
  entries.filter(([k]) => k.startsWith(prefix)).reduce((n, [, s]) => n + numel(s), 0);

/** Random values for every key of `sd` (no zeros, so every parameter matters); tied names get the same values. */
function randomLike(rng: Rng, sd: StateDict, tied: [string, string][] = []): StateDict {
  const out: StateDict = {};
  for (const [k, t] of Object.entries(sd)) out[k] = host([...t.shape], rng.normals(numel(t.shape), 0.3));
  for (const [alias, target] of tied) out[alias] = out[target];
  return out;
}

/** Asserts two state_dicts hold the same keys, in the same order, with bit-identical values. */
function assertSameStateDict(got: StateDict, want: StateDict, what: string): void {
  assert.deepEqual(Object.keys(got), Object.keys(want), `${what}: keys`);
  for (const [k, t] of Object.entries(want)) {
    assert.deepEqual(got[k].shape, t.shape, `${what}: shape of ${k}`);
    assert.deepEqual(got[k].data, Float32Array.from(t.data as Float32Array), `${what}: values of ${k}`);
  }
}

/** A small mixed stack with a cuda-layout sLSTM block (every kind of parameter, tiny shapes). */
const SMALL_STACK = {
  mlstm_block: { mlstm: { num_heads: 2, conv1d_kernel_size: 2, qkv_proj_blocksize: 4 } },
  slstm_block: { slstm: { num_heads: 2, backend: "cuda", conv1d_kernel_size: 2 }, feedforward: { proj_factor: 1.3 } },
  context_length: 6,
  num_blocks: 2,
  embedding_dim: 16,
  slstm_at: [1],
};

/** The stack's output for `x`, read back. */
async function stackOutput(model: xLSTMBlockStack, x: HostTensor): Promise<Float32Array> {
  const input = Tensor.fromHost(model.gpu, x);
  const y = await model.forward(input);
  const data = (await y.toHost()).data as Float32Array;
  y.dispose();
  input.dispose();
  return data;
}

Deno.test("README stack: spec A8 keys in order, shapes, 764,848 parameters (cuda and vanilla layouts)", async () => {
  const gpu = await testGpu();
  for (const backend of ["cuda", "vanilla"] as const) {
    const yaml = README_STACK_YAML.replace("backend: cuda", `backend: ${backend}`);
    const stack = await xLSTMBlockStack.create(xLSTMBlockStackConfig(yaml), { gpu, seed: 1 });
    try {
      const entries = keyShapes(await stack.stateDict());
      assert.deepEqual(entries, readmeStackKeys(backend), `${backend} state_dict keys and shapes`);
      assert.equal(stack.numParameters(), 764_848);
      assert.equal(count(entries), 764_848);
      assert.equal(count(entries, "blocks.0."), 109_448, "mLSTM block");
      assert.equal(count(entries, "blocks.1."), 108_032, "sLSTM block");
      assert.deepEqual([...stack.namedParameters()].map(([k]) => k), entries.map(([k]) => k));
    } finally {
      stack.dispose();
    }
  }
});

Deno.test("README LM: 100 state_dict keys, 13,642,672 parameters; tied head in state_dict only", async () => {
  const gpu = await testGpu();
  const lm = await xLSTMLMModel.create(xLSTMLMModelConfig(README_LM_YAML), { gpu, seed: 1 });
  try {
    const entries = keyShapes(await lm.stateDict());
    const want: KeyShapes = [
      ...readmeStackKeys("cuda").map(([k, s]): [string, number[]] => [`xlstm_block_stack.${k}`, s]),
      ["token_embedding.weight", [50304, 128]],
      ["lm_head.weight", [50304, 128]],
    ];
    assert.deepEqual(entries, want);
    assert.equal(entries.length, 100);
    assert.equal(lm.numParameters(), 13_642_672);
    assert.equal([...lm.namedParameters()].length, 100);
  } finally {
    lm.dispose();
  }
  // Tied: the head is the embedding, so named_parameters() lists it once (spec A6, A7); its state_dict entry is E11's.
  const tied = await xLSTMLMModel.create(xLSTMLMModelConfig(`${README_LM_YAML}tie_weights: true\n`), { gpu, seed: 1 });
  try {
    const names = [...tied.namedParameters({ removeDuplicate: true })].map(([k]) => k);
    assert.equal(names.length, 99);
    assert.ok(names.includes("token_embedding.weight") && !names.includes("lm_head.weight"));
    // Without deduplication both tied names are listed, sharing one tensor (and so one summed gradient).
    const all = new Map(tied.namedParameters());
    assert.equal(all.size, 100);
    assert.equal(all.get("lm_head.weight"), all.get("token_embedding.weight"));
    assert.equal(tied.numParameters(), 13_642_672 - 50304 * 128);
  } finally {
    tied.dispose();
  }
});

/** Our model for a golden sidecar's reference class and config; `prefix` selects its keys (a cell in a layer). */
async function goldenModel(
  cls: string,
  config: Record<string, unknown>,
  gpu: Gpu,
): Promise<{ model: Module; prefix: string } | null> {
  switch (cls) {
    case "xlstm.xLSTMBlockStack":
      return { model: await xLSTMBlockStack.create(xLSTMBlockStackConfig(config), { gpu }), prefix: "" };
    case "xlstm.xLSTMLMModel":
      return { model: await xLSTMLMModel.create(xLSTMLMModelConfig(config), { gpu }), prefix: "" };
    case "xlstm.mLSTMLayer":
      return { model: await mLSTMLayer.create(mLSTMLayerConfig(config), { gpu }), prefix: "" };
    case "xlstm.sLSTMLayer":
      return { model: await sLSTMLayer.create(sLSTMLayerConfig(config), { gpu }), prefix: "" };
    case "xlstm.sLSTMCell": {
      const { hidden_size, ...rest } = config;
      const cfg = sLSTMLayerConfig({ ...rest, embedding_dim: hidden_size });
      return { model: await sLSTMLayer.create(cfg, { gpu }), prefix: "slstm_cell." };
    }
    default:
      return null; // the mLSTM cell function has no parameters; xLSTMLarge is not ported yet
  }
}

Deno.test("golden cases: param.* names are our state_dict keys in order; the values load and read back exactly", async () => {
  const gpu = await testGpu();
  const manifest = JSON.parse(await Deno.readTextFile(new URL("manifest.json", GOLDEN)));
  let checked = 0;
  for (const [name, files] of Object.entries(manifest.cases) as [string, { sidecar: string; tensors: string }][]) {
    const side = JSON.parse(await Deno.readTextFile(new URL(files.sidecar, GOLDEN)));
    const built = await goldenModel(side.model_class, side.config, gpu);
    if (!built) continue;
    const { model, prefix } = built;
    try {
      const params = Object.entries(side.tensors as Record<string, { shape: number[] }>)
        .filter(([k]) => k.startsWith("param."))
        .map(([k, t]): [string, number[]] => [prefix + k.slice("param.".length), t.shape]);
      const ours = keyShapes(await model.stateDict()).filter(([k]) => k.startsWith(prefix));
      assert.deepEqual(ours, params, `${name}: state_dict keys and shapes vs the sidecar's param.*`);
      if (prefix) continue; // the bare cell has no loader of its own
      const golden = await readSafetensors(new URL(files.tensors, GOLDEN));
      const record = Object.fromEntries(params.map(([k]) => [k, golden[`param.${k}`]]));
      await model.loadStateDict(record);
      assertSameStateDict(await model.stateDict(), record, `${name} read back`);
      checked++;
    } finally {
      model.dispose();
    }
  }
  assert.ok(checked >= 9, `only ${checked} golden models checked`);
});

/** A small tied LM for the loader's error cases. */
async function smallTiedLm(gpu: Gpu): Promise<xLSTMLMModel> {
  const cfg = xLSTMLMModelConfig({ ...SMALL_STACK, vocab_size: 20, tie_weights: true });
  return await xLSTMLMModel.create(cfg, { gpu, seed: 3 });
}

/** Asserts that loading `record` fails with a StateDictError whose message contains every fragment. */
async function assertRejected(model: Module, record: StateDict, fragments: string[], options = {}): Promise<void> {
  await assert.rejects(model.loadStateDict(record, options), (e: unknown) => {
    assert.ok(e instanceof StateDictError, `expected a StateDictError, got ${e}`);
    for (const f of fragments) assert.ok(e.message.includes(f), `message lacks ${JSON.stringify(f)}:\n${e.message}`);
    return true;
  });
}

Deno.test("strict loading: missing, unexpected, wrong shape, integer and conflicting tied tensors are rejected", async () => {
  const gpu = await testGpu();
  const rng = freshRng("state_dict strict");
  const lm = await smallTiedLm(gpu);
  try {
    const before = await lm.stateDict();
    const tied: [string, string][] = [["lm_head.weight", "token_embedding.weight"]];
    const good = randomLike(rng, before, tied);
    const missing = "xlstm_block_stack.blocks.0.xlstm.learnable_skip";
    const reshaped = "xlstm_block_stack.blocks.1.xlstm.slstm_cell._recurrent_kernel_";
    const integer = "xlstm_block_stack.post_blocks_norm.weight";
    const int64 = "xlstm_block_stack.blocks.0.xlstm.mlstm_cell.fgate.bias";
    const { [missing]: _dropped, ...withoutOne } = good;
    const badShape = host([2, 32, 8], new Float32Array(512)); // the vanilla layout of this cuda-layout kernel
    const ints: HostTensor = { dtype: "int32", shape: [16], data: new Int32Array(16) };
    const longs: HostTensor = { dtype: "int64", shape: [2], data: new BigInt64Array(2) };
    const extra = host([3], [1, 2, 3]);

    await assertRejected(lm, withoutOne, [`missing key ${missing}`]);
    await assertRejected(lm, { ...good, "blocks.9.extra": extra }, ["unexpected key blocks.9.extra"]);
    await assertRejected(lm, { ...good, [reshaped]: badShape }, [reshaped, "[2, 32, 8]", "[2, 8, 32]"]);
    await assertRejected(lm, { ...good, [integer]: ints }, [integer, "int32"]);
    await assertRejected(lm, { ...good, [int64]: longs }, [int64, "int64"]);
    const otherHead = host([20, 16], rng.normals(320));
    await assertRejected(lm, { ...good, "lm_head.weight": otherHead }, ["lm_head.weight", "token_embedding.weight"]);
    // All at once: every problem is named, and nothing was written by any failed load.
    const everything = { ...withoutOne, "blocks.9.extra": extra, [reshaped]: badShape, [integer]: ints };
    await assertRejected(lm, everything, [missing, "blocks.9.extra", reshaped, integer]);
    assertSameStateDict(await lm.stateDict(), before, "after failed loads");
    // Shapes are checked even when not strict, as in PyTorch.
    await assertRejected(lm, { ...good, [reshaped]: badShape }, [reshaped], { strict: false });

    // Not strict: unknown keys are ignored, missing ones keep their values.
    await lm.loadStateDict({ ...withoutOne, "blocks.9.extra": extra }, { strict: false });
    assertSameStateDict(await lm.stateDict(), { ...good, [missing]: before[missing] }, "non-strict load");
    // A tied pair given once sets both names.
    await lm.loadStateDict({ "lm_head.weight": otherHead }, { strict: false });
    const after = await lm.stateDict();
    assert.deepEqual(after["token_embedding.weight"].data, otherHead.data);
    assert.deepEqual(after["lm_head.weight"].data, otherHead.data);
    // The strict full load works and reads back exactly.
    await lm.loadStateDict(good);
    assertSameStateDict(await lm.stateDict(), good, "strict load");
  } finally {
    lm.dispose();
  }
});

/**
 * Spec A5.4, written out index by index: the cuda recurrent kernel `[h, d_in, g·DH + d_out]` is the vanilla
 * `[h, g·DH + d_out, d_in]`, and the cuda bias `[h·4DH + g·DH + d]` is the vanilla `[g·H + h·DH + d]`.
 */
function vanillaToCuda(sd: StateDict, NH: number, DH: number): StateDict {
  const H = NH * DH, out: StateDict = { ...sd };
  const R = sd["slstm_cell._recurrent_kernel_"].data as Float32Array, b = sd["slstm_cell._bias_"].data as Float32Array;
  const Rc = new Float32Array(R.length), bc = new Float32Array(b.length);
  for (let h = 0; h < NH; h++) {
    for (let g = 0; g < 4; g++) {
      for (let d = 0; d < DH; d++) {
        bc[h * 4 * DH + g * DH + d] = b[g * H + h * DH + d];
        for (let i = 0; i < DH; i++) Rc[(h * DH + i) * 4 * DH + g * DH + d] = R[(h * 4 * DH + g * DH + d) * DH + i];
      }
    }
  }
  out["slstm_cell._recurrent_kernel_"] = { dtype: "float32", shape: [NH, DH, 4 * DH], data: Rc };
  out["slstm_cell._bias_"] = { dtype: "float32", shape: [4 * H], data: bc };
  return out;
}

/** The layer's output and final sLSTM state for `x`, read back. */
async function slstmOutputs(layer: sLSTMLayer, x: HostTensor): Promise<Float32Array[]> {
  const input = Tensor.fromHost(layer.gpu, x);
  const [y, state] = await layer.forward(input);
  const outs = [y, state.slstm_state, ...state.conv_state ?? []];
  const data = (await Tensor.toHostAll(outs)).map((t) => t.data as Float32Array);
  for (const t of [input, ...outs]) t.dispose();
  return data;
}

Deno.test("sLSTM cuda vs vanilla state_dict layouts (spec A5.4): permuted storage, identical forward", async () => {
  const gpu = await testGpu();
  const rng = freshRng("state_dict cuda layout");
  const NH = 2, DH = 4, H = NH * DH;
  const cfg = (backend: string) =>
    sLSTMLayerConfig({
      embedding_dim: H,
      num_heads: NH,
      conv1d_kernel_size: 2,
      backend,
      recurrent_weight_init: "standard",
    });
  const vanilla = await sLSTMLayer.create(cfg("vanilla"), { gpu, seed: 1 });
  const cuda = await sLSTMLayer.create(cfg("cuda"), { gpu, seed: 1 });
  try {
    const vanillaSd = randomLike(rng, await vanilla.stateDict());
    await vanilla.loadStateDict(vanillaSd);
    const cudaSd = vanillaToCuda(vanillaSd, NH, DH);
    await cuda.loadStateDict(cudaSd);
    // Saved from the cuda-configured model: exactly the permuted layout.
    assertSameStateDict(await cuda.stateDict(), cudaSd, "cuda state_dict");
    assert.deepEqual(cudaSd["slstm_cell._recurrent_kernel_"].shape, [NH, DH, 4 * DH]);
    const x = host([2, 5, H], rng.normals(2 * 5 * H));
    const want = await slstmOutputs(vanilla, x);
    assert.deepEqual(await slstmOutputs(cuda, x), want, "cuda-layout model gives the vanilla model's outputs");

    // The silent bug of E3: a vanilla bias (same shape) loaded unpermuted into the cuda model changes the outputs.
    await cuda.loadStateDict({ ...cudaSd, "slstm_cell._bias_": vanillaSd["slstm_cell._bias_"] });
    assert.notDeepEqual((await slstmOutputs(cuda, x))[0], want[0]);
    // A vanilla recurrent kernel is refused by shape.
    await assertRejected(cuda, vanillaSd, ["slstm_cell._recurrent_kernel_", "[2, 16, 4]", "[2, 4, 16]"]);
  } finally {
    vanilla.dispose();
    cuda.dispose();
  }
});

Deno.test("stateDict → loadStateDict and → safetensors file → new model: identical outputs", async () => {
  const gpu = await testGpu();
  const rng = freshRng("state_dict round trip");
  const cfg = xLSTMBlockStackConfig(SMALL_STACK);
  const source = await xLSTMBlockStack.create(cfg, { gpu, seed: 1 });
  const copy = await xLSTMBlockStack.create(cfg, { gpu, seed: 2 });
  const fromFile = await xLSTMBlockStack.create(cfg, { gpu, seed: 3 });
  const dir = await Deno.makeTempDir({ prefix: "state_dict_test_" });
  try {
    await source.loadStateDict(randomLike(rng, await source.stateDict()));
    const sd = await source.stateDict();
    const x = host([2, 6, 16], rng.normals(2 * 6 * 16));
    const want = await stackOutput(source, x);
    assert.notDeepEqual(await stackOutput(copy, x), want, "differently seeded models must differ");

    await copy.loadStateDict(sd);
    assertSameStateDict(await copy.stateDict(), sd, "copy");
    assert.deepEqual(await stackOutput(copy, x), want);

    const path = `${dir}/stack.safetensors`;
    await writeSafetensors(path, sd);
    await fromFile.loadStateDict(await readSafetensors(path));
    assertSameStateDict(await fromFile.stateDict(), sd, "from file");
    assert.deepEqual(await stackOutput(fromFile, x), want);

    // A truncated file names the file and the tensor whose bytes are missing (the last one in the data region).
    const bytes = await Deno.readFile(path);
    const headerLength = Number(new DataView(bytes.buffer).getBigUint64(0, true));
    const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + headerLength)));
    const last = Object.entries(header as Record<string, { data_offsets: number[] }>)
      .reduce((a, b) => b[1].data_offsets[1] > a[1].data_offsets[1] ? b : a)[0];
    await Deno.truncate(path, bytes.length - 6);
    await assert.rejects(readSafetensors(path), (e: unknown) => {
      assert.ok(e instanceof SafetensorsError, `expected a SafetensorsError, got ${e}`);
      assert.ok(e.message.includes(path) && e.message.includes(last), e.message);
      assert.equal(e.tensor, last);
      return true;
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
    for (const m of [source, copy, fromFile]) m.dispose();
  }
});

Deno.test("state_dict: release the GPU", async () => {
  await closeTestGpu();
});
