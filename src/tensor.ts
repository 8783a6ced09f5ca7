/**
 * GPU tensors: f32, i32 or f16 elements in a storage buffer (pooled, or of exact size for parameters), row-major.
 * f16 holds weights only (`shader-f16` adapters): the kernels that read weights convert them to f32 as they load.
 *
 * @module
 */

import { backward, type GradNode, record } from "./autograd.ts";
import { getGpu } from "./gpu/device.ts";
import type { BufferRange, Gpu } from "./gpu/runtime.ts";
import { formatShape, type HostTensor, numel, toFloat16, toFloat32, toInt32 } from "./host_tensor.ts";

/** Element types a GPU tensor can hold. `float16` (2 bytes per element) is for weights that only kernels read. */
export type DType = "float32" | "int32" | "float16";

/** Bytes per element of a dtype. */
export function elementBytes(dtype: DType): number {
  return dtype === "float16" ? 2 : 4;
}

/** Bytes of storage a tensor of `shape` and `dtype` takes: its elements rounded up to whole 4-byte words. */
function storageBytes(shape: readonly number[], dtype: DType): number {
  return Math.ceil((numel(shape) * elementBytes(dtype)) / 4) * 4;
}

/** Options for creating a tensor from host data. */
export interface TensorOptions {
  /** Track gradients for this tensor (its `.grad` is filled by `backward`). */
  requiresGrad?: boolean;
  /** The GPU to place it on; the default GPU when absent. */
  gpu?: Gpu;
  /**
   * Element type on the GPU; float host data becomes float32 and integer data int32 when absent. `float16` rounds
   * (half to even) unless the host data is float16 already.
   */
  dtype?: DType;
}

/** Shared, reference-counted storage, so that reshaped views do not copy. */
class Storage {
  refs = 1;
  constructor(readonly gpu: Gpu, readonly buffer: GPUBuffer, readonly bytes: number) {}
  drop(): void {
    if (--this.refs === 0) this.gpu.release(this.buffer);
  }
}

/**
 * A tensor on the GPU.
 *
 * @example
 * ```ts
 * import { Tensor } from "@xlstm/core";
 * const x = await Tensor.from({ dtype: "float32", shape: [2, 2], data: new Float32Array([1, 2, 3, 4]) });
 * const host = await x.toHost();
 * console.log(host.shape, host.data);
 * x.dispose();
 * ```
 */
export class Tensor {
  /** Dimensions, outermost first. */
  readonly shape: readonly number[];
  /** Element type. */
  readonly dtype: DType;
  /** Whether gradients flow to this tensor. */
  requiresGrad: boolean;
  /** Accumulated gradient after `backward`, or null. */
  grad: Tensor | null = null;
  /** The recorded operation that produced this tensor, while its graph is alive. */
  gradFn: GradNode | null = null;
  #storage: Storage;
  #disposed = false;

  private constructor(storage: Storage, shape: readonly number[], dtype: DType, requiresGrad = false) {
    this.#storage = storage;
    this.shape = Object.freeze([...shape]);
    this.dtype = dtype;
    this.requiresGrad = requiresGrad;
    scopes.at(-1)?.add(this);
  }

  /** Uploads a host tensor (any float dtype becomes float32 unless `options.dtype` says, int64 becomes int32). */
  static async from(host: HostTensor, options: TensorOptions = {}): Promise<Tensor> {
    return Tensor.fromHost(options.gpu ?? await getGpu(), host, options);
  }

  /** Synchronous {@linkcode Tensor.from} for a known GPU. */
  static fromHost(gpu: Gpu, host: HostTensor, options: TensorOptions = {}): Tensor {
    const n = numel(host.shape);
    if (host.data.length !== n) {
      throw new RangeError(
        `Tensor.from: shape ${formatShape(host.shape)} needs ${n} elements, data has ${host.data.length}`,
      );
    }
    const isInt = host.dtype === "int32" || host.dtype === "int64";
    const dtype = options.dtype ?? (isInt ? "int32" : "float32");
    const data = dtype === "int32" ? toInt32(host) : dtype === "float16" ? toFloat16(host) : toFloat32(host);
    const t = Tensor.empty(gpu, host.shape, dtype, options.requiresGrad);
    if (n) gpu.upload(t.buffer, 0, data);
    return t;
  }

  /** A tensor with undefined contents (for kernel outputs). */
  static empty(gpu: Gpu, shape: readonly number[], dtype: DType = "float32", requiresGrad = false): Tensor {
    const bytes = storageBytes(shape, dtype);
    return new Tensor(new Storage(gpu, gpu.alloc(bytes), bytes), shape, dtype, requiresGrad);
  }

  /**
   * A zero tensor in a buffer of its own, sized to it (not a pool size class, which may be up to 25 % larger): for
   * parameters, which live until disposed. A 7B model's weights would waste gigabytes in pool classes.
   */
  static resident(gpu: Gpu, shape: readonly number[], dtype: DType = "float32"): Tensor {
    const bytes = storageBytes(shape, dtype);
    return new Tensor(new Storage(gpu, gpu.allocExact(bytes), bytes), shape, dtype);
  }

  /** A tensor of zeros, cleared on the GPU. */
  static zeros(gpu: Gpu, shape: readonly number[], dtype: DType = "float32"): Tensor {
    const t = Tensor.empty(gpu, shape, dtype);
    gpu.clear(t.buffer, 0, Math.ceil(t.bytes / 4) * 4);
    return t;
  }

  /** Reads several tensors back with one submit and one wait. */
  static async toHostAll(tensors: readonly Tensor[]): Promise<HostTensor[]> {
    if (!tensors.length) return [];
    const raw = await tensors[0].gpu.read(tensors.map((t) => t.range()));
    return raw.map((bytes, i) => {
      const t = tensors[i];
      const data = t.dtype === "int32"
        ? new Int32Array(bytes)
        : t.dtype === "float16"
        ? new Uint16Array(bytes, 0, t.size) // the read covers whole words
        : new Float32Array(bytes);
      return { dtype: t.dtype, shape: [...t.shape], data };
    });
  }

  /** The GPU holding this tensor. */
  get gpu(): Gpu {
    return this.#storage.gpu;
  }

  /** The storage buffer (pooled, possibly larger than the tensor). */
  get buffer(): GPUBuffer {
    return this.#storage.buffer;
  }

  /** Number of elements. */
  get size(): number {
    return numel(this.shape);
  }

  /** Size in bytes (of the elements; storage rounds it up to whole 4-byte words). */
  get bytes(): number {
    return this.size * elementBytes(this.dtype);
  }

  /**
   * The byte range of elements `[start, start + count)`, for binding or copying: whole 4-byte words (bindings and
   * copies need them), so a float16 range may take one element more at either end.
   */
  range(start = 0, count: number = this.size - start): BufferRange {
    const e = elementBytes(this.dtype);
    const offset = Math.floor((start * e) / 4) * 4;
    return { buffer: this.buffer, offset, size: Math.max(4, Math.ceil(((start + count) * e) / 4) * 4 - offset) };
  }

  /**
   * The whole tensor as one storage binding. Throws, naming the tensor, if it exceeds the adapter's binding limit;
   * ops that handle larger tensors bind ranges instead.
   */
  binding(name = "tensor"): BufferRange {
    if (this.bytes > this.gpu.maxBinding) {
      throw new RangeError(
        `${name} ${formatShape(this.shape)} takes ${this.bytes} bytes, more than this adapter's storage binding ` +
          `limit of ${this.gpu.maxBinding} bytes, and this operation does not split it`,
      );
    }
    return this.range();
  }

  /** Copies the tensor to host memory. */
  async toHost(): Promise<HostTensor> {
    return (await Tensor.toHostAll([this]))[0];
  }

  /** A view with another shape of the same number of elements (no copy). */
  reshape(shape: readonly number[]): Tensor {
    if (numel(shape) !== this.size) {
      throw new RangeError(`reshape: cannot view ${formatShape(this.shape)} as ${formatShape(shape)}`);
    }
    const from = this.shape;
    return record(this.#view(shape), "reshape", [this], [], (dy) => [dy.reshape(from)]);
  }

  #view(shape: readonly number[]): Tensor {
    this.#storage.refs++;
    return new Tensor(this.#storage, shape, this.dtype);
  }

  /**
   * Back-propagates `upstream` (dL/dthis, same shape; omitted for a one-element loss) through the recorded graph and
   * fills `.grad` of every leaf tensor that requires a gradient, adding to gradients already there.
   */
  backward(upstream?: Tensor | HostTensor): Promise<void> {
    return backward(this, upstream);
  }

  /**
   * Another handle on the same storage, with its own lifetime (for tensors saved for a backward pass): no `tidy`
   * disposes it; its owner does.
   */
  retain(): Tensor {
    return this.#view(this.shape).keep();
  }

  /** Moves this tensor out of the enclosing `tidy`, so that it outlives it. */
  keep(): this {
    scopes.at(-1)?.delete(this);
    return this;
  }

  /** A new tensor with the same contents. */
  clone(): Tensor {
    const t = Tensor.empty(this.gpu, this.shape, this.dtype);
    this.gpu.copy(this.buffer, 0, t.buffer, 0, Math.ceil(this.bytes / 4) * 4);
    return t;
  }

  /** Returns the storage to the pool once no view uses it. Using the tensor afterwards is an error. */
  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    this.#storage.drop();
    this.grad?.dispose();
    this.grad = null;
  }
}

const scopes: Set<Tensor>[] = [];

function collect(value: unknown, into: Set<Tensor>): void {
  if (value instanceof Tensor) into.add(value);
  else if (Array.isArray(value)) { for (const v of value) collect(v, into); }
  else if (value && typeof value === "object") { for (const v of Object.values(value)) collect(v, into); }
}

/**
 * Runs `fn` and disposes every tensor created inside it except those reachable from its result (arrays and plain
 * objects are searched), which move to the enclosing scope. If `fn` throws, everything it created is disposed.
 *
 * @example
 * ```ts
 * import { Tensor, tidy } from "@xlstm/core";
 * const x = await Tensor.from({ dtype: "float32", shape: [4], data: new Float32Array(4) });
 * const y = tidy(() => x.reshape([2, 2]).reshape([4, 1])); // the [2, 2] view is disposed
 * console.log(y.shape);
 * ```
 */
export function tidy<T>(fn: () => T): T {
  const created = new Set<Tensor>();
  scopes.push(created);
  const keep = new Set<Tensor>();
  try {
    const result = fn();
    collect(result, keep);
    return result;
  } finally {
    scopes.pop();
    const parent = scopes.at(-1);
    for (const t of created) {
      if (!keep.has(t)) t.dispose();
      else parent?.add(t);
    }
  }
}

/** Throws unless `t` has exactly `expected` shape; `-1` matches any extent. The message names the tensor. */
export function expectShape(name: string, t: { shape: readonly number[] }, expected: readonly number[]): void {
  const ok = t.shape.length === expected.length && expected.every((d, i) => d === -1 || d === t.shape[i]);
  if (!ok) {
    const want = formatShape(expected).replaceAll("-1", "*");
    throw new RangeError(`${name}: expected shape ${want}, got ${formatShape(t.shape)}`);
  }
}

/**
 * A strided matrix view into a tensor: element `(r, c)` lives at flat index `offset + r * stride + c`. Ops take
 * views so that column slices (the halves of a fused projection, q/k/v inside one buffer) need no copy.
 */
export interface MatrixView {
  /** The tensor holding the elements. */
  tensor: Tensor;
  /** Number of rows. */
  rows: number;
  /** Number of columns. */
  cols: number;
  /** Flat index of element (0, 0). */
  offset: number;
  /** Distance between consecutive rows, in elements. */
  stride: number;
}

/** The whole tensor as a `[size / cols, cols]` matrix; `cols` defaults to the last dimension. */
export function matrix(t: Tensor, cols: number = t.shape[t.shape.length - 1] ?? 1): MatrixView {
  if (cols <= 0 || t.size % cols !== 0) {
    throw new RangeError(`cannot view ${formatShape(t.shape)} as rows of ${cols} columns`);
  }
  return { tensor: t, rows: t.size / cols, cols, offset: 0, stride: cols };
}

/** Columns `[start, start + count)` of the tensor viewed as a matrix of its last dimension. */
export function columns(t: Tensor, start: number, count: number): MatrixView {
  const whole = matrix(t);
  if (start < 0 || count <= 0 || start + count > whole.cols) {
    throw new RangeError(`columns [${start}, ${start + count}) are outside ${formatShape(t.shape)}`);
  }
  return { ...whole, cols: count, offset: start };
}
