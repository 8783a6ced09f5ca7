/**
 * The reference README's two examples at full size: the stack maps x [4, 256, 128] to the same shape, and the LM
 * maps ids [4, 256] to logits [4, 256, 50304] — 206 MB, more than one 128 MiB storage binding on lavapipe, so the
 * LM head's split path runs at real scale. Spot rows of the logits are checked against a float64 product.
 */

import assert from "node:assert/strict";
import { xLSTMBlockStackConfig, xLSTMLMModelConfig } from "../src/config.ts";
import { embedding } from "../src/ops/embedding.ts";
import { xLSTMBlockStack } from "../src/models/block_stack.ts";
import { xLSTMLMModel } from "../src/models/lm_model.ts";
import { Tensor } from "../src/tensor.ts";
import { README_LM_YAML, README_STACK_YAML } from "../scripts/readme_config.ts";
import { assertClose, closeTestGpu, freshRng, testGpu } from "./util.ts";

const B = 4, S = 256, E = 128, V = 50304;

Deno.test("README stack: x [4, 256, 128] -> [4, 256, 128], finite", async () => {
  const gpu = await testGpu();
  const rng = freshRng("README stack");
  const cfg = xLSTMBlockStackConfig(README_STACK_YAML);
  assert.equal(cfg._block_map, "0,1,0,0,0,0,0");
  const stack = await xLSTMBlockStack.create(cfg, { gpu, seed: rng.seed });
  const x = Tensor.fromHost(gpu, {
    dtype: "float32",
    shape: [B, S, E],
    data: Float32Array.from(rng.normals(B * S * E)),
  });
  const y = await stack.apply(x).toHost();
  assert.deepEqual(y.shape, [B, S, E]);
  assert.ok((y.data as Float32Array).every(Number.isFinite));
  stack.dispose();
});

Deno.test("README LM: ids [4, 256] -> logits [4, 256, 50304] across storage bindings, finite and exact", async () => {
  const gpu = await testGpu();
  const rng = freshRng("README LM");
  const lm = await xLSTMLMModel.create(xLSTMLMModelConfig(README_LM_YAML), { gpu, seed: rng.seed });
  lm.resetParameters();
  assert.ok(B * S * V * 4 > gpu.maxBinding, "the logits must not fit one binding for this test to mean anything");
  const ids = Tensor.fromHost(gpu, {
    dtype: "int32",
    shape: [B, S],
    data: Int32Array.from({ length: B * S }, () => rng.int(V)),
  });
  const named = new Map(lm.namedParameters());
  const head = named.get("lm_head.weight")!;
  const hidden = lm.stack.apply(embedding(ids, named.get("token_embedding.weight")!));
  const [logits, h, w] = await Tensor.toHostAll([lm.apply(ids), hidden, head]);
  assert.deepEqual(logits.shape, [B, S, V]);
  const data = logits.data as Float32Array;
  assert.ok(data.every(Number.isFinite));
  for (const row of [0, 511, 512, B * S - 1]) {
    const want = new Float64Array(V);
    for (let v = 0; v < V; v++) {
      let acc = 0;
      for (let e = 0; e < E; e++) acc += h.data[row * E + e] as number * (w.data[v * E + e] as number);
      want[v] = acc;
    }
    assertClose(data.subarray(row * V, (row + 1) * V), want, 1e-5, `logits row ${row}`);
  }
  lm.dispose();
  await closeTestGpu();
});
