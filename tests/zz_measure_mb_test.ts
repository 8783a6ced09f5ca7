import { mlstmParallelBackward, mlstmParallelForwardWithCache } from "../src/ops/mlstm.ts";
import { matrix, Tensor } from "../src/tensor.ts";
import { mlstmParallelBackwardRef, mlstmParallelRef } from "../tests/cpu/mlstm.ts";
import { closeTestGpu, freshRng, relativeError, testGpu } from "../tests/util.ts";

function swap(x: ArrayLike<number>, batch: number, a: number, b: number, dh: number): Float64Array {
  const out = new Float64Array(x.length);
  for (let n = 0; n < batch; n++) for (let i = 0; i < a; i++) for (let j = 0; j < b; j++) for (let e = 0; e < dh; e++) out[((n * b + j) * a + i) * dh + e] = x[((n * a + i) * b + j) * dh + e];
  return out;
}
Deno.test("measure", async () => {
  const gpu = await testGpu();
  const rng = freshRng("m");
  for (let rep = 0; rep < 40; rep++) for (const [B, NH, S, DQ, DV, im] of [[2, 3, 17, 8, 8, 0], [1, 2, 33, 12, 5, 0], [2,2,10,7,3,-3], [2, 2, 64, 16, 24, 0], [2,2,64,16,16,-2]]) {
    const rows = B * S;
    const mk = (n: number, mean: number, std: number) => Float32Array.from(rng.normals(n, std), (x) => x + mean);
    const h = { q: mk(rows * NH * DQ, 0, 1), k: mk(rows * NH * DQ, 0, 1), v: mk(rows * NH * DV, 0, 1), i: mk(rows * NH, im, 3), f: mk(rows * NH, 3, 2), dh: mk(rows * NH * DV, 0, 1) };
    const up = (a: Float32Array, c: number) => Tensor.fromHost(gpu, { dtype: "float32", shape: [rows, c], data: a });
    const T = { q: up(h.q, NH * DQ), k: up(h.k, NH * DQ), v: up(h.v, NH * DV), i: up(h.i, NH), f: up(h.f, NH), dh: up(h.dh, NH * DV) };
    const dh3 = Tensor.fromHost(gpu, { dtype: "float32", shape: [B, S, NH * DV], data: h.dh });
    const o = { batch: B, numHeads: NH };
    const { h: hh, cache } = mlstmParallelForwardWithCache(matrix(T.q), matrix(T.k), matrix(T.v), matrix(T.i), matrix(T.f), o);
    const g = mlstmParallelBackward(dh3, matrix(T.q), matrix(T.k), matrix(T.v), matrix(T.i), matrix(T.f), cache, o);
    const got = await Tensor.toHostAll([g.dq, g.dk, g.dv, g.digate, g.dfgate]);
    const d = { batch: B, heads: NH, seq: S, dqk: DQ, dv: DV };
    const want = mlstmParallelBackwardRef(swap(h.q, B, S, NH, DQ), swap(h.k, B, S, NH, DQ), swap(h.v, B, S, NH, DV), swap(h.i, B, S, NH, 1), swap(h.f, B, S, NH, 1), swap(h.dh, B, S, NH, DV), d);
    const x = [swap(h.q, B, S, NH, DQ), swap(h.k, B, S, NH, DQ), swap(h.v, B, S, NH, DV), swap(h.i, B, S, NH, 1), swap(h.f, B, S, NH, 1)];
    const fw = mlstmParallelRef(x[0], x[1], x[2], x[3], x[4], d);
    const fa = mlstmParallelRef(x[0].map(Math.abs), x[1].map(Math.abs), x[2], x[3], x[4], d);
    let kappa = 1, lam = 0;
    for (let t = 0; t < fw.n.length; t++) { let a = 0; for (let s = 0; s < S; s++) a += Math.abs(fw.scores[t * S + s]); kappa = Math.max(kappa, fa.n[t] / fw.n[t]); lam = Math.max(lam, Math.abs(fw.m[t]), Math.abs(fw.logForget[t]), Math.abs(x[3][t])); }
    const gam = (DQ + S + 4 * lam) * 2 ** -24 * kappa;
    const names = ["dq", "dk", "dv", "digate", "dfgate"] as const;
    const widths = [DQ, DQ, DV, 1, 1];
    console.log(B, NH, S, DQ, DV, "kappa", kappa.toFixed(1), "bound", gam.toExponential(2), "ratio", Math.max(...names.map((n, j) => relativeError(swap(got[j].data as Float32Array, B, S, NH, widths[j]), want[n]))) / gam, rep, names.map((n, j) => relativeError(swap(got[j].data as Float32Array, B, S, NH, widths[j]), want[n]).toExponential(1)).join(" "));
  }
  await closeTestGpu();
});
