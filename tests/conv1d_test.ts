import assert from "node:assert/strict";
import { causalConv1d, conv1dStateUpdate } from "../src/ops/conv1d.ts";
import { columns, matrix, type MatrixView, Tensor } from "../src/tensor.ts";
import { causalConv1dRef, conv1dStepRef } from "./cpu/conv1d.ts";
import { assertClose, closeTestGpu, freshRng, randomTensor, type Rng, testGpu } from "./util.ts";
import type { Gpu } from "../src/gpu/runtime.ts";

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
  assert.throws(
    () => conv1dStateUpdate(Tensor.zeros(gpu, [2, 2, 5]), x, { batch: 2, frames: 3 }),
    /conv1dStateUpdate history: expected shape \[2, \*, 4\], got \[2, 2, 5\]/,
  );
  await closeTestGpu();
});
