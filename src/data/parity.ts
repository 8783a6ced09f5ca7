/**
 * The parity task of the reference's formal-language data (spec D2), as an endless seeded batch stream.
 *
 * An example of length `size` (uniform in `[minLength, maxLength]`) is `size − 1` random bits (token 1 = bit 0,
 * token 2 = bit 1) followed by the parity token, then zeros (pad) up to `contextLength`. The parity slot is the
 * only masked position: the input has pad there and the target holds the parity token. After the shift by one
 * (input = tokens[0 .. L−2], target = tokens[1 .. L−1]) the model sees the bits then zeros, and the single
 * label sits at position `size − 2`: 1 for an even number of 2-tokens, 2 for odd. All other labels are −1.
 *
 * The distribution and format match the reference, but the stream is not NumPy's: the reference seeds one PCG64
 * generator per example, and reproducing that bit for bit is not a goal.
 *
 * @module
 */

import { DataRng, type DataRngState, isMapping, planSplits, type TokenBatch, type TokenStream } from "./random.ts";

/** Options of a {@linkcode ParityData} stream. */
export interface ParityOptions {
  /** Length of the generated sequence before the shift; batches have `contextLength − 1` positions. */
  readonly contextLength: number;
  /** Smallest example length `size` (bits + parity token), >= 2. */
  readonly minLength: number;
  /** Largest example length, <= `contextLength`. */
  readonly maxLength: number;
  /** Vocabulary size (default 3): 0 = pad, 1..V−1 = symbols; the answer is the symbol sum mod V−1. */
  readonly vocabSize?: number;
  /** Stream seed. */
  readonly seed: number;
}

/** JSON-serialisable position of a {@linkcode ParityData} stream. */
export interface ParityState {
  /** Always `"parity"`, so a state cannot be restored into the wrong task. */
  readonly task: "parity";
  /** Generator state. */
  readonly rng: DataRngState;
  /** Examples drawn so far (informational). */
  readonly examples: number;
}

/**
 * Seeded stream of parity batches.
 *
 * @example
 * ```ts
 * import { ParityData } from "./parity.ts";
 * const data = new ParityData({ contextLength: 256, minLength: 3, maxLength: 40, seed: 1 });
 * const { inputs, labels, seqLen } = data.batch(2); // seqLen 255
 * const at = labels.slice(0, seqLen).findIndex((l) => l !== -1); // size − 2 of example 0
 * console.log(inputs.slice(0, at + 1), labels[at]); // the bits, then the parity token 1 or 2
 * ```
 */
export class ParityData implements TokenStream<ParityState> {
  /** Sequence length of every batch (`contextLength − 1`). */
  readonly seqLen: number;
  readonly #minLength: number;
  readonly #maxLength: number;
  readonly #vocabSize: number;
  readonly #rng: DataRng;
  #examples = 0;

  /** Creates the stream; throws a RangeError for lengths outside `2 <= min <= max <= contextLength`. */
  constructor(options: ParityOptions) {
    const { contextLength, minLength, maxLength, vocabSize = 3, seed } = options;
    for (const [k, v] of Object.entries({ contextLength, minLength, maxLength, vocabSize })) {
      if (!Number.isSafeInteger(v)) throw new RangeError(`parity: ${k} must be an integer; got ${v}`);
    }
    if (!(2 <= minLength && minLength <= maxLength && maxLength <= contextLength)) {
      throw new RangeError(
        `parity: need 2 <= minLength <= maxLength <= contextLength; got ${minLength}, ${maxLength}, ${contextLength}`,
      );
    }
    if (vocabSize < 3) throw new RangeError(`parity: vocabSize must be >= 3; got ${vocabSize}`);
    this.seqLen = contextLength - 1;
    this.#minLength = minLength;
    this.#maxLength = maxLength;
    this.#vocabSize = vocabSize;
    this.#rng = new DataRng(seed);
  }

  /** Draws the next `batchSize` examples. */
  batch(batchSize: number): TokenBatch {
    if (!Number.isSafeInteger(batchSize) || batchSize < 1) throw new RangeError(`batchSize must be >= 1`);
    const T = this.seqLen, symbols = this.#vocabSize - 1, rng = this.#rng;
    const inputs = new Int32Array(batchSize * T); // zero = pad after the bits
    const labels = new Int32Array(batchSize * T).fill(-1);
    for (let b = 0; b < batchSize; b++) {
      const size = this.#minLength + rng.int(this.#maxLength - this.#minLength + 1);
      let sum = 0;
      for (let i = 0; i < size - 1; i++) {
        const token = 1 + rng.int(symbols);
        inputs[b * T + i] = token;
        sum += token - 1;
      }
      // the parity token belongs at sequence position size−1; after the shift its label is at size−2
      labels[b * T + size - 2] = (sum % symbols) + 1;
    }
    this.#examples += batchSize;
    return { inputs, labels, batchSize, seqLen: T };
  }

  /** The current stream position, to store in a checkpoint. */
  state(): ParityState {
    return { task: "parity", rng: this.#rng.state(), examples: this.#examples };
  }

  /** Continues from a position returned by {@linkcode ParityData.state} (also after a JSON round trip). */
  setState(state: ParityState): void {
    if (state?.task !== "parity") throw new TypeError(`not a parity stream state: ${JSON.stringify(state)}`);
    if (!Number.isSafeInteger(state.examples) || state.examples < 0) throw new TypeError(`parity: bad examples count`);
    this.#rng.setState(state.rng);
    this.#examples = state.examples;
  }
}

/** One split of a parity dataset config: the stream options and its number of examples. */
export interface ParitySplit {
  /** Options for `new ParityData(options)`; build a fresh stream per evaluation so it sees the same examples. */
  readonly options: ParityOptions;
  /** Examples in the split (`count[subset]`). */
  readonly count: number;
  /** The subset the split belongs to (`train`, `validation`, `test`). */
  readonly subset: string;
}

/**
 * The splits of a reference `form_language` dataset config (`dataset.kwargs` of the parity YAMLs): one entry per
 * subpart (spec D2), e.g. `train` with lengths 3..40 and `validation` with 40..256, each with its own seed.
 *
 * @param kwargs `dataset.kwargs` (interpolations resolved).
 * @returns the splits by subpart name.
 * @throws {Error} unless `synth_lang_type` is `parity` and `enable_mask` is true (the only setting implemented:
 * without the mask the target would be every next token), or for invalid lengths, seed or counts.
 * @example
 * ```ts
 * import { ParityData, paritySplits } from "./parity.ts";
 * const splits = paritySplits({
 *   synth_lang_type: "parity", vocab_size: 3, seed: 1, enable_mask: true, context_length: 256,
 *   min_sequence_length: 3, max_sequence_length: 40, count: { train: 5120000, validation: 8192 },
 *   subpar: { validation: { min_sequence_length: 40, max_sequence_length: 256 } },
 * });
 * const validation = new ParityData(splits.validation.options); // lengths 40..256
 * console.log(splits.validation.count, validation.seqLen); // 8192 255
 * ```
 */
export function paritySplits(kwargs: unknown): Record<string, ParitySplit> {
  if (!isMapping(kwargs)) throw new Error(`dataset.kwargs must be a mapping`);
  if (kwargs.synth_lang_type !== "parity") {
    throw new Error(`dataset.kwargs.synth_lang_type: only "parity" is implemented; got ${kwargs.synth_lang_type}`);
  }
  if (kwargs.enable_mask !== true) throw new Error(`dataset.kwargs.enable_mask must be true`);
  const out: Record<string, ParitySplit> = {};
  for (const part of planSplits(kwargs)) {
    const k = part.kwargs;
    const options: ParityOptions = {
      contextLength: k.context_length as number,
      minLength: k.min_sequence_length as number,
      maxLength: k.max_sequence_length as number,
      vocabSize: k.vocab_size as number,
      seed: part.seed,
    };
    new ParityData(options); // validates the merged lengths now, not at the first batch
    out[part.name] = { options, count: part.count, subset: part.subset };
  }
  return out;
}
