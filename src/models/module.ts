/**
 * The base of every model and layer: parameters by the reference's state_dict names.
 *
 * @module
 */

import { getGpu } from "../gpu/device.ts";
import type { Gpu } from "../gpu/runtime.ts";
import type { HostTensor } from "../host_tensor.ts";
import { Rng } from "../random.ts";
import type { Tensor } from "../tensor.ts";
import { type LoadOptions, ParameterStore, Scope, type WeightDType } from "./parameters.ts";

/** Options for creating a model. */
export interface CreateOptions {
  /** The GPU to place the model on; the default GPU when absent. */
  gpu?: Gpu;
  /** Seed of the parameter initialisation; a random one when absent. */
  seed?: number;
  /**
   * Whether to draw the initial values (default true). `false` leaves every parameter zero without touching the
   * host: for models whose weights are loaded next (a 7B model's initialisation alone would take minutes).
   */
  initialize?: boolean;
  /**
   * Element type of the weight matrices (default float32). `"float16"` halves their memory (a 7B model in 13.7 GB
   * instead of 27.5 GB) for inference: kernels read them with f32 arithmetic, and they take no gradients. Only
   * `xLSTMLarge` supports it (its Linear weights and embedding; norms, biases and states stay float32), and only on
   * adapters with the WebGPU feature `shader-f16`.
   */
  weightDtype?: WeightDType;
}

/**
 * A fresh root scope for a model created with `options`. Models that can store float16 weights pass
 * `{ float16: true }`; for the others, asking for them is an error.
 */
export async function rootScope(options: CreateOptions = {}, supports: { float16?: boolean } = {}): Promise<Scope> {
  const gpu = options.gpu ?? await getGpu();
  const seed = options.seed ?? Math.floor(Math.random() * 2 ** 31);
  const weightDtype = options.weightDtype ?? "float32";
  if (weightDtype !== "float32" && weightDtype !== "float16") {
    throw new RangeError(`weightDtype must be "float32" or "float16", got ${JSON.stringify(weightDtype)}`);
  }
  if (weightDtype === "float16" && !supports.float16) {
    throw new RangeError(
      `weightDtype "float16" is supported by xLSTMLarge only; this model keeps float32 weights ` +
        `(use weightDtype "float32")`,
    );
  }
  if (weightDtype === "float16" && !gpu.hasF16) {
    throw new RangeError(
      `weightDtype "float16" needs the WebGPU feature "shader-f16", which this adapter (${gpu.adapterName}) lacks; ` +
        `use weightDtype "float32"`,
    );
  }
  return new Scope(new ParameterStore(gpu, new Rng(seed), options.initialize ?? true, weightDtype));
}

/** A module: a set of parameters under a name prefix, like a PyTorch `nn.Module`. */
export class Module {
  /** Where this module's parameters live. */
  protected readonly scope: Scope;

  /** A module whose parameters live under `scope`. */
  constructor(scope: Scope) {
    this.scope = scope;
  }

  /** The GPU holding the parameters. */
  get gpu(): Gpu {
    return this.scope.gpu;
  }

  /**
   * `(name, parameter)` pairs under every parameter name of the state_dict, tied names included, each with the
   * shared tensor (and so the summed `.grad`): PyTorch's `named_parameters(remove_duplicate=False)`. Pass
   * `{ removeDuplicate: true }` for PyTorch's default, each tensor once (what an optimizer should get).
   */
  namedParameters(options: { removeDuplicate?: boolean } = {}): Iterable<[string, Tensor]> {
    return this.scope.store.named(this.scope.prefix, !options.removeDuplicate);
  }

  /** Total number of parameter elements, each tied tensor counted once. */
  numParameters(): number {
    let n = 0;
    for (const [, p] of this.namedParameters({ removeDuplicate: true })) n += p.size;
    return n;
  }

  /** Every state_dict key (tied names included) with its shape in the reference's layout, in state_dict order. */
  stateDictShapes(): Map<string, number[]> {
    return this.scope.store.keys(this.scope.prefix);
  }

  /**
   * The parameters as host tensors under the reference's state_dict keys and layouts, each in its stored dtype
   * (float16 weights come back as float16).
   */
  stateDict(): Promise<Record<string, HostTensor>> {
    return this.scope.store.stateDict(this.scope.prefix);
  }

  /**
   * One entry of {@linkcode Module.stateDict} read back alone (one readback), so a checkpoint writer holds one
   * tensor at a time.
   */
  stateDictTensor(key: string): Promise<HostTensor> {
    return this.scope.store.read(this.scope.prefix + key);
  }

  /**
   * Loads reference state_dict tensors (any float dtype, converted to each parameter's); strict by default. Rejects
   * with `StateDictError` naming every bad key.
   */
  loadStateDict(record: Record<string, HostTensor>, options: LoadOptions = {}): Promise<void> {
    // The executor turns a thrown StateDictError into a rejection, so `.catch()` callers see it too.
    return new Promise((resolve) => {
      this.scope.store.load(record, this.scope.prefix, options);
      resolve();
    });
  }

  /** Frees the GPU memory of every parameter of the model this module belongs to. */
  dispose(): void {
    this.scope.store.dispose();
  }
}
