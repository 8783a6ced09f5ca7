/**
 * Multi-Query Associative Recall (Zoology's `multiquery_ar`, spec D3) as an endless seeded batch stream.
 *
 * Per example (input length L, N key-value pairs, vocabulary V): N distinct keys from `[1, ⌊V/2⌋)` and N
 * distinct values from `[⌊V/2⌋, V)` fill the first 2N positions as `k1 v1 k2 v2 …`. Each key is queried once, at
 * position `2N + 2·gap`, the N gaps drawn without replacement from `0 .. (L−2N)/2 − 1` with the power law
 * `p(gap) ∝ a·(gap+1)^(a−1)` (a = `powerA`, 0.01: short gaps are far likelier). The label at a query position is
 * the key's value (the next token of the unshifted sequence); every other label is −1 (Zoology uses −100). All
 * other positions hold random tokens from `[0, V)` (Zoology's `random_non_queries`), which may repeat keys.
 *
 * The distribution and format follow Zoology; the stream is not NumPy's global-state generator.
 *
 * @module
 */

import { DataRng, type DataRngState, isMapping, planSplits, type TokenBatch, type TokenStream } from "./random.ts";

/** Options of an {@linkcode MqarData} stream. */
export interface MqarOptions {
  /** Input sequence length L (Zoology's `input_seq_len`; even). Batches have L positions. */
  readonly contextLength: number;
  /** Key-value pairs N per example; needs `4N <= L` and `N < ⌊V/2⌋`. */
  readonly numPairs: number;
  /** Vocabulary size V. */
  readonly vocabSize: number;
  /** Power-law exponent of the query gaps (default 0.01; 1 = uniform). */
  readonly powerA?: number;
  /** Fill non-query positions with random tokens (default true); otherwise they stay 0. */
  readonly randomNonQueries?: boolean;
  /** Stream seed. */
  readonly seed: number;
}

/** JSON-serialisable position of an {@linkcode MqarData} stream. */
export interface MqarState {
  /** Always `"mqar"`, so a state cannot be restored into the wrong task. */
  readonly task: "mqar";
  /** Generator state. */
  readonly rng: DataRngState;
  /** Examples drawn so far (informational). */
  readonly examples: number;
}

/**
 * Seeded stream of MQAR batches.
 *
 * @example
 * ```ts
 * import { MqarData } from "./mqar.ts";
 * const data = new MqarData({ contextLength: 64, numPairs: 4, vocabSize: 8192, seed: 0 });
 * const { inputs, labels } = data.batch(1);
 * const q = labels.findIndex((l) => l !== -1); // first query position (>= 8)
 * const k = inputs.slice(0, 8).indexOf(inputs[q]); // where its key was stored
 * console.log(inputs[k + 1] === labels[q]); // true
 * ```
 */
export class MqarData implements TokenStream<MqarState> {
  /** Sequence length of every batch (L). */
  readonly seqLen: number;
  readonly #numPairs: number;
  readonly #vocabSize: number;
  readonly #randomNonQueries: boolean;
  readonly #rng: DataRng;
  /** Unnormalised power-law weight per gap. */
  readonly #gapWeights: Float64Array;
  /** Scratch permutations for partial Fisher–Yates; restored to the identity after every example. */
  readonly #keyPool: Int32Array;
  readonly #valuePool: Int32Array;
  #examples = 0;

  /** Creates the stream; throws a RangeError for options Zoology rejects or that cannot be sampled. */
  constructor(options: MqarOptions) {
    const { contextLength: L, numPairs: N, vocabSize: V, powerA = 0.01, randomNonQueries = true, seed } = options;
    for (const [k, v] of Object.entries({ contextLength: L, numPairs: N, vocabSize: V })) {
      if (!Number.isSafeInteger(v) || v < 1) throw new RangeError(`mqar: ${k} must be a positive integer; got ${v}`);
    }
    const half = Math.floor(V / 2);
    if (L % 2 !== 0) throw new RangeError(`mqar: contextLength must be even; got ${L}`);
    if (4 * N > L) throw new RangeError(`mqar: need 4·numPairs <= contextLength; got ${N} pairs, length ${L}`);
    if (N > half - 1) throw new RangeError(`mqar: vocabSize ${V} has only ${half - 1} keys for ${N} pairs`);
    if (typeof powerA !== "number" || !(powerA > 0)) throw new RangeError(`mqar: powerA must be > 0; got ${powerA}`);
    if (typeof randomNonQueries !== "boolean") throw new TypeError(`mqar: randomNonQueries must be a boolean`);
    this.seqLen = L;
    this.#numPairs = N;
    this.#vocabSize = V;
    this.#randomNonQueries = randomNonQueries;
    this.#rng = new DataRng(seed);
    this.#gapWeights = Float64Array.from({ length: (L - 2 * N) / 2 }, (_, g) => powerA * (g + 1) ** (powerA - 1));
    this.#keyPool = Int32Array.from({ length: half - 1 }, (_, i) => 1 + i);
    this.#valuePool = Int32Array.from({ length: V - half }, (_, i) => half + i);
  }

  /** Draws the next `batchSize` examples. */
  batch(batchSize: number): TokenBatch {
    if (!Number.isSafeInteger(batchSize) || batchSize < 1) throw new RangeError(`batchSize must be >= 1`);
    const L = this.seqLen, N = this.#numPairs, rng = this.#rng;
    const inputs = new Int32Array(batchSize * L);
    const labels = new Int32Array(batchSize * L).fill(-1);
    const keys = new Int32Array(N), values = new Int32Array(N), gaps = new Int32Array(N);
    for (let b = 0; b < batchSize; b++) {
      const row = b * L;
      this.#sample(this.#keyPool, keys);
      this.#sample(this.#valuePool, values);
      this.#sampleGaps(gaps);
      const isFilled = new Uint8Array(L);
      for (let i = 0; i < N; i++) {
        inputs[row + 2 * i] = keys[i];
        inputs[row + 2 * i + 1] = values[i];
        const q = 2 * N + 2 * gaps[i];
        inputs[row + q] = keys[i];
        labels[row + q] = values[i];
        isFilled[2 * i] = isFilled[2 * i + 1] = isFilled[q] = 1;
      }
      if (this.#randomNonQueries) {
        for (let p = 0; p < L; p++) if (!isFilled[p]) inputs[row + p] = rng.int(this.#vocabSize);
      }
    }
    this.#examples += batchSize;
    return { inputs, labels, batchSize, seqLen: L };
  }

  /** Fills `out` with distinct uniform picks from `pool` (partial Fisher–Yates), then undoes the swaps. */
  #sample(pool: Int32Array, out: Int32Array): void {
    const n = out.length, picked = new Int32Array(n);
    for (let i = 0; i < n; i++) {
      const j = i + this.#rng.int(pool.length - i);
      picked[i] = j;
      [pool[i], pool[j]] = [pool[j], pool[i]];
      out[i] = pool[i];
    }
    // undoing keeps the pool the identity between examples, so the stream state is just the generator's
    for (let i = n - 1; i >= 0; i--) [pool[i], pool[picked[i]]] = [pool[picked[i]], pool[i]];
  }

  /** Successive weighted draws without replacement (the distribution of NumPy's `choice(replace=False, p)`). */
  #sampleGaps(out: Int32Array): void {
    const w = this.#gapWeights, taken = new Uint8Array(w.length);
    let total = w.reduce((a, x) => a + x, 0);
    for (let i = 0; i < out.length; i++) {
      let u = this.#rng.uniform() * total, g = -1;
      for (let x = 0; x < w.length; x++) {
        if (taken[x]) continue;
        g = x; // the last free gap also absorbs rounding when u lands at the very top
        u -= w[x];
        if (u < 0) break;
      }
      taken[g] = 1;
      total -= w[g];
      out[i] = g;
    }
  }

  /** The current stream position, to store in a checkpoint. */
  state(): MqarState {
    return { task: "mqar", rng: this.#rng.state(), examples: this.#examples };
  }

  /** Continues from a position returned by {@linkcode MqarData.state} (also after a JSON round trip). */
  setState(state: MqarState): void {
    if (state?.task !== "mqar") throw new TypeError(`not an mqar stream state: ${JSON.stringify(state)}`);
    if (!Number.isSafeInteger(state.examples) || state.examples < 0) throw new TypeError(`mqar: bad examples count`);
    this.#rng.setState(state.rng);
    this.#examples = state.examples;
  }
}

/** One split of an MQAR dataset config: the stream options and its number of examples. */
export interface MqarSplit {
  /** Options for `new MqarData(options)`; build a fresh stream per evaluation so it sees the same examples. */
  readonly options: MqarOptions;
  /** Examples in the split (`count[subset]`). */
  readonly count: number;
  /** The subset the split belongs to (`train`, `validation`, `test`). */
  readonly subset: string;
}

const MQAR_KEYS = [
  "vocab_size",
  "context_length",
  "num_kv_pairs",
  "power_a",
  "random_non_queries",
  "seed",
  "count",
  "subpar",
];

/**
 * The splits of an `mqar` dataset config (`dataset.kwargs` of scripts/configs/mqar_*.yaml): keys `vocab_size`,
 * `context_length`, `num_kv_pairs`, optional `power_a` (0.01) and `random_non_queries` (true), `seed`, `count`
 * and optional `subpar` overrides per subpart, seeded like the parity splits.
 *
 * @param kwargs `dataset.kwargs` (interpolations resolved).
 * @returns the splits by subpart name.
 * @throws {Error} for unknown keys or options {@linkcode MqarData} rejects.
 * @example
 * ```ts
 * import { mqarSplits } from "./mqar.ts";
 * const splits = mqarSplits({
 *   vocab_size: 8192, context_length: 64, num_kv_pairs: 4, seed: 1, count: { train: 100000, validation: 3000 },
 * });
 * console.log(splits.train.options.numPairs, splits.validation.count); // 4 3000
 * ```
 */
export function mqarSplits(kwargs: unknown): Record<string, MqarSplit> {
  if (!isMapping(kwargs)) throw new Error(`dataset.kwargs must be a mapping`);
  const out: Record<string, MqarSplit> = {};
  for (const part of planSplits(kwargs)) {
    const k = part.kwargs;
    const unknown = Object.keys(k).filter((key) => !MQAR_KEYS.includes(key));
    if (unknown.length > 0) throw new Error(`dataset.kwargs (${part.name}): unknown keys ${unknown.join(", ")}`);
    const options: MqarOptions = {
      contextLength: k.context_length as number,
      numPairs: k.num_kv_pairs as number,
      vocabSize: k.vocab_size as number,
      powerA: (k.power_a as number | undefined) ?? 0.01,
      randomNonQueries: (k.random_non_queries as boolean | undefined) ?? true,
      seed: part.seed,
    };
    new MqarData(options); // validates the merged options now, not at the first batch
    out[part.name] = { options, count: part.count, subset: part.subset };
  }
  return out;
}
