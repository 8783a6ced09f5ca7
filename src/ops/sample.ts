/**
 * Next-token choice on the GPU: greedy, or a seeded draw with temperature, top-k and top-p (Hugging Face's
 * `TemperatureLogitsWarper`, `TopKLogitsWarper`, `TopPLogitsWarper`, applied in that order). The chosen ids go
 * straight into the next step's input tensor and a token history, so decoding never waits for the host.
 *
 * @module
 */

import code from "../../shaders/sample_forward.wgsl" with { type: "text" };
import { Params } from "../gpu/runtime.ts";
import { formatShape } from "../host_tensor.ts";
import { expectShape, type MatrixView, type Tensor } from "../tensor.ts";
import { checkView, rowChunks, viewShape } from "./pointwise.ts";

const KERNEL = { name: "sample_forward", code };
const WORKGROUP = 256;
/** Loop trips allowed per invocation, well below lavapipe's silent cut at 65,535. */
const MAX_TRIPS = 32768;
const U32 = 2 ** 32;

/** Temperature, top-k and top-p sampling. */
export interface SamplingParams {
  /** Softmax temperature T ≥ 0 (logits are divided by it); 0 means greedy. */
  temperature: number;
  /** Keep the tokens whose logit is at least the k-th largest (tokens tied with it stay too); 0 or absent: off. */
  topK?: number;
  /**
   * Nucleus mass in (0, 1]: going down the tokens by decreasing logit (equal logits by increasing id), keep each
   * token while the probability of the tokens before it is below `topP` (the first always stays); 1 or absent: off.
   */
  topP?: number;
}

/** How the next token is chosen: `"greedy"` (argmax; the first maximum on ties, as `torch.argmax`) or a draw. */
export type Sampling = "greedy" | SamplingParams;

/** A checked sampling setting in the form the kernel takes (floats rounded to f32, as the GPU sees them). */
export interface ResolvedSampling {
  /** Argmax instead of a draw (sampling `"greedy"` or temperature 0). */
  greedy: boolean;
  /** 1 / T as an f32 (1 when greedy). */
  invTemperature: number;
  /** k, or 0 when top-k is off (absent, 0, or k ≥ V). */
  topK: number;
  /** P as an f32; 1 when top-p is off. */
  topP: number;
}

/**
 * Checks a sampling setting and reduces it to what {@linkcode sampleTokens} computes with; `vocab` turns a top-k of
 * V or more off. Throws a RangeError naming the bad field.
 */
export function resolveSampling(sampling: Sampling | undefined, vocab: number): ResolvedSampling {
  const greedy: ResolvedSampling = { greedy: true, invTemperature: 1, topK: 0, topP: 1 };
  if (sampling === undefined || sampling === "greedy") return greedy;
  if (typeof sampling !== "object" || sampling === null) {
    throw new RangeError(`sampling must be "greedy" or { temperature, topK?, topP? }, got ${JSON.stringify(sampling)}`);
  }
  const { temperature: t, topK = 0, topP = 1 } = sampling;
  if (typeof t !== "number" || !Number.isFinite(t) || t < 0) {
    throw new RangeError(`sampling.temperature must be a finite number ≥ 0, got ${t}`);
  }
  if (!Number.isInteger(topK) || topK < 0) throw new RangeError(`sampling.topK must be an integer ≥ 0, got ${topK}`);
  if (typeof topP !== "number" || !(topP > 0 && topP <= 1)) {
    throw new RangeError(`sampling.topP must be in (0, 1], got ${topP}`);
  }
  if (t === 0) return greedy;
  const invTemperature = Math.fround(1 / t);
  if (!Number.isFinite(invTemperature)) {
    throw new RangeError(`sampling.temperature ${t} is too small: 1 / T overflows f32 (use 0 for greedy)`);
  }
  return { greedy: false, invTemperature, topK: topK < vocab ? topK : 0, topP: Math.fround(topP) };
}

/** Where a draw comes from: the same seed, step and row always give the same uniform. */
export interface SampleOptions {
  /** How to choose. */
  sampling: Sampling;
  /** Seed of the draws, an integer in [0, 2^32). */
  seed: number;
  /** Tokens sampled before this one in the run (the draws' counter), an integer in [0, 2^32). */
  step: number;
}

/**
 * The uniform in [0, 1) that the kernel draws for (seed, step, row): the x lane of the PCG3D hash, 24 bits. A pure
 * function of its inputs (a counter-based generator), so a run resumed at `step` draws what an uninterrupted run
 * would; mirrors `draw` in `shaders/sample_forward.wgsl` bit for bit.
 */
export function samplingUniform(seed: number, step: number, row: number): number {
  const lcg = (v: number) => (Math.imul(v, 1664525) + 1013904223) >>> 0;
  let x = lcg(seed), y = lcg(step), z = lcg(row);
  x = (x + Math.imul(y, z)) >>> 0;
  y = (y + Math.imul(z, x)) >>> 0;
  z = (z + Math.imul(x, y)) >>> 0;
  x ^= x >>> 16;
  y ^= y >>> 16;
  z ^= z >>> 16;
  x = (x + Math.imul(y, z)) >>> 0;
  return (x >>> 8) / 16777216;
}

/** Loop trips of one kernel invocation for a vocabulary of `vocab` (see the shader's header). */
function loopTrips(vocab: number): number {
  const sweep = Math.ceil(vocab / WORKGROUP), reduce = Math.log2(WORKGROUP);
  return (2 * 32 + 4) * (sweep + reduce) + 3 * sweep + 3 * WORKGROUP;
}

function checkU32(name: string, v: number): void {
  if (!Number.isInteger(v) || v < 0 || v >= U32) {
    throw new RangeError(`${name} must be an integer in [0, 2^32), got ${v}`);
  }
}

/**
 * Chooses one token per row of `logits` (`[B, V]`, e.g. the last time step of `[B, S, V]` logits as a strided view)
 * and writes it, as int32, to `ids [B, 1]` (the next step's input) and to column `column` of `history [B, N]`.
 * Records the work only: nothing is read back. One workgroup per row; rows whose logits together exceed one storage
 * binding go in several dispatches.
 */
export function sampleTokens(
  logits: MatrixView,
  ids: Tensor,
  history: Tensor,
  column: number,
  options: SampleOptions,
): void {
  const { rows: B, cols: V } = logits;
  if (logits.tensor.dtype !== "float32") {
    throw new TypeError(`sampleTokens: logits must be float32, got ${logits.tensor.dtype} ${viewShape(logits)}`);
  }
  checkView("sampleTokens logits", logits);
  for (const [name, t] of [["ids", ids], ["history", history]] as const) {
    if (t.dtype !== "int32") {
      throw new TypeError(`sampleTokens ${name} must be int32, got ${t.dtype} ${formatShape(t.shape)}`);
    }
  }
  expectShape("sampleTokens ids", ids, [B, 1]);
  expectShape("sampleTokens history", history, [B, -1]);
  const N = history.shape[1];
  if (!Number.isInteger(column) || column < 0 || column >= N) {
    throw new RangeError(`sampleTokens: column ${column} is outside history ${formatShape(history.shape)}`);
  }
  checkU32("sampleTokens seed", options.seed);
  checkU32("sampleTokens step", options.step);
  const s = resolveSampling(options.sampling, V);
  if (V < 1 || B < 1) throw new RangeError(`sampleTokens: logits ${viewShape(logits)} must not be empty`);
  if (loopTrips(V) > MAX_TRIPS) {
    throw new RangeError(
      `sampleTokens: a vocabulary of ${V} needs ${
        loopTrips(V)
      } loop trips per invocation, more than the ${MAX_TRIPS} ` +
        `this kernel allows (lavapipe cuts loops at 65,535)`,
    );
  }
  const gpu = ids.gpu;
  const maxGroups = gpu.limits.maxComputeWorkgroupsPerDimension;
  if (B > maxGroups) throw new RangeError(`sampleTokens: ${B} rows exceed ${maxGroups} workgroups per dispatch`);
  const pipeline = gpu.pipeline(KERNEL);
  const outs = [ids.binding("sampleTokens ids"), history.binding("sampleTokens history")];
  for (const chunk of rowChunks(gpu, [logits], ["sampleTokens logits"])) {
    const params = new Params().u32(V).u32(chunk.offsets[0]).u32(logits.stride).u32(chunk.row)
      .u32(s.greedy ? 1 : 0).f32(s.invTemperature).u32(s.topK).f32(s.topP)
      .u32(options.seed).u32(options.step).u32(column).u32(N);
    gpu.dispatch(pipeline, [chunk.bindings[0], ...outs], params, [chunk.rows]);
  }
}
