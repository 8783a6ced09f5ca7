import assert from "node:assert/strict";
import { noGrad } from "../src/autograd.ts";
import { add, linear } from "../src/nn/functional.ts";
import { Tensor } from "../src/tensor.ts";
import { assertClose, closeTestGpu, freshRng, randomTensor, testGpu } from "./util.ts";

/** float64 y = x·Wᵀ (+ b) for row-major x [m, k], W [n, k]. */
function lin(x: Float64Array, w: Float64Array, m: number, k: number, n: number, b?: Float64Array): Float64Array {
  const y = new Float64Array(m * n);
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) {
      let acc = b ? b[j] : 0;
      for (let t = 0; t < k; t++) acc += x[i * k + t] * w[j * k + t];
      y[i * n + j] = acc;
    }
  }
  return y;
}

/** float64 loss = Σ R ⊙ (x + lin(lin(x, W1, b1), W1ᵀ-shaped W2) + lin(x, W1) reused): the test's graph. */
function loss(x: Float64Array, w1: Float64Array, b1: Float64Array, w2: Float64Array, r: Float64Array): number {
  const [m, k, n] = [3, 5, 4];
  const h = lin(x, w1, m, k, n, b1);
  const y = lin(h, w2, m, n, k);
  const h2 = lin(x, w1, m, k, n); // W1 used twice: its gradient is the sum
  let s = 0;
  for (let i = 0; i < m * k; i++) s += r[i] * (x[i] + y[i]);
  for (let i = 0; i < m * n; i++) s += h2[i] * r[i];
  return s;
}

function numericGrad(f: (v: Float64Array) => number, v: Float64Array): Float64Array {
  const g = new Float64Array(v.length);
  for (let i = 0; i < v.length; i++) {
    const keep = v[i];
    v[i] = keep + 1e-6;
    const up = f(v);
    v[i] = keep - 1e-6;
    const down = f(v);
    v[i] = keep;
    g[i] = (up - down) / 2e-6;
  }
  return g;
}

Deno.test("backward fills .grad of inputs and parameters; a weight used twice gets the summed gradient", async () => {
  const gpu = await testGpu();
  const rng = freshRng("autograd");
  const x = randomTensor(rng, [3, 5]), w1 = randomTensor(rng, [4, 5]), b1 = randomTensor(rng, [4]);
  const w2 = randomTensor(rng, [5, 4]), r = randomTensor(rng, [3, 5]);
  const leaf = (t: { host: Parameters<typeof Tensor.fromHost>[1] }) =>
    Tensor.fromHost(gpu, t.host, { requiresGrad: true });
  const [tx, tw1, tb1, tw2] = [leaf(x), leaf(w1), leaf(b1), leaf(w2)];
  const y = add(tx, linear(linear(tx, tw1, tb1), tw2));
  const h2 = linear(tx, tw1);
  // Two roots: backward twice accumulates, as in PyTorch.
  await y.backward(Tensor.fromHost(gpu, r.host));
  await h2.backward(
    Tensor.fromHost(gpu, { ...r.host, shape: [3, 4], data: (r.host.data as Float32Array).slice(0, 12) }),
  );
  const got = await Tensor.toHostAll([tx.grad!, tw1.grad!, tb1.grad!, tw2.grad!]);
  const vals = [x.values, w1.values, b1.values, w2.values];
  const names = ["x", "W1", "b1", "W2"];
  vals.forEach((v, i) => {
    const f = (p: Float64Array) => {
      const args = vals.map((q, j) => (j === i ? p : q));
      return loss(args[0], args[1], args[2], args[3], r.values);
    };
    assertClose(got[i].data as Float32Array, numericGrad(f, Float64Array.from(v)), 1e-5, `d loss / d ${names[i]}`);
  });
});

Deno.test("noGrad records nothing; backward without a graph says so", async () => {
  const gpu = await testGpu();
  const rng = freshRng("noGrad");
  const x = Tensor.fromHost(gpu, randomTensor(rng, [2, 3]).host, { requiresGrad: true });
  const w = Tensor.fromHost(gpu, randomTensor(rng, [4, 3]).host, { requiresGrad: true });
  const y = noGrad(() => linear(x, w));
  assert.equal(y.gradFn, null);
  await assert.rejects(() => y.backward(), /does not require a gradient/);
  const z = linear(x, w);
  await assert.rejects(() => z.backward(), /upstream gradient is needed for a non-scalar output \[2, 4\]/);
  await assert.rejects(
    () => z.backward(Tensor.zeros(gpu, [4, 2])),
    /upstream gradient: expected shape \[2, 4\], got \[4, 2\]/,
  );
  await closeTestGpu();
});
