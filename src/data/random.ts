/**
 * Seeded randomness shared by the synthetic-task streams: a generator whose state is a small JSON value (a
 * training checkpoint stores it, so a resumed run draws exactly the batches it would have drawn), the batch
 * format the streams produce, and the reference's per-split seeding of a dataset config.
 *
 * @module
 */

/** JSON-serialisable state of a {@linkcode DataRng}: the four 32-bit words of xoshiro128**. */
export type DataRngState = [number, number, number, number];

/**
 * xoshiro128** (Blackman & Vigna): fast, 2^128−1 period, and its whole state is four integers, unlike
 * `src/random.ts`'s `Rng`, whose state is private.
 *
 * @example
 * ```ts
 * import { DataRng } from "./random.ts";
 * const rng = new DataRng(7);
 * const saved = rng.state();
 * const a = rng.int(10);
 * rng.setState(saved);
 * console.log(a === rng.int(10)); // true
 * ```
 */
export class DataRng {
  #s = new Uint32Array(4);

  /** Seeds from any non-negative safe integer (seeds above 2^32 are used whole, not truncated). */
  constructor(seed: number) {
    if (!Number.isSafeInteger(seed) || seed < 0) throw new RangeError(`seed must be a safe integer >= 0; got ${seed}`);
    // splitmix32 over both halves of the seed spreads nearby seeds over the state; it never yields all zeros
    // in practice, but guard anyway because the all-zero state is a fixed point of xoshiro
    let x = (seed >>> 0) ^ Math.imul(Math.floor(seed / 4294967296), 0x9e3779b9);
    for (let i = 0; i < 4; i++) {
      x = (x + 0x9e3779b9) | 0;
      let z = x;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
      this.#s[i] = z ^ (z >>> 16);
    }
    if (this.#s.every((w) => w === 0)) this.#s[0] = 1;
  }

  /** Next uniform 32-bit unsigned integer. */
  u32(): number {
    const s = this.#s;
    const r = Math.imul(rotl(Math.imul(s[1], 5), 7), 9) >>> 0;
    const t = s[1] << 9;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 11);
    return r;
  }

  /** Uniform float in [0, 1) with 53 random bits. */
  uniform(): number {
    return ((this.u32() >>> 5) * 67108864 + (this.u32() >>> 6)) / 9007199254740992;
  }

  /** Uniform integer in [0, n), unbiased (rejection), for 1 <= n <= 2^32. */
  int(n: number): number {
    if (!Number.isInteger(n) || n < 1 || n > 4294967296) throw new RangeError(`int(n) needs 1 <= n <= 2^32; got ${n}`);
    // accept only draws below the largest multiple of n, so every residue is equally likely
    const limit = 4294967296 - (4294967296 % n);
    for (;;) {
      const x = this.u32();
      if (x < limit) return x % n;
    }
  }

  /** The current state, to store in a checkpoint. */
  state(): DataRngState {
    return [this.#s[0], this.#s[1], this.#s[2], this.#s[3]];
  }

  /** Restores a state from {@linkcode DataRng.state}; throws if it is not four 32-bit words, not all zero. */
  setState(state: unknown): void {
    const ok = Array.isArray(state) && state.length === 4 &&
      state.every((w) => Number.isInteger(w) && w >= 0 && w <= 0xffffffff) && state.some((w) => w !== 0);
    if (!ok) throw new TypeError(`rng state must be four 32-bit words, not all zero; got ${JSON.stringify(state)}`);
    this.#s.set(state as number[]);
  }
}

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}

/** A batch of token sequences, row-major `[batchSize, seqLen]`; a label of −1 is ignored by the loss. */
export interface TokenBatch {
  /** Model input token ids. */
  readonly inputs: Int32Array;
  /** Target token id per input position, or −1 (ignore index). */
  readonly labels: Int32Array;
  /** Number of sequences B. */
  readonly batchSize: number;
  /** Sequence length T. */
  readonly seqLen: number;
}

/** An endless seeded stream of batches whose position can be saved and restored. */
export interface TokenStream<S> {
  /** Sequence length of every batch. */
  readonly seqLen: number;
  /** Draws the next `batchSize` examples. */
  batch(batchSize: number): TokenBatch;
  /** JSON-serialisable stream position. */
  state(): S;
  /** Continues from a position returned by `state()`. */
  setState(state: S): void;
}

/**
 * The first `count` examples of a stream as batches of `batchSize`, the last one partial when `batchSize` does
 * not divide `count` (a finite split such as validation, like a DataLoader without `drop_last`).
 *
 * @example
 * ```ts
 * import { ParityData } from "./parity.ts";
 * import { splitBatches } from "./random.ts";
 * const sizes = [...splitBatches(new ParityData({ contextLength: 16, minLength: 3, maxLength: 16, seed: 1 }), 10, 4)]
 *   .map((b) => b.batchSize);
 * console.log(sizes); // [4, 4, 2]
 * ```
 */
export function* splitBatches(stream: TokenStream<unknown>, count: number, batchSize: number): Generator<TokenBatch> {
  for (let done = 0; done < count; done += batchSize) yield stream.batch(Math.min(batchSize, count - done));
}

/** One subpart of a dataset split: its name, the subset it belongs to, its seed, size and merged kwargs. */
export interface SplitPart {
  /** Subpart name, e.g. `validation` (a `subpar` key, or the subset name when it has none). */
  readonly name: string;
  /** `train`, `validation` or `test`. */
  readonly subset: string;
  /** Seed of this subpart's stream. */
  readonly seed: number;
  /** Number of examples (`count[subset]`). */
  readonly count: number;
  /** The dataset kwargs with this subpart's `subpar` overrides applied (and without `count`/`subpar`). */
  readonly kwargs: Record<string, unknown>;
}

const SUBSETS = ["train", "validation", "test"];

/**
 * Plans the splits of a dataset config the way the reference's formal-language generator does (spec D2): for
 * each subset in `count` (in the order train, validation, test), its subparts are the `subpar` keys that start
 * with the subset name, or the subset itself; each subpart gets `kwargs` with its `subpar` overrides, and a seed
 * drawn in that order from a generator seeded with `kwargs.seed`. The seeds are not the reference's (which come
 * from Python's MT19937); they are distinct per subpart and reproducible.
 *
 * @param kwargs a dataset `kwargs` mapping with `seed`, `count` and optional `subpar`.
 * @returns the subparts in order.
 * @throws {Error} for a missing/invalid `seed` or `count`, an unknown subset in `count`, or a non-mapping `subpar`.
 */
export function planSplits(kwargs: Record<string, unknown>): SplitPart[] {
  const { count, subpar = {}, ...base } = kwargs;
  if (!Number.isSafeInteger(base.seed) || (base.seed as number) < 0) {
    throw new Error(`dataset.kwargs.seed must be an integer >= 0; got ${JSON.stringify(base.seed)}`);
  }
  if (!isMapping(count)) throw new Error(`dataset.kwargs.count must be a mapping of subset sizes`);
  if (!isMapping(subpar)) throw new Error(`dataset.kwargs.subpar must be a mapping`);
  for (const [subset, n] of Object.entries(count)) {
    if (!SUBSETS.includes(subset)) throw new Error(`dataset.kwargs.count.${subset}: unknown subset`);
    if (!Number.isSafeInteger(n) || (n as number) < 1) {
      throw new Error(`dataset.kwargs.count.${subset} must be a positive integer; got ${JSON.stringify(n)}`);
    }
  }
  const rng = new DataRng(base.seed as number);
  const parts: SplitPart[] = [];
  for (const subset of SUBSETS.filter((s) => s in count)) {
    const named = Object.keys(subpar).filter((k) => k.startsWith(subset));
    for (const name of named.length > 0 ? named : [subset]) {
      const overrides = subpar[name] ?? {};
      if (!isMapping(overrides)) throw new Error(`dataset.kwargs.subpar.${name} must be a mapping`);
      parts.push({ name, subset, seed: rng.u32(), count: count[subset] as number, kwargs: { ...base, ...overrides } });
    }
  }
  return parts;
}

/** True for a plain object (a YAML mapping). */
export function isMapping(x: unknown): x is Record<string, unknown> {
  return typeof x === "object" && x !== null && !Array.isArray(x);
}
