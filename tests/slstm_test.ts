import assert from "node:assert/strict";
import { planSlstm, type SlstmFunction, slstmNumStates, slstmRecurrentForward } from "../src/ops/slstm.ts";
import { readSafetensors } from "../src/safetensors.ts";
import { Tensor } from "../src/tensor.ts";
import { slstmForwardRef } from "./cpu/slstm.ts";
import { assertClose, closeTestGpu, freshRng, host, randomTensor, Rng, testGpu } from "./util.ts";
import type { Gpu } from "../src/gpu/runtime.ts";

interface Case {
  batch: number;
  seq: number;
  hidden: number;
  numHeads: number;
  fn: SlstmFunction;
  withState: boolean;
  memory?: "auto" | "global";
  maxStepsPerDispatch?: number;
}

/** A plausible caller state: sLSTM n > 0 except a few zeros (the per-element "n == 0" rule), any y, c, m. */
function randomState(rng: Rng, c: Case): Float64Array {
  const plane = c.batch * c.hidden;
  const s = rng.normals(slstmNumStates(c.fn) * plane, 0.5);
  if (c.fn === "slstm") {
    for (let i = 2 * plane; i < 3 * plane; i++) s[i] = i % 5 === 0 ? 0 : Math.abs(s[i]) + 0.1;
  }
  return Float64Array.from(Float32Array.from(s));
}

/** Runs one case on the GPU and the float64 reference; returns the GPU outputs for further comparisons. */
async function check(gpu: Gpu, rng: Rng, c: Case, label: string): Promise<Float32Array[]> {
  const dh = c.hidden / c.numHeads;
  const wx = randomTensor(rng, [c.batch, c.seq, 4 * c.hidden]);
  const r = randomTensor(rng, [c.numHeads, 4 * dh, dh], 1 / Math.sqrt(dh));
  const b = randomTensor(rng, [4 * c.hidden], 0.5);
  const s0 = c.withState ? randomState(rng, c) : null;
  const want = slstmForwardRef(wx.values, r.values, b.values, s0, c);
  const state = s0 ? Tensor.fromHost(gpu, host([slstmNumStates(c.fn), c.batch, c.hidden], s0)) : null;
  const got = slstmRecurrentForward(
    Tensor.fromHost(gpu, wx.host),
    Tensor.fromHost(gpu, r.host),
    Tensor.fromHost(gpu, b.host),
    state,
    { ...c, recurrentKernelMemory: c.memory, saveStates: true },
  );
  const outs = [got.y, got.state, got.saved!, ...(state ? [state] : [])];
  const [y, fin, saved, stateAfter] = (await Tensor.toHostAll(outs)).map((t) => t.data as Float32Array);
  assertClose(y, want.y, 1e-5, `${label} y`);
  assertClose(fin, want.state, 1e-5, `${label} final state`);
  assertClose(saved, want.saved, 1e-5, `${label} saved states`);
  if (s0) assert.deepEqual(stateAfter, Float32Array.from(s0), `${label}: the caller's state was modified`);
  return [y, fin];
}

Deno.test("sLSTM forward matches the float64 reference (NH 1, 2, 4; zero and caller states)", async () => {
  const gpu = await testGpu();
  const rng = freshRng("slstm workgroup R");
  assert.ok(planSlstm(gpu, 16).rInWorkgroup);
  await check(gpu, rng, { batch: 2, seq: 23, hidden: 32, numHeads: 2, fn: "slstm", withState: false }, "NH2");
  await check(gpu, rng, { batch: 2, seq: 17, hidden: 16, numHeads: 4, fn: "slstm", withState: true }, "state");
  await check(gpu, rng, { batch: 2, seq: 12, hidden: 64, numHeads: 1, fn: "slstm", withState: true }, "DH64");
});

Deno.test("LSTM forward matches the float64 reference", async () => {
  const gpu = await testGpu();
  const rng = freshRng("lstm");
  await check(gpu, rng, { batch: 2, seq: 19, hidden: 16, numHeads: 4, fn: "lstm", withState: true }, "lstm");
  await check(gpu, rng, { batch: 2, seq: 11, hidden: 32, numHeads: 2, fn: "lstm", withState: false }, "lstm zero");
});

Deno.test("sLSTM forward reads R from global memory when it does not fit or when asked", async () => {
  const gpu = await testGpu();
  const rng = freshRng("slstm global R");
  const forced: Case = { batch: 2, seq: 21, hidden: 32, numHeads: 4, fn: "slstm", withState: true, memory: "global" };
  assert.ok(!planSlstm(gpu, 8, "global").rInWorkgroup);
  await check(gpu, rng, forced, "forced global");
  // 4·48²·4 bytes = 36 KiB: beyond lavapipe's 32 KiB of workgroup memory (GPUs with more stage it instead).
  if (gpu.limits.maxComputeWorkgroupStorageSize < 4 * 48 * 48 * 4) assert.ok(!planSlstm(gpu, 48).rInWorkgroup);
  await check(gpu, rng, { batch: 2, seq: 10, hidden: 48, numHeads: 1, fn: "slstm", withState: false }, "DH48");
});

Deno.test("a sequence split over many dispatches equals one dispatch", async () => {
  const gpu = await testGpu();
  const rng = freshRng("slstm chunks");
  for (const fn of ["slstm", "lstm"] as const) {
    for (const memory of ["auto", "global"] as const) {
      const seed = rng.int(2 ** 31);
      const c: Case = { batch: 2, seq: 37, hidden: 32, numHeads: 2, fn, withState: true, memory };
      const [y1, s1] = await check(gpu, new Rng(seed), c, `${fn} ${memory} one dispatch`);
      const [y2, s2] = await check(gpu, new Rng(seed), { ...c, maxStepsPerDispatch: 5 }, `${fn} ${memory} chunked`);
      assert.deepEqual(y2, y1, `${fn} ${memory}: chunked y differs from one dispatch`);
      assert.deepEqual(s2, s1, `${fn} ${memory}: chunked state differs from one dispatch`);
    }
  }
  // A sequence longer than the loop-trip budget of one dispatch (lavapipe would cut the loop and return zeros).
  const plan = planSlstm(gpu, 32);
  const long: Case = {
    batch: 1,
    seq: plan.stepsPerDispatch + 30,
    hidden: 32,
    numHeads: 1,
    fn: "slstm",
    withState: false,
  };
  await check(gpu, rng, long, "longer than one dispatch");
});

Deno.test("sLSTM forward reproduces the golden slstm_cell case", async () => {
  const gpu = await testGpu();
  const g = await readSafetensors(new URL("../../shared/golden/slstm_cell.safetensors", import.meta.url));
  const [batch, seq, gates] = g.input.shape;
  const [, nh, , dh] = g.output.shape;
  const got = slstmRecurrentForward(
    Tensor.fromHost(gpu, g.input),
    Tensor.fromHost(gpu, g["param._recurrent_kernel_"]),
    Tensor.fromHost(gpu, g["param._bias_"]),
    null,
    { numHeads: nh },
  );
  const [y, state] = (await Tensor.toHostAll([got.y, got.state])).map((t) => t.data as Float32Array);
  // Golden output is [B, NH, S, DH]; ours is [B, S, NH, DH].
  const want = new Float64Array(y.length);
  const ref = g.output.data as Float32Array;
  for (let b = 0; b < batch; b++) {
    for (let h = 0; h < nh; h++) {
      for (let t = 0; t < seq; t++) {
        for (let d = 0; d < dh; d++) want[((b * seq + t) * nh + h) * dh + d] = ref[((b * nh + h) * seq + t) * dh + d];
      }
    }
  }
  assert.equal(gates, 4 * nh * dh);
  assertClose(y, want, 1e-5, "golden y");
  assertClose(state, g.state.data as Float32Array, 1e-5, "golden state");
});

Deno.test("sLSTM forward names the tensor and both shapes on mismatch", async () => {
  const gpu = await testGpu();
  const wx = Tensor.zeros(gpu, [2, 3, 32]), r = Tensor.zeros(gpu, [2, 16, 4]), b = Tensor.zeros(gpu, [32]);
  const opts = { numHeads: 2 };
  assert.throws(
    () => slstmRecurrentForward(wx, Tensor.zeros(gpu, [2, 4, 16]), b, null, opts),
    /recurrentKernel: expected shape \[2, 16, 4\], got \[2, 4, 16\]/,
  );
  assert.throws(
    () => slstmRecurrentForward(wx, r, Tensor.zeros(gpu, [16]), null, opts),
    /bias: expected shape \[32\], got \[16\]/,
  );
  assert.throws(
    () => slstmRecurrentForward(wx, r, b, Tensor.zeros(gpu, [2, 2, 8]), opts),
    /state: expected shape \[4, 2, 8\], got \[2, 2, 8\]/,
  );
  assert.throws(
    () => slstmRecurrentForward(wx, r, b, Tensor.zeros(gpu, [4, 2, 8]), { numHeads: 2, fn: "lstm" }),
    /state: expected shape \[2, 2, 8\]/,
  );
  assert.throws(() => slstmRecurrentForward(wx, r, b, null, { numHeads: 3 }), /H = 8 is not divisible by numHeads = 3/);
  assert.throws(
    () => slstmRecurrentForward(Tensor.zeros(gpu, [2, 30]), r, b, null, opts),
    /wx: expected shape \[\*, \*, \*\], got \[2, 30\]/,
  );
  await closeTestGpu();
});
