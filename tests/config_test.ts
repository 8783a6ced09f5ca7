import assert from "node:assert/strict";
import {
  blockConfigs,
  ConfigError,
  FeedForwardConfig,
  mLSTMBlockConfig,
  mLSTMLayerConfig,
  readConfigFile,
  sLSTMBlockConfig,
  sLSTMCellConfig,
  sLSTMLayerConfig,
  xLSTMBlockStackConfig,
  xLSTMLargeConfig,
  xLSTMLMModelConfig,
} from "../src/config.ts";

import { README_LM_YAML, README_STACK_YAML } from "../scripts/readme_config.ts";

const GOLDEN = new URL("../../shared/golden/", import.meta.url);

type Dict = Record<string, unknown>;

/** The golden per-block dump is the xLSTMBlockConfig the block builds; give ours the same shape. */
function asXlstmBlock(block: ReturnType<typeof blockConfigs>[number]): Dict {
  const c = block.config;
  return block.kind === "mlstm"
    ? {
      mlstm: block.config.mlstm,
      slstm: null,
      feedforward: null,
      _num_blocks: c._num_blocks,
      _block_idx: c._block_idx,
    }
    : {
      mlstm: null,
      slstm: block.config.slstm,
      feedforward: block.config.feedforward,
      _num_blocks: c._num_blocks,
      _block_idx: c._block_idx,
    };
}

/**
 * Spec G2: the golden dumps were taken after cell construction, where the vanilla cell rewrites
 * internal_input_shape to "SBGNH"; pure config resolution (ours) gives "SBNGH". Undo that one rewrite.
 */
function withoutVanillaRewrite(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(withoutVanillaRewrite);
  if (value === null || typeof value !== "object") return value;
  const out: Dict = Object.fromEntries(Object.entries(value).map(([k, v]) => [k, withoutVanillaRewrite(v)]));
  if (out.backend === "vanilla" && out.internal_input_shape === "SBGNH") out.internal_input_shape = "SBNGH";
  return out;
}

const FACTORIES: Record<string, (input: unknown) => unknown> = {
  xLSTMBlockStackConfig,
  xLSTMLMModelConfig,
  mLSTMLayerConfig,
  sLSTMLayerConfig,
  sLSTMCellConfig,
  xLSTMLargeConfig,
};

async function goldenSidecars(): Promise<Array<[string, Dict]>> {
  const out: Array<[string, Dict]> = [];
  for await (const entry of Deno.readDir(GOLDEN)) {
    if (!entry.name.endsWith(".json") || entry.name.endsWith(".init_stats.json") || entry.name === "manifest.json") {
      continue;
    }
    out.push([entry.name, JSON.parse(await Deno.readTextFile(new URL(entry.name, GOLDEN)))]);
  }
  return out.sort(([a], [b]) => a.localeCompare(b));
}

Deno.test("golden sidecars: config resolves to config_resolved_after_post_init, top level and per block", async () => {
  const sidecars = await goldenSidecars();
  assert.ok(sidecars.length >= 13, `expected the 13 golden cases, found ${sidecars.length}`);
  let compared = 0;
  for (const [name, side] of sidecars) {
    const cls = side.config_class as string | undefined;
    if (cls === undefined) {
      assert.equal(side.model_class, "function", `${name}: only the kernel-level case has no config class`);
      continue;
    }
    const factory = FACTORIES[cls];
    assert.ok(factory, `${name}: no factory for ${cls}`);
    const input = structuredClone(side.config);
    const got = factory(input);
    assert.deepEqual(input, side.config, `${name}: input was mutated`);
    const resolved = side.config_resolved_after_post_init as { top_level: Dict; per_block?: Dict[] } | undefined;
    if (resolved === undefined) {
      // xLSTMLarge has no __post_init__: every given key is kept verbatim
      for (const [k, v] of Object.entries(side.config as Dict)) assert.deepEqual((got as Dict)[k], v, `${name}: ${k}`);
      continue;
    }
    assert.deepEqual(got, withoutVanillaRewrite(resolved.top_level), `${name}: top level`);
    compared++;
    if (resolved.per_block) {
      const blocks = blockConfigs(got as xLSTMBlockStackConfig).map(asXlstmBlock);
      assert.deepEqual(blocks, withoutVanillaRewrite(resolved.per_block), `${name}: per block`);
    }
  }
  assert.equal(compared, 10, "every sidecar with a resolved dump (all but the kernel case and xlstm_large*)");
});

Deno.test("golden xlstm_large: defaults and derived dims", async () => {
  const side = JSON.parse(await Deno.readTextFile(new URL("xlstm_large.json", GOLDEN)));
  const cfg = xLSTMLargeConfig(side.config);
  assert.equal(cfg.ffn_proj_factor, 2.6667);
  assert.equal(cfg.gate_soft_cap, 15);
  assert.equal(cfg.output_logit_soft_cap, 30);
  assert.equal(cfg.weight_mode, "single");
  assert.equal(cfg.norm_eps, 1e-6);
  // E 64, NH 4: qk 32 (DHQK 8), v 64 (DHV 16), ffn: 64 × 2.6667 = 170.67 -> 192
  assert.deepEqual([cfg.qk_dim, cfg.qk_head_dim, cfg.v_dim, cfg.v_head_dim, cfg.ffn_dim], [32, 8, 64, 16, 192]);
  // the float64 overrides of the golden runs are accepted too
  assert.equal(xLSTMLargeConfig({ ...side.config, ...side.config_float64_overrides }).inference_state_dtype, "float64");
});

Deno.test("README stack YAML loads unchanged and resolves like the reference", () => {
  const cfg = xLSTMBlockStackConfig(README_STACK_YAML);
  assert.equal(cfg._block_map, "0,1,0,0,0,0,0");
  assert.deepEqual(cfg.slstm_at, [1]);
  assert.equal(cfg.mlstm_block?.mlstm._inner_embedding_dim, 256);
  assert.equal(cfg.mlstm_block?.mlstm.context_length, 256);
  assert.equal(cfg.slstm_block?.slstm.hidden_size, 128);
  assert.equal(cfg.slstm_block?.slstm.backend, "cuda");
  // E18: the stack-level FFN template is never given a width
  assert.equal(cfg.slstm_block?.feedforward?.embedding_dim, -1);
  assert.ok(Object.is(cfg.slstm_block?.feedforward?._proj_up_dim, 0), "_proj_up_dim is +0, not -0");

  const blocks = blockConfigs(cfg);
  assert.deepEqual(blocks.map((b) => b.kind), ["mlstm", "slstm", "mlstm", "mlstm", "mlstm", "mlstm", "mlstm"]);
  assert.deepEqual(blocks.map((b) => b.config._block_idx), [0, 1, 2, 3, 4, 5, 6]);
  const s = blocks[1];
  assert.ok(s.kind === "slstm");
  assert.equal(s.config.slstm._block_idx, 1);
  assert.equal(s.config.slstm._num_blocks, 7);
  assert.deepEqual(
    [s.config.feedforward?.embedding_dim, s.config.feedforward?._proj_up_dim, s.config.feedforward?._num_blocks],
    [128, 192, 7],
  );
});

Deno.test("README LM YAML (stack + vocab_size: 50304)", () => {
  const cfg = xLSTMLMModelConfig(README_LM_YAML);
  assert.equal(cfg.vocab_size, 50304);
  assert.equal(cfg.tie_weights, false);
  assert.equal(cfg.weight_decay_on_embedding, false);
  assert.equal(cfg.add_embedding_dropout, false);
  assert.equal(cfg._block_map, "0,1,0,0,0,0,0");
  assert.equal(blockConfigs(cfg).length, 7);
});

Deno.test("parity configs of spec D3 (model section)", () => {
  const model = (mlstm: string, slstm: string, at: string) => `
num_blocks: 2
embedding_dim: 64
mlstm_block: ${mlstm}
slstm_block: ${slstm}
slstm_at: ${at}
context_length: 256
vocab_size: 3
`;
  const cases: Array<[string, string, string, string, string[]]> = [
    ["xlstm01", "{mlstm: {num_heads: 1}}", "{slstm: {num_heads: 1}}", "[0, 1]", ["slstm", "slstm"]],
    ["xlstm10", "{mlstm: {num_heads: 1}}", "{}", "[]", ["mlstm", "mlstm"]],
    ["xlstm11", "{mlstm: {num_heads: 1}}", "{slstm: {num_heads: 1}}", "[1]", ["mlstm", "slstm"]],
  ];
  for (const [name, mlstm, slstm, at, kinds] of cases) {
    const cfg = xLSTMLMModelConfig(model(mlstm, slstm, at));
    const blocks = blockConfigs(cfg);
    assert.deepEqual(blocks.map((b) => b.kind), kinds, name);
    assert.equal(cfg.mlstm_block?.mlstm._inner_embedding_dim, 128, name);
    assert.equal(cfg.mlstm_block?.mlstm.num_heads, 1, name);
    assert.equal(cfg.slstm_block?.slstm.backend, "cuda", name);
    assert.equal(cfg.slstm_block?.slstm.bias_init, "powerlaw_blockdependent", name);
    for (const b of blocks) {
      if (b.kind === "slstm") {
        assert.equal(b.config.slstm.num_heads, 1, name);
        assert.equal(b.config.feedforward?._proj_up_dim, 128, name);
        assert.equal(b.config.feedforward?.act_fn, "gelu", name);
      }
    }
  }
  // xLSTM[1:0] keeps its (unused) default sLSTM template
  assert.equal(xLSTMLMModelConfig(model(cases[1][1], "{}", "[]")).slstm_block?.slstm.num_heads, 4);
});

Deno.test("A2.1 derived-dim examples", () => {
  assert.equal(FeedForwardConfig({ embedding_dim: 128, proj_factor: 1.3 })._proj_up_dim, 192);
  assert.equal(FeedForwardConfig({ embedding_dim: 16, proj_factor: 2 })._proj_up_dim, 64);
  assert.equal(mLSTMLayerConfig({ embedding_dim: 128 })._inner_embedding_dim, 256);
  assert.equal(mLSTMLayerConfig({ embedding_dim: 16 })._inner_embedding_dim, 64);
  assert.equal(FeedForwardConfig({ embedding_dim: 128, round_proj_up_dim_up: false })._proj_up_dim, 128);
  assert.ok(Object.is(mLSTMLayerConfig()._inner_embedding_dim, 0), "E = -1 gives +0");
});

Deno.test("xLSTM-7b dims for ffn_proj_factor 2.667 and 2.6667", () => {
  for (const ffn_proj_factor of [2.667, 2.6667]) {
    const cfg = xLSTMLargeConfig({
      embedding_dim: 4096,
      num_heads: 8,
      num_blocks: 32,
      vocab_size: 50304,
      ffn_proj_factor,
    });
    assert.deepEqual([cfg.qk_dim, cfg.qk_head_dim, cfg.v_dim, cfg.v_head_dim, cfg.ffn_dim], [
      2048,
      256,
      4096,
      512,
      10944,
    ]);
  }
});

Deno.test("propagation: bias only to mLSTM, dropout not to the FFN (E18)", () => {
  const cfg = xLSTMBlockStackConfig({
    mlstm_block: {},
    slstm_block: { feedforward: { dropout: 0.2 } },
    num_blocks: 2,
    slstm_at: [1],
    bias: true,
    dropout: 0.1,
  });
  assert.equal(cfg.mlstm_block?.mlstm.bias, true);
  assert.equal(cfg.mlstm_block?.mlstm.dropout, 0.1);
  assert.equal(cfg.slstm_block?.slstm.dropout, 0.1);
  assert.ok(!("bias" in (cfg.slstm_block?.slstm ?? {})), "sLSTM layer has no bias field");
  const [, block] = blockConfigs(cfg);
  assert.ok(block.kind === "slstm");
  assert.equal(block.config.feedforward?.bias, false);
  assert.equal(block.config.feedforward?.dropout, 0.2);
});

Deno.test("stack defaults: no mlstm_block means all sLSTM; empty dicts mean default templates", () => {
  const all = xLSTMBlockStackConfig({ slstm_block: {}, num_blocks: 3, slstm_at: [0] });
  assert.deepEqual(all.slstm_at, [0, 1, 2]);
  assert.equal(all._block_map, "1,1,1");
  assert.equal(
    xLSTMBlockStackConfig({ mlstm_block: {}, num_blocks: 2, slstm_block: {}, slstm_at: "all" })._block_map,
    "1,1",
  );
  const m = xLSTMBlockStackConfig({ mlstm_block: {} });
  assert.equal(m._block_map, "0");
  assert.equal(m.slstm_block, null);
  assert.equal(m.embedding_dim, 128);
  assert.equal(xLSTMBlockStackConfig({ mlstm_block: {}, slstm_block: null }).slstm_block, null);
  assert.equal(sLSTMBlockConfig({ feedforward: null }).feedforward, null);
  assert.equal(sLSTMBlockConfig({}).feedforward?.act_fn, "gelu");
});

Deno.test("standalone block configs copy their null _num_blocks/_block_idx into the layer, like the reference", () => {
  assert.equal(mLSTMBlockConfig({ mlstm: { _num_blocks: 5 } }).mlstm._num_blocks, null);
  const s = sLSTMBlockConfig({ _block_idx: 2, _num_blocks: 4 });
  assert.deepEqual([s.slstm._block_idx, s.slstm._num_blocks], [2, 4]);
  assert.equal(s.feedforward?._num_blocks, 1);
});

Deno.test("sLSTM cell post-init: dtype chain, num_states, num_heads <= 0", () => {
  const c = sLSTMCellConfig({ hidden_size: 8, dtype: "float16", dtype_b: null, num_heads: 0, function: "lstm" });
  assert.deepEqual(
    [c.dtype_b, c.dtype_a, c.dtype_r, c.dtype_w, c.dtype_s, c.dtype_g],
    ["float16", "float16", "float16", "float16", "float16", "float16"],
  );
  assert.equal(c.num_states, 2);
  assert.equal(c.num_heads, 1);
  const d = sLSTMCellConfig({ dtype: "float32", dtype_w: "bfloat16", dtype_r: "float16" });
  assert.deepEqual([d.dtype_b, d.dtype_a, d.dtype_s, d.dtype_g], ["float32", "float32", "bfloat16", "float16"]);
});

Deno.test("inputs are never mutated; outputs are fresh and frozen; resolved configs round-trip", () => {
  const deepFreeze = <T>(v: T): T => {
    if (typeof v === "object" && v !== null) {
      Object.values(v).forEach(deepFreeze);
      Object.freeze(v);
    }
    return v;
  };
  const input = deepFreeze(JSON.parse(JSON.stringify({
    mlstm_block: { mlstm: { num_heads: 4 } },
    slstm_block: { slstm: { constants: { A: 1 } }, feedforward: {} },
    num_blocks: 3,
    slstm_at: [1],
    vocab_size: 10,
  })));
  const snapshot = structuredClone(input);
  const cfg = xLSTMLMModelConfig(input); // frozen input: any write would throw
  assert.deepEqual(input, snapshot);
  assert.notEqual(cfg.slstm_at, input.slstm_at);
  assert.notEqual(cfg.slstm_block?.slstm.constants, input.slstm_block.slstm.constants);
  assert.ok(Object.isFrozen(cfg) && Object.isFrozen(cfg.slstm_block?.feedforward) && Object.isFrozen(cfg.slstm_at));
  blockConfigs(cfg);
  assert.equal(cfg.slstm_block?._block_idx, null, "blockConfigs leaves the template alone");
  assert.deepEqual(xLSTMLMModelConfig(cfg), cfg);
  assert.deepEqual(xLSTMLMModelConfig({ ...cfg, dropout: 0.5 }).mlstm_block?.mlstm.dropout, 0.5);
  const large = xLSTMLargeConfig({ embedding_dim: 64, num_heads: 4, num_blocks: 1, vocab_size: 8 });
  assert.deepEqual(xLSTMLargeConfig(large), large);
  assert.equal(xLSTMLargeConfig({ ...large, embedding_dim: 128 }).qk_dim, 64, "derived dims are recomputed");
  // defaults are not shared between results
  assert.notEqual(sLSTMCellConfig().constants, sLSTMCellConfig().constants);
});

Deno.test("readConfigFile reads YAML and JSON", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/stack.yaml`, README_STACK_YAML);
    await Deno.writeTextFile(`${dir}/lm.json`, JSON.stringify({ model: { vocab_size: 3, mlstm_block: {} } }));
    await Deno.writeTextFile(`${dir}/list.yaml`, "- 1\n- 2\n");
    assert.equal(xLSTMBlockStackConfig(await readConfigFile(`${dir}/stack.yaml`))._block_map, "0,1,0,0,0,0,0");
    const doc = await readConfigFile(new URL(`file://${dir}/lm.json`));
    assert.equal(xLSTMLMModelConfig(doc.model).vocab_size, 3);
    await assert.rejects(readConfigFile(`${dir}/list.yaml`), /must hold a mapping/);
    assert.throws(() => xLSTMBlockStackConfig("a: [1"), ConfigError);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("errors name the key path and the allowed values or the rule", () => {
  const stack = (extra: Dict): Dict => ({
    mlstm_block: { mlstm: {} },
    slstm_block: { slstm: {}, feedforward: {} },
    num_blocks: 4,
    embedding_dim: 64,
    slstm_at: [1],
    ...extra,
  });
  const slstm = (over: Dict) => xLSTMBlockStackConfig(stack({ slstm_block: { slstm: over } }));
  const cases: Array<[string, () => unknown, RegExp]> = [
    [
      "unknown key",
      () => xLSTMBlockStackConfig(stack({ mlstm_block: { mlstm: { num_head: 4 } } })),
      /^mlstm_block\.mlstm\.num_head: unknown key; allowed keys: proj_factor, .*num_heads/,
    ],
    ["unknown key (top level)", () => xLSTMBlockStackConfig({ vocab_size: 3 }), /^vocab_size: unknown key/],
    ["mLSTM _block_idx is not a field (G1)", () => mLSTMLayerConfig({ _block_idx: 0 }), /^_block_idx: unknown key/],
    [
      "int vs string",
      () => xLSTMBlockStackConfig(stack({ num_blocks: "4" })),
      /^num_blocks: expected an integer, got "4"/,
    ],
    ["int vs float", () => mLSTMLayerConfig({ num_heads: 1.5 }), /^num_heads: expected an integer, got 1\.5/],
    [
      "number vs bool",
      () => FeedForwardConfig({ proj_factor: true }),
      /^proj_factor: expected a finite number, got true/,
    ],
    ["NaN", () => FeedForwardConfig({ proj_factor: NaN }), /^proj_factor: expected a finite number, got NaN/],
    ["bool vs number", () => xLSTMBlockStackConfig(stack({ bias: 1 })), /^bias: expected a boolean, got 1/],
    ["string vs list", () => slstm({ backend: ["cuda"] }), /^slstm_block\.slstm\.backend: expected a string/],
    ["mapping vs list", () => xLSTMBlockStackConfig(stack({ mlstm_block: [] })), /^mlstm_block: expected a mapping/],
    ["non-null section", () => mLSTMBlockConfig({ mlstm: null }), /^mlstm: must not be null; expected a mapping/],
    ["root not a mapping", () => xLSTMBlockStackConfig([1]), /^config: expected a mapping/],
    [
      "backend",
      () => slstm({ backend: "triton" }),
      /^slstm_block\.slstm\.backend: must be one of "cuda", "vanilla"; got "triton"/,
    ],
    [
      "act_fn",
      () => xLSTMBlockStackConfig(stack({ slstm_block: { feedforward: { act_fn: "tanh" } } })),
      /^slstm_block\.feedforward\.act_fn: must be one of "gelu", "relu", "relu\^2", "sigmoid", "swish", "selu"/,
    ],
    ["function", () => slstm({ function: "gru" }), /^slstm_block\.slstm\.function: must be one of "slstm", "lstm"/],
    [
      "bias_init",
      () => slstm({ bias_init: "ones" }),
      /^slstm_block\.slstm\.bias_init: must be one of "powerlaw_blockdependent", "small_init", "standard", "zeros"/,
    ],
    [
      "recurrent_weight_init",
      () => slstm({ recurrent_weight_init: "small_init" }),
      /^slstm_block\.slstm\.recurrent_weight_init: must be one of "zeros", "standard"/,
    ],
    [
      "sLSTM dtype",
      () => sLSTMCellConfig({ dtype: "fp32" }),
      /^dtype: must be one of "bfloat16", "float16", "float32"/,
    ],
    [
      "mLSTM heads",
      () => xLSTMBlockStackConfig(stack({ mlstm_block: { mlstm: { num_heads: 3 } } })),
      /^mlstm_block\.mlstm\.num_heads: must divide _inner_embedding_dim = 128 .*; got 3/,
    ],
    [
      "qkv blocksize",
      () => mLSTMLayerConfig({ embedding_dim: 64, qkv_proj_blocksize: 5 }),
      /^qkv_proj_blocksize: must divide _inner_embedding_dim = 128/,
    ],
    [
      "sLSTM heads",
      () => slstm({ num_heads: 3 }),
      /^slstm_block\.slstm\.num_heads: must divide embedding_dim = 64; got 3/,
    ],
    [
      "sLSTM cell heads",
      () => sLSTMCellConfig({ hidden_size: 10, num_heads: 4 }),
      /^num_heads: must divide hidden_size = 10; got 4/,
    ],
    [
      "powerlaw with head dim 1",
      () => slstm({ num_heads: 64 }),
      /^slstm_block\.slstm\.bias_init: "powerlaw_blockdependent" needs a head dim of at least 2.*NaN/,
    ],
    [
      "large qk heads",
      () => xLSTMLargeConfig({ embedding_dim: 64, num_heads: 3, num_blocks: 1, vocab_size: 8 }),
      /^num_heads: must divide qk_dim = 32/,
    ],
    [
      "large v heads",
      () => xLSTMLargeConfig({ embedding_dim: 64, num_heads: 4, num_blocks: 1, vocab_size: 8, v_dim_factor: 0.53125 }),
      /^num_heads: must divide v_dim = 34/,
    ],
    [
      "weight_mode",
      () => xLSTMLargeConfig({ embedding_dim: 64, num_heads: 4, num_blocks: 1, vocab_size: 8, weight_mode: "split" }),
      /^weight_mode: must be one of "single", "fused"/,
    ],
    [
      "mode",
      () => xLSTMLargeConfig({ embedding_dim: 64, num_heads: 4, num_blocks: 1, vocab_size: 8, mode: "eval" }),
      /^mode: must be one of "train", "train_with_padding", "inference"/,
    ],
    [
      "chunkwise kernel",
      () =>
        xLSTMLargeConfig({
          embedding_dim: 64,
          num_heads: 4,
          num_blocks: 1,
          vocab_size: 8,
          chunkwise_kernel: "chunkwise--tfla",
        }),
      /^chunkwise_kernel: must be one of "chunkwise--native_autograd", .*"parallel--native_siging_custbw"/,
    ],
    [
      "sequence kernel",
      () =>
        xLSTMLargeConfig({ embedding_dim: 64, num_heads: 4, num_blocks: 1, vocab_size: 8, sequence_kernel: "native" }),
      /^sequence_kernel: must be one of "native_sequence__native", "native_sequence__triton"/,
    ],
    [
      "step kernel",
      () => xLSTMLargeConfig({ embedding_dim: 64, num_heads: 4, num_blocks: 1, vocab_size: 8, step_kernel: "cuda" }),
      /^step_kernel: must be one of "native", "triton"/,
    ],
    [
      "return_last_states + parallel",
      () =>
        xLSTMLargeConfig({
          embedding_dim: 64,
          num_heads: 4,
          num_blocks: 1,
          vocab_size: 8,
          chunkwise_kernel: "parallel--native_autograd",
          return_last_states: true,
        }),
      /^return_last_states: must be false with a parallel kernel/,
    ],
    [
      "return_last_states + padding",
      () =>
        xLSTMLargeConfig({
          embedding_dim: 64,
          num_heads: 4,
          num_blocks: 1,
          vocab_size: 8,
          mode: "train_with_padding",
          return_last_states: true,
        }),
      /^return_last_states: must be false with mode "train_with_padding"/,
    ],
    [
      "large required",
      () => xLSTMLargeConfig({ embedding_dim: 64, num_heads: 4, num_blocks: 1 }),
      /^vocab_size: required key is missing/,
    ],
    [
      "slstm_at out of range",
      () => xLSTMBlockStackConfig(stack({ slstm_at: [1, 4] })),
      /^slstm_at\[1\]: block index must be in 0\.\.3 \(num_blocks = 4\); got 4/,
    ],
    [
      "slstm_at negative",
      () => xLSTMBlockStackConfig(stack({ slstm_at: [-1] })),
      /^slstm_at\[0\]: block index must be in 0\.\.3/,
    ],
    [
      "slstm_at not integers",
      () => xLSTMBlockStackConfig(stack({ slstm_at: [1.5] })),
      /^slstm_at: expected a list of integer block indices or "all", got \[1\.5\]/,
    ],
    [
      "slstm_at bad string",
      () => xLSTMBlockStackConfig(stack({ slstm_at: "some" })),
      /^slstm_at: expected a list of integer block indices or "all"/,
    ],
    [
      "sLSTM blocks without template",
      () => xLSTMBlockStackConfig(stack({ slstm_block: null })),
      /^slstm_block: is required: slstm_at places sLSTM blocks at \[1\]/,
    ],
    ["no templates at all", () => xLSTMBlockStackConfig({}), /^slstm_block: is required when mlstm_block is absent/],
    ["mLSTM conv1d 0", () => mLSTMLayerConfig({ conv1d_kernel_size: 0 }), /^conv1d_kernel_size: must be >= 1; got 0/],
    [
      "sLSTM conv1d -1",
      () => slstm({ conv1d_kernel_size: -1 }),
      /^slstm_block\.slstm\.conv1d_kernel_size: must be >= 0; got -1/,
    ],
    [
      "stack embedding_dim",
      () => xLSTMBlockStackConfig(stack({ embedding_dim: 0 })),
      /^embedding_dim: must be >= 1; got 0/,
    ],
    [
      "layer embedding_dim",
      () => mLSTMLayerConfig({ embedding_dim: 0 }),
      /^embedding_dim: must be >= 1, or -1 \(not set; the enclosing config sets it\); got 0/,
    ],
    ["vocab_size", () => xLSTMLMModelConfig(stack({})), /^vocab_size: must be >= 1; got -1/],
    [
      "num_blocks",
      () => xLSTMBlockStackConfig(stack({ num_blocks: 0, slstm_at: [] })),
      /^num_blocks: must be >= 1; got 0/,
    ],
    ["dropout", () => xLSTMBlockStackConfig(stack({ dropout: 1.5 })), /^dropout: must be >= 0 and <= 1; got 1\.5/],
    [
      "invalid YAML",
      () => xLSTMBlockStackConfig("mlstm_block: [1"),
      /^config: the config string is not valid YAML or JSON/,
    ],
  ];
  for (const [name, fn, pattern] of cases) {
    assert.throws(fn, (e: unknown) => e instanceof ConfigError && pattern.test(e.message), name);
  }
  const err = (() => {
    try {
      slstm({ backend: "triton" });
    } catch (e) {
      return e;
    }
  })();
  assert.ok(err instanceof ConfigError && err.path === "slstm_block.slstm.backend" && err.name === "ConfigError");
});

Deno.test("accepts what the reference accepts", () => {
  // derived and underscore fields are valid input (and recomputed)
  assert.equal(
    mLSTMLayerConfig({ embedding_dim: 32, _inner_embedding_dim: 7, _proj_up_dim: 7 })._inner_embedding_dim,
    64,
  );
  // an unused template is not checked against the stack's dims
  assert.equal(
    xLSTMBlockStackConfig({ mlstm_block: {}, slstm_block: { slstm: { num_heads: 3 } }, embedding_dim: 64 })._block_map,
    "0",
  );
  // sLSTM conv 0 means no convolution; powerlaw is fine at head dim 2
  assert.equal(sLSTMLayerConfig({ embedding_dim: 8, num_heads: 4, conv1d_kernel_size: 0 }).conv1d_kernel_size, 0);
  // soft caps may be disabled; float64 state dtype (golden runs)
  const large = xLSTMLargeConfig({
    embedding_dim: 64,
    num_heads: 4,
    num_blocks: 1,
    vocab_size: 8,
    gate_soft_cap: null,
  });
  assert.equal(large.gate_soft_cap, null);
  // layer-level placeholders stay valid
  assert.equal(sLSTMLayerConfig().hidden_size, -1);
  assert.equal(FeedForwardConfig().embedding_dim, -1);
});
