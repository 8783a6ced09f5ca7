/**
 * The fused recurrent sLSTM (and LSTM) cell, forward and backward through time (the reference's `backend: "cuda"`
 * cell, as WGSL kernels): block-diagonal recurrent weights per head; a workgroup per (head, tile of sequences) loops
 * over a chunk of time steps, and each invocation advances up to 8 sequences at once so that every block of R it
 * loads serves all of them (see the shaders' headers).
 *
 * @module
 */

import common from "../../shaders/slstm_recurrent_common.wgsl" with { type: "text" };
import code from "../../shaders/slstm_recurrent_forward.wgsl" with { type: "text" };
import backwardCode from "../../shaders/slstm_recurrent_backward.wgsl" with { type: "text" };
import { GpuError, grid, Params } from "../gpu/runtime.ts";
import type { BufferRange, Gpu } from "../gpu/runtime.ts";
import { expectShape, matrix, Tensor } from "../tensor.ts";
import { gemm } from "./matmul.ts";
import { sumRows } from "./reduce.ts";

/**
 * WGSL accessors of quads of `array<vec4f>` bindings: `read_<name>(e, n)` / `write_<name>(e, n, v)` move elements
 * e .. e + n − 1 (n ≤ 4; a short read is zero-padded), as one vec4 when the layout is `ALIGNED`. WGSL cannot pass a
 * storage array to a function, so each binding gets its own, generated here from one template.
 */
function quadAccessors(reads: string[], writes: string[]): string {
  const at = (name: string, c: string) => `${name}[i.${c} / 4u][i.${c} % 4u]`;
  const read = (name: string) => `
fn read_${name}(e: u32, n: u32) -> vec4f {
  if (ALIGNED) {
    return ${name}[e / 4u];
  }
  let i = elements(e, n);
  return select(vec4f(), vec4f(${["x", "y", "z", "w"].map((c) => at(name, c)).join(", ")}), real(n));
}
`;
  const write = (name: string) => `
fn write_${name}(e: u32, n: u32, v: vec4f) {
  if (ALIGNED) {
    ${name}[e / 4u] = v;
    return;
  }
  let i = e + vec4u(0u, 1u, 2u, 3u);
  ${at(name, "x")} = v.x;
  if (n > 1u) { ${at(name, "y")} = v.y; }
  if (n > 2u) { ${at(name, "z")} = v.z; }
  if (n > 3u) { ${at(name, "w")} = v.w; }
}
`;
  return [...reads.map(read), ...writes.map(write)].join("");
}

const KERNEL = { name: "slstm_recurrent_forward", code: common + quadAccessors(["wx", "bias"], ["y", "saved"]) + code };
const BACKWARD_KERNEL = {
  name: "slstm_recurrent_backward",
  code: common + quadAccessors(["saved", "dy"], ["dwx"]) + backwardCode,
};

/** Total loop iterations one invocation may run per dispatch; lavapipe silently stops loops at 65,535. */
export const SLSTM_TRIP_BUDGET = 40_000;
/** Most invocations along a head's quads (4 dims each); wider heads take several passes per step. */
const MAX_LANES = 64;
/** Sequence groups fill a workgroup up to this many invocations (a warp; 4 of lavapipe's 8-wide SIMD batches). */
const TARGET_WORKGROUP = 32;
/** Most sequences one invocation advances at once (the kernels unroll this many accumulators). */
export const SLSTM_MAX_SEQUENCES_PER_INVOCATION = 8;

/** Pointwise cell function: `"slstm"` (exponential gating, 4 states) or `"lstm"` (sigmoid gates, 2 states). */
export type SlstmFunction = "slstm" | "lstm";

/** Options shared by {@linkcode slstmRecurrentForward} and {@linkcode slstmRecurrentBackward}. */
export interface SlstmCommonOptions {
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
  /**
   * Upper bound on the sequences one invocation advances at once (default and most
   * {@linkcode SLSTM_MAX_SEQUENCES_PER_INVOCATION}); tests force the smaller tiles with it.
   */
  maxSequencesPerInvocation?: number;
}

/** Options of {@linkcode slstmRecurrentForward}. */
export interface SlstmForwardOptions extends SlstmCommonOptions {
  /** Also return every step's states beyond y and raw gates (for a backward pass) as `saved`. */
  saveStates?: boolean;
}

/** Result of {@linkcode slstmRecurrentForward}. */
export interface SlstmForwardResult {
  /** Outputs y `[B, S, H]` (head-major within H, i.e. `[B, S, NH, DH]`). */
  y: Tensor;
  /** Final state `[NS, B, H]`: (y, c, n, m) for sLSTM, (y, c) for LSTM. A fresh tensor. */
  state: Tensor;
  /**
   * With `saveStates`: per step the states beyond y, (c, n, m) for sLSTM or (c) for LSTM, then the raw gates
   * i, f, z, o (`wx + R·y_{t-1} + b`): `[NS + 3, B, S, H]` (see {@linkcode slstmSavedPlanes}).
   */
  saved?: Tensor;
}

/** Number of state vectors of a pointwise function: 4 (y, c, n, m) for sLSTM, 2 (y, c) for LSTM. */
export function slstmNumStates(fn: SlstmFunction): number {
  return fn === "lstm" ? 2 : 4;
}

/** Planes `[B, S, H]` of the forward's `saved` tensor: the NS − 1 states beyond y and the 4 raw gates. */
export function slstmSavedPlanes(fn: SlstmFunction): number {
  return slstmNumStates(fn) + 3;
}

/** How the kernel of one pass is laid out for one head size and batch (see the shaders' headers). */
export interface SlstmPlan {
  /** Invocations per sequence group, one quad of 4 dims each per pass. */
  lanes: number;
  /** Passes over a head's quads per step (quads per invocation). */
  passes: number;
  /** Sequences one invocation advances at once (NB). */
  perInvocation: number;
  /** Sequence groups per workgroup. */
  groups: number;
  /** Sequences per workgroup (groups × NB); the grid is (heads, ⌈B / this⌉). */
  sequencesPerWorkgroup: number;
  /** Threads per workgroup (lanes × groups). */
  workgroup: number;
  /** Whether the head's packed R block is staged in workgroup memory. */
  rInWorkgroup: boolean;
  /** Workgroup memory the kernel declares, in bytes. */
  workgroupBytes: number;
  /** Time steps per dispatch that keep every invocation under {@linkcode SLSTM_TRIP_BUDGET} loop iterations. */
  stepsPerDispatch: number;
}

/** Which kernel a plan is for: the forward recurrence or its backward. */
export type SlstmPass = "forward" | "backward";

/** Options of {@linkcode planSlstm}. */
export interface SlstmPlanOptions {
  /** The pass; `"forward"` when absent. */
  pass?: SlstmPass;
  /** As {@linkcode SlstmCommonOptions.recurrentKernelMemory}. */
  memory?: "auto" | "global";
  /** As {@linkcode SlstmCommonOptions.maxSequencesPerInvocation}. */
  maxSequencesPerInvocation?: number;
}

/**
 * Plans the recurrent kernel for head dim `dh` and `batch` sequences on `gpu` (exported so tests and benchmarks can
 * see which path runs). Tiles as many sequences per invocation as allowed (each block of R loaded serves them all),
 * fills a workgroup with sequence groups, and stages R in workgroup memory when it fits beside a tile.
 */
export function planSlstm(gpu: Gpu, dh: number, batch: number, options: SlstmPlanOptions = {}): SlstmPlan {
  const { pass = "forward", memory = "auto" } = options;
  const cap = options.maxSequencesPerInvocation ?? SLSTM_MAX_SEQUENCES_PER_INVOCATION;
  if (!(Number.isInteger(cap) && cap >= 1 && cap <= SLSTM_MAX_SEQUENCES_PER_INVOCATION)) {
    throw new RangeError(
      `slstm ${pass}: maxSequencesPerInvocation must be an integer in [1, ${SLSTM_MAX_SEQUENCES_PER_INVOCATION}], ` +
        `got ${cap}`,
    );
  }
  const limits = gpu.limits;
  const quads = Math.ceil(dh / 4);
  const maxWorkgroup = Math.min(limits.maxComputeInvocationsPerWorkgroup, limits.maxComputeWorkgroupSizeX);
  const lanes = Math.min(quads, MAX_LANES, maxWorkgroup);
  const passes = Math.ceil(quads / lanes);
  let perInvocation = Math.max(1, Math.min(cap, batch));
  let groups = Math.max(
    1,
    Math.min(Math.floor(TARGET_WORKGROUP / lanes), Math.floor(maxWorkgroup / lanes), Math.ceil(batch / perInvocation)),
  );
  // The backward's Rᵀ pass gives each invocation 16 columns of one sequence group in a single round.
  if (pass === "backward" && Math.ceil(quads / 4) > lanes) {
    throw new RangeError(`slstm backward: head dim ${dh} is wider than ${16 * lanes}, the most the kernel handles`);
  }
  // Workgroup vec4s per sequence: forward y (double-buffered), c, n, m; backward d raw (4 gates, dy_rec in between),
  // dc, dn, μ. Then R, or the one vec4 its array takes when R stays in global memory.
  const perSequence = (pass === "forward" ? 5 : 7) * quads * 16;
  const rBytes = 16 * packedLength(dh);
  const limit = limits.maxComputeWorkgroupStorageSize;
  const rInWorkgroup = memory === "auto" && rBytes + perSequence <= limit;
  const room = limit - (rInWorkgroup ? rBytes : 16);
  while (groups * perInvocation * perSequence > room) {
    if (groups > 1) groups--;
    else if (perInvocation > 1) perInvocation--;
    else {
      throw new RangeError(
        `slstm ${pass}: head dim ${dh} needs ${perSequence} bytes of workgroup memory per sequence, more than ` +
          `this adapter's ${limit}`,
      );
    }
  }
  const workgroup = lanes * groups;
  // Count every loop iteration of an invocation: staging R, loading and storing the tile's states (or carries), and
  // per step the time loop and: forward, the passes over quads with the R·y loop over DQ and the pointwise loop over
  // the NB sequences inside; backward, the pointwise passes with their loop over the NB sequences, then the Rᵀ·d
  // loop over DQ.
  const tileLoops = passes * (1 + perInvocation);
  const fixed = (rInWorkgroup ? Math.ceil(packedLength(dh) / workgroup) : 0) + 2 * tileLoops;
  const perStep = 1 + (pass === "forward" ? passes * (1 + quads + perInvocation) : tileLoops + quads);
  const stepsPerDispatch = Math.floor((SLSTM_TRIP_BUDGET - fixed) / perStep);
  if (stepsPerDispatch < 1) {
    throw new RangeError(`slstm ${pass}: head dim ${dh} needs more than ${SLSTM_TRIP_BUDGET} loop trips per step`);
  }
  return {
    lanes,
    passes,
    perInvocation,
    groups,
    sequencesPerWorkgroup: groups * perInvocation,
    workgroup,
    rInWorkgroup,
    workgroupBytes: groups * perInvocation * perSequence + limit - room,
    stepsPerDispatch,
  };
}

/** The override constants of a plan's recurrent pipeline. */
function constants(plan: SlstmPlan, dh: number, fn: SlstmFunction): Record<string, number> {
  return {
    DH: dh,
    LANES: plan.lanes,
    GROUPS: plan.groups,
    NB: plan.perInvocation,
    LSTM: fn === "lstm" ? 1 : 0,
    R_WG_LEN: plan.rInWorkgroup ? packedLength(dh) : 1,
  };
}

/**
 * A whole tensor bound as whole vec4s: the kernels read quads of 4 elements as one vec4, also the last one of a
 * tensor whose size is not a multiple of 4 (buffers are allocated in multiples of 256 bytes, so it exists).
 */
function quadBinding(t: Tensor, name: string): BufferRange {
  const range = t.binding(name);
  return { ...range, size: Math.ceil(range.size / 16) * 16 };
}

/** vec4s of one head's packed R: 4 gates × DP columns × DQ quads (DQ = ⌈DH / 4⌉, DP = 16·⌈DQ / 4⌉). */
function packedLength(dh: number): number {
  const quads = Math.ceil(dh / 4);
  return 4 * 16 * Math.ceil(quads / 4) * quads;
}

/**
 * R `[NH, 4·DH, DH]` as the recurrent kernels of `plan` read it: as it is when they stage it in workgroup memory
 * (packing it on the way), else packed into a new `[NH, 4, DP, DQ]` tensor of vec4s (4 consecutive output dims,
 * zero-padded; layout in shaders/slstm_recurrent_common.wgsl) so that a 4×4 block is 4 vec4 loads.
 */
function recurrentOperand(r: Tensor, nh: number, dh: number, plan: SlstmPlan): Tensor {
  if (plan.rInWorkgroup) return r.retain();
  const gpu = r.gpu;
  const packed = Tensor.empty(gpu, [nh, packedLength(dh), 4]);
  gpu.dispatch(
    gpu.pipeline(KERNEL, { DH: dh }, "pack"),
    [quadBinding(r, "recurrentKernel"), packed.binding("packed recurrentKernel")],
    new Params().u32(0).u32(0).u32(nh * dh).u32(0).u32(0).u32(0),
    grid(nh * packedLength(dh), 64, gpu.limits.maxComputeWorkgroupsPerDimension),
  );
  return packed;
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
  const saved = options.saveStates ? Tensor.empty(gpu, [slstmSavedPlanes(fn), batch, seq, hidden]) : null;
  const savedBinding = saved ?? Tensor.empty(gpu, [1]);
  const r = recurrentOperand(recurrentKernel, nh, dh, plan);
  const pipeline = gpu.pipeline(KERNEL, constants(plan, dh, fn));
  const bindings = [
    quadBinding(r, "recurrentKernel"),
    quadBinding(wx, "wx"),
    quadBinding(bias, "bias"),
    carry.binding("state"),
    quadBinding(out, "y"),
    quadBinding(savedBinding, "saved states"),
  ];
  const tiles = Math.ceil(batch / plan.sequencesPerWorkgroup);
  for (let t0 = 0; t0 < seq; t0 += steps) {
    const params = new Params().u32(batch).u32(seq).u32(hidden).u32(t0).u32(Math.min(steps, seq - t0)).u32(
      saved ? 1 : 0,
    );
    gpu.dispatch(pipeline, bindings, params, [nh, tiles]);
  }
  r.dispose();
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
  options: SlstmCommonOptions,
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
  const plan = planSlstm(wx.gpu, dh, batch, {
    pass,
    memory: options.recurrentKernelMemory,
    maxSequencesPerInvocation: options.maxSequencesPerInvocation,
  });
  const max = wx.gpu.limits.maxComputeWorkgroupsPerDimension;
  const tiles = Math.ceil(batch / plan.sequencesPerWorkgroup);
  if (nh > max || tiles > max) {
    throw new GpuError(`${op}: ${nh} heads × ${tiles} tiles of sequences exceed ${max} workgroups per dimension`);
  }
  const steps = Math.max(1, Math.min(plan.stepsPerDispatch, Math.floor(limit)));
  return { batch, seq, hidden, nh, dh, ns, fn, plan, steps };
}

/** What {@linkcode slstmRecurrentBackward} needs from the forward call: its inputs and outputs. */
export interface SlstmSaved {
  /** The forward's `wx` `[B, S, 4H]` (only its shape is read: the raw gates are in `saved`). */
  wx: Tensor;
  /** The forward's `recurrentKernel` `[NH, 4·DH, DH]`. */
  recurrentKernel: Tensor;
  /** The forward's `bias` `[4H]` (only its shape is read). */
  bias: Tensor;
  /** The forward's initial `state` `[NS, B, H]`, or null for zeros. */
  state: Tensor | null;
  /** The forward's output `y` `[B, S, H]`. */
  y: Tensor;
  /** The forward's `saved` per-step states and raw gates `[NS + 3, B, S, H]` (run it with `saveStates: true`). */
  saved: Tensor;
}

/** Options of {@linkcode slstmRecurrentBackward}: those of the forward call (tuning options may differ). */
export type SlstmBackwardOptions = SlstmCommonOptions;

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

/**
 * Backward of {@linkcode slstmRecurrentForward}: gradients of a loss given `dy = ∂L/∂y` and `dFinalState =
 * ∂L/∂state` of the final state.
 *
 * The recurrence runs backwards in dispatches of at most {@linkcode SlstmPlan.stepsPerDispatch} steps (plan of the
 * `"backward"` pass), tiled over heads and sequences as the forward; each step reads the raw gates the forward saved
 * and applies the pointwise backward of spec B1 with the exact corrections described in
 * `shaders/slstm_recurrent_backward.wgsl`, so the result equals autograd through the vanilla cell (for every state,
 * with the per-element "n == 0" rule of the forward). Then `dR[h] = Σ_{b,t} d rawᵀ·y_{t-1}` is one batched
 * {@linkcode gemm} over the (b, t) rows and `dBias = Σ_{b,t} d raw` a {@linkcode sumRows}.
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
  const { recurrentKernel, state, y } = saved;
  expectShape(`${op}: y`, y, [batch, seq, hidden]);
  expectShape(`${op}: saved`, saved.saved, [slstmSavedPlanes(fn), batch, seq, hidden]);
  expectShape(`${op}: dy`, dy, [batch, seq, hidden]);
  if (dFinalState) expectShape(`${op}: dFinalState`, dFinalState, [ns, batch, hidden]);

  const gpu = dy.gpu;
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
    new Params().u32(batch).u32(seq).u32(hidden).u32(t0).u32(count).u32(state ? 1 : 0);

  const r = recurrentOperand(recurrentKernel, nh, dh, plan);
  const pipeline = gpu.pipeline(BACKWARD_KERNEL, constants(plan, dh, fn));
  const bindings = [
    quadBinding(r, "recurrentKernel"),
    state0.binding("state"),
    quadBinding(saved.saved, "saved"),
    quadBinding(dy, "dy"),
    dState.binding("dState"),
    quadBinding(dwx, "dwx"),
  ];
  const tiles = Math.ceil(batch / plan.sequencesPerWorkgroup);
  // Dispatches cover [t0, t0 + count) from the end; the first one holds the last step even when S % steps ≠ 0.
  for (let end = seq; end > 0; end -= steps) {
    const t0 = Math.max(0, end - steps);
    gpu.dispatch(pipeline, bindings, params(t0, end - t0), [nh, tiles]);
  }
  r.dispose();

  const yPrev = Tensor.empty(gpu, [batch, seq, hidden]);
  gpu.dispatch(
    gpu.pipeline(BACKWARD_KERNEL, { DH: dh }, "shift"),
    [y.binding("y"), state0.binding("state"), yPrev.binding("y_prev")],
    params(0, 0),
    grid(rows * hidden, 64, gpu.limits.maxComputeWorkgroupsPerDimension),
  );
  if (!state) state0.dispose();
  // dR[h][g·DH + d, j] = Σ_rows dwx[row, g·H + h·DH + d] · y_prev[row, h·DH + j]: product (h, g) of a batch.
  const dRecurrentKernel = Tensor.empty(gpu, [nh, 4 * dh, dh]);
  gemm(
    { tensor: dwx, rows, cols: dh, offset: 0, stride: 4 * hidden },
    { tensor: yPrev, rows, cols: dh, offset: 0, stride: hidden },
    { tensor: dRecurrentKernel, rows: dh, cols: dh, offset: 0, stride: dh },
    {
      transposeA: true,
      batch: { count: [nh, 4], a: [dh, hidden], b: [dh, 0], c: [4 * dh * dh, dh * dh] },
      label: `${op}: dR`,
    },
  );
  yPrev.dispose();
  const dBias = sumRows(matrix(dwx, 4 * hidden));
  return { dwx, dRecurrentKernel, dBias, dState };
}
