/**
 * Host-side tensors: what safetensors files hold and what readbacks return.
 *
 * @module
 */

/** Element types a host tensor can hold. `float16`/`bfloat16` keep their raw 16-bit patterns in a `Uint16Array`. */
export type HostDType = "float32" | "float64" | "float16" | "bfloat16" | "int32" | "int64";

/** Typed array backing a {@linkcode HostTensor}. */
export type HostData = Float32Array | Float64Array | Uint16Array | Int32Array | BigInt64Array;

/**
 * A row-major tensor in host memory.
 *
 * @example
 * ```ts
 * import type { HostTensor } from "@xlstm/core";
 * const x: HostTensor = { dtype: "float32", shape: [2, 3], data: new Float32Array(6) };
 * ```
 */
export interface HostTensor {
  /** Element type of `data`. */
  dtype: HostDType;
  /** Dimensions, outermost first. */
  shape: number[];
  /** Elements in row-major order; `data.length` equals the product of `shape`. */
  data: HostData;
}

/** Number of elements of a shape (1 for a scalar `[]`). */
export function numel(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

/** `[2,3]` → `"[2, 3]"`, the form every shape error message uses. */
export function formatShape(shape: readonly number[]): string {
  return `[${shape.join(", ")}]`;
}

/** Converts a float16 bit pattern to a number. */
export function f16ToNumber(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1;
  const exp = (bits >> 10) & 0x1f;
  const frac = bits & 0x3ff;
  if (exp === 0) return sign * frac * 2 ** -24;
  if (exp === 31) return frac ? NaN : sign * Infinity;
  return sign * (1 + frac / 1024) * 2 ** (exp - 15);
}

const f32Scratch = new Float32Array(1);
const u32Scratch = new Uint32Array(f32Scratch.buffer);

/** Converts a number to the nearest float16 bit pattern (round half to even, overflow to ±Infinity). */
export function numberToF16(value: number): number {
  f32Scratch[0] = value;
  const x = u32Scratch[0];
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  let e = exp - 127 + 15;
  if (e >= 31) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    const half = 1 << (shift - 1);
    let r = mant >>> shift;
    const rem = mant & ((1 << shift) - 1);
    if (rem > half || (rem === half && (r & 1))) r++;
    return sign | r;
  }
  let r = mant >>> 13;
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (r & 1))) {
    r++;
    if (r === 0x400) {
      r = 0;
      e++;
      if (e >= 31) return sign | 0x7c00;
    }
  }
  return sign | (e << 10) | r;
}

/** Converts a bfloat16 bit pattern to a number. */
export function bf16ToNumber(bits: number): number {
  u32Scratch[0] = bits << 16;
  return f32Scratch[0];
}

/** Converts a number to the nearest bfloat16 bit pattern (round half to even). */
export function numberToBf16(value: number): number {
  f32Scratch[0] = value;
  const x = u32Scratch[0];
  if ((x & 0x7f800000) === 0x7f800000 && (x & 0x7fffff)) return (x >>> 16) | 0x40;
  return ((x + 0x7fff + ((x >>> 16) & 1)) >>> 16) & 0xffff;
}

/** Returns the tensor's elements as float32, converting from any float or integer dtype. */
export function toFloat32(t: HostTensor): Float32Array {
  if (t.data instanceof Float32Array) return t.data;
  const out = new Float32Array(t.data.length);
  if (t.dtype === "float16" || t.dtype === "bfloat16") {
    const conv = t.dtype === "float16" ? f16ToNumber : bf16ToNumber;
    for (let i = 0; i < out.length; i++) out[i] = conv(t.data[i] as number);
  } else {
    for (let i = 0; i < out.length; i++) out[i] = Number(t.data[i]);
  }
  return out;
}

/**
 * Returns the tensor's elements as float16 bit patterns (round half to even; float64 and integers pass through
 * float32 first), converting from any dtype.
 */
export function toFloat16(t: HostTensor): Uint16Array {
  if (t.dtype === "float16") return t.data as Uint16Array;
  const src = toFloat32(t);
  const out = new Uint16Array(src.length);
  for (let i = 0; i < out.length; i++) out[i] = numberToF16(src[i]);
  return out;
}

/** Returns the tensor's elements as int32; integers only, and each must fit in 32 bits. */
export function toInt32(t: HostTensor, name = "tensor"): Int32Array {
  if (t.data instanceof Int32Array) return t.data;
  if (t.dtype !== "int64") {
    throw new TypeError(`${name}: expected an integer tensor (int32 or int64), got ${t.dtype}`);
  }
  const out = new Int32Array(t.data.length);
  for (let i = 0; i < out.length; i++) {
    const v = t.data[i] as bigint;
    if (v < -2147483648n || v > 2147483647n) {
      throw new RangeError(`${name}: element ${i} = ${v} does not fit in int32`);
    }
    out[i] = Number(v);
  }
  return out;
}
