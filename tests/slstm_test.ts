import assert from "node:assert/strict";
import {
  planSlstm,
  type SlstmCommonOptions,
  type SlstmFunction,
  slstmNumStates,
  type SlstmPlan,
  slstmRecurrentBackward,
  slstmRecurrentForward,
  slstmSavedPlanes,
} from "../src/ops/slstm.ts";
import { readSafetensors } from "../src/safetensors.ts";
import { Tensor } from "../src/tensor.ts";
import { slstmBackwardRef, slstmForwardRef, type SlstmGradients } from "./cpu/slstm.ts";
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
  /** Cap on the sequences one invocation advances at once (the kernels' tile NB). */
  perInvocation?: number;
}

/** The op options of a case. */
function opOptions(c: Case): SlstmCommonOptions {
  return {
    numHeads: c.numHeads,
    fn: c.fn,
    maxStepsPerDispatch: c.maxStepsPerDispatch,
    recurrentKernelMemory: c.memory,
    maxSequencesPerInvocation: c.perInvocation,
  };
}

/** The plan a case runs under, for asserting which path a test exercises. */
function planOf(gpu: Gpu, c: Case, pass: "forward" | "backward"): SlstmPlan {
  return planSlstm(gpu, c.hidden / c.numHeads, c.batch, {
    pass,
    memory: c.memory,
    maxSequencesPerInvocation: c.perInvocation,
  });
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
    { ...opOptions(c), saveStates: true },
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
  assert.ok(planSlstm(gpu, 16, 2).rInWorkgroup);
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
  assert.ok(!planSlstm(gpu, 8, 2, { memory: "global" }).rInWorkgroup);
  await check(gpu, rng, forced, "forced global");
  // 4·48²·4 bytes = 36 KiB: beyond lavapipe's 32 KiB of workgroup memory (GPUs with more stage it instead).
  if (gpu.limits.maxComputeWorkgroupStorageSize < 4 * 48 * 48 * 4) assert.ok(!planSlstm(gpu, 48, 2).rInWorkgroup);
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
  const plan = planSlstm(gpu, 32, 1);
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
  const want = fromBnsh(g.output.data as Float32Array, batch, nh, seq, dh);
  assert.equal(gates, 4 * nh * dh);
  assertClose(y, want, 1e-5, "golden y");
  assertClose(state, g.state.data as Float32Array, 1e-5, "golden state");
});

/** Golden y is [B, NH, S, DH]; ours is [B, S, NH, DH]. Moves a golden-layout tensor into ours. */
function fromBnsh(ref: ArrayLike<number>, batch: number, nh: number, seq: number, dh: number): Float64Array {
  const out = new Float64Array(ref.length);
  for (let b = 0; b < batch; b++) {
    for (let h = 0; h < nh; h++) {
      for (let t = 0; t < seq; t++) {
        for (let d = 0; d < dh; d++) out[((b * seq + t) * nh + h) * dh + d] = ref[((b * nh + h) * seq + t) * dh + d];
      }
    }
  }
  return out;
}

/**
 * A caller state for the backward: {@linkcode randomState}, with m = ±6 alternately where n = 0, so that from those
 * elements f clamps to 1 (m large) or does not (m small): the clamp correction of the backward is exercised.
 */
function backwardState(rng: Rng, c: Case): Float64Array {
  const s = randomState(rng, c);
  const plane = c.batch * c.hidden;
  if (c.fn === "slstm") {
    for (let i = 0, sign = 1; i < plane; i++) if (s[2 * plane + i] === 0) s[3 * plane + i] = 6 * (sign = -sign);
  }
  return s;
}

interface BackwardCase extends Case {
  /** Whether the loss also depends on the final state (a non-null dFinalState). */
  withFinalGrad: boolean;
}

/** GPU backward vs the float64 reference on fresh inputs; returns the GPU gradients (dwx, dR, dbias, dState). */
async function checkBackward(gpu: Gpu, rng: Rng, c: BackwardCase, label: string): Promise<Float32Array[]> {
  const dh = c.hidden / c.numHeads;
  const ns = slstmNumStates(c.fn);
  const wx = randomTensor(rng, [c.batch, c.seq, 4 * c.hidden]);
  const r = randomTensor(rng, [c.numHeads, 4 * dh, dh], 1 / Math.sqrt(dh));
  const b = randomTensor(rng, [4 * c.hidden], 0.5);
  const s0 = c.withState ? backwardState(rng, c) : null;
  const dy = randomTensor(rng, [c.batch, c.seq, c.hidden]);
  const dFinal = c.withFinalGrad ? randomTensor(rng, [ns, c.batch, c.hidden]) : null;
  const want = slstmBackwardRef(wx.values, r.values, b.values, s0, dy.values, dFinal?.values ?? null, c);
  const inputs = {
    wx: Tensor.fromHost(gpu, wx.host),
    recurrentKernel: Tensor.fromHost(gpu, r.host),
    bias: Tensor.fromHost(gpu, b.host),
    state: s0 ? Tensor.fromHost(gpu, host([ns, c.batch, c.hidden], s0)) : null,
  };
  const options = opOptions(c);
  const fwd = slstmRecurrentForward(inputs.wx, inputs.recurrentKernel, inputs.bias, inputs.state, {
    ...options,
    saveStates: true,
  });
  const dFinalT = dFinal ? Tensor.fromHost(gpu, dFinal.host) : null;
  const got = slstmRecurrentBackward(
    Tensor.fromHost(gpu, dy.host),
    dFinalT,
    { ...inputs, y: fwd.y, saved: fwd.saved! },
    options,
  );
  const outs = [got.dwx, got.dRecurrentKernel, got.dBias, got.dState, ...(dFinalT ? [dFinalT] : [])];
  const host32 = (await Tensor.toHostAll(outs)).map((t) => t.data as Float32Array);
  const names: (keyof SlstmGradients)[] = ["dwx", "dR", "db", "dState"];
  // f32 vs f64; dR and dbias sum B·S terms, which stays well inside 1e-5 at these sizes (measured ≈ 3e-7).
  names.forEach((name, k) => assertClose(host32[k], want[name], 1e-5, `${label} ${name}`));
  if (dFinal) assert.deepEqual(host32[4], dFinal.host.data, `${label}: dFinalState was modified`);
  return host32.slice(0, 4);
}

Deno.test("sLSTM / LSTM backward reference equals central finite differences (float64)", () => {
  const rng = freshRng("slstm backward fd");
  for (const fn of ["slstm", "lstm"] as const) {
    const c: Case = { batch: 2, seq: 5, hidden: 8, numHeads: 2, fn, withState: true };
    const ns = slstmNumStates(fn), plane = c.batch * c.hidden;
    const args = [
      rng.normals(c.batch * c.seq * 4 * c.hidden),
      rng.normals(4 * c.hidden * (c.hidden / c.numHeads), 0.5),
      rng.normals(4 * c.hidden, 0.5),
      backwardState(rng, c),
    ];
    const dy = rng.normals(c.batch * c.seq * c.hidden), dFinal = rng.normals(ns * plane);
    const loss = (): number => {
      const out = slstmForwardRef(args[0], args[1], args[2], args[3], c);
      let sum = 0;
      out.y.forEach((v, k) => sum += v * dy[k]);
      out.state.forEach((v, k) => sum += v * dFinal[k]);
      return sum;
    };
    const g = slstmBackwardRef(args[0], args[1], args[2], args[3], dy, dFinal, c);
    [g.dwx, g.dR, g.db, g.dState].forEach((grad, which) => {
      const x = args[which];
      const fd = new Float64Array(x.length);
      for (let k = 0; k < x.length; k++) {
        // n = 0 selects the other branch of m: the derivative there is the branch's own (no finite difference).
        if (which === 3 && fn === "slstm" && Math.floor(k / plane) === 2 && x[k] === 0) {
          fd[k] = grad[k];
          continue;
        }
        const keep = x[k], eps = 1e-6;
        x[k] = keep + eps;
        const up = loss();
        x[k] = keep - eps;
        fd[k] = (up - loss()) / (2 * eps);
        x[k] = keep;
      }
      assertClose(grad, fd, 1e-7, `${fn} gradient ${["wx", "R", "bias", "state"][which]}`);
    });
  }
});

Deno.test("sLSTM / LSTM backward matches the float64 reference (zero and caller states, final-state gradients)", async () => {
  const gpu = await testGpu();
  const rng = freshRng("slstm backward");
  const base = { batch: 2, seq: 13, withState: false, withFinalGrad: false, memory: "auto" as const };
  assert.ok(planSlstm(gpu, 8, 2, { pass: "backward" }).rInWorkgroup);
  await checkBackward(gpu, rng, { ...base, hidden: 32, numHeads: 4, fn: "slstm" }, "NH4");
  await checkBackward(gpu, rng, { ...base, hidden: 16, numHeads: 2, fn: "slstm", withState: true }, "state");
  await checkBackward(
    gpu,
    rng,
    { ...base, hidden: 16, numHeads: 2, fn: "slstm", withState: true, withFinalGrad: true },
    "state + dFinalState",
  );
  await checkBackward(gpu, rng, { ...base, hidden: 16, numHeads: 4, fn: "lstm", withFinalGrad: true }, "lstm");
  await checkBackward(
    gpu,
    rng,
    { ...base, hidden: 16, numHeads: 2, fn: "lstm", withState: true, withFinalGrad: true },
    "lstm state",
  );
});

Deno.test("sLSTM backward: R in global memory, and a split sequence equals one dispatch", async () => {
  const gpu = await testGpu();
  const rng = freshRng("slstm backward chunks");
  // 4·64²·4 bytes = 64 KiB of R: global memory on lavapipe's 32 KiB (GPUs with more stage it instead).
  if (gpu.limits.maxComputeWorkgroupStorageSize < 4 * 64 * 64 * 4) {
    assert.ok(!planSlstm(gpu, 64, 1, { pass: "backward" }).rInWorkgroup);
  }
  const wide: BackwardCase = {
    batch: 1,
    seq: 6,
    hidden: 64,
    numHeads: 1,
    fn: "slstm",
    withState: true,
    withFinalGrad: true,
  };
  await checkBackward(gpu, rng, wide, "DH64");
  for (const fn of ["slstm", "lstm"] as const) {
    for (const memory of ["auto", "global"] as const) {
      const seed = rng.int(2 ** 31);
      const c: BackwardCase = {
        batch: 2,
        seq: 17,
        hidden: 16,
        numHeads: 2,
        fn,
        withState: true,
        withFinalGrad: true,
        memory,
      };
      const one = await checkBackward(gpu, new Rng(seed), c, `${fn} ${memory} one dispatch`);
      const split = await checkBackward(gpu, new Rng(seed), { ...c, maxStepsPerDispatch: 4 }, `${fn} ${memory} split`);
      split.forEach((g, k) => assert.deepEqual(g, one[k], `${fn} ${memory}: gradient ${k} of the split run differs`));
    }
  }
  // Longer than one dispatch's loop-trip budget (lavapipe would cut the loop and return garbage).
  const plan = planSlstm(gpu, 16, 1, { pass: "backward" });
  const long: BackwardCase = {
    batch: 1,
    seq: plan.stepsPerDispatch + 20,
    hidden: 16,
    numHeads: 1,
    fn: "slstm",
    withState: false,
    withFinalGrad: false,
  };
  await checkBackward(gpu, rng, long, "longer than one dispatch");
});

Deno.test("sLSTM backward reproduces the golden slstm_cell gradients", async () => {
  const gpu = await testGpu();
  const g = await readSafetensors(new URL("../../shared/golden/slstm_cell.safetensors", import.meta.url));
  const [batch, seq, gates] = g.input.shape;
  const [, nh, , dh] = g.output.shape;
  assert.equal(gates, 4 * nh * dh);
  const inputs = {
    wx: Tensor.fromHost(gpu, g.input),
    recurrentKernel: Tensor.fromHost(gpu, g["param._recurrent_kernel_"]),
    bias: Tensor.fromHost(gpu, g["param._bias_"]),
    state: null,
  };
  const fwd = slstmRecurrentForward(inputs.wx, inputs.recurrentKernel, inputs.bias, null, {
    numHeads: nh,
    saveStates: true,
  });
  // loss = Σ output · loss_weight with output = y in [B, NH, S, DH]: dy is loss_weight in our layout.
  const dy = fromBnsh(g.loss_weight.data as Float32Array, batch, nh, seq, dh);
  const got = slstmRecurrentBackward(
    Tensor.fromHost(gpu, host([batch, seq, nh * dh], dy)),
    null,
    { ...inputs, y: fwd.y, saved: fwd.saved! },
    { numHeads: nh },
  );
  const [dwx, dR, db] = (await Tensor.toHostAll([got.dwx, got.dRecurrentKernel, got.dBias]))
    .map((t) => t.data as Float32Array);
  // The conformance bound is 5e-4; measured ≈ 3e-7 (the float32 reference itself: 2e-7).
  assertClose(dwx, g["grad.input"].data as Float32Array, 1e-5, "golden grad.input");
  assertClose(dR, g["grad.param._recurrent_kernel_"].data as Float32Array, 1e-5, "golden grad R");
  assertClose(db, g["grad.param._bias_"].data as Float32Array, 1e-5, "golden grad bias");
});

Deno.test("tiles of sequences: tails, NB 1 to 8, sequence groups, both R placements, forward and backward", async () => {
  const gpu = await testGpu();
  const rng = freshRng("slstm tiles");
  const base = { seq: 6, withState: true, withFinalGrad: true };
  const cases: { c: BackwardCase; want: Partial<SlstmPlan> }[] = [
    // DH 8: 2 quads per head, so sequence groups fill the workgroup; 5 sequences in a tile of 3 × 2 leave a tail.
    {
      c: { ...base, batch: 5, hidden: 16, numHeads: 2, fn: "slstm", perInvocation: 2 },
      want: { lanes: 2, perInvocation: 2, groups: 3, rInWorkgroup: true },
    },
    {
      c: { ...base, batch: 7, hidden: 32, numHeads: 1, fn: "lstm", perInvocation: 3, memory: "global" },
      want: { lanes: 8, perInvocation: 3, groups: 3, rInWorkgroup: false },
    },
    {
      c: { ...base, batch: 11, hidden: 32, numHeads: 2, fn: "slstm", perInvocation: 1, withState: false },
      want: { perInvocation: 1, groups: 8 },
    },
    // The default tile of 8 sequences, 2 groups of them, R in global memory (64 KiB), 11 of 16 slots used.
    { c: { ...base, batch: 11, hidden: 64, numHeads: 1, fn: "slstm" }, want: { lanes: 16, perInvocation: 8 } },
    { c: { ...base, batch: 9, hidden: 16, numHeads: 1, fn: "lstm", perInvocation: 5 }, want: { perInvocation: 5 } },
  ];
  for (const { c, want } of cases) {
    const label = `B${c.batch} H${c.hidden} NH${c.numHeads} ${c.fn} NB ≤ ${c.perInvocation ?? 8} ${c.memory ?? "auto"}`;
    for (const pass of ["forward", "backward"] as const) {
      const plan = planOf(gpu, c, pass);
      for (const [key, value] of Object.entries(want)) {
        assert.equal(plan[key as keyof SlstmPlan], value, `${label} ${pass}: plan.${key}`);
      }
      assert.ok(c.batch % plan.sequencesPerWorkgroup !== 0, `${label} ${pass}: no tail tile`);
    }
    await check(gpu, rng, c, label);
    await checkBackward(gpu, rng, c, label);
  }
});

Deno.test("head dims that are not a multiple of 4, and heads wider than one pass of invocations", async () => {
  const gpu = await testGpu();
  const rng = freshRng("slstm odd heads");
  const cases: BackwardCase[] = [
    { batch: 3, seq: 5, hidden: 12, numHeads: 2, fn: "slstm", withState: true, withFinalGrad: true, perInvocation: 2 },
    { batch: 2, seq: 4, hidden: 10, numHeads: 1, fn: "lstm", withState: true, withFinalGrad: true, memory: "global" },
    // 65 quads: 64 invocations take two passes, the second one quad wide, whose last two dims are padding.
    { batch: 2, seq: 3, hidden: 258, numHeads: 1, fn: "slstm", withState: true, withFinalGrad: true },
  ];
  assert.equal(planOf(gpu, cases[2], "forward").passes, 2);
  for (const c of cases) {
    const label = `H${c.hidden} NH${c.numHeads} ${c.fn}`;
    await check(gpu, rng, c, label);
    await checkBackward(gpu, rng, c, label);
  }
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
  const saved = { wx, recurrentKernel: r, bias: b, state: null, y: Tensor.zeros(gpu, [2, 3, 8]) };
  const dy = Tensor.zeros(gpu, [2, 3, 8]);
  assert.throws(
    () => slstmRecurrentBackward(dy, null, { ...saved, saved: Tensor.zeros(gpu, [3, 2, 3, 8]) }, opts),
    /slstmRecurrentBackward: saved: expected shape \[7, 2, 3, 8\], got \[3, 2, 3, 8\]/,
  );
  const full = { ...saved, saved: Tensor.zeros(gpu, [slstmSavedPlanes("slstm"), 2, 3, 8]) };
  assert.throws(
    () => slstmRecurrentBackward(Tensor.zeros(gpu, [2, 8]), null, full, opts),
    /slstmRecurrentBackward: dy: expected shape \[2, 3, 8\], got \[2, 8\]/,
  );
  assert.throws(
    () => slstmRecurrentBackward(dy, Tensor.zeros(gpu, [2, 2, 8]), full, opts),
    /dFinalState: expected shape \[4, 2, 8\], got \[2, 2, 8\]/,
  );
  assert.throws(
    () => slstmRecurrentBackward(dy, null, { ...full, y: Tensor.zeros(gpu, [2, 8]) }, opts),
    /slstmRecurrentBackward: y: expected shape \[2, 3, 8\], got \[2, 8\]/,
  );
  assert.throws(
    () => slstmRecurrentForward(wx, r, b, null, { ...opts, maxSequencesPerInvocation: 9 }),
    /maxSequencesPerInvocation must be an integer in \[1, 8\], got 9/,
  );
  assert.throws(() => planSlstm(gpu, 1040, 1, { pass: "backward" }), /head dim 1040 is wider than 1024/);
  await closeTestGpu();
});
