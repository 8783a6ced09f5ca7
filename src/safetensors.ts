/**
 * Reading and writing [safetensors](https://github.com/huggingface/safetensors) files.
 *
 * Layout: an 8-byte little-endian u64 header length `N`, `N` bytes of UTF-8 JSON
 * (`{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__"?: {string: string}}`),
 * then the data region; offsets are relative to its start, tensors are row-major little-endian.
 * Supported dtypes: F32, F64, F16, BF16, I32, I64.
 *
 * @module
 */

import {
  bf16ToNumber,
  f16ToNumber,
  formatShape,
  type HostData,
  type HostDType,
  type HostTensor,
  numberToBf16,
  numberToF16,
  numel,
} from "./host_tensor.ts";

// Deno only runs on little-endian targets, so typed arrays map onto safetensors bytes without swapping.

interface DTypeSpec {
  st: string;
  host: HostDType;
  size: number;
  array: new (buffer: ArrayBuffer, byteOffset: number, length: number) => HostData;
  /** Position in the Python writer's layout order (descending alignment, as its `Dtype` enum sorts). */
  rank: number;
}

const SPECS: DTypeSpec[] = [
  { st: "I64", host: "int64", size: 8, array: BigInt64Array, rank: 0 },
  { st: "F64", host: "float64", size: 8, array: Float64Array, rank: 1 },
  { st: "F32", host: "float32", size: 4, array: Float32Array, rank: 2 },
  { st: "I32", host: "int32", size: 4, array: Int32Array, rank: 3 },
  { st: "BF16", host: "bfloat16", size: 2, array: Uint16Array, rank: 4 },
  { st: "F16", host: "float16", size: 2, array: Uint16Array, rank: 5 },
];
// Maps, not object literals: a dtype like "toString" must not hit Object.prototype.
const BY_ST = new Map(SPECS.map((s) => [s.st, s]));
const BY_HOST = new Map(SPECS.map((s) => [s.host, s]));
const SUPPORTED = "supported: F32, F64, F16, BF16, I32, I64";

/** Headers beyond this are rejected before allocation, like the reference implementation does. */
const MAX_HEADER = 100 * 1024 * 1024;
const METADATA_KEY = "__metadata__";
const utf8 = new TextEncoder();

/**
 * A malformed or unsupported safetensors file, or tensors that cannot be written.
 * The message starts with the file (or `<bytes>` for in-memory data) and names the tensor where one is at fault.
 */
export class SafetensorsError extends Error {
  /** The file the error is about (`<bytes>` for an in-memory buffer). */
  readonly file: string;
  /** The tensor at fault, if any. */
  readonly tensor?: string;

  /** Builds the message `${file}: ${detail}`; `detail` should already name `tensor`. */
  constructor(file: string, detail: string, tensor?: string) {
    super(`${file}: ${detail}`);
    this.name = "SafetensorsError";
    this.file = file;
    this.tensor = tensor;
  }
}

/** What the header says about one tensor, as returned by {@linkcode SafetensorsFile.info}. */
export interface SafetensorsTensorInfo {
  /** Element type. */
  dtype: HostDType;
  /** Dimensions, outermost first. */
  shape: number[];
  /** Size of the tensor's data in bytes. */
  byteLength: number;
}

interface Entry {
  name: string;
  spec: DTypeSpec;
  shape: number[];
  begin: number;
  end: number;
}

interface Header {
  entries: Map<string, Entry>;
  metadata: Record<string, string>;
}

const q = (name: string): string => JSON.stringify(name);

function labelOf(path: string | URL): string {
  if (typeof path === "string") return path;
  return path.protocol === "file:" ? decodeURIComponent(path.pathname) : path.href;
}

/** Validates the 8-byte prefix against the real size, so the header is never allocated beyond what exists. */
function headerLength(prefix: Uint8Array, size: number, file: string): number {
  if (size < 8) throw new SafetensorsError(file, `file is ${size} bytes, shorter than the 8-byte header length`);
  const n = new DataView(prefix.buffer, prefix.byteOffset, 8).getBigUint64(0, true);
  if (n > BigInt(MAX_HEADER)) {
    throw new SafetensorsError(file, `header length ${n} is absurd (more than 100 MiB); not a safetensors file?`);
  }
  if (Number(n) > size - 8) {
    throw new SafetensorsError(file, `header length ${n} is larger than the ${size - 8} bytes after the length prefix`);
  }
  return Number(n);
}

const isIndex = (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) >= 0;

/** Parses and validates the JSON header against a data region of `dataLength` bytes. */
function parseHeader(bytes: Uint8Array, dataLength: number, file: string): Header {
  let json: unknown;
  try {
    json = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes));
  } catch (e) {
    throw new SafetensorsError(file, `header is not valid JSON: ${(e as Error).message}`);
  }
  if (typeof json !== "object" || json === null || Array.isArray(json)) {
    throw new SafetensorsError(file, "header is not a JSON object");
  }
  const metadata: Record<string, string> = {};
  const entries = new Map<string, Entry>();
  for (const [name, raw] of Object.entries(json)) {
    if (name === METADATA_KEY) {
      if (typeof raw !== "object" || raw === null || Array.isArray(raw)) {
        throw new SafetensorsError(file, `"${METADATA_KEY}" must be an object of strings`);
      }
      for (const [k, v] of Object.entries(raw)) {
        if (typeof v !== "string") throw new SafetensorsError(file, `metadata value ${q(k)} is not a string`);
        define(metadata, k, v);
      }
      continue;
    }
    const bad = (detail: string): SafetensorsError => new SafetensorsError(file, `tensor ${q(name)}: ${detail}`, name);
    if (typeof raw !== "object" || raw === null || Array.isArray(raw)) throw bad("entry is not an object");
    const { dtype, shape, data_offsets: offsets } = raw as Record<string, unknown>;
    if (typeof dtype !== "string") throw bad("missing or non-string dtype");
    if (!Array.isArray(shape) || !shape.every(isIndex)) {
      throw bad(`shape must be an array of non-negative integers, got ${JSON.stringify(shape)}`);
    }
    if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isIndex)) {
      throw bad(`data_offsets must be two non-negative integers, got ${JSON.stringify(offsets)}`);
    }
    const [begin, end] = offsets as number[];
    if (begin > end) throw bad(`data_offsets [${begin}, ${end}] begin after end`);
    const spec = BY_ST.get(dtype);
    if (!spec) throw bad(`unsupported dtype ${q(dtype)} (${SUPPORTED})`);
    const expected = numel(shape) * spec.size, span = end - begin;
    if (span !== expected) {
      throw bad(`shape ${formatShape(shape)} of ${dtype} needs ${expected} bytes but data_offsets span ${span}`);
    }
    if (end > dataLength) {
      const need = `needs bytes [${begin}, ${end}) of the data region`;
      throw new SafetensorsError(
        file,
        `truncated: tensor ${q(name)} ${need} but the file has only ${dataLength}`,
        name,
      );
    }
    entries.set(name, { name, spec, shape, begin, end });
  }
  // Empty tensors occupy no bytes, so they cannot overlap anything.
  const sorted = [...entries.values()].filter((e) => e.end > e.begin).sort((a, b) => a.begin - b.begin);
  for (let i = 1, last = sorted[0]; i < sorted.length; i++) {
    const e = sorted[i];
    if (e.begin < last.end) {
      throw new SafetensorsError(
        file,
        `tensors ${q(last.name)} [${last.begin}, ${last.end}) and ${q(e.name)} [${e.begin}, ${e.end}) overlap`,
        e.name,
      );
    }
    if (e.end > last.end) last = e;
  }
  return { entries, metadata };
}

/** Own-property assignment, so a key like `__proto__` is stored rather than changing the prototype. */
function define<T>(obj: Record<string, T>, key: string, value: T): void {
  Object.defineProperty(obj, key, { value, enumerable: true, writable: true, configurable: true });
}

/** `bytes` must be a fresh buffer owned by the tensor (offset 0, hence aligned for every element size). */
function toTensor(e: Entry, bytes: Uint8Array<ArrayBuffer>): HostTensor {
  return {
    dtype: e.spec.host,
    shape: [...e.shape],
    data: new e.spec.array(bytes.buffer, bytes.byteOffset, bytes.length / e.spec.size),
  };
}

/** Fills `buf` from the current position; `short(got)` builds the error when the file ends first. */
async function readFull(file: Deno.FsFile, buf: Uint8Array, short: (got: number) => Error): Promise<void> {
  let got = 0;
  while (got < buf.length) {
    const n = await file.read(buf.subarray(got));
    if (n === null) throw short(got);
    got += n;
  }
}

/** Entries in data order, so a sequential pass over them reads the file front to back. */
function inFileOrder(entries: Map<string, Entry>): Entry[] {
  return [...entries.values()].sort((a, b) => a.begin - b.begin || a.end - b.end || (a.name < b.name ? -1 : 1));
}

/**
 * A safetensors file opened for streaming: only the header is read up front and each
 * {@linkcode SafetensorsFile.read} loads just one tensor's bytes, so host memory never holds more than one tensor.
 *
 * @example
 * ```ts
 * import { SafetensorsFile, writeSafetensors } from "@xlstm/core";
 * const path = await Deno.makeTempFile({ suffix: ".safetensors" });
 * await writeSafetensors(path, { w: { dtype: "float32", shape: [2, 2], data: new Float32Array([1, 2, 3, 4]) } });
 * using st = await SafetensorsFile.open(path);
 * console.log(st.names(), st.info("w")); // ["w"] { dtype: "float32", shape: [2, 2], byteLength: 16 }
 * const w = await st.read("w");
 * console.log(w.data); // Float32Array [1, 2, 3, 4]
 * ```
 */
export class SafetensorsFile {
  /** The file's path, as used in error messages. */
  readonly path: string;
  /** The header's `__metadata__` (empty when absent). */
  readonly metadata: Readonly<Record<string, string>>;
  #file: Deno.FsFile | undefined;
  #dataStart: number;
  #entries: Map<string, Entry>;
  /** Reads share one file position, so they run one after another. */
  #queue: Promise<unknown> = Promise.resolve();

  private constructor(file: Deno.FsFile, path: string, dataStart: number, header: Header) {
    this.#file = file;
    this.path = path;
    this.#dataStart = dataStart;
    this.#entries = header.entries;
    this.metadata = header.metadata;
  }

  /** Opens `path` and reads and validates its header (not the tensor data). Throws {@linkcode SafetensorsError}. */
  static async open(path: string | URL): Promise<SafetensorsFile> {
    const label = labelOf(path);
    const file = await Deno.open(path, { read: true });
    try {
      const size = (await file.stat()).size;
      const prefix = new Uint8Array(8);
      const shortHeader = (): SafetensorsError => new SafetensorsError(label, "file changed while reading its header");
      if (size >= 8) await readFull(file, prefix, shortHeader);
      const n = headerLength(prefix, size, label);
      const headerBytes = new Uint8Array(n);
      await readFull(file, headerBytes, shortHeader);
      return new SafetensorsFile(file, label, 8 + n, parseHeader(headerBytes, size - 8 - n, label));
    } catch (e) {
      file.close();
      throw e;
    }
  }

  /** Tensor names in the order their data lies in the file. */
  names(): string[] {
    return inFileOrder(this.#entries).map((e) => e.name);
  }

  /** Whether the file holds a tensor called `name`. */
  has(name: string): boolean {
    return this.#entries.has(name);
  }

  /** Dtype, shape and byte size of `name`, from the header alone. */
  info(name: string): SafetensorsTensorInfo {
    const e = this.#entry(name);
    return { dtype: e.spec.host, shape: [...e.shape], byteLength: e.end - e.begin };
  }

  /** Reads tensor `name`, and nothing else, from disk. */
  read(name: string): Promise<HostTensor> {
    const run = this.#queue.then(() => this.#read(name));
    this.#queue = run.catch(() => {});
    return run;
  }

  async #read(name: string): Promise<HostTensor> {
    const e = this.#entry(name);
    if (!this.#file) throw new SafetensorsError(this.path, `cannot read tensor ${q(name)}: file is closed`, name);
    const bytes = new Uint8Array(e.end - e.begin);
    await this.#file.seek(this.#dataStart + e.begin, Deno.SeekMode.Start);
    await readFull(this.#file, bytes, (got) => {
      const need = `needs bytes [${e.begin}, ${e.end}) of the data region`;
      const detail = `truncated: tensor ${q(name)} ${need} but the file ended after ${got} of them`;
      return new SafetensorsError(this.path, detail, name);
    });
    return toTensor(e, bytes);
  }

  #entry(name: string): Entry {
    const e = this.#entries.get(name);
    if (!e) throw new SafetensorsError(this.path, `no tensor named ${q(name)}`, name);
    return e;
  }

  /** Closes the file; further reads fail. Safe to call twice. */
  close(): void {
    this.#file?.close();
    this.#file = undefined;
  }

  /** Closes the file at the end of a `using` block. */
  [Symbol.dispose](): void {
    this.close();
  }
}

/**
 * Reads every tensor of a safetensors file (a path, or the file's bytes). Paths are streamed one tensor at a time;
 * tensors decoded from bytes are copies, so they stay aligned and independent of `source`.
 *
 * @example
 * ```ts
 * import { encodeSafetensors, readSafetensors } from "@xlstm/core";
 * const bytes = encodeSafetensors({ ids: { dtype: "int64", shape: [2], data: new BigInt64Array([1n, 2n ** 40n]) } });
 * const { ids } = await readSafetensors(bytes);
 * console.log(ids.data); // BigInt64Array [1n, 1099511627776n]
 * ```
 */
export async function readSafetensors(source: string | URL | Uint8Array): Promise<Record<string, HostTensor>> {
  const out: Record<string, HostTensor> = {};
  if (source instanceof Uint8Array) {
    const label = "<bytes>";
    const n = headerLength(source, source.length, label);
    const start = 8 + n;
    const { entries } = parseHeader(source.subarray(8, start), source.length - start, label);
    for (const e of inFileOrder(entries)) {
      define(out, e.name, toTensor(e, source.slice(start + e.begin, start + e.end)));
    }
    return out;
  }
  using st = await SafetensorsFile.open(source);
  for (const name of st.names()) define(out, name, await st.read(name));
  return out;
}

/** Options for {@linkcode writeSafetensors} and {@linkcode encodeSafetensors}. */
export interface WriteSafetensorsOptions {
  /** Stored as the header's `__metadata__` (string values only, as the format requires). */
  metadata?: Record<string, string>;
}

/** The 8-byte prefix plus header, and each tensor's bytes in file order. */
interface Plan {
  head: Uint8Array;
  chunks: Uint8Array[];
}

/** UTF-8 byte order, which is what the reference implementation sorts names by. */
function byteOrder(a: string, b: string): number {
  const x = utf8.encode(a), y = utf8.encode(b);
  for (let i = 0; i < Math.min(x.length, y.length); i++) if (x[i] !== y[i]) return x[i] - y[i];
  return x.length - y.length;
}

/** Validates everything before a byte is written, and lays tensors out as the Python library does. */
function plan(tensors: Record<string, HostTensor>, options: WriteSafetensorsOptions | undefined, file: string): Plan {
  const items = Object.entries(tensors).map(([name, t]) => {
    const bad = (detail: string): SafetensorsError => new SafetensorsError(file, `tensor ${q(name)}: ${detail}`, name);
    if (name === METADATA_KEY) throw bad(`the name ${q(METADATA_KEY)} is reserved for metadata`);
    const spec = BY_HOST.get(t?.dtype);
    if (!spec) throw bad(`unsupported dtype ${q(String(t?.dtype))}`);
    if (!(t.data instanceof spec.array)) {
      throw bad(`dtype ${t.dtype} needs its data in a ${spec.array.name}, got ${t.data?.constructor?.name}`);
    }
    if (!Array.isArray(t.shape) || !t.shape.every(isIndex)) {
      throw bad(`shape must be an array of non-negative integers, got ${JSON.stringify(t.shape)}`);
    }
    if (t.data.length !== numel(t.shape)) {
      throw bad(`shape ${formatShape(t.shape)} needs ${numel(t.shape)} elements but data has ${t.data.length}`);
    }
    return { name, spec, t };
  });
  // Widest alignment first puts every tensor at a multiple of its element size.
  items.sort((a, b) => a.spec.rank - b.spec.rank || byteOrder(a.name, b.name));

  // Built by hand: JSON.stringify of an object would hoist integer-like keys ahead of the data order.
  const parts: string[] = [];
  if (options?.metadata) {
    const meta = Object.entries(options.metadata).sort(([a], [b]) => byteOrder(a, b));
    for (const [k, v] of meta) {
      if (typeof v !== "string") throw new SafetensorsError(file, `metadata value ${q(k)} is not a string`);
    }
    parts.push(`${q(METADATA_KEY)}:{${meta.map(([k, v]) => `${q(k)}:${q(v)}`).join(",")}}`);
  }
  let offset = 0;
  const chunks: Uint8Array[] = [];
  for (const { name, spec, t } of items) {
    const end = offset + t.data.byteLength;
    const shape = JSON.stringify(t.shape);
    parts.push(`${q(name)}:{"dtype":"${spec.st}","shape":${shape},"data_offsets":[${offset},${end}]}`);
    chunks.push(new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength));
    offset = end;
  }
  const json = utf8.encode(`{${parts.join(",")}}`);
  // Spaces pad the header to a multiple of 8 so the data region starts 8-byte aligned.
  const n = json.length + ((8 - (json.length % 8)) % 8);
  const head = new Uint8Array(8 + n).fill(0x20, 8 + json.length);
  new DataView(head.buffer).setBigUint64(0, BigInt(n), true);
  head.set(json, 8);
  return { head, chunks };
}

/**
 * Serializes tensors to safetensors bytes in memory (same layout as {@linkcode writeSafetensors}).
 * Throws {@linkcode SafetensorsError} when a tensor's data does not match its dtype or shape.
 *
 * @example
 * ```ts
 * import { encodeSafetensors } from "@xlstm/core";
 * const bytes = encodeSafetensors({ b: { dtype: "float32", shape: [], data: new Float32Array([0.5]) } });
 * console.log(bytes.length); // 68: 8-byte length, 56-byte padded header, 4 data bytes
 * ```
 */
export function encodeSafetensors(tensors: Record<string, HostTensor>, options?: WriteSafetensorsOptions): Uint8Array {
  const { head, chunks } = plan(tensors, options, "<bytes>");
  const out = new Uint8Array(head.length + chunks.reduce((s, c) => s + c.length, 0));
  out.set(head);
  let at = head.length;
  for (const c of chunks) {
    out.set(c, at);
    at += c.length;
  }
  return out;
}

/** A temporary sibling of `path`: same directory, so the final rename cannot cross file systems. */
function tempSibling(path: string | URL): string | URL {
  const tag = `.tmp-${crypto.randomUUID()}`;
  if (path instanceof URL) {
    const base = path.pathname.slice(path.pathname.lastIndexOf("/") + 1);
    return new URL(`.${base}${tag}`, path);
  }
  const cut = Math.max(path.lastIndexOf("/"), path.lastIndexOf("\\")) + 1;
  return `${path.slice(0, cut)}.${path.slice(cut)}${tag}`;
}

async function writeAll(file: Deno.FsFile, bytes: Uint8Array): Promise<void> {
  for (let at = 0; at < bytes.length;) at += await file.write(bytes.subarray(at));
}

/**
 * Writes tensors to a safetensors file, each in its own dtype, laid out as the Python `safetensors` library does
 * (widest dtypes first, then by name; header space-padded to a multiple of 8). The write is atomic: data goes to a
 * temporary file in the same directory, is synced, then renamed over `path`; on any error the temporary file is
 * removed and an existing `path` is left untouched. Use {@linkcode castHost} to store float32 data as float16/bfloat16.
 *
 * @example
 * ```ts
 * import { castHost, readSafetensors, writeSafetensors } from "@xlstm/core";
 * const path = await Deno.makeTempFile({ suffix: ".safetensors" });
 * const w = { dtype: "float32" as const, shape: [3], data: new Float32Array([1, 0.1, -2]) };
 * await writeSafetensors(path, { w, w_half: castHost(w, "float16") }, { metadata: { format: "pt" } });
 * console.log((await readSafetensors(path)).w_half.dtype); // "float16"
 * ```
 */
export async function writeSafetensors(
  path: string | URL,
  tensors: Record<string, HostTensor>,
  options?: WriteSafetensorsOptions,
): Promise<void> {
  const { head, chunks } = plan(tensors, options, labelOf(path));
  const tmp = tempSibling(path);
  let file: Deno.FsFile | undefined;
  let created = false;
  try {
    file = await Deno.open(tmp, { write: true, createNew: true });
    created = true;
    await writeAll(file, head);
    for (const c of chunks) await writeAll(file, c);
    await file.sync();
    file.close();
    file = undefined;
    await Deno.rename(tmp, path);
  } catch (e) {
    file?.close();
    if (created) await Deno.remove(tmp).catch(() => {});
    throw e;
  }
}

/**
 * Converts a tensor to another dtype. Floats go to float16/bfloat16 through float32 with round-half-to-even; integer
 * targets require integral values in range (else `RangeError`). Returns `t` itself when the dtype already matches.
 *
 * @example
 * ```ts
 * import { castHost } from "@xlstm/core";
 * const half = castHost({ dtype: "float32", shape: [2], data: new Float32Array([1, 65504]) }, "float16");
 * console.log(half.data); // Uint16Array [15360, 31743]
 * ```
 */
export function castHost(t: HostTensor, dtype: HostDType): HostTensor {
  if (t.dtype === dtype) return t;
  const src = t.data;
  const n = src.length;
  const get: (i: number) => number = t.dtype === "float16"
    ? (i) => f16ToNumber(src[i] as number)
    : t.dtype === "bfloat16"
    ? (i) => bf16ToNumber(src[i] as number)
    : (i) => Number(src[i]);
  const integral = (i: number, lo: number, hi: number): number => {
    const v = get(i);
    if (!Number.isInteger(v) || v < lo || v > hi) {
      throw new RangeError(`castHost to ${dtype}: element ${i} = ${v} is not an integer in range`);
    }
    return v;
  };
  let data: HostData;
  switch (dtype) {
    case "float32":
      data = Float32Array.from({ length: n }, (_, i) => get(i));
      break;
    case "float64":
      data = Float64Array.from({ length: n }, (_, i) => get(i));
      break;
    case "float16":
      data = Uint16Array.from({ length: n }, (_, i) => numberToF16(get(i)));
      break;
    case "bfloat16":
      data = Uint16Array.from({ length: n }, (_, i) => numberToBf16(get(i)));
      break;
    case "int32":
      data = Int32Array.from({ length: n }, (_, i) => integral(i, -(2 ** 31), 2 ** 31 - 1));
      break;
    case "int64":
      // 2 ** 63 is a double but not an int64; the largest double below it is 2 ** 63 - 1024.
      data = BigInt64Array.from({ length: n }, (_, i) => BigInt(integral(i, -(2 ** 63), 2 ** 63 - 1024)));
      break;
  }
  return { dtype, shape: [...t.shape], data };
}
