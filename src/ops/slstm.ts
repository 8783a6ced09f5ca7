/**
 * The fused recurrent sLSTM forward pass (the reference's `backend: "cuda"` cell, as one WGSL kernel): block-diagonal
 * recurrent weights per head, one workgroup per (batch, head) looping over a chunk of time steps.
 *
 * @module
 */

import code from "../../shaders/slstm_recurrent_forward.wgsl" with { type: "text" };
import backwardCode from "../../shaders/slstm_recurrent_backward.wgsl" with { type: "text" };
import { GpuError, grid, Params } from "../gpu/runtime.ts";
import type { Gpu } from "../gpu/runtime.ts";
import { expectShape, matrix, Tensor } from "../tensor.ts";
import { sumRows } from "./reduce.ts";

const KERNEL = { name: "slstm_recurrent_forward", code };
const BACKWARD_KERNEL = { name: "slstm_recurrent_backward", code: backwardCode };

/** Total loop iterations one invocation may run per dispatch; lavapipe silently stops loops at 65,535. */
export const SLSTM_TRIP_BUDGET = 40_000;
/** Largest workgroup the kernel uses; heads wider than this give each thread several output dims. */
const MAX_WORKGROUP = 128;

/** Pointwise cell function: `"slstm"` (exponential gating, 4 states) or `"lstm"` (sigmoid gates, 2 states). */
export type SlstmFunction = "slstm" | "lstm";

/** Options of {@linkcode slstmRecurrentForward}. */
export interface SlstmForwardOptions {
  /** Number of heads NH; must divide H. */
  numHeads: number;
  /** Pointwise function; `"slstm"` when absent. */
  fn?: SlstmFunction;
  /** Upper bound on time steps per dispatch (tests force the chunked path with it). */
  maxStepsPerDispatch?: number;
  /**
   * Where the head's R block is read from: `"auto"` (workgroup memory when it fits, the default) or `"global"`
   * (always global memory; tests exercise that path with it).
   */
  recurrentKernelMemory?: "auto" | "global";
  /** Also return every step's states beyond y (for a backward pass): `saved` `[NS-1, B, S, H]`. */
  saveStates?: boolean;
}

/** Result of {@linkcode slstmRecurrentForward}. */
export interface SlstmForwardResult {
  /** Outputs y `[B, S, H]` (head-major within H, i.e. `[B, S, NH, DH]`). */
  y: Tensor;
  /** Final state `[NS, B, H]`: (y, c, n, m) for sLSTM, (y, c) for LSTM. A fresh tensor. */
  state: Tensor;
  /** With `saveStates`: per-step (c, n, m) for sLSTM or (c) for LSTM, `[NS-1, B, S, H]`. */
  saved?: Tensor;
}

/** Number of state vectors of a pointwise function: 4 (y, c, n, m) for sLSTM, 2 (y, c) for LSTM. */
export function slstmNumStates(fn: SlstmFunction): number {
  return fn === "lstm" ? 2 : 4;
}

/** How the kernel is laid out for one head size: threads, dims per thread, where R lives, steps per dispatch. */
export interface SlstmPlan {
  /** Threads per workgroup. */
  workgroup: number;
  /** Output dims per thread. */
  dimsPerThread: number;
  /** Whether the head's R block is staged in workgroup memory. */
  rInWorkgroup: boolean;
  /** Time steps per dispatch that keep every invocation under {@linkcode SLSTM_TRIP_BUDGET} loop iterations. */
  stepsPerDispatch: number;
}

/** Which kernel a plan is for: the forward recurrence or its backward. */
export type SlstmPass = "forward" | "backward";

/**
 * Plans the recurrent kernel of `pass` for head dim `dh` on `gpu` (exported so tests and benchmarks can see which
 * path runs).
 */
export function planSlstm(
  gpu: Gpu,
  dh: number,
  memory: "auto" | "global" = "auto",
  pass: SlstmPass = "forward",
): SlstmPlan {
  const limits = gpu.limits;
  const workgroup = Math.min(
    dh,
    MAX_WORKGROUP,
    limits.maxComputeInvocationsPerWorkgroup,
    limits.maxComputeWorkgroupSizeX,
  );
  const dimsPerThread = Math.ceil(dh / workgroup);
  // Workgroup floats besides R (4·DH²): forward y double buffer (2·DH), c, n, m (3·DH); backward y_{t-1} (DH),
  // d raw (4·DH), carries dy_rec, dc, dn, μ (4·DH).
  const vectors = pass === "forward" ? 5 : 9;
  const rInWorkgroup = memory === "auto" &&
    (4 * dh * dh + vectors * dh) * 4 <= limits.maxComputeWorkgroupStorageSize;
  // Count every loop iteration: staging R, loading and storing state (K each), and per step the time loop, the
  // loop over a thread's dims and, inside it, the R·y loop over d_in. The backward also loads y_{t-1} (K) and runs
  // a second loop over its dims with the Rᵀ·d raw loop inside.
  const fixed = (rInWorkgroup ? Math.ceil((dh * dh) / workgroup) : 0) + 2 * dimsPerThread;
  const perStep = pass === "forward" ? 1 + dimsPerThread * (1 + dh) : 1 + dimsPerThread + 2 * dimsPerThread * (1 + dh);
  const stepsPerDispatch = Math.floor((SLSTM_TRIP_BUDGET - fixed) / perStep);
  if (stepsPerDispatch < 1) {
    throw new RangeError(`slstm ${pass}: head dim ${dh} needs more than ${SLSTM_TRIP_BUDGET} loop trips per step`);
  }
  return { workgroup, dimsPerThread, rInWorkgroup, stepsPerDispatch };
}

/**
 * Runs the sLSTM (or LSTM) recurrence over a whole sequence on raw gate inputs.
 *
 * Per step t and head h: `raw = wx_t + R_h·y_{t-1} + b`, then the pointwise update of spec A5.1. The sequence is
 * split over dispatches of at most {@linkcode SlstmPlan.stepsPerDispatch} steps; the returned state tensor carries
 * the recurrence between them.
 *
 * @param wx gate pre-activations from the input `[B, S, 4H]`, gate-major (`g·H + h·DH + d`, gates i, f, z, o)
 * @param recurrentKernel `[NH, 4·DH, DH]` (row `g·DH + d_out`, column `d_in`: the vanilla layout)
 * @param bias `[4H]`, gate-major
 * @param state initial `[NS, B, H]` (not modified), or null for zeros
 */
export function slstmRecurrentForward(
  wx: Tensor,
  recurrentKernel: Tensor,
  bias: Tensor,
  state: Tensor | null,
  options: SlstmForwardOptions,
): SlstmForwardResult {
  const { batch, seq, hidden, nh, dh, ns, fn, plan, steps } = checkInputs(
    "slstmRecurrentForward",
    { wx, recurrentKernel, bias, state },
    options,
    "forward",
  );
  const gpu = wx.gpu;
  const out = Tensor.empty(gpu, [batch, seq, hidden]);
  const carry = state ? state.clone() : Tensor.zeros(gpu, [ns, batch, hidden]);
  const saved = options.saveStates ? Tensor.empty(gpu, [ns - 1, batch, seq, hidden]) : null;
  const savedBinding = saved ?? Tensor.empty(gpu, [1]);
  const pipeline = gpu.pipeline(KERNEL, {
    DH: dh,
    WG: plan.workgroup,
    LSTM: fn === "lstm" ? 1 : 0,
    R_WG_LEN: plan.rInWorkgroup ? dh * dh : 1,
  });
  const bindings = [
    wx.binding("wx"),
    recurrentKernel.binding("recurrentKernel"),
    bias.binding("bias"),
    carry.binding("state"),
    out.binding("y"),
    savedBinding.binding("saved states"),
  ];
  for (let t0 = 0; t0 < seq; t0 += steps) {
    const params = new Params().u32(batch).u32(seq).u32(hidden).u32(t0).u32(Math.min(steps, seq - t0)).u32(
      saved ? 1 : 0,
    );
    gpu.dispatch(pipeline, bindings, params, [nh, batch]);
  }
  if (!saved) savedBinding.dispose();
  return saved ? { y: out, state: carry, saved } : { y: out, state: carry };
}

/** Sizes, function and plan of one recurrent call, after its inputs are checked. */
interface Checked {
  batch: number;
  seq: number;
  hidden: number;
  nh: number;
  dh: number;
  ns: number;
  fn: SlstmFunction;
  plan: SlstmPlan;
  steps: number;
}

/** Validates the forward's inputs (errors name `op`, the tensor and both shapes) and plans the kernel of `pass`. */
function checkInputs(
  op: string,
  inputs: { wx: Tensor; recurrentKernel: Tensor; bias: Tensor; state: Tensor | null },
  options: SlstmForwardOptions | SlstmBackwardOptions,
  pass: SlstmPass,
): Checked {
  const { wx, recurrentKernel, bias, state } = inputs;
  const fn = options.fn ?? "slstm";
  const nh = options.numHeads;
  expectShape(`${op}: wx`, wx, [-1, -1, -1]);
  const [batch, seq, gates] = wx.shape;
  const hidden = gates / 4;
  if (!Number.isInteger(hidden) || hidden < 1) {
    throw new RangeError(`${op}: wx [${wx.shape.join(", ")}] needs a last dim of 4·H`);
  }
  if (!Number.isInteger(nh) || nh < 1 || hidden % nh !== 0) {
    throw new RangeError(`${op}: H = ${hidden} is not divisible by numHeads = ${nh}`);
  }
  const dh = hidden / nh;
  const ns = slstmNumStates(fn);
  expectShape(`${op}: recurrentKernel`, recurrentKernel, [nh, 4 * dh, dh]);
  expectShape(`${op}: bias`, bias, [4 * hidden]);
  if (state) expectShape(`${op}: state`, state, [ns, batch, hidden]);
  const limit = options.maxStepsPerDispatch ?? Infinity;
  if (!(limit >= 1)) throw new RangeError(`${op}: maxStepsPerDispatch ${limit} must be ≥ 1`);
  const max = wx.gpu.limits.maxComputeWorkgroupsPerDimension;
  if (nh > max || batch > max) {
    throw new GpuError(`${op}: ${nh} heads × ${batch} sequences exceed ${max} workgroups per dimension`);
  }
  const plan = planSlstm(wx.gpu, dh, options.recurrentKernelMemory, pass);
  const steps = Math.max(1, Math.min(plan.stepsPerDispatch, Math.floor(limit)));
  return { batch, seq, hidden, nh, dh, ns, fn, plan, steps };
}

/** What {@linkcode slstmRecurrentBackward} needs from the forward call: its inputs and outputs. */
export interface SlstmSaved {
  /** The forward's `wx` `[B, S, 4H]`. */
  wx: Tensor;
  /** The forward's `recurrentKernel` `[NH, 4·DH, DH]`. */
  recurrentKernel: Tensor;
  /** The forward's `bias` `[4H]`. */
  bias: Tensor;
  /** The forward's initial `state` `[NS, B, H]`, or null for zeros. */
  state: Tensor | null;
  /** The forward's output `y` `[B, S, H]`. */
  y: Tensor;
  /** The forward's `saved` per-step states `[NS-1, B, S, H]` (run it with `saveStates: true`). */
  saved: Tensor;
}

/** Options of {@linkcode slstmRecurrentBackward}: those of the forward call, plus tuning for tests. */
export interface SlstmBackwardOptions {
  /** Number of heads NH, as in the forward. */
  numHeads: number;
  /** Pointwise function, as in the forward; `"slstm"` when absent. */
  fn?: SlstmFunction;
  /** Upper bound on time steps per dispatch (tests force the chunked path with it). */
  maxStepsPerDispatch?: number;
  /** Where the head's R block is read from, as in {@linkcode SlstmForwardOptions.recurrentKernelMemory}. */
  recurrentKernelMemory?: "auto" | "global";
  /**
   * (b, t) rows summed per invocation into partial sums of dR (then summed by {@linkcode sumRows}); default
   * {@linkcode SLSTM_WEIGHT_ROWS}. Tests force several chunks with it.
   */
  rowsPerChunk?: number;
}

/** Gradients of {@linkcode slstmRecurrentBackward}, one per forward input; all new tensors. */
export interface SlstmBackwardResult {
  /** d wx `[B, S, 4H]`, which equals the gradient of the raw gates. */
  dwx: Tensor;
  /** d recurrentKernel `[NH, 4·DH, DH]` (vanilla layout). */
  dRecurrentKernel: Tensor;
  /** d bias `[4H]`. */
  dBias: Tensor;
  /** Gradient w.r.t. the initial state `[NS, B, H]` (also when the forward started from zeros). */
  dState: Tensor;
}

/** Default (b, t) rows per invocation of the dR reduction: a GPU still gets chunks × NH·DH² invocations. */
export const SLSTM_WEIGHT_ROWS = 256;

/**
 * Backward of {@linkcode slstmRecurrentForward}: gradients of a loss given `dy = ∂L/∂y` and `dFinalState =
 * ∂L/∂state` of the final state.
 *
 * The recurrence runs backwards in dispatches of at most {@linkcode SlstmPlan.stepsPerDispatch} steps (plan of the
 * `"backward"` pass), one workgroup per (head, batch); each step recomputes the raw gates from wx, R, b and y_{t-1}
 * and applies the pointwise backward of spec B1 with the exact corrections described in
 * `shaders/slstm_recurrent_backward.wgsl`, so the result equals autograd through the vanilla cell (for every state,
 * with the per-element "n == 0" rule of the forward). Then `dR[h] = Σ_{b,t} d raw ⊗ y_{t-1}` in chunks of
 * {@linkcode SlstmBackwardOptions.rowsPerChunk} rows and `dBias = Σ_{b,t} d raw`, both summed by {@linkcode sumRows}.
 *
 * @param dy gradient of the outputs `[B, S, H]`
 * @param dFinalState gradient of the returned final state `[NS, B, H]`, or null for none
 * @param saved the forward's inputs and outputs
 */
export function slstmRecurrentBackward(
  dy: Tensor,
  dFinalState: Tensor | null,
  saved: SlstmSaved,
  options: SlstmBackwardOptions,
): SlstmBackwardResult {
  const op = "slstmRecurrentBackward";
  const { batch, seq, hidden, nh, dh, ns, fn, plan, steps } = checkInputs(op, saved, options, "backward");
  const { wx, recurrentKernel, bias, state, y } = saved;
  expectShape(`${op}: y`, y, [batch, seq, hidden]);
  expectShape(`${op}: saved`, saved.saved, [ns - 1, batch, seq, hidden]);
  expectShape(`${op}: dy`, dy, [batch, seq, hidden]);
  if (dFinalState) expectShape(`${op}: dFinalState`, dFinalState, [ns, batch, hidden]);
  const rowsPerChunk = options.rowsPerChunk ?? SLSTM_WEIGHT_ROWS;
  if (!(Number.isInteger(rowsPerChunk) && rowsPerChunk >= 1 && rowsPerChunk <= SLSTM_TRIP_BUDGET)) {
    throw new RangeError(`${op}: rowsPerChunk must be an integer in [1, ${SLSTM_TRIP_BUDGET}], got ${rowsPerChunk}`);
  }

  const gpu = wx.gpu;
  const dwx = Tensor.empty(gpu, [batch, seq, 4 * hidden]);
  const dState = dFinalState ? dFinalState.clone() : Tensor.zeros(gpu, [ns, batch, hidden]);
  const rows = batch * seq;
  if (rows === 0) {
    return {
      dwx,
      dRecurrentKernel: Tensor.zeros(gpu, [nh, 4 * dh, dh]),
      dBias: Tensor.zeros(gpu, [4 * hidden]),
      dState,
    };
  }
  const state0 = state ?? Tensor.empty(gpu, [1]);
  const params = (t0: number, count: number): Params =>
    new Params().u32(batch).u32(seq).u32(hidden).u32(t0).u32(count).u32(state ? 1 : 0).u32(rowsPerChunk);

  const pipeline = gpu.pipeline(BACKWARD_KERNEL, {
    DH: dh,
    WG: plan.workgroup,
    LSTM: fn === "lstm" ? 1 : 0,
    R_WG_LEN: plan.rInWorkgroup ? dh * dh : 1,
  });
  const bindings = [
    wx.binding("wx"),
    recurrentKernel.binding("recurrentKernel"),
    bias.binding("bias"),
    state0.binding("state"),
    y.binding("y"),
    saved.saved.binding("saved"),
    dy.binding("dy"),
    dState.binding("dState"),
    dwx.binding("dwx"),
  ];
  // Dispatches cover [t0, t0 + count) from the end; the first one holds the last step even when S % steps ≠ 0.
  for (let end = seq; end > 0; end -= steps) {
    const t0 = Math.max(0, end - steps);
    gpu.dispatch(pipeline, bindings, params(t0, end - t0), [nh, batch]);
  }

  const chunks = Math.ceil(rows / rowsPerChunk);
  const partial = Tensor.empty(gpu, chunks === 1 ? [nh, 4 * dh, dh] : [chunks, nh * 4 * dh * dh]);
  const threads = 64;
  gpu.dispatch(
    gpu.pipeline(BACKWARD_KERNEL, { DH: dh, WG: threads }, "weight_grad"),
    [dwx.binding("dwx"), y.binding("y"), state0.binding("state"), partial.binding("dR partials")],
    params(0, 0),
    grid(chunks * hidden * dh, threads, gpu.limits.maxComputeWorkgroupsPerDimension),
  );
  if (!state) state0.dispose();
  let dRecurrentKernel = partial;
  if (chunks > 1) {
    const summed = sumRows(partial);
    partial.dispose();
    dRecurrentKernel = summed.reshape([nh, 4 * dh, dh]);
    summed.dispose();
  }
  const dBias = sumRows(matrix(dwx, 4 * hidden));
  return { dwx, dRecurrentKernel, dBias, dState };
}
