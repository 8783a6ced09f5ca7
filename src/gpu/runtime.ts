/**
 * The GPU runtime: a pipeline cache, a buffer pool, and a recorder that batches every dispatch into one command
 * buffer until something is read back.
 *
 * Ordering rule: `queue.writeBuffer` runs before any command buffer submitted after it, so an upload into a pooled
 * buffer first submits what is recorded (which may still use that buffer's previous contents).
 *
 * @module
 */

/** A WGSL module: its name (used in every error message) and its source. */
export interface Kernel {
  /** Shader name, e.g. `"matmul"`. */
  name: string;
  /** WGSL source. */
  code: string;
}

/** A buffer range bound to one storage binding. */
export interface BufferRange {
  /** The buffer. */
  buffer: GPUBuffer;
  /** Byte offset; a multiple of `minStorageBufferOffsetAlignment`. */
  offset: number;
  /** Byte length. */
  size: number;
}

/** Raised for WGSL compilation errors, validation errors and out-of-memory, with the shader's name when known. */
export class GpuError extends Error {
  /** The error class name. */
  override name = "GpuError";
}

/** Workgroup counts for one dispatch, `[x, y, z]`. */
export type Workgroups = [number, number?, number?];

/**
 * Workgroups covering `invocations` threads of a 1-D kernel with `workgroupSize` threads each. Counts above the
 * per-dimension limit spill into y; kernels recover the linear index as
 * `gid.x + gid.y * nwg.x * workgroupSize` (see `shaders/README.md`).
 */
export function grid(invocations: number, workgroupSize: number, maxPerDimension = 65535): Workgroups {
  const groups = Math.ceil(invocations / workgroupSize);
  if (groups <= maxPerDimension) return [groups, 1];
  const y = Math.ceil(groups / maxPerDimension);
  return [Math.ceil(groups / y), y];
}

const STORAGE_USAGE = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST;
const ARENA_BYTES = 1 << 16;

/** Rounds a byte size up to its pool class: four classes per power of two, so waste stays under 25 %. */
export function sizeClass(bytes: number): number {
  if (bytes <= 256) return 256;
  const step = 2 ** Math.floor(Math.log2(bytes)) / 4;
  return Math.ceil(bytes / step) * step;
}

/** Little-endian builder for a kernel's uniform `Params` struct (all fields 4 bytes wide). */
export class Params {
  #view = new DataView(new ArrayBuffer(256));
  #length = 0;
  /** Appends a u32 field. */
  u32(value: number): this {
    this.#view.setUint32(this.#next(), value, true);
    return this;
  }
  /** Appends an i32 field. */
  i32(value: number): this {
    this.#view.setInt32(this.#next(), value, true);
    return this;
  }
  /** Appends an f32 field. */
  f32(value: number): this {
    this.#view.setFloat32(this.#next(), value, true);
    return this;
  }
  /** The packed bytes, padded to 16 (WGSL uniform structs are 16-byte aligned). */
  bytes(): Uint8Array {
    return new Uint8Array(this.#view.buffer, 0, Math.max(16, Math.ceil(this.#length / 16) * 16));
  }
  #next(): number {
    const at = this.#length;
    if (at + 4 > this.#view.byteLength) throw new RangeError("Params: more than 64 fields");
    this.#length += 4;
    return at;
  }
}

interface Arena {
  buffer: GPUBuffer;
  shadow: Uint8Array<ArrayBuffer>;
  used: number;
}

/**
 * One WebGPU device with its caches. Create it with `createGpu()` or `getGpu()`.
 */
export class Gpu {
  /** The WebGPU device. */
  readonly device: GPUDevice;
  /** The device's limits (the adapter's, requested explicitly). */
  readonly limits: GPUSupportedLimits;
  /** Adapter description, e.g. `"llvmpipe (LLVM 15.0.6, 256 bits)"`. */
  readonly adapterName: string;
  /** Whether WGSL `f16` is available. */
  readonly hasF16: boolean;
  /**
   * Whether the adapter is a CPU software rasteriser (lavapipe/llvmpipe, SwiftShader): kernels that trade fixed
   * per-workgroup cost for parallelism choose differently there, and training scripts pick reduced settings.
   */
  readonly software: boolean;
  /** Whether timestamp queries are available. */
  readonly hasTimestamps: boolean;
  /** Dispatches recorded since creation (for benchmarks). */
  dispatchCount = 0;
  /** Bytes of GPU buffers this runtime has created and not destroyed (pooled free buffers included). */
  allocatedBytes = 0;

  #pipelines = new Map<string, GPUComputePipeline>();
  #free = new Map<number, GPUBuffer[]>();
  #exact = new Set<GPUBuffer>();
  #encoder: GPUCommandEncoder | null = null;
  #pass: GPUComputePassEncoder | null = null;
  #arenas: Arena[] = [];
  #arenaIndex = 0;
  #checks: Promise<string | null>[] = [];
  #lost = false;

  /** Wraps a device; use `createGpu()` to get one with the adapter's limits and features. */
  constructor(device: GPUDevice, adapterName: string, features: readonly GPUFeatureName[]) {
    this.device = device;
    this.limits = device.limits;
    this.adapterName = adapterName;
    this.software = /llvmpipe|lavapipe|swiftshader/i.test(adapterName);
    this.hasF16 = features.includes("shader-f16");
    this.hasTimestamps = features.includes("timestamp-query");
    this.maxBinding = Math.min(this.limits.maxStorageBufferBindingSize, this.limits.maxBufferSize);
    device.lost.then((info) => {
      this.#lost = true;
      if (info.reason !== "destroyed") this.#checks.push(Promise.resolve(`device lost: ${info.message}`));
    });
  }

  /**
   * Largest byte range one storage binding may cover. Ops split larger tensors into ranges of at most this size;
   * tests lower it to exercise those paths on small tensors.
   */
  maxBinding: number;

  /** Returns the cached compute pipeline for a kernel entry point and its override constants. */
  pipeline(kernel: Kernel, constants: Record<string, number> = {}, entryPoint = "main"): GPUComputePipeline {
    const key = `${kernel.name}:${entryPoint}:${JSON.stringify(constants)}`;
    let pipeline = this.#pipelines.get(key);
    if (pipeline) return pipeline;
    const device = this.device;
    device.pushErrorScope("validation");
    const module = device.createShaderModule({ label: kernel.name, code: kernel.code });
    pipeline = device.createComputePipeline({
      label: key,
      layout: "auto",
      compute: { module, entryPoint, constants },
    });
    const scope = device.popErrorScope();
    this.#checks.push(
      Promise.all([module.getCompilationInfo(), scope]).then(([info, error]) => {
        const messages = info.messages.filter((m) => m.type === "error")
          .map((m) => `  line ${m.lineNum}:${m.linePos}: ${m.message}`);
        if (!error && messages.length === 0) return null;
        return `shader "${kernel.name}" (entry ${entryPoint}) failed to compile:\n` +
          (messages.length ? messages.join("\n") : `  ${error!.message}`);
      }),
    );
    this.#pipelines.set(key, pipeline);
    return pipeline;
  }

  /** Takes a storage buffer of at least `bytes` from the pool (contents undefined). */
  alloc(bytes: number): GPUBuffer {
    const size = sizeClass(Math.max(4, bytes));
    return this.#free.get(size)?.pop() ?? this.#create(size, bytes);
  }

  /**
   * A storage buffer of `bytes` rounded up to 256 (whole vec4s of any binding), outside the pool, zero-filled as
   * every new WebGPU buffer is: for parameters, which live until disposed. {@linkcode Gpu.release} destroys it.
   */
  allocExact(bytes: number): GPUBuffer {
    const buffer = this.#create(Math.ceil(Math.max(4, bytes) / 256) * 256, bytes);
    this.#exact.add(buffer);
    return buffer;
  }

  /** A new storage buffer of `size` bytes for a request of `bytes`. */
  #create(size: number, bytes: number): GPUBuffer {
    if (size > this.limits.maxBufferSize) {
      throw new GpuError(
        `a buffer of ${bytes} bytes exceeds this adapter's maxBufferSize ${this.limits.maxBufferSize}`,
      );
    }
    const buffer = this.device.createBuffer({ size, usage: STORAGE_USAGE });
    this.allocatedBytes += size;
    return buffer;
  }

  /**
   * Returns a pooled buffer to the pool, or destroys one from {@linkcode Gpu.allocExact} (after submitting the work
   * recorded so far, which may still use it). Work already recorded may still use a pooled one: later commands run
   * after it.
   */
  release(buffer: GPUBuffer): void {
    if (this.#exact.delete(buffer)) {
      this.flush();
      this.allocatedBytes -= buffer.size;
      buffer.destroy();
      return;
    }
    let list = this.#free.get(buffer.size);
    if (!list) this.#free.set(buffer.size, list = []);
    list.push(buffer);
  }

  /** Destroys the pooled buffers that nothing holds. */
  trim(): void {
    this.flush();
    for (const list of this.#free.values()) {
      for (const b of list) {
        this.allocatedBytes -= b.size;
        b.destroy();
      }
    }
    this.#free.clear();
  }

  /** Writes host bytes into a buffer, after submitting recorded work (see the ordering rule above). */
  upload(buffer: GPUBuffer, byteOffset: number, data: ArrayBufferView): void {
    this.flush();
    const bytes = new Uint8Array(data.buffer as ArrayBuffer, data.byteOffset, data.byteLength);
    const aligned = bytes.byteLength & ~3;
    if (aligned) this.device.queue.writeBuffer(buffer, byteOffset, bytes, 0, aligned);
    if (aligned < bytes.byteLength) {
      const tail = new Uint8Array(4);
      tail.set(bytes.subarray(aligned));
      this.device.queue.writeBuffer(buffer, byteOffset + aligned, tail);
    }
  }

  /**
   * Records one dispatch. Binding 0 is the uniform `params` (when given); storage bindings follow from 1 in order.
   */
  dispatch(
    pipeline: GPUComputePipeline,
    storage: readonly (GPUBuffer | BufferRange)[],
    params: Params | null,
    workgroups: Workgroups,
  ): void {
    const entries: GPUBindGroupEntry[] = [];
    if (params) entries.push({ binding: 0, resource: this.#uniform(params.bytes()) });
    storage.forEach((b, i) =>
      entries.push({
        binding: i + 1,
        resource: b instanceof GPUBuffer ? { buffer: b } : { buffer: b.buffer, offset: b.offset, size: b.size },
      })
    );
    const bindGroup = this.device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries });
    const pass = this.#computePass();
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, bindGroup);
    const max = this.limits.maxComputeWorkgroupsPerDimension;
    const [x, y = 1, z = 1] = workgroups;
    if (x > max || y > max || z > max) {
      throw new GpuError(`dispatch of ${pipeline.label}: workgroups [${x}, ${y}, ${z}] exceed ${max} per dimension`);
    }
    if (x > 0 && y > 0 && z > 0) pass.dispatchWorkgroups(x, y, z);
    this.dispatchCount++;
  }

  /** Records a buffer-to-buffer copy. */
  copy(src: GPUBuffer, srcOffset: number, dst: GPUBuffer, dstOffset: number, bytes: number): void {
    this.#endPass();
    this.#commandEncoder().copyBufferToBuffer(src, srcOffset, dst, dstOffset, bytes);
  }

  /** Records zero-filling of a byte range (size a multiple of 4). */
  clear(buffer: GPUBuffer, offset: number, bytes: number): void {
    this.#endPass();
    this.#commandEncoder().clearBuffer(buffer, offset, bytes);
  }

  /** Submits recorded work without waiting for it. */
  flush(): void {
    if (!this.#encoder) return;
    this.#endPass();
    for (let i = 0; i < this.#arenaIndex + 1 && i < this.#arenas.length; i++) {
      const arena = this.#arenas[i];
      if (arena.used) this.device.queue.writeBuffer(arena.buffer, 0, arena.shadow, 0, arena.used);
      arena.used = 0;
    }
    this.#arenaIndex = 0;
    this.device.queue.submit([this.#encoder.finish()]);
    this.#encoder = null;
    this.#checks.push(
      this.device.popErrorScope().then((e) => e && `out of memory: ${e.message}`),
      this.device.popErrorScope().then((e) => e && `validation error: ${e.message}`),
    );
  }

  /**
   * Copies byte ranges back to the host: one submit and one wait for all of them. Throws the first compile,
   * validation or memory error recorded since the last read.
   */
  async read(ranges: readonly BufferRange[]): Promise<ArrayBuffer[]> {
    if (this.#lost) throw new GpuError("the GPU device was lost or destroyed");
    const staging = ranges.map((r) => {
      const size = Math.ceil(r.size / 4) * 4;
      const s = this.device.createBuffer({ size, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
      this.copy(r.buffer, r.offset, s, 0, size);
      return s;
    });
    this.flush();
    try {
      await Promise.all(staging.map((s) => s.mapAsync(GPUMapMode.READ)));
      await this.check();
      return staging.map((s, i) => s.getMappedRange().slice(0, ranges[i].size));
    } finally {
      for (const s of staging) s.destroy();
    }
  }

  /** Waits for submitted work and throws the first recorded GPU error. */
  async check(): Promise<void> {
    this.flush();
    const checks = this.#checks;
    this.#checks = [];
    const errors = (await Promise.all(checks)).filter((m): m is string => !!m);
    if (errors.length) throw new GpuError(errors.join("\n"));
  }

  /** Waits until the GPU has finished all submitted work. */
  async finish(): Promise<void> {
    this.flush();
    await this.device.queue.onSubmittedWorkDone();
    await this.check();
  }

  /** Destroys the device and everything on it. */
  destroy(): void {
    this.#encoder = null;
    this.#pass = null;
    this.#free.clear();
    this.#exact.clear();
    this.#pipelines.clear();
    this.device.destroy();
  }

  #commandEncoder(): GPUCommandEncoder {
    if (!this.#encoder) {
      this.device.pushErrorScope("validation");
      this.device.pushErrorScope("out-of-memory");
      this.#encoder = this.device.createCommandEncoder();
    }
    return this.#encoder;
  }

  #computePass(): GPUComputePassEncoder {
    return this.#pass ??= this.#commandEncoder().beginComputePass();
  }

  #endPass(): void {
    this.#pass?.end();
    this.#pass = null;
  }

  /** Places uniform bytes in this submission's arena; arenas are written just before the submit. */
  #uniform(bytes: Uint8Array): GPUBufferBinding {
    const align = this.limits.minUniformBufferOffsetAlignment;
    this.#commandEncoder();
    let arena = this.#arenas[this.#arenaIndex];
    if (arena && arena.used + bytes.byteLength > ARENA_BYTES) arena = this.#arenas[++this.#arenaIndex];
    if (!arena) {
      arena = {
        buffer: this.device.createBuffer({
          size: ARENA_BYTES,
          usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
        }),
        shadow: new Uint8Array(ARENA_BYTES),
        used: 0,
      };
      this.#arenas[this.#arenaIndex] = arena;
    }
    const offset = arena.used;
    arena.shadow.set(bytes, offset);
    arena.used = Math.ceil((offset + bytes.byteLength) / align) * align;
    return { buffer: arena.buffer, offset, size: bytes.byteLength };
  }
}
