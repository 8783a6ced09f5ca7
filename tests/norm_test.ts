import assert from "node:assert/strict";
import { norm, normBackward, type NormOptions, normPaths } from "../src/ops/norm.ts";
import { Tensor } from "../src/tensor.ts";
import { normBackwardRef, normRef, type NormRefOptions } from "./cpu/norm.ts";
import { assertClose, closeTestGpu, freshRng, randomTensor, relativeError, type Rng, testGpu } from "./util.ts";

interface Case {
  what: string;
  shape: number[];
  options: NormOptions;
  weight: boolean;
  bias: boolean;
  /** Added to x so that |mean| ≫ std, which a one-pass variance would get wrong in f32. */
  shift?: number;
  /** The paths (keys of `PATHS`) this case runs on; default both. */
  paths?: string[];
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
    what: "shifted, group size 4k + 3 (masked tail chunk)",
    shape: [3, 2, 46],
    options: { kind: "layer", groups: 2, eps: 1e-5 },
    weight: true,
    bias: true,
    shift: 30,
  },
  {
    what: "shifted, long groups (the rough mean's f32 error must be corrected)",
    shape: [2, 8000],
    options: { kind: "layer", groups: 2, eps: 1e-6 },
    weight: false,
    bias: false,
    shift: 100,
  },
  {
    what: "C = 70000 (many trips per thread; too many for the per-unit path, which falls back)",
    shape: [2, 70000],
    options: { kind: "layer", groups: 2, eps: 1e-5, weightOffset: 1 },
    weight: true,
    bias: true,
  },
  {
    what: "72000 groups (the cooperative grid spills into y)",
    shape: [9000, 64],
    options: { kind: "layer", groups: 8, eps: 1e-6 },
    weight: true,
    bias: true,
  },
  {
    what: "rms, weightOffset 1, bias, 600 rows (weight and bias gradients sum over 3 chunks of rows)",
    shape: [600, 24],
    options: { kind: "rms", groups: 2, eps: 1e-6, weightOffset: 1 },
    weight: true,
    bias: true,
  },
  {
    what: "140000 groups of 2 (the per-unit grid spills into y at 2 threads per workgroup)",
    shape: [70000, 4],
    options: { kind: "rms", groups: 2, eps: 1e-6 },
    weight: true,
    bias: false,
    paths: ["per-unit"],
  },
];

function values(rng: Rng, n: number, shift = 0): { host: Float32Array; exact: Float64Array } {
  const t = randomTensor(rng, [n]);
  const host = (t.host.data as Float32Array).map((v) => v + shift);
  return { host, exact: Float64Array.from(host) };
}

/** Path settings that force each of norm's two kernels (restored after the test). */
const PATHS: Record<string, Partial<typeof normPaths>> = {
  // Two invocations per workgroup, so that 140000 units overflow the 65535 workgroups of one dimension.
  "per-unit": { minUnits: 0, maxUnitGroup: Infinity, unitThreads: 2 },
  cooperative: { minUnits: Infinity },
};

Deno.test("norm matches the float64 reference in every mode, on both paths", async () => {
  const gpu = await testGpu();
  const rng = freshRng("norm");
  const saved = { ...normPaths };
  const outs: Tensor[] = [], wants: Float64Array[] = [], shapes: number[][] = [], names: string[] = [];
  try {
    for (const [path, setting] of Object.entries(PATHS)) {
      Object.assign(normPaths, saved, setting);
      for (const c of CASES.filter((c) => c.paths?.includes(path) ?? true)) {
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
        shapes.push(c.shape);
        names.push(`${path}: ${c.what}`);
      }
    }
  } finally {
    Object.assign(normPaths, saved);
  }
  const got = await Tensor.toHostAll(outs);
  got.forEach((g, i) => {
    assert.deepEqual(g.shape, shapes[i]);
    assertClose(g.data as Float32Array, wants[i], 5e-6, names[i]);
  });
});

Deno.test("norm outputGate: sigmoid(o) ⊙ norm(x) with o a strided column view, on both paths", async () => {
  const gpu = await testGpu();
  const rng = freshRng("norm output gate");
  const saved = { ...normPaths };
  try {
    for (const [path, setting] of Object.entries(PATHS)) {
      Object.assign(normPaths, saved, setting);
      // Rows of 3 heads of 7 channels (odd: the masked tail chunk), o columns 5.. of rows of 30.
      const [rows, heads, dh, width, at] = [5, 3, 7, 30, 5], channels = heads * dh;
      const x = values(rng, rows * channels, 2), w = values(rng, channels), b = values(rng, channels);
      const wide = values(rng, rows * width);
      const up = (v: Float32Array, shape: number[]) => Tensor.fromHost(gpu, { dtype: "float32", shape, data: v });
      const tensors = [up(x.host, [rows, channels]), up(w.host, [channels]), up(b.host, [channels])];
      const o = up(wide.host, [rows, width]);
      const options: NormOptions = { kind: "layer", groups: heads, eps: 1e-6 };
      const y = norm(tensors[0], tensors[1], tensors[2], {
        ...options,
        outputGate: { tensor: o, rows, cols: channels, offset: at, stride: width },
      });
      const normed = normRef(x.exact, channels, w.exact, b.exact, options);
      const want = normed.map((v, i) => {
        const g = wide.exact[Math.floor(i / channels) * width + at + (i % channels)];
        return v / (1 + Math.exp(-g));
      });
      assertClose((await y.toHost()).data as Float32Array, want, 5e-6, path);
      assert.throws(
        () =>
          norm(tensors[0], null, null, {
            ...options,
            outputGate: { tensor: o, rows, cols: channels, offset: 10, stride: width },
          }),
        /outputGate float32 view \[5, 21\] \(offset 10, stride 30\) of \[5, 30\] must be float32 \[5, 21\] inside its tensor/,
      );
      for (const t of [...tensors, o, y]) t.dispose();
    }
  } finally {
    Object.assign(normPaths, saved);
  }
});

Deno.test("the float64 norm gradients match central differences of the float64 forward", () => {
  const rng = freshRng("norm gradient reference");
  const rows = 3, channels = 12, h = 1e-6;
  const random = (n: number) => Float64Array.from(rng.normals(n, 1));
  for (const kind of ["layer", "rms"] as const) {
    for (const groups of [1, 3]) {
      for (const affine of ["none", "w0", "w1", "b", "w0+b", "w1+b"]) {
        const options: NormRefOptions = { kind, groups, eps: 1e-5, weightOffset: affine.includes("w1") ? 1 : 0 };
        const what = `${kind}, ${groups} groups, ${affine}`;
        const x = random(rows * channels), dy = random(rows * channels);
        const weight = affine.includes("w") ? random(channels) : null;
        const bias = affine.includes("b") ? random(channels) : null;
        // loss = Σ dy · norm(x); its central difference along each input element.
        const loss = () => normRef(x, channels, weight, bias, options).reduce((s, y, i) => s + dy[i] * y, 0);
        const numeric = (v: Float64Array) =>
          v.map((_, i) => {
            const keep = v[i];
            v[i] = keep + h;
            const up = loss();
            v[i] = keep - h;
            const down = loss();
            v[i] = keep;
            return (up - down) / (2 * h);
          });
        const grads = normBackwardRef(dy, x, channels, weight, bias, options);
        assertClose(grads.dx, numeric(x), 1e-7, `${what}: dx`);
        assert.equal(grads.dweight === null, weight === null, what);
        assert.equal(grads.dbias === null, bias === null, what);
        if (weight) assertClose(grads.dweight!, numeric(weight), 1e-7, `${what}: dweight`);
        if (bias) assertClose(grads.dbias!, numeric(bias), 1e-7, `${what}: dbias`);
      }
    }
  }
});

Deno.test("normBackward matches the float64 gradient reference in every mode", async () => {
  const gpu = await testGpu();
  const rng = freshRng("normBackward");
  const saved = { ...normPaths };
  const outs: Tensor[] = [], wants: Float64Array[] = [], names: string[] = [];
  try {
    for (const c of CASES) {
      // The cases pinned to the per-unit path need its 2-thread workgroups to make the grid spill into y.
      Object.assign(normPaths, saved, c.paths ? PATHS["per-unit"] : {});
      const channels = c.shape[c.shape.length - 1], n = c.shape.reduce((a, b) => a * b);
      const x = values(rng, n, c.shift), dy = values(rng, n);
      const w = c.weight ? values(rng, channels) : null, b = c.bias ? values(rng, channels) : null;
      const upload = (v: Float32Array, shape: number[]) => Tensor.fromHost(gpu, { dtype: "float32", shape, data: v });
      const got = normBackward(
        upload(dy.host, c.shape),
        upload(x.host, c.shape),
        w && upload(w.host, [channels]),
        b && upload(b.host, [channels]),
        c.options,
      );
      const want = normBackwardRef(dy.exact, x.exact, channels, w?.exact ?? null, b?.exact ?? null, c.options);
      assert.equal(got.dweight === null, !c.weight, c.what);
      assert.equal(got.dbias === null, !c.bias, c.what);
      for (const key of ["dx", "dweight", "dbias"] as const) {
        if (!got[key]) continue;
        outs.push(got[key]);
        wants.push(want[key]!);
        names.push(`${c.what}: ${key}`);
      }
    }
  } finally {
    Object.assign(normPaths, saved);
  }
  const got = await Tensor.toHostAll(outs);
  got.forEach((g, i) => {
    if (Deno.env.get("SHOW_ERRORS")) {
      console.log(names[i], relativeError(g.data as Float32Array, wants[i]).toExponential(2));
    }
    assertClose(g.data as Float32Array, wants[i], 1e-5, names[i]);
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
  assert.throws(
    () => normBackward(Tensor.zeros(gpu, [2, 47]), x, null, null, { kind: "rms", eps: 1e-6 }),
    /normBackward dy: expected shape \[2, 48\], got \[2, 47\]/,
  );
  assert.throws(
    () => normBackward(x, x, Tensor.zeros(gpu, [47]), null, { kind: "rms", eps: 1e-6 }),
    /normBackward weight: expected shape \[48\], got \[47\]/,
  );
  const none = Tensor.zeros(gpu, [0, 8]), eight = Tensor.zeros(gpu, [8]);
  const empty = normBackward(none, none, eight, eight, { kind: "layer", eps: 1e-5 });
  const [dx, dw, db] = await Tensor.toHostAll([empty.dx, empty.dweight!, empty.dbias!]);
  assert.deepEqual([dx.shape, [...dw.data], [...db.data]], [[0, 8], Array(8).fill(0), Array(8).fill(0)]);
  const long = Tensor.zeros(gpu, [1, 140000]);
  assert.throws(
    () => normBackward(long, long, null, null, { kind: "layer", eps: 1e-5 }),
    /groups of 140000 channels need 70004 loop trips per thread, over 32768/,
  );
  await closeTestGpu();
});
