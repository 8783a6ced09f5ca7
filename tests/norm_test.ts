import assert from "node:assert/strict";
import { norm, type NormOptions } from "../src/ops/norm.ts";
import { Tensor } from "../src/tensor.ts";
import { normRef } from "./cpu/norm.ts";
import { assertClose, closeTestGpu, freshRng, randomTensor, type Rng, testGpu } from "./util.ts";

interface Case {
  what: string;
  shape: number[];
  options: NormOptions;
  weight: boolean;
  bias: boolean;
  /** Added to x so that |mean| ≫ std, which a one-pass variance would get wrong in f32. */
  shift?: number;
}

const CASES: Case[] = [
  {
    what: "NeurIPS LayerNorm",
    shape: [2, 3, 48],
    options: { kind: "layer", eps: 1e-5, weightOffset: 1 },
    weight: true,
    bias: false,
    shift: 30,
  },
  {
    what: "NeurIPS MultiHeadLayerNorm + bias",
    shape: [2, 5, 64],
    options: { kind: "layer", groups: 4, eps: 1e-5, weightOffset: 1 },
    weight: true,
    bias: true,
  },
  { what: "xlstm_large RMSNorm", shape: [3, 40], options: { kind: "rms", eps: 1e-6 }, weight: true, bias: false },
  {
    what: "xlstm_large MultiHeadLayerNorm",
    shape: [2, 7, 96],
    options: { kind: "layer", groups: 4, eps: 1e-6 },
    weight: true,
    bias: false,
  },
  {
    what: "rms, groups, bias, no weight",
    shape: [5, 30],
    options: { kind: "rms", groups: 3, eps: 1e-6 },
    weight: false,
    bias: true,
  },
  {
    what: "layer without affine, odd group size",
    shape: [4, 21],
    options: { kind: "layer", groups: 7, eps: 1e-5 },
    weight: false,
    bias: false,
  },
  {
    what: "C = 70000 (many trips per thread)",
    shape: [2, 70000],
    options: { kind: "layer", groups: 2, eps: 1e-5, weightOffset: 1 },
    weight: true,
    bias: true,
  },
  {
    what: "72000 groups (grid spills into y)",
    shape: [9000, 64],
    options: { kind: "layer", groups: 8, eps: 1e-6 },
    weight: true,
    bias: true,
  },
];

function values(rng: Rng, n: number, shift = 0): { host: Float32Array; exact: Float64Array } {
  const t = randomTensor(rng, [n]);
  const host = (t.host.data as Float32Array).map((v) => v + shift);
  return { host, exact: Float64Array.from(host) };
}

Deno.test("norm matches the float64 reference in every mode", async () => {
  const gpu = await testGpu();
  const rng = freshRng("norm");
  const outs: Tensor[] = [], wants: Float64Array[] = [];
  for (const c of CASES) {
    const channels = c.shape[c.shape.length - 1];
    const x = values(rng, c.shape.reduce((a, b) => a * b), c.shift);
    const w = c.weight ? values(rng, channels) : null, b = c.bias ? values(rng, channels) : null;
    const upload = (v: Float32Array, shape: number[]) => Tensor.fromHost(gpu, { dtype: "float32", shape, data: v });
    outs.push(norm(
      upload(x.host, c.shape),
      w && upload(w.host, [channels]),
      b && upload(b.host, [channels]),
      c.options,
    ));
    wants.push(normRef(x.exact, channels, w?.exact ?? null, b?.exact ?? null, c.options));
  }
  const got = await Tensor.toHostAll(outs);
  CASES.forEach((c, i) => {
    assert.deepEqual(got[i].shape, c.shape);
    assertClose(got[i].data as Float32Array, wants[i], 1e-5, c.what);
  });
});

Deno.test("norm rejects mismatched operands, naming the tensor and both shapes", async () => {
  const gpu = await testGpu();
  const x = Tensor.zeros(gpu, [2, 48]);
  assert.throws(
    () => norm(x, Tensor.zeros(gpu, [47]), null, { kind: "rms", eps: 1e-6 }),
    /norm weight: expected shape \[48\], got \[47\]/,
  );
  assert.throws(
    () => norm(x, null, Tensor.zeros(gpu, [2, 48]), { kind: "rms", eps: 1e-6 }),
    /norm bias: expected shape \[48\], got \[2, 48\]/,
  );
  assert.throws(
    () => norm(x, null, null, { kind: "layer", groups: 5, eps: 1e-5 }),
    /5 groups do not divide the 48 channels of x \[2, 48\]/,
  );
  await closeTestGpu();
});
