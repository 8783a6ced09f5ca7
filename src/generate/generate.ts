/**
 * Streaming generation (spec C4, extended with sampling): every decode step is recorded into the GPU's command
 * stream — the sampled ids feed the next step's embedding without touching the host — and the token history is read
 * back once per `tokensPerReadback` tokens, one chunk in flight while the next is recorded.
 *
 * @module
 */

import { noGrad } from "../autograd.ts";
import type { HostTensor } from "../host_tensor.ts";
import { formatShape } from "../host_tensor.ts";
import { resolveSampling, sampleTokens, type Sampling } from "../ops/sample.ts";
import { Tensor, tidy } from "../tensor.ts";
import { type Generatable, generativeModel, releaseState } from "./model.ts";

/** Where a generation stopped: all it takes to continue it exactly (see `saveGenerationState`). */
export interface GenerationCheckpoint<S> {
  /** The recurrent state after the last forward (the last sampled tokens not yet fed). */
  state: S;
  /** The last sampled token of each sequence, `[B]`: the next forward's input. */
  lastTokens: Int32Array;
  /** Seed of the draws. */
  seed: number;
  /** Tokens sampled so far in the run: the counter of the next draw. */
  step: number;
  /** How the tokens were chosen. */
  sampling: Sampling;
}

/** Tokens as they arrive from the GPU. */
export interface TokenChunk {
  /** Position of the chunk's first token among this call's generated tokens. */
  start: number;
  /** The chunk's tokens, one array per sequence. */
  tokens: Int32Array[];
}

/** Options of {@linkcode generateTokens}. */
export interface GenerateOptions<S> {
  /** Tokens to generate, N ≥ 1: N forward calls (the prompt, then N − 1 single tokens; spec C4). */
  maxNewTokens: number;
  /** How to choose tokens (default: the resumed run's, else `"greedy"`). */
  sampling?: Sampling;
  /** Seed of the draws, an integer in [0, 2^32) (default: the resumed run's, else 0). */
  seed?: number;
  /** Recurrent state to continue from, as the reference's `state` (kept: the caller disposes it). */
  state?: S;
  /**
   * A previous run's checkpoint to continue exactly: its last tokens are fed first (then the prompt, if any), its
   * state is the start state (kept: the caller disposes it) and its draw counter continues.
   */
  resume?: GenerationCheckpoint<S>;
  /** Start token when there is no prompt and no resume (default 0, the reference's BOS). */
  bosTokenId?: number;
  /** Sequences when there is no prompt and no resume (default 1). */
  batchSize?: number;
  /** Tokens per readback after the first token, which comes back alone (default 16; Deno pays ≥ 10 ms each). */
  tokensPerReadback?: number;
  /** Called with each chunk of tokens as it reaches the host, in order; generation waits for a returned promise. */
  onTokens?: (chunk: TokenChunk) => void | Promise<void>;
}

/** Timing of a generation, measured on the host. */
export interface GenerationTiming {
  /** Tokens per sequence fed before the first draw (prompt, plus the resumed last token). */
  promptTokens: number;
  /** Tokens generated per sequence. */
  newTokens: number;
  /** From the call to the first token on the host: the prefill's latency. */
  timeToFirstTokenMs: number;
  /** Tokens per second per sequence after the first (0 when only one was generated). */
  decodeTokensPerSecond: number;
  /** The whole call. */
  totalMs: number;
  /** Readbacks made. */
  readbacks: number;
}

/** What {@linkcode generateTokens} returns. */
export interface GenerateResult<S> {
  /** The generated ids, int32 `[B, N]`, without the prompt. */
  tokens: HostTensor;
  /** Where the run stopped; its state is new and belongs to the caller (see `releaseState`). */
  checkpoint: GenerationCheckpoint<S>;
  /** Timing. */
  timing: GenerationTiming;
}

function checkInteger(name: string, v: number, min: number, max: number): void {
  if (!Number.isInteger(v) || v < min || v > max) {
    throw new RangeError(`generate: ${name} must be an integer in [${min}, ${max}], got ${v}`);
  }
}

/**
 * Generates `maxNewTokens` tokens after `prompt` (int32 ids `[B, P]`, on the GPU or the host; host ids are checked
 * against the vocabulary), or after one BOS token per sequence. Greedy by default, as the reference; or sampled on
 * the GPU with a counter-based generator, so a run is reproducible from its seed and a resumed run continues
 * exactly. Works for `xLSTMLarge` and the NeurIPS `xLSTMLMModel` alike.
 *
 * @example
 * ```ts
 * import { generateTokens, releaseState, xLSTMLarge, xLSTMLargeConfig } from "@xlstm/core";
 * const cfg = xLSTMLargeConfig({ embedding_dim: 32, num_heads: 2, num_blocks: 1, vocab_size: 40 });
 * const model = await xLSTMLarge.create(cfg, { seed: 0 });
 * const prompt = { dtype: "int32" as const, shape: [1, 3], data: new Int32Array([0, 5, 7]) };
 * const { tokens, checkpoint, timing } = await generateTokens(model, prompt, {
 *   maxNewTokens: 8,
 *   sampling: { temperature: 0.8, topK: 20, topP: 0.95 },
 *   seed: 1,
 *   onTokens: (chunk) => console.log(chunk.start, chunk.tokens[0]),
 * });
 * console.log(tokens.shape, timing.timeToFirstTokenMs > 0); // [1, 8] true
 * releaseState(checkpoint.state);
 * model.dispose();
 * ```
 */
export async function generateTokens<S>(
  model: Generatable<S>,
  prompt: Tensor | HostTensor | undefined,
  options: GenerateOptions<S>,
): Promise<GenerateResult<S>> {
  const t0 = performance.now();
  const lm = generativeModel(model), gpu = lm.gpu, V = lm.vocabSize;
  const { maxNewTokens: N, resume, tokensPerReadback = 16, bosTokenId = 0, batchSize = 1 } = options;
  if (!Number.isInteger(N) || N < 1) throw new RangeError(`generate: maxNewTokens must be an integer ≥ 1, got ${N}`);
  checkInteger("tokensPerReadback", tokensPerReadback, 1, 2 ** 31);
  const sampling = options.sampling ?? resume?.sampling ?? "greedy";
  resolveSampling(sampling, V);
  const seed = options.seed ?? resume?.seed ?? 0, step0 = resume?.step ?? 0;
  checkInteger("seed", seed, 0, 2 ** 32 - 1);
  checkInteger("the draw counter after the run (resume.step + maxNewTokens)", step0 + N, 1, 2 ** 32);
  if (resume && options.state) throw new RangeError("generate: pass either state or resume, not both");
  const start = resume?.state ?? options.state;
  const first = firstInput(lm.gpu, V, prompt, resume?.lastTokens, bosTokenId, batchSize);
  const B = first.tensor.shape[0];
  const ids = Tensor.empty(gpu, [B, 1], "int32").keep(), history = Tensor.empty(gpu, [B, N], "int32").keep();
  const out = new Int32Array(B * N);
  let state = start, readbacks = 0, firstAt = 0, inFlight: Promise<ArrayBuffer[]> | null = null, inFlightAt = 0;
  const deliver = async (read: Promise<ArrayBuffer[]>, at: number): Promise<void> => {
    const rows = (await read).map((bytes) => new Int32Array(bytes));
    rows.forEach((r, b) => out.set(r, b * N + at));
    firstAt ||= performance.now();
    await options.onTokens?.({ start: at, tokens: rows });
  };
  try {
    let chunkStart = 0;
    for (let col = 0; col < N; col++) {
      const input = col === 0 ? first.tensor : ids;
      const next = noGrad(() =>
        tidy(() => {
          const [rows, s] = lm.forward(input, state);
          sampleTokens(rows, ids, history, col, { sampling, seed, step: step0 + col });
          return s;
        })
      );
      if (state !== start) releaseState(state, next);
      state = next;
      // Submit each step, so the GPU starts on it while the next one is recorded.
      gpu.flush();
      const end = col + 1;
      if (end !== 1 && end - chunkStart < tokensPerReadback && end !== N) continue;
      const read = gpu.read(Array.from({ length: B }, (_, b) => history.range(b * N + chunkStart, end - chunkStart)));
      readbacks++;
      // The first token comes back at once (time to first token); later chunks one behind the recording.
      if (end === 1) await deliver(read, 0);
      else {
        const [prev, prevAt] = [inFlight, inFlightAt];
        [inFlight, inFlightAt] = [read, chunkStart];
        if (prev) await deliver(prev, prevAt);
      }
      chunkStart = end;
    }
    const last = inFlight;
    inFlight = null;
    if (last) await deliver(last, inFlightAt);
  } catch (e) {
    inFlight?.catch(() => {}); // its error, if any, is this one's consequence
    if (state !== start) releaseState(state);
    throw e;
  } finally {
    if (first.owned) first.tensor.dispose();
    ids.dispose();
    history.dispose();
  }
  const end = performance.now();
  return {
    tokens: { dtype: "int32", shape: [B, N], data: out },
    checkpoint: {
      state: state!,
      lastTokens: Int32Array.from({ length: B }, (_, b) => out[b * N + N - 1]),
      seed,
      step: step0 + N,
      sampling,
    },
    timing: {
      promptTokens: first.tensor.shape[1],
      newTokens: N,
      timeToFirstTokenMs: firstAt - t0,
      decodeTokensPerSecond: N > 1 ? (N - 1) / ((end - firstAt) / 1000) : 0,
      totalMs: end - t0,
      readbacks,
    },
  };
}

/**
 * The first forward's ids: the resumed last tokens, then the prompt; or the prompt; or BOS. `owned` says whether
 * the loop made the tensor (and frees it).
 */
function firstInput(
  gpu: Tensor["gpu"],
  V: number,
  prompt: Tensor | HostTensor | undefined,
  last: Int32Array | undefined,
  bos: number,
  batchSize: number,
): { tensor: Tensor; owned: boolean } {
  const ids = (shape: number[], data: Int32Array) => Tensor.fromHost(gpu, { dtype: "int32", shape, data });
  if (prompt) {
    if (prompt.shape.length !== 2 || prompt.shape[0] < 1 || (prompt.shape[1] < 1 && !last)) {
      throw new RangeError(`generate: prompt must be int32 ids [B, P] with B, P ≥ 1, got ${formatShape(prompt.shape)}`);
    }
    if (prompt.dtype !== "int32" && prompt.dtype !== "int64") {
      throw new TypeError(`generate: prompt ${formatShape(prompt.shape)} must hold integer ids, got ${prompt.dtype}`);
    }
    if (last && last.length !== prompt.shape[0]) {
      throw new RangeError(
        `generate: prompt ${formatShape(prompt.shape)} has ${prompt.shape[0]} sequences, the resumed run ` +
          `${last.length}`,
      );
    }
  }
  // A resumed run may continue without new prompt tokens.
  if (prompt?.shape[1] === 0) prompt = undefined;
  if (prompt && !(prompt instanceof Tensor)) {
    const data = Int32Array.from(prompt.data as ArrayLike<number | bigint>, Number);
    const bad = data.findIndex((id) => id < 0 || id >= V);
    if (bad >= 0) {
      throw new RangeError(`generate: prompt id ${data[bad]} at ${bad} is outside the vocabulary [0, ${V})`);
    }
    const [B, P] = prompt.shape;
    if (!last) return { tensor: ids([B, P], data), owned: true };
    const joined = new Int32Array(B * (P + 1));
    for (let b = 0; b < B; b++) {
      joined[b * (P + 1)] = last[b];
      joined.set(data.subarray(b * P, (b + 1) * P), b * (P + 1) + 1);
    }
    return { tensor: ids([B, P + 1], joined), owned: true };
  }
  if (prompt) {
    if (!last) return { tensor: prompt, owned: false };
    const [B, P] = prompt.shape;
    const t = ids([B, P + 1], new Int32Array(B * (P + 1)));
    for (let b = 0; b < B; b++) {
      gpu.upload(t.buffer, 4 * b * (P + 1), last.subarray(b, b + 1));
      gpu.copy(prompt.buffer, 4 * b * P, t.buffer, 4 * (b * (P + 1) + 1), 4 * P);
    }
    return { tensor: t, owned: true };
  }
  if (last) return { tensor: ids([last.length, 1], last), owned: true };
  checkInteger("bosTokenId", bos, 0, V - 1);
  checkInteger("batchSize", batchSize, 1, 65535);
  return { tensor: ids([batchSize, 1], new Int32Array(batchSize).fill(bos)), owned: true };
}
