/**
 * The fused recurrent sLSTM forward pass (the reference's `backend: "cuda"` cell, as one WGSL kernel): block-diagonal
 * recurrent weights per head, one workgroup per (batch, head) looping over a chunk of time steps.
 *
 * @module
 */

import code from "../../shaders/slstm_recurrent_forward.wgsl" with { type: "text" };
import { GpuError, Params } from "../gpu/runtime.ts";
import type { Gpu } from "../gpu/runtime.ts";
import { expectShape, Tensor } from "../tensor.ts";

const KERNEL = { name: "slstm_recurrent_forward", code };

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

/** Plans the kernel for head dim `dh` on `gpu` (exported so tests and benchmarks can see which path runs). */
export function planSlstm(gpu: Gpu, dh: number, memory: "auto" | "global" = "auto"): SlstmPlan {
  const limits = gpu.limits;
  const workgroup = Math.min(
    dh,
    MAX_WORKGROUP,
    limits.maxComputeInvocationsPerWorkgroup,
    limits.maxComputeWorkgroupSizeX,
  );
  const dimsPerThread = Math.ceil(dh / workgroup);
  // Workgroup floats: R (4·DH²), y double buffer (2·DH), c, n, m (3·DH).
  const rInWorkgroup = memory === "auto" && (4 * dh * dh + 5 * dh) * 4 <= limits.maxComputeWorkgroupStorageSize;
  // Count every loop iteration: staging R, loading and storing state (K each), and per step the time loop, the
  // loop over a thread's dims and, inside it, the R·y loop over d_in.
  const fixed = (rInWorkgroup ? Math.ceil((dh * dh) / workgroup) : 0) + 2 * dimsPerThread;
  const perStep = 1 + dimsPerThread * (1 + dh);
  const stepsPerDispatch = Math.floor((SLSTM_TRIP_BUDGET - fixed) / perStep);
  if (stepsPerDispatch < 1) {
    throw new RangeError(
      `slstmRecurrentForward: head dim ${dh} needs more than ${SLSTM_TRIP_BUDGET} loop trips per step`,
    );
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
  const fn = options.fn ?? "slstm";
  const nh = options.numHeads;
  expectShape("slstmRecurrentForward: wx", wx, [-1, -1, -1]);
  const [batch, seq, gates] = wx.shape;
  const hidden = gates / 4;
  if (!Number.isInteger(hidden) || hidden < 1) {
    throw new RangeError(`slstmRecurrentForward: wx [${wx.shape.join(", ")}] needs a last dim of 4·H`);
  }
  if (!Number.isInteger(nh) || nh < 1 || hidden % nh !== 0) {
    throw new RangeError(`slstmRecurrentForward: H = ${hidden} is not divisible by numHeads = ${nh}`);
  }
  const dh = hidden / nh;
  const ns = slstmNumStates(fn);
  expectShape("slstmRecurrentForward: recurrentKernel", recurrentKernel, [nh, 4 * dh, dh]);
  expectShape("slstmRecurrentForward: bias", bias, [4 * hidden]);
  if (state) expectShape("slstmRecurrentForward: state", state, [ns, batch, hidden]);
  const limit = options.maxStepsPerDispatch ?? Infinity;
  if (!(limit >= 1)) throw new RangeError(`slstmRecurrentForward: maxStepsPerDispatch ${limit} must be ≥ 1`);
  const max = wx.gpu.limits.maxComputeWorkgroupsPerDimension;
  if (nh > max || batch > max) {
    throw new GpuError(
      `slstmRecurrentForward: ${nh} heads × ${batch} sequences exceed ${max} workgroups per dimension`,
    );
  }

  const gpu = wx.gpu;
  const plan = planSlstm(gpu, dh, options.recurrentKernelMemory);
  const steps = Math.max(1, Math.min(plan.stepsPerDispatch, Math.floor(limit)));
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
