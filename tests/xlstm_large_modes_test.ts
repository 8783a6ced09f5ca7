/**
 * xLSTM Large weight modes (spec C2): a fused model loaded with the row-concatenation of a single model's weights
 * gives the same logits, states, decoding steps and gradients; the state_dict conversion both ways; dispatches per
 * decoded token in each mode.
 */

import assert from "node:assert/strict";
import { noGrad } from "../src/autograd.ts";
import { xLSTMLargeConfig } from "../src/config.ts";
import type { Gpu } from "../src/gpu/runtime.ts";
import type { HostTensor } from "../src/host_tensor.ts";
import { StateDictError } from "../src/models/parameters.ts";
import { xLSTMLarge, type xLSTMLargeState } from "../src/models/xlstm_large.ts";
import { fuseXLSTMLargeStateDict, splitXLSTMLargeStateDict } from "../src/models/xlstm_large_weights.ts";
import { crossEntropy } from "../src/nn/functional.ts";
import { Tensor } from "../src/tensor.ts";
import { assertClose, closeTestGpu, freshRng, type Rng, testGpu } from "./util.ts";

const V = 40;

function config(mode: "single" | "fused", chunk = 16) {
  return xLSTMLargeConfig({
    embedding_dim: 32,
    num_heads: 2,
    num_blocks: 2,
    vocab_size: V,
    use_bias: true,
    chunk_size: chunk,
    weight_mode: mode,
  });
}

function randomIds(gpu: Gpu, rng: Rng, B: number, S: number): Tensor {
  return Tensor.fromHost(gpu, {
    dtype: "int32",
    shape: [B, S],
    data: Int32Array.from({ length: B * S }, () => Math.floor(rng.uniform() * V)),
  });
}

/** Asserts equal logits and states (within `tol`) and returns the dispatches each forward recorded. */
async function sameForward(
  gpu: Gpu,
  a: xLSTMLarge,
  b: xLSTMLarge,
  ids: Tensor,
  states: [xLSTMLargeState?, xLSTMLargeState?],
  what: string,
): Promise<{ dispatches: [number, number]; states: [xLSTMLargeState, xLSTMLargeState] }> {
  const run = (m: xLSTMLarge, s?: xLSTMLargeState): [Tensor, xLSTMLargeState, number] => {
    const before = gpu.dispatchCount;
    const [l, next] = noGrad(() => m.apply(ids, s));
    return [l, next, gpu.dispatchCount - before];
  };
  const [la, sa, da] = run(a, states[0]), [lb, sb, db] = run(b, states[1]);
  const [ha, hb] = await Tensor.toHostAll([la, lb]);
  assertClose(hb.data as Float32Array, ha.data as Float32Array, 1e-5, `${what}: logits`);
  for (let i = 0; i < a.config.num_blocks; i++) {
    const [x, y] = [await Tensor.toHostAll(sa[i]), await Tensor.toHostAll(sb[i])];
    x.forEach((h, j) =>
      assertClose(y[j].data as Float32Array, h.data as Float32Array, 1e-5, `${what}: state ${i}.${j}`)
    );
  }
  la.dispose(), lb.dispose();
  return { dispatches: [da, db], states: [sa, sb] };
}

Deno.test("xLSTMLarge fused mode equals single mode with row-concatenated weights: prefill, decode", async () => {
  const gpu = await testGpu(), rng = freshRng("xlstm_large fused");
  const single = await xLSTMLarge.create(config("single"), { gpu, seed: Math.floor(rng.uniform() * 2 ** 31) });
  const fused = await xLSTMLarge.create(config("fused"), { gpu, initialize: false });
  const sd = await single.stateDict();
  await fused.loadStateDict(fuseXLSTMLargeStateDict(sd));
  assert.deepEqual(
    [...fused.stateDictShapes().entries()].filter(([k]) => k.startsWith("backbone.blocks.0.") && !k.includes("norm")),
    [
      ["backbone.blocks.0.mlstm_layer.qkv_opreact.weight", [96, 32]],
      ["backbone.blocks.0.mlstm_layer.qkv_opreact.bias", [96]],
      ["backbone.blocks.0.mlstm_layer.ifgate_preact.weight", [4, 32]],
      ["backbone.blocks.0.mlstm_layer.ifgate_preact.bias", [4]],
      ["backbone.blocks.0.mlstm_layer.out_proj.weight", [32, 32]],
      ["backbone.blocks.0.mlstm_layer.out_proj.bias", [32]],
      ["backbone.blocks.0.ffn.proj_up_gate_z.weight", [256, 32]],
      ["backbone.blocks.0.ffn.proj_up_gate_z.bias", [256]],
      ["backbone.blocks.0.ffn.proj_down.weight", [32, 128]],
      ["backbone.blocks.0.ffn.proj_down.bias", [32]],
    ],
  );
  // B 2, S 37: 32 tokens chunkwise (copied out per sequence), 5 recurrent steps; then 3 decoding steps.
  const B = 2;
  let { states } = await sameForward(gpu, single, fused, randomIds(gpu, rng, B, 37), [], "prefill");
  for (let t = 0; t < 3; t++) {
    const r = await sameForward(gpu, single, fused, randomIds(gpu, rng, B, 1), states, `decode ${t}`);
    states = r.states;
    if (t === 2) {
      console.log(`dispatches per decoded token (2 blocks): single ${r.dispatches[0]}, fused ${r.dispatches[1]}`);
    }
    assert.ok(r.dispatches[1] < r.dispatches[0], `fused ${r.dispatches[1]} vs single ${r.dispatches[0]} dispatches`);
  }
  single.dispose(), fused.dispose();
});

Deno.test("xLSTMLarge fused mode: gradients are the row-concatenation of single mode's", async () => {
  const gpu = await testGpu(), rng = freshRng("xlstm_large fused grad");
  const single = await xLSTMLarge.create(config("single"), { gpu, seed: Math.floor(rng.uniform() * 2 ** 31) });
  const fused = await xLSTMLarge.create(config("fused"), { gpu, initialize: false });
  await fused.loadStateDict(fuseXLSTMLargeStateDict(await single.stateDict()));
  const ids = randomIds(gpu, rng, 2, 9), labels = randomIds(gpu, rng, 2, 9);
  const grads = async (m: xLSTMLarge): Promise<Record<string, HostTensor>> => {
    const [logits] = m.apply(ids); // the differentiable parallel cell, on column views in fused mode
    await crossEntropy(logits, labels).loss.backward();
    const named = [...m.namedParameters()];
    const hosts = await Tensor.toHostAll(named.map(([, p]) => p.grad!));
    return Object.fromEntries(named.map(([n], i) => [n, hosts[i]]));
  };
  const want = fuseXLSTMLargeStateDict(await grads(single)), got = await grads(fused);
  assert.deepEqual(Object.keys(got), Object.keys(want));
  for (const [name, g] of Object.entries(got)) {
    assertClose(g.data as Float32Array, want[name].data as Float32Array, 1e-5, `gradient of ${name}`);
  }
  single.dispose(), fused.dispose();
});

Deno.test("xLSTMLarge state_dict conversion: fuse then split is the identity; missing parts are named", () => {
  const rng = freshRng("xlstm_large fuse split");
  const cfg = config("single");
  const t = (shape: number[]): HostTensor => ({
    dtype: "float32",
    shape,
    data: Float32Array.from(rng.normals(shape.reduce((a, b) => a * b, 1))),
  });
  const p = "backbone.blocks.1.";
  const single: Record<string, HostTensor> = {
    "embedding.weight": t([V, 32]),
    [`${p}mlstm_layer.q.weight`]: t([cfg.qk_dim, 32]),
    [`${p}mlstm_layer.k.weight`]: t([cfg.qk_dim, 32]),
    [`${p}mlstm_layer.v.weight`]: t([cfg.v_dim, 32]),
    [`${p}mlstm_layer.ogate_preact.weight`]: t([cfg.v_dim, 32]),
    [`${p}mlstm_layer.igate_preact.bias`]: t([2]),
    [`${p}mlstm_layer.fgate_preact.bias`]: t([2]),
    [`${p}ffn.proj_up_gate.weight`]: t([cfg.ffn_dim, 32]),
    [`${p}ffn.proj_up.weight`]: t([cfg.ffn_dim, 32]),
    [`${p}ffn.proj_down.weight`]: t([32, cfg.ffn_dim]),
  };
  const fused = fuseXLSTMLargeStateDict(single);
  assert.deepEqual(Object.keys(fused), [
    "embedding.weight",
    `${p}mlstm_layer.qkv_opreact.weight`,
    `${p}mlstm_layer.ifgate_preact.bias`,
    `${p}ffn.proj_up_gate_z.weight`,
    `${p}ffn.proj_down.weight`,
  ]);
  const qkvo = fused[`${p}mlstm_layer.qkv_opreact.weight`];
  assert.deepEqual(qkvo.shape, [2 * cfg.qk_dim + 2 * cfg.v_dim, 32]);
  // The v rows follow q and k.
  assert.equal(qkvo.data[2 * cfg.qk_dim * 32 + 5], single[`${p}mlstm_layer.v.weight`].data[5]);
  assert.deepEqual(splitXLSTMLargeStateDict(fused, cfg), single);
  const { [`${p}mlstm_layer.k.weight`]: _, ...noK } = single;
  assert.throws(
    () => fuseXLSTMLargeStateDict(noK),
    (e: Error) =>
      e instanceof StateDictError && /qkv_opreact\.weight needs backbone\.blocks\.1\.mlstm_layer\.k/.test(e.message),
  );
  assert.throws(
    () => splitXLSTMLargeStateDict({ [`${p}mlstm_layer.qkv_opreact.weight`]: t([5, 32]) }, cfg),
    /qkv_opreact\.weight \[5, 32\] does not split into rows \[16, 16, 32, 32\]/,
  );
});

Deno.test("xLSTMLarge modes: release the GPU", async () => {
  await closeTestGpu();
});
