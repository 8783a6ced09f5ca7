/**
 * Parameters under the reference's state_dict names: registration, initialisation, state_dict export and strict
 * loading. A module sees the store through a prefix, as a PyTorch submodule sees its own names.
 *
 * @module
 */

import type { Gpu } from "../gpu/runtime.ts";
import { formatShape, type HostTensor, numel, toFloat32 } from "../host_tensor.ts";
import type { Rng } from "../random.ts";
import { Tensor } from "../tensor.ts";

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

  /** An empty store on `gpu`; `rng` draws the initial values, or parameters stay zero when not `initialize`. */
  constructor(readonly gpu: Gpu, readonly rng: Rng, readonly initialize = true) {}

  /** Registers and initialises a parameter. `layout` gives its state_dict layout when it differs from ours. */
  add(name: string, shape: number[], init: Init, layout?: Layout): Tensor {
    if (this.#entries.has(name) || this.#aliases.has(name)) throw new Error(`parameter ${name} registered twice`);
    const tensor = this.initialize
      ? Tensor.fromHost(this.gpu, { dtype: "float32", shape, data: this.#fill(shape, init) })
      : Tensor.zeros(this.gpu, shape);
    tensor.requiresGrad = true;
    this.#entries.set(name, { tensor, layout });
    return tensor;
  }

  /** Re-initialises a registered parameter in place. */
  reinit(name: string, init: Init): void {
    if (!this.initialize) return;
    const entry = this.#entry(name);
    this.gpu.upload(entry.tensor.buffer, 0, this.#fill(entry.tensor.shape, init));
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

  /** Reads every parameter under `prefix` back in the reference's names and layouts (one readback). */
  async stateDict(prefix = ""): Promise<Record<string, HostTensor>> {
    const names = [...this.keys(prefix).keys()];
    const entries = names.map((n) => this.#entry(prefix + n));
    const hosts = await Tensor.toHostAll(entries.map((e) => e.tensor));
    const out: Record<string, HostTensor> = {};
    names.forEach((n, i) => {
      const e = entries[i];
      const data = hosts[i].data as Float32Array;
      out[n] = { dtype: "float32", shape: this.#shape(e), data: e.layout ? e.layout.toExternal(data) : data };
    });
    return out;
  }

  /**
   * Loads reference-named tensors under `prefix`. Everything is checked before anything is written, so a failed
   * load leaves the model unchanged. Tied names must hold equal values.
   */
  load(record: Record<string, HostTensor>, prefix = "", options: LoadOptions = {}): void {
    const expected = this.keys(prefix);
    const problems: string[] = [];
    const writes = new Map<Entry, { name: string; data: Float32Array }>();
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
      const data = entry.layout ? entry.layout.fromExternal(toFloat32(t)) : toFloat32(t);
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

  /** Registers a parameter named relative to this scope. */
  add(name: string, shape: number[], init: Init, layout?: Layout): Tensor {
    return this.store.add(this.prefix + name, shape, init, layout);
  }

  /** The GPU the parameters live on. */
  get gpu(): Gpu {
    return this.store.gpu;
  }
}
