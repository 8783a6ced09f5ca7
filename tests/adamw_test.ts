import assert from "node:assert/strict";
import type { Gpu } from "../src/gpu/runtime.ts";
import { AdamW, clipGradNorm, referenceDecay, weightDecayGroups } from "../src/optim/adamw.ts";
import { Tensor } from "../src/tensor.ts";
import { type AdamWRefState, adamwRefStep, clipGradNormRef } from "./cpu/adamw.ts";
import { assertClose, closeTestGpu, freshRng, type Rng, testGpu } from "./util.ts";

function upload(gpu: Gpu, shape: readonly number[], data: ArrayLike<number>): Tensor {
  return Tensor.fromHost(gpu, { dtype: "float32", shape: [...shape], data: Float32Array.from(data) });
}

async function values(t: Tensor): Promise<Float32Array> {
  return (await t.toHost()).data as Float32Array;
}

Deno.test("weightDecayGroups follows the reference rule (spec A7), tied weights once", () => {
  const t = () => ({}) as Tensor; // identity is all the grouping looks at
  const tied = t();
  const names = [
    "xlstm_block_stack.blocks.0.xlstm_norm.weight",
    "xlstm_block_stack.blocks.0.xlstm.learnable_skip",
    "xlstm_block_stack.blocks.0.xlstm.proj_up.weight",
    "xlstm_block_stack.blocks.0.xlstm.conv1d.conv.weight",
    "xlstm_block_stack.blocks.0.xlstm.conv1d.conv.bias",
    "xlstm_block_stack.blocks.0.xlstm.mlstm_cell.igate.weight",
    "xlstm_block_stack.blocks.0.xlstm.mlstm_cell.fgate.bias",
    "xlstm_block_stack.blocks.0.xlstm.mlstm_cell.outnorm.weight",
    "xlstm_block_stack.blocks.1.xlstm.slstm_cell._recurrent_kernel_",
    "xlstm_block_stack.blocks.1.xlstm.slstm_cell._bias_",
    "xlstm_block_stack.blocks.1.xlstm.group_norm.weight",
    "xlstm_block_stack.blocks.1.xlstm.zgate.weight",
    "xlstm_block_stack.blocks.1.ffn.proj_down.weight",
    "xlstm_block_stack.post_blocks_norm.weight",
  ];
  const decayed = [2, 3, 5, 11, 12].map((i) => names[i]);
  const named: [string, Tensor][] = names.map((n) => [n, t()]);
  const untied = weightDecayGroups([...named, ["token_embedding.weight", t()], ["lm_head.weight", t()]]);
  assert.deepEqual(untied.decay.map((p) => p.name), [...decayed, "lm_head.weight"]);
  assert.equal(untied.noDecay.length, names.length - decayed.length + 1);
  assert.ok(untied.noDecay.some((p) => p.name === "token_embedding.weight"));

  const tiedGroups = weightDecayGroups([...named, ["token_embedding.weight", tied], ["lm_head.weight", tied]]);
  assert.deepEqual(tiedGroups.decay.map((p) => p.name), decayed, "a tied embedding/head does not decay by default");
  assert.equal(tiedGroups.noDecay.filter((p) => p.tensor === tied).length, 1);
  const onEmbedding = weightDecayGroups([["lm_head.weight", tied], ["token_embedding.weight", tied]], {
    weightDecayOnEmbedding: true,
  });
  assert.deepEqual(onEmbedding.decay.map((p) => p.name), ["lm_head.weight"]);
  assert.equal(referenceDecay("token_embedding.weight", true), true);
  assert.equal(referenceDecay("model.token_embedding.weight"), false);
});

interface Param {
  name: string;
  shape: number[];
  weightDecay?: number;
}

/**
 * Runs `lrs.length` AdamW steps on the GPU and in float64 with fresh random gradients (parameter `skip[k]` gets no
 * gradient at step k) and compares parameters and moments after every step.
 */
async function checkAdamW(gpu: Gpu, rng: Rng, params: Param[], lrs: number[], skip: (string | null)[] = []) {
  const options = { lr: 1e-3, betas: [0.9, 0.95] as [number, number], eps: 1e-6, weightDecay: 0.1 };
  const size = (s: number[]) => s.reduce((a, b) => a * b, 1);
  const tensors = params.map((p) => upload(gpu, p.shape, rng.normals(size(p.shape))));
  const opt = new AdamW(params.map((p, i) => ({ ...p, tensor: tensors[i] })), options);
  const decays = opt.weightDecays;
  const ref: AdamWRefState[] = await Promise.all(tensors.map(async (t) => {
    const param = Float64Array.from(await values(t));
    return { param, m: new Float64Array(param.length), v: new Float64Array(param.length), step: 0 };
  }));
  for (const [k, lr] of lrs.entries()) {
    params.forEach((p, i) => {
      if (skip[k] === p.name) return;
      // Gradients of mixed scales, so that eps and the √v denominator both matter.
      const g = Float64Array.from(rng.normals(tensors[i].size), (x, j) => x * 10 ** ((j % 5) - 3));
      tensors[i].grad = upload(gpu, p.shape, g);
      adamwRefStep(ref[i], Float32Array.from(g), {
        ...options,
        lr,
        weightDecay: decays[p.name],
        beta1: 0.9,
        beta2: 0.95,
      });
    });
    opt.step(lr);
    opt.zeroGrad();
    assert.ok(tensors.every((t) => t.grad === null), "zeroGrad drops gradients");
    const state = opt.state();
    const keys = params.flatMap((p) => ["exp_avg", "exp_avg_sq", "step"].map((k) => state[`${p.name}.${k}`]));
    const hosts = (await Tensor.toHostAll([...tensors, ...keys])).map((h) => h.data);
    for (const [i, p] of params.entries()) {
      const [m, v, step] = hosts.slice(params.length + 3 * i, params.length + 3 * i + 3);
      // f32 arithmetic on O(1) parameters and moments: a few ulp per step.
      assertClose(hosts[i] as Float32Array, ref[i].param, 2e-6, `${p.name} after step ${k}`);
      assertClose(m as Float32Array, ref[i].m, 2e-6, `${p.name} exp_avg after step ${k}`);
      assertClose(v as Float32Array, ref[i].v, 2e-6, `${p.name} exp_avg_sq after step ${k}`);
      assert.equal(step[0], ref[i].step, `${p.name} step count`);
    }
    for (const t of Object.values(state)) t.dispose();
  }
  return { opt, tensors };
}

Deno.test("AdamW matches a float64 AdamW over several steps, with decay groups and skipped gradients", async () => {
  const gpu = await testGpu();
  const rng = freshRng("adamw");
  const params = [
    { name: "proj.weight", shape: [7, 5] }, // decays by the reference rule
    { name: "proj.bias", shape: [13] }, // does not
    { name: "norm.weight", shape: [6] }, // does not ('norm')
    { name: "custom", shape: [3, 4], weightDecay: 0.5 }, // explicit override
  ];
  // Step 0 has learning rate 0 (the schedule's first step): moments still update, parameters do not move.
  const { opt, tensors } = await checkAdamW(gpu, rng, params, [0, 1e-2, 5e-3, 2e-2, 1e-3], [null, null, "proj.bias"]);
  assert.deepEqual(opt.weightDecays, { "proj.weight": 0.1, "proj.bias": 0, "norm.weight": 0, custom: 0.5 });
  opt.dispose();
  for (const t of tensors) t.dispose();
});

Deno.test("AdamW and clipGradNorm split parameters larger than one storage binding", async () => {
  const gpu = await testGpu();
  const rng = freshRng("adamw split");
  const saved = gpu.maxBinding;
  try {
    gpu.maxBinding = 512; // 128-float ranges (any offset alignment up to 256 divides 512): 1000 floats → 8 ranges
    const before = gpu.dispatchCount;
    const { opt, tensors } = await checkAdamW(gpu, rng, [{ name: "big.weight", shape: [1000] }], [1e-2, 1e-2]);
    assert.equal(gpu.dispatchCount - before, 2 * 8);
    opt.dispose();
    for (const t of tensors) t.dispose();
    // 140,000 floats in 1,094 ranges of 128 give 1,094 partial sums: two more reduction levels.
    await checkClip(gpu, rng, [[140000], [3]], 0.5);
  } finally {
    gpu.maxBinding = saved;
  }
});

/** Clips random gradients of the given shapes to `maxNorm` on the GPU and compares with the float64 reference. */
async function checkClip(gpu: Gpu, rng: Rng, shapes: number[][], maxNorm: number, withoutGrad = false) {
  const params = shapes.map((s) => Tensor.zeros(gpu, s));
  const grads = params.map((p) => Float32Array.from(rng.normals(p.size, 0.1)));
  params.forEach((p, i) => (p.grad = upload(gpu, p.shape, grads[i])));
  const extra = withoutGrad ? [Tensor.zeros(gpu, [4])] : [];
  const want = clipGradNormRef(grads, maxNorm);
  const norm = clipGradNorm([...params, ...extra], maxNorm);
  const got = await Tensor.toHostAll([norm, ...params.map((p) => p.grad!)]);
  // Sums of ~1e5 squares in f32 over chunks of 1024: relative error ~1e-7.
  assertClose(got[0].data as Float32Array, [want.norm], 1e-6, "norm");
  params.forEach((_, i) => assertClose(got[i + 1].data as Float32Array, want.clipped[i], 1e-6, `clipped grad ${i}`));
  if (want.norm < maxNorm) {
    params.forEach((_, i) => assert.deepEqual(got[i + 1].data, grads[i], "below maxNorm: gradients unchanged"));
  }
  for (const t of [...params, ...extra, norm]) t.dispose();
  return want.norm;
}

Deno.test("clipGradNorm computes the global norm on the GPU and scales only above maxNorm", async () => {
  const gpu = await testGpu();
  const rng = freshRng("clip");
  const norm = await checkClip(gpu, rng, [[40, 30], [7], [3000]], 0.5, true); // norm ≈ 6: clipped
  assert.ok(norm > 0.5);
  assert.ok((await checkClip(gpu, rng, [[5], [2, 2]], 100)) < 100); // not clipped: bitwise unchanged
  const lone = Tensor.zeros(gpu, [3]);
  assert.deepEqual(await values(clipGradNorm([lone], 1)), new Float32Array([0]), "no gradients: norm 0");
  lone.dispose();
});

Deno.test("AdamW state round-trips through state() and loadState()", async () => {
  const gpu = await testGpu();
  const rng = freshRng("adamw state");
  const grads = [0, 1, 2].map(() => rng.normals(12));
  const options = { lr: 1e-2, weightDecay: 0.1 };
  const p = upload(gpu, [3, 4], rng.normals(12));
  const a = new AdamW([{ name: "w.weight", tensor: p }], options);
  for (const g of grads.slice(0, 2)) {
    p.grad = upload(gpu, [3, 4], g);
    a.step();
    a.zeroGrad();
  }
  // A second optimizer on a copy of the parameter, restored from the first one's state, must continue identically.
  const q = p.clone();
  const b = new AdamW([{ name: "w.weight", tensor: q }], options);
  const state = a.state();
  assert.deepEqual(Object.keys(state), ["w.weight.exp_avg", "w.weight.exp_avg_sq", "w.weight.step"]);
  await b.loadState(state);
  for (const t of Object.values(state)) t.dispose();
  for (const [opt, t] of [[a, p], [b, q]] as const) {
    t.grad = upload(gpu, [3, 4], grads[2]);
    opt.step();
  }
  assert.deepEqual(await values(q), await values(p), "a restored optimizer continues bit for bit");
  await assert.rejects(() => b.loadState({}), /missing w.weight.exp_avg/);
  for (const o of [a, b]) o.dispose();
  for (const t of [p, q]) t.dispose();
});

Deno.test("AdamW rejects bad arguments", async () => {
  const gpu = await testGpu();
  const w = Tensor.zeros(gpu, [2, 2]);
  assert.throws(
    () => new AdamW([{ name: "a", tensor: w }, { name: "b", tensor: w }], { lr: 1, weightDecay: 0 }),
    /b is listed twice/,
  );
  assert.throws(() => new AdamW([], { lr: 1, weightDecay: 0, betas: [0.9, 1] }), /invalid betas\[1\] 1/);
  const opt = new AdamW([{ name: "a", tensor: w }], { lr: 1, weightDecay: 0 });
  w.grad = Tensor.zeros(gpu, [4]);
  assert.throws(() => opt.step(), /AdamW gradient of a: expected shape \[2, 2\], got \[4\]/);
  assert.throws(() => clipGradNorm([w], -1), /invalid maxNorm -1/);
  opt.dispose();
  w.dispose();
  await closeTestGpu();
});
