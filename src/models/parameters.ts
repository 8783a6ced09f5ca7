/**
 * Parameters under the reference's state_dict names: registration, initialisation, state_dict export and strict
 * loading. A module sees the store through a prefix, as a PyTorch submodule sees its own names.
 *
 * Parameters live in buffers of their exact size (not pool size classes). Weights registered with
 * {@linkcode ParameterStore.addWeight} take the store's weight dtype (float16 halves a large model's memory, for
 * inference); every other parameter is float32.
 *
 * @module
 */

import type { Gpu } from "../gpu/runtime.ts";
import { formatShape, type HostTensor, numel, toFloat16, toFloat32 } from "../host_tensor.ts";
import type { Rng } from "../random.ts";
import { Tensor } from "../tensor.ts";

/** Element types of weights: float32, or float16 (inference only, on adapters with `shader-f16`). */
export type WeightDType = "float32" | "float16";

/** Fills `n` values for a parameter's initialisation. */
export type Init = (n: number, rng: Rng) => ArrayLike<number>;

/** The reference's initialisers (spec A7). */
export const inits = {
  /** All zeros. */
  zeros: (): Init => (n) => new Float32Array(n),
  /** All equal to `value`. */
  constant: (value: number): Init => (n) => new Float32Array(n).fill(value),
  /** N(0, std²). */
  normal: (std: number): Init => (n, rng) => rng.normals(n, std),
  /** U(−bound, bound). */
  uniform: (bound: number): Init => (n, rng) => Float64Array.from({ length: n }, () => (2 * rng.uniform() - 1) * bound),
  /** `small_init_`: N(0, 2 / (5·dim)). */
  small: (dim: number): Init => inits.normal(Math.sqrt(2 / (5 * dim))),
  /** `wang_init_`: N(0, (2 / num_blocks / √dim)²). */
  wang: (dim: number, numBlocks: number): Init => inits.normal(2 / numBlocks / Math.sqrt(dim)),
  /** `torch.linspace(start, end, n)`. */
  linspace: (start: number, end: number): Init => (n) =>
    Float64Array.from({ length: n }, (_, i) => n === 1 ? start : start + (end - start) * i / (n - 1)),
};

/** Converts a parameter between our internal layout and the reference's stored layout (same element count). */
export interface Layout {
  /** Shape in the state_dict. */
  shape: number[];
  /** Internal → state_dict order. */
  toExternal(data: Float32Array): Float32Array;
  /** state_dict → internal order. */
  fromExternal(data: Float32Array): Float32Array;
}

interface Entry {
  tensor: Tensor;
  layout?: Layout;
}

/** Options for {@linkcode ParameterStore.load}. */
export interface LoadOptions {
  /** Require exactly the model's keys (default true), as PyTorch's `load_state_dict(strict=True)`. */
  strict?: boolean;
}

/** Raised for a state_dict that does not fit the model; the message names every offending key. */
export class StateDictError extends Error {
  /** The error class name. */
  override name = "StateDictError";
}

/** All parameters of one model, in registration (= reference state_dict) order. */
export class ParameterStore {
  #entries = new Map<string, Entry>();
  #aliases = new Map<string, string>();

  /**
   * An empty store on `gpu`; `rng` draws the initial values, or parameters stay zero when not `initialize`.
   * Weights added with {@linkcode ParameterStore.addWeight} are stored as `weightDtype`.
   */
  constructor(
    readonly gpu: Gpu,
    readonly rng: Rng,
    readonly initialize = true,
    readonly weightDtype: WeightDType = "float32",
  ) {}

  /** Registers and initialises a float32 parameter. `layout` gives its state_dict layout when it differs from ours. */
  add(name: string, shape: number[], init: Init, layout?: Layout): Tensor {
    return this.#register(name, shape, init, "float32", layout);
  }

  /** Registers and initialises a weight (a Linear's matrix, an embedding table), stored as the store's weight dtype. */
  addWeight(name: string, shape: number[], init: Init): Tensor {
    return this.#register(name, shape, init, this.weightDtype);
  }

  #register(name: string, shape: number[], init: Init, dtype: WeightDType, layout?: Layout): Tensor {
    if (this.#entries.has(name) || this.#aliases.has(name)) throw new Error(`parameter ${name} registered twice`);
    const tensor = Tensor.resident(this.gpu, shape, dtype);
    tensor.requiresGrad = true;
    const entry = { tensor, layout };
    this.#entries.set(name, entry);
    if (this.initialize) this.#write(entry, this.#fill(shape, init));
    return tensor;
  }

  /** Re-initialises a registered parameter in place. */
  reinit(name: string, init: Init): void {
    if (!this.initialize) return;
    const entry = this.#entry(name);
    this.#write(entry, this.#fill(entry.tensor.shape, init));
  }

  /** Makes `name` another state_dict name of `target` (tied weights): listed in state_dicts, not in parameters. */
  alias(name: string, target: string): void {
    this.#entry(target);
    this.#aliases.set(name, target);
  }

  /** The tensor registered under `name` (or an alias of it). */
  get(name: string): Tensor {
    return this.#entry(name).tensor;
  }

  /** Parameters under `prefix`, names relative to it; tied names (aliases) only with `includeAliases`. */
  named(prefix = "", includeAliases = false): [string, Tensor][] {
    const names = [...this.#entries.keys(), ...(includeAliases ? this.#aliases.keys() : [])];
    return names.filter((k) => k.startsWith(prefix)).map((k) => [k.slice(prefix.length), this.#entry(k).tensor]);
  }

  /** The state_dict names under `prefix` with their stored shapes, aliases included, in order. */
  keys(prefix = ""): Map<string, number[]> {
    const out = new Map<string, number[]>();
    for (const [k, e] of this.#entries) if (k.startsWith(prefix)) out.set(k.slice(prefix.length), this.#shape(e));
    for (const [k, t] of this.#aliases) {
      if (k.startsWith(prefix)) out.set(k.slice(prefix.length), this.#shape(this.#entry(t)));
    }
    return out;
  }

  /**
   * Reads every parameter under `prefix` back in the reference's names and layouts (one readback), each in its
   * stored dtype (float16 weights as float16, as PyTorch's state_dict of a half model).
   */
  async stateDict(prefix = ""): Promise<Record<string, HostTensor>> {
    const names = [...this.keys(prefix).keys()];
    const entries = names.map((n) => this.#entry(prefix + n));
    const hosts = await Tensor.toHostAll(entries.map((e) => e.tensor));
    const out: Record<string, HostTensor> = {};
    names.forEach((n, i) => out[n] = this.#external(entries[i], hosts[i]));
    return out;
  }

  /** The state_dict entry `name` (full name, or an alias) alone, as {@linkcode ParameterStore.stateDict} gives it. */
  async read(name: string): Promise<HostTensor> {
    const e = this.#entry(name);
    return this.#external(e, await e.tensor.toHost());
  }

  /** A parameter's readback in the reference's layout, in its stored dtype. */
  #external(e: Entry, h: HostTensor): HostTensor {
    const data = e.layout ? e.layout.toExternal(h.data as Float32Array) : h.data;
    return { dtype: h.dtype, shape: this.#shape(e), data };
  }

  /**
   * Loads reference-named tensors under `prefix`, converting any float dtype to each parameter's. Everything is
   * checked before anything is written, so a failed load leaves the model unchanged. Tied names must hold equal
   * values.
   */
  load(record: Record<string, HostTensor>, prefix = "", options: LoadOptions = {}): void {
    const expected = this.keys(prefix);
    const problems: string[] = [];
    const writes = new Map<Entry, { name: string; data: Float32Array | Uint16Array }>();
    for (const [name, t] of Object.entries(record)) {
      const shape = expected.get(name);
      if (!shape) {
        if (options.strict !== false) problems.push(`unexpected key ${name}`);
        continue;
      }
      if (t.shape.join() !== shape.join()) {
        problems.push(`${name}: checkpoint has shape ${formatShape(t.shape)}, model expects ${formatShape(shape)}`);
        continue;
      }
      if (t.dtype === "int32" || t.dtype === "int64") {
        problems.push(`${name}: checkpoint has dtype ${t.dtype}, model expects a float tensor`);
        continue;
      }
      if (t.data.length !== numel(t.shape)) {
        problems.push(`${name}: ${t.data.length} elements for shape ${formatShape(t.shape)}`);
        continue;
      }
      const entry = this.#entry(prefix + name);
      const data = entry.tensor.dtype === "float16"
        ? toFloat16(t)
        : entry.layout
        ? entry.layout.fromExternal(toFloat32(t))
        : toFloat32(t);
      const earlier = writes.get(entry);
      if (earlier && earlier.data.some((v, i) => v !== data[i] && !(Number.isNaN(v) && Number.isNaN(data[i])))) {
        problems.push(`${name} is tied to ${earlier.name} but holds different values`);
      }
      writes.set(entry, { name, data });
    }
    if (options.strict !== false) {
      for (const name of expected.keys()) if (!(name in record)) problems.push(`missing key ${name}`);
    }
    if (problems.length) {
      throw new StateDictError(`loadStateDict: ${problems.length} problem(s):\n  ${problems.join("\n  ")}`);
    }
    for (const [entry, { data }] of writes) this.gpu.upload(entry.tensor.buffer, 0, data);
  }

  /** Uploads values in internal order into a parameter, rounding them to float16 for a float16 one. */
  #write(entry: Entry, data: Float32Array): void {
    const { tensor } = entry;
    const host: HostTensor = { dtype: "float32", shape: [...tensor.shape], data };
    this.gpu.upload(tensor.buffer, 0, tensor.dtype === "float16" ? toFloat16(host) : data);
  }

  /** Frees every parameter's GPU memory. */
  dispose(): void {
    for (const e of this.#entries.values()) e.tensor.dispose();
    this.#entries.clear();
    this.#aliases.clear();
  }

  #entry(name: string): Entry {
    const entry = this.#entries.get(this.#aliases.get(name) ?? name);
    if (!entry) throw new Error(`no parameter named ${name}`);
    return entry;
  }

  #shape(e: Entry): number[] {
    return e.layout?.shape ?? [...e.tensor.shape];
  }

  #fill(shape: readonly number[], init: Init): Float32Array {
    return Float32Array.from(init(numel(shape), this.rng));
  }
}

/** A view of the store under a name prefix, as a PyTorch submodule sees its parameters. */
export class Scope {
  /** The view of `store` under `prefix` (e.g. `"blocks.0.xlstm."`). */
  constructor(readonly store: ParameterStore, readonly prefix = "") {}

  /** The scope of a child module, e.g. `scope.child("proj_up")`. */
  child(name: string): Scope {
    return new Scope(this.store, `${this.prefix}${name}.`);
  }

  /** Registers a float32 parameter named relative to this scope. */
  add(name: string, shape: number[], init: Init, layout?: Layout): Tensor {
    return this.store.add(this.prefix + name, shape, init, layout);
  }

  /** Registers a weight named relative to this scope, in the store's weight dtype. */
  addWeight(name: string, shape: number[], init: Init): Tensor {
    return this.store.addWeight(this.prefix + name, shape, init);
  }

  /** The GPU the parameters live on. */
  get gpu(): Gpu {
    return this.store.gpu;
  }
}
