import assert from "node:assert/strict";
import { causalConv1d, causalConv1dBackward, conv1dBackwardSettings, conv1dStateUpdate } from "../src/ops/conv1d.ts";
import { columns, matrix, type MatrixView, Tensor } from "../src/tensor.ts";
import { causalConv1dBackwardRef, causalConv1dRef, conv1dStepRef } from "./cpu/conv1d.ts";
import { centralDifferences, dot } from "./cpu/activations.ts";
import { assertClose, closeTestGpu, freshRng, randomTensor, type Rng, testGpu } from "./util.ts";
import type { Gpu } from "../src/gpu/runtime.ts";
import type { HostTensor } from "../src/host_tensor.ts";

const TOL = 1e-5;

function upload(gpu: Gpu, rng: Rng, shape: number[]): { t: Tensor; v: Float64Array } {
  const r = randomTensor(rng, shape);
  return { t: Tensor.fromHost(gpu, r.host), v: r.values };
}

Deno.test("causalConv1d matches the float64 reference (KS 1..4, swish, strided views, history)", async () => {
  const gpu = await testGpu();
  const rng = freshRng("conv1d");
  const outs: Tensor[] = [], wants: Float64Array[] = [], names: string[] = [];
  const B = 2;
  // F = 6 runs the scalar path; F = 8 with every view 4-aligned the vec4 path. S = 9 fills one 8-time block and
  // starts another; S < 8 takes one time per invocation.
  for (const F of [6, 8]) {
    for (let taps = 1; taps <= 4; taps++) {
      for (const swish of [false, true]) {
        for (const mode of ["contiguous", "strided", "history", "long history, S < KS − 1"] as const) {
          const S = mode === "long history, S < KS − 1" ? Math.max(1, taps - 2) : 9;
          const frames = mode === "long history, S < KS − 1" ? taps + 2 : taps - 1;
          // The strided case reads columns [lead, lead + F) of a wider tensor, like one half of a fused projection.
          const lead = F % 4 ? 3 : 4;
          const wide = mode === "strided" ? upload(gpu, rng, [B * S, F + 2 * lead]) : upload(gpu, rng, [B * S, F]);
          const view: MatrixView = mode === "strided" ? columns(wide.t, lead, F) : matrix(wide.t);
          const x = new Float64Array(B * S * F);
          for (let r = 0; r < B * S; r++) {
            for (let f = 0; f < F; f++) x[r * F + f] = wide.v[view.offset + r * view.stride + f];
          }
          const w = upload(gpu, rng, [F, 1, taps]);
          const bias = swish || mode !== "history" ? upload(gpu, rng, [F]) : null;
          const hist = mode.includes("history") ? upload(gpu, rng, [B, frames, F]) : null;
          outs.push(causalConv1d(view, w.t, bias?.t ?? null, {
            batch: B,
            activation: swish ? "swish" : "none",
            history: hist?.t,
          }));
          wants.push(causalConv1dRef(x, B, F, w.v, bias?.v ?? null, {
            swish,
            history: hist && { frames, values: hist.v },
          }));
          names.push(`F ${F}, KS ${taps}, ${swish ? "swish" : "no activation"}, ${mode}`);
        }
      }
    }
  }
  const got = await Tensor.toHostAll(outs);
  got.forEach((g, i) => assertClose(g.data as Float32Array, wants[i], TOL, names[i]));
  assert.deepEqual(got[0].shape, [B, 9, 6]);
});

Deno.test("causalConv1d with a long kernel (one time per invocation) matches the reference", async () => {
  const gpu = await testGpu();
  const rng = freshRng("conv1d long kernel");
  const B = 2, S = 300, F = 4, KS = 260;
  const x = upload(gpu, rng, [B, S, F]), w = upload(gpu, rng, [F, 1, KS]), bias = upload(gpu, rng, [F]);
  const y = causalConv1d(matrix(x.t), w.t, bias.t, { batch: B, activation: "swish" });
  const want = causalConv1dRef(x.v, B, F, w.v, bias.v, { swish: true });
  assertClose((await y.toHost()).data as Float32Array, want, TOL, "KS 260");
});

Deno.test("stepping conv1dStateUpdate + causalConv1d equals the reference step and the full forward", async () => {
  for (const F of [5, 8]) await stepCase(F); // scalar and vec4 paths
});

async function stepCase(F: number): Promise<void> {
  const gpu = await testGpu();
  const rng = freshRng(`conv1d step F ${F}`);
  const B = 2, S = 7, KS = 4;
  const x = upload(gpu, rng, [B, S, F]), w = upload(gpu, rng, [F, 1, KS]), bias = upload(gpu, rng, [F]);
  let state: Tensor | null = null;
  const states: Tensor[] = [], ys: Tensor[] = [];
  for (let t = 0; t < S; t++) {
    // Frame t of every batch: a strided view, no copy.
    const frame: MatrixView = { tensor: x.t, rows: B, cols: F, offset: t * F, stride: S * F };
    const next = conv1dStateUpdate(state, frame, { batch: B, frames: KS });
    ys.push(causalConv1d(frame, w.t, bias.t, { batch: B, history: state }));
    states.push(state = next);
  }
  const full = causalConv1d(matrix(x.t), w.t, bias.t, { batch: B });
  const got = await Tensor.toHostAll([...states, ...ys, full]);

  let refState: Float64Array = new Float64Array(B * KS * F);
  const stepped = new Float64Array(B * S * F);
  for (let t = 0; t < S; t++) {
    const xt = new Float64Array(B * F);
    for (let b = 0; b < B; b++) xt.set(x.v.subarray((b * S + t) * F, (b * S + t + 1) * F), b * F);
    const ref = conv1dStepRef(refState, xt, w.v, bias.v, KS);
    refState = ref.state;
    // Read after every later step was recorded: the returned state is fresh and never mutated afterwards.
    assertClose(got[t].data as Float32Array, ref.state, 0, `state after step ${t}`);
    assertClose(got[S + t].data as Float32Array, ref.y, TOL, `y at step ${t}`);
    for (let b = 0; b < B; b++) stepped.set(ref.y.subarray(b * F, (b + 1) * F), (b * S + t) * F);
  }
  const forward = causalConv1dRef(x.v, B, F, w.v, bias.v);
  assertClose(stepped, forward, 1e-12, "reference step vs reference forward");
  assertClose(got[2 * S].data as Float32Array, forward, TOL, "full forward");
}

Deno.test("conv1dStateUpdate keeps the last frames of history then x (the forward's last-state window)", async () => {
  const gpu = await testGpu();
  const rng = freshRng("conv1d window");
  const B = 2;
  for (
    const [S, H, frames, F] of [[5, 0, 3, 3], [2, 0, 3, 3], [2, 3, 4, 3], [1, 3, 3, 3], [5, 2, 4, 8], [1, 3, 3, 4]]
  ) {
    const x = upload(gpu, rng, [B, S, F]), h = upload(gpu, rng, [B, Math.max(H, 1), F]);
    const history = H ? h.t : null;
    const got = await conv1dStateUpdate(history, matrix(x.t), { batch: B, frames }).toHost();
    const want = new Float64Array(B * frames * F);
    for (let b = 0; b < B; b++) {
      for (let k = 0; k < frames; k++) {
        const t = S - frames + k; // time of window slot k; negative times come from history, else zeros
        for (let f = 0; f < F; f++) {
          want[(b * frames + k) * F + f] = t >= 0
            ? x.v[(b * S + t) * F + f]
            : H + t >= 0
            ? h.v[(b * H + H + t) * F + f]
            : 0;
        }
      }
    }
    assertClose(got.data as Float32Array, want, 0, `window S=${S} H=${H} frames=${frames}`);
  }
});

Deno.test("the float64 conv1d gradients match central differences of the forward", () => {
  const rng = freshRng("conv1d gradient reference");
  const B = 2, S = 5, F = 3;
  for (const taps of [1, 3]) {
    for (const swish of [false, true]) {
      const [x, w, bias] = [B * S * F, F * taps, F].map((n) => Float64Array.from(rng.normals(n)));
      const dy = Float64Array.from(rng.normals(B * S * F));
      const loss = (xv: Float64Array, wv: Float64Array, bv: Float64Array) =>
        dot(dy, causalConv1dRef(xv, B, F, wv, bv, { swish }));
      const want = causalConv1dBackwardRef(dy, x, B, F, w, bias, swish);
      const pairs = [
        [centralDifferences((v) => loss(v, w, bias), x), want.dx, "dx"],
        [centralDifferences((v) => loss(x, v, bias), w), want.dweight, "dweight"],
        [centralDifferences((v) => loss(x, w, v), bias), want.dbias, "dbias"],
      ] as const;
      for (const [fd, exact, what] of pairs) {
        for (let i = 0; i < fd.length; i++) {
          assert.ok(
            Math.abs(fd[i] - exact[i]) < 1e-7,
            `KS ${taps} swish ${swish} ${what}[${i}]: ${exact[i]} vs ${fd[i]}`,
          );
        }
      }
    }
  }
});

interface BackwardCase {
  F: number;
  taps: number;
  swish: boolean;
  S: number;
  strided: boolean;
  bias: boolean;
  timesPerChunk?: number;
}

/** A recorded backward and how to check what it computed. */
interface Pending {
  outs: Tensor[];
  check: (host: HostTensor[]) => void;
}

/** Records causalConv1dBackward on random inputs; `check` compares all three gradients with the float64 reference. */
function backwardCase(gpu: Gpu, rng: Rng, c: BackwardCase, batch = 2): Pending {
  const { F, taps, swish, S } = c;
  const lead = F % 4 ? 3 : 4; // a column slice of a wider tensor, like one half of a fused projection
  const wide = c.strided ? upload(gpu, rng, [batch * S, F + 2 * lead]) : upload(gpu, rng, [batch * S, F]);
  const view: MatrixView = c.strided ? columns(wide.t, lead, F) : matrix(wide.t);
  const x = new Float64Array(batch * S * F);
  for (let r = 0; r < batch * S; r++) {
    for (let f = 0; f < F; f++) x[r * F + f] = wide.v[view.offset + r * view.stride + f];
  }
  const w = upload(gpu, rng, [F, 1, taps]), dy = upload(gpu, rng, [batch, S, F]);
  const bias = c.bias ? upload(gpu, rng, [F]) : null;
  const saved = conv1dBackwardSettings.timesPerChunk;
  conv1dBackwardSettings.timesPerChunk = c.timesPerChunk ?? saved;
  let got;
  try {
    got = causalConv1dBackward(dy.t, view, w.t, bias?.t ?? null, { batch, activation: swish ? "swish" : "none" });
  } finally {
    conv1dBackwardSettings.timesPerChunk = saved;
  }
  for (const t of [wide.t, w.t, dy.t, bias?.t]) t?.dispose(); // recorded work still reads them
  const want = causalConv1dBackwardRef(dy.v, x, batch, F, w.v, bias?.v ?? null, swish);
  const name = JSON.stringify(c);
  assert.equal(got.dbias === null, !c.bias, name);
  return {
    outs: [got.dx, got.dweight, ...(got.dbias ? [got.dbias] : [])],
    check: (host) => {
      assert.deepEqual(host.map((h) => h.shape), [[batch, S, F], [F, 1, taps], ...(c.bias ? [[F]] : [])], name);
      assertClose(host[0].data as Float32Array, want.dx, TOL, `dx ${name}`);
      assertClose(host[1].data as Float32Array, want.dweight, TOL, `dweight ${name}`);
      if (c.bias) assertClose(host[2].data as Float32Array, want.dbias, TOL, `dbias ${name}`);
    },
  };
}

/** Reads every pending result back at once and checks it. */
async function checkAll(pending: Pending[]): Promise<void> {
  const host = await Tensor.toHostAll(pending.flatMap((p) => p.outs));
  let at = 0;
  for (const p of pending) {
    p.check(host.slice(at, at += p.outs.length));
    for (const t of p.outs) t.dispose();
  }
}

Deno.test("causalConv1dBackward matches the float64 reference (KS 1..13, swish, strided x, chunked sums)", async () => {
  const gpu = await testGpu();
  const rng = freshRng("conv1d backward");
  // F 6: scalars; F 8: vec4 units. S 9 fills one 8-time block of dx and starts another; S 5 takes one time per
  // invocation. KS 13 takes two tap blocks (8 + a partial 5). timesPerChunk 4 sums 3 partial rows per batch.
  const pending: Pending[] = [];
  for (const F of [6, 8]) {
    for (const taps of [1, 4, 13]) {
      for (const swish of [false, true]) {
        pending.push(backwardCase(gpu, rng, { F, taps, swish, S: 9, strided: swish, bias: true, timesPerChunk: 4 }));
        pending.push(backwardCase(gpu, rng, { F, taps, swish, S: 5, strided: !swish, bias: !swish }));
      }
    }
  }
  await checkAll(pending);
});

Deno.test("causalConv1dBackward reduces long sequences and long kernels in chunks", async () => {
  const gpu = await testGpu();
  const rng = freshRng("conv1d backward long");
  // 2 × 600 times: dweight and dbias sum 1200 terms from 6 partial rows of 256 times (default chunking).
  // KS 260: one time per dx invocation, 33 tap blocks per weight_grad chunk.
  await checkAll([
    backwardCase(gpu, rng, { F: 8, taps: 4, swish: true, S: 600, strided: false, bias: true }),
    backwardCase(gpu, rng, { F: 4, taps: 260, swish: true, S: 300, strided: false, bias: true }),
  ]);
});

Deno.test("conv1d ops reject mismatched operands, naming the tensor and both shapes", async () => {
  const gpu = await testGpu();
  const x = matrix(Tensor.zeros(gpu, [6, 4]));
  const w = Tensor.zeros(gpu, [4, 1, 3]);
  const conv = (weight: Tensor, bias: Tensor | null, batch = 2, history: Tensor | null = null) =>
    causalConv1d(x, weight, bias, { batch, history });
  assert.throws(
    () => conv(Tensor.zeros(gpu, [4, 3]), null),
    /causalConv1d weight: expected shape \[4, 1, \*\], got \[4, 3\]/,
  );
  assert.throws(() => conv(w, Tensor.zeros(gpu, [3])), /causalConv1d bias: expected shape \[4\], got \[3\]/);
  assert.throws(
    () => conv(w, null, 2, Tensor.zeros(gpu, [2, 2, 5])),
    /causalConv1d history: expected shape \[2, \*, 4\], got \[2, 2, 5\]/,
  );
  assert.throws(
    () => conv(w, null, 2, Tensor.zeros(gpu, [2, 1, 4])),
    /at least 2 frames \(kernel size 3\), got \[2, 1, 4\]/,
  );
  assert.throws(() => conv(w, null, 4), /x view \[6, 4\] does not split into 4 batches/);
  assert.throws(
    () => causalConv1d({ ...x, offset: 1 }, w, null, { batch: 2 }),
    /x view \[6, 4\] \(offset 1, stride 4\) lies outside its tensor \[6, 4\]/,
  );
  const dy = Tensor.zeros(gpu, [2, 3, 4]);
  assert.throws(
    () => causalConv1dBackward(Tensor.zeros(gpu, [2, 4, 4]), x, w, null, { batch: 2 }),
    /causalConv1dBackward dy: expected shape \[2, 3, 4\], got \[2, 4, 4\]/,
  );
  assert.throws(
    () => causalConv1dBackward(dy, x, w, Tensor.zeros(gpu, [5]), { batch: 2 }),
    /causalConv1dBackward bias: expected shape \[4\], got \[5\]/,
  );
  assert.throws(
    // @ts-expect-error: the type admits no history; JavaScript callers get a clear error
    () => causalConv1dBackward(dy, x, w, null, { batch: 2, history: Tensor.zeros(gpu, [2, 2, 4]) }),
    /histories serve inference steps only/,
  );
  assert.throws(
    () => conv1dStateUpdate(Tensor.zeros(gpu, [2, 2, 5]), x, { batch: 2, frames: 3 }),
    /conv1dStateUpdate history: expected shape \[2, \*, 4\], got \[2, 2, 5\]/,
  );
  await closeTestGpu();
});
