import assert from "node:assert/strict";
import { type HostTensor, numberToBf16, numberToF16, toFloat32 } from "../src/host_tensor.ts";
import {
  castHost,
  encodeSafetensors,
  readSafetensors,
  SafetensorsError,
  SafetensorsFile,
  writeSafetensors,
} from "../src/safetensors.ts";

const GOLDEN = new URL("../../shared/golden/mlstm_layer.safetensors", import.meta.url);
const GOLDEN_JSON = new URL("../../shared/golden/mlstm_layer.json", import.meta.url);

async function withTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "safetensors_test_" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

async function listDir(dir: string): Promise<string[]> {
  const names: string[] = [];
  for await (const e of Deno.readDir(dir)) names.push(e.name);
  return names.sort();
}

/** A file built by hand per the spec: u64 LE header length, the header text as is, then `data`. */
function rawFile(header: string, data: Uint8Array | number, headerLength?: bigint): Uint8Array {
  const json = new TextEncoder().encode(header);
  const body = typeof data === "number" ? new Uint8Array(data) : data;
  const out = new Uint8Array(8 + json.length + body.length);
  new DataView(out.buffer).setBigUint64(0, headerLength ?? BigInt(json.length), true);
  out.set(json, 8);
  out.set(body, 8 + json.length);
  return out;
}

const f32 = (shape: number[], values: number[]): HostTensor => ({
  dtype: "float32",
  shape,
  data: new Float32Array(values),
});

function allDtypes(): Record<string, HostTensor> {
  const halfSource = f32([4], [1, 0.1, -2, 65504]);
  return {
    f32: f32([2, 3], [1, -2, 3.5, 1e-30, -0, 7]),
    f64: { dtype: "float64", shape: [3], data: new Float64Array([0.1, 1e300, -5e-324]) },
    f16: castHost(halfSource, "float16"),
    bf16: castHost(halfSource, "bfloat16"),
    i32: { dtype: "int32", shape: [3], data: new Int32Array([-(2 ** 31), 2 ** 31 - 1, 0]) },
    i64: {
      dtype: "int64",
      shape: [2, 2],
      data: new BigInt64Array([2n ** 40n + 1n, -(2n ** 62n) - 3n, 2n ** 63n - 1n, -(2n ** 63n)]),
    },
    scalar: f32([], [3.5]),
    empty: { dtype: "int32", shape: [0, 4], data: new Int32Array(0) },
    "10": f32([1], [10]), // integer-like names must not disturb the layout order
  };
}

Deno.test("round trip of every dtype through a file and through bytes", async () => {
  await withTempDir(async (dir) => {
    const tensors = allDtypes();
    const path = `${dir}/all.safetensors`;
    await writeSafetensors(path, tensors);
    const fromFile = await readSafetensors(path);
    assert.deepStrictEqual(fromFile, tensors);
    assert.deepStrictEqual(await readSafetensors(encodeSafetensors(tensors)), tensors);
    assert.deepStrictEqual(await Deno.readFile(path), encodeSafetensors(tensors));

    // I64 beyond 2^53 survives bit for bit as BigInt64Array.
    assert.ok(fromFile.i64.data instanceof BigInt64Array);
    assert.deepStrictEqual([...fromFile.i64.data], [2n ** 40n + 1n, -(2n ** 62n) - 3n, 2n ** 63n - 1n, -(2n ** 63n)]);
    // F16/BF16 hold the helpers' rounded bit patterns.
    assert.deepStrictEqual([...fromFile.f16.data], [1, 0.1, -2, 65504].map(numberToF16));
    assert.deepStrictEqual([...fromFile.bf16.data], [1, 0.1, -2, 65504].map(numberToBf16));
    assert.deepStrictEqual([...toFloat32(fromFile.f16)], [1, 0.0999755859375, -2, 65504]);
    assert.deepStrictEqual([...toFloat32(fromFile.bf16)], [1, 0.10009765625, -2, 65536]);
  });
});

Deno.test("metadata round trip", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/meta.safetensors`;
    const metadata = { format: "pt", note: 'ünïcode "quoted"', "2": "integer-like key" };
    await writeSafetensors(path, { x: f32([1], [1]) }, { metadata });
    using st = await SafetensorsFile.open(path);
    assert.deepStrictEqual({ ...st.metadata }, metadata);
  });
});

Deno.test("encoding is byte-identical to a file built by hand per the spec", async () => {
  // The Python layout: widest dtype first (I64, then F32, then F16), names sorted within a dtype,
  // compact JSON with __metadata__ first, header padded with spaces to a multiple of 8.
  let header = '{"__metadata__":{"format":"pt"},' +
    '"a":{"dtype":"I64","shape":[1],"data_offsets":[0,8]},' +
    '"b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]},' +
    '"h":{"dtype":"F16","shape":[2],"data_offsets":[16,20]}}';
  header += " ".repeat((8 - (header.length % 8)) % 8);
  const data = new Uint8Array([
    ...[0x05, 0, 0, 0, 0, 0x01, 0, 0], // 2^40 + 5 as little-endian i64
    ...[0, 0, 0x80, 0x3f, 0, 0, 0, 0xc0], // 1.0f, -2.0f
    ...[0x00, 0x3c, 0x00, 0xb8], // f16 1.0, -0.5
  ]);
  const expected = rawFile(header, data);
  assert.equal((expected.length - data.length) % 8, 0);

  const tensors: Record<string, HostTensor> = {
    h: { dtype: "float16", shape: [2], data: new Uint16Array([numberToF16(1), numberToF16(-0.5)]) },
    b: f32([2], [1, -2]),
    a: { dtype: "int64", shape: [1], data: new BigInt64Array([2n ** 40n + 5n]) },
  };
  assert.deepStrictEqual(encodeSafetensors(tensors, { metadata: { format: "pt" } }), expected);
  assert.deepStrictEqual(await readSafetensors(expected), tensors);
});

Deno.test("misaligned data is copied into aligned typed arrays", async () => {
  // Unpadded 61-byte header: the data region starts at the odd offset 69.
  const header = '{"x":{"dtype":"F64","shape":[2],"data_offsets":[0,16]}}      ';
  const data = new Uint8Array(new Float64Array([1.25, -3]).buffer);
  const file = rawFile(header, data);
  const shifted = new Uint8Array(file.length + 3);
  shifted.set(file, 3); // misalign the whole file within its buffer as well
  const { x } = await readSafetensors(shifted.subarray(3));
  assert.deepStrictEqual([...x.data], [1.25, -3]);
  await withTempDir(async (dir) => {
    await Deno.writeFile(`${dir}/odd.safetensors`, file);
    using st = await SafetensorsFile.open(`${dir}/odd.safetensors`);
    assert.deepStrictEqual([...(await st.read("x")).data], [1.25, -3]);
  });
});

Deno.test("reads the golden mlstm_layer file and matches the shapes in its JSON", async () => {
  const spec = JSON.parse(await Deno.readTextFile(GOLDEN_JSON)) as {
    tensors: Record<string, { shape: number[]; dtype: string }>;
  };
  using st = await SafetensorsFile.open(GOLDEN);
  assert.equal(st.metadata.case, "mlstm_layer");
  assert.deepStrictEqual(st.names().sort(), Object.keys(spec.tensors).sort());
  for (const [name, t] of Object.entries(spec.tensors)) {
    assert.deepStrictEqual(st.info(name).shape, t.shape, name);
    assert.equal(st.info(name).dtype, t.dtype, name);
  }
  assert.deepStrictEqual(st.info("param.proj_up.weight"), { dtype: "float32", shape: [128, 32], byteLength: 16384 });
  const input = await st.read("input");
  assert.deepStrictEqual(input.shape, [2, 16, 32]);
  assert.equal(input.data.length, 2 * 16 * 32);
  assert.ok((input.data as Float32Array).every(Number.isFinite));

  const all = await readSafetensors(GOLDEN);
  assert.equal(Object.keys(all).length, Object.keys(spec.tensors).length);
  assert.deepStrictEqual(all.input, input);
});

Deno.test("streaming reader reads one tensor without touching the others", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/two.safetensors`;
    const a = f32([1000], Array.from({ length: 1000 }, (_, i) => i));
    const b = f32([1000], Array.from({ length: 1000 }, (_, i) => -i));
    await writeSafetensors(path, { a, b });
    using st = await SafetensorsFile.open(path);
    assert.deepStrictEqual(st.names(), ["a", "b"]);
    // Cut the file inside b after opening: a still reads, so reading a never touched b's bytes.
    const size = (await Deno.stat(path)).size;
    await Deno.truncate(path, size - 3000);
    assert.deepStrictEqual(await st.read("a"), a);
    await assert.rejects(st.read("b"), (e: unknown) => {
      assert.ok(e instanceof SafetensorsError);
      assert.match(e.message, /truncated: tensor "b" needs bytes \[4000, 8000\)/);
      assert.ok(e.message.startsWith(path));
      return true;
    });
    await assert.rejects(st.read("nope"), /two\.safetensors: no tensor named "nope"/);
    // Concurrent reads are serialized on the shared file position.
    const [a1, a2] = await Promise.all([st.read("a"), st.read("a")]);
    assert.deepStrictEqual([a1, a2], [a, a]);
    st.close();
    await assert.rejects(st.read("a"), /file is closed/);
  });
});

/** Asserts the bytes are rejected, both as a file (message names the path) and in memory, naming the tensor. */
async function expectBad(bytes: Uint8Array, pattern: RegExp, tensor?: string): Promise<void> {
  await withTempDir(async (dir) => {
    const path = `${dir}/bad.safetensors`;
    await Deno.writeFile(path, bytes);
    for (const [open, file] of [[() => SafetensorsFile.open(path), path], [() => readSafetensors(bytes), "<bytes>"]]) {
      await assert.rejects((open as () => Promise<unknown>)(), (e: unknown) => {
        assert.ok(e instanceof SafetensorsError, String(e));
        assert.ok(e.message.startsWith(`${file}: `), e.message);
        assert.match(e.message, pattern);
        if (tensor !== undefined) {
          assert.ok(e.message.includes(`"${tensor}"`), e.message);
          assert.equal(e.tensor, tensor);
        }
        return true;
      });
    }
  });
}

const entry = (dtype: string, shape: unknown, offsets: unknown): string =>
  JSON.stringify({ dtype, shape, data_offsets: offsets });

Deno.test("error: file shorter than 8 bytes", async () => {
  await expectBad(new Uint8Array(5), /file is 5 bytes, shorter than the 8-byte header length/);
});

Deno.test("error: header length larger than the file, or absurd", async () => {
  await expectBad(rawFile("{}", 10, 1000n), /header length 1000 is larger than the 12 bytes/);
  await expectBad(rawFile("{}", 10, 2n ** 40n), /header length 1099511627776 is absurd/);
});

Deno.test("error: header not valid JSON or not an object", async () => {
  await expectBad(rawFile("{nope", 0), /header is not valid JSON/);
  await expectBad(rawFile("[1, 2]", 0), /header is not a JSON object/);
  await expectBad(rawFile(`{"__metadata__":{"k":1}}`, 0), /metadata value "k" is not a string/);
});

Deno.test("error: missing or malformed entry fields", async () => {
  await expectBad(rawFile(`{"x":{"shape":[1],"data_offsets":[0,4]}}`, 4), /missing or non-string dtype/, "x");
  await expectBad(rawFile(`{"x":${entry("F32", [-1], [0, 4])}}`, 4), /shape must be an array/, "x");
  await expectBad(rawFile(`{"x":${entry("F32", [1.5], [0, 4])}}`, 4), /shape must be an array/, "x");
  await expectBad(rawFile(`{"x":3}`, 4), /entry is not an object/, "x");
});

Deno.test("error: bad data offsets", async () => {
  await expectBad(rawFile(`{"x":${entry("F32", [1], [8, 4])}}`, 8), /data_offsets \[8, 4\] begin after end/, "x");
  await expectBad(rawFile(`{"x":${entry("F32", [1], [-4, 0])}}`, 8), /data_offsets must be two non-negative/, "x");
  await expectBad(rawFile(`{"x":${entry("F32", [1], [0])}}`, 8), /data_offsets must be two non-negative/, "x");
  await expectBad(rawFile(`{"x":${entry("F32", [1], null)}}`, 8), /data_offsets must be two non-negative/, "x");
});

Deno.test("error: shape and byte size mismatch", async () => {
  await expectBad(
    rawFile(`{"x":${entry("F32", [3], [0, 8])}}`, 8),
    /shape \[3\] of F32 needs 12 bytes but data_offsets span 8/,
    "x",
  );
});

Deno.test("error: truncated data region", async () => {
  await expectBad(
    rawFile(`{"ok":${entry("F32", [1], [0, 4])},"x":${entry("F32", [4], [4, 20])}}`, 8),
    /truncated: tensor "x" needs bytes \[4, 20\) of the data region but the file has only 8/,
    "x",
  );
});

Deno.test("error: unsupported dtype lists the supported ones", async () => {
  await expectBad(
    rawFile(`{"mask":${entry("U8", [4], [0, 4])}}`, 4),
    /unsupported dtype "U8" \(supported: F32, F64, F16, BF16, I32, I64\)/,
    "mask",
  );
});

Deno.test("error: overlapping tensors", async () => {
  await expectBad(
    rawFile(
      `{"x":${entry("F32", [2], [0, 8])},"y":${entry("F32", [2], [4, 12])},"e":${entry("F32", [0], [2, 2])}}`,
      12,
    ),
    /tensors "x" \[0, 8\) and "y" \[4, 12\) overlap/,
    "y",
  );
});

Deno.test("writing rejects inconsistent tensors, naming the file and tensor", () => {
  const cases: [Record<string, HostTensor>, RegExp][] = [
    [{ w: f32([3], [1, 2]) }, /<bytes>: tensor "w": shape \[3\] needs 3 elements but data has 2/],
    [{ w: { dtype: "int32", shape: [1], data: new Float32Array(1) } }, /tensor "w": dtype int32 needs its data in a/],
    [{ __metadata__: f32([1], [1]) }, /the name "__metadata__" is reserved/],
    [{ w: f32([-1], []) }, /tensor "w": shape must be an array of non-negative integers/],
  ];
  for (const [tensors, pattern] of cases) {
    assert.throws(
      () => encodeSafetensors(tensors),
      (e: unknown) => e instanceof SafetensorsError && pattern.test(e.message),
    );
  }
  assert.throws(
    () => encodeSafetensors({}, { metadata: { k: 1 as unknown as string } }),
    /metadata value "k" is not a string/,
  );
});

Deno.test("atomic write: a failed write leaves the original file and no temp file", async () => {
  await withTempDir(async (dir) => {
    const path = `${dir}/model.safetensors`;
    await writeSafetensors(path, { w: f32([2], [1, 2]) });
    const before = await Deno.readFile(path);
    await assert.rejects(
      writeSafetensors(path, { w: f32([3], [1, 2]) }),
      (e: unknown) => e instanceof SafetensorsError && e.message.startsWith(`${path}: tensor "w"`),
    );
    assert.deepStrictEqual(await Deno.readFile(path), before);
    assert.deepStrictEqual(await listDir(dir), ["model.safetensors"]);

    // A failure after the temp file exists (rename onto a directory) also cleans up.
    await Deno.mkdir(`${dir}/taken`);
    await assert.rejects(writeSafetensors(`${dir}/taken`, { w: f32([1], [1]) }));
    assert.deepStrictEqual(await listDir(dir), ["model.safetensors", "taken"]);

    // Overwriting succeeds and replaces the content; URLs work as paths.
    const url = new URL(`file://${dir}/model.safetensors`);
    await writeSafetensors(url, { v: f32([1], [9]) });
    assert.deepStrictEqual(Object.keys(await readSafetensors(url)), ["v"]);
    assert.deepStrictEqual(await listDir(dir), ["model.safetensors", "taken"]);
  });
});

Deno.test("castHost rounds half to even and checks integer ranges", () => {
  const src = f32([3], [1 + 2 ** -11, 1 + 3 * 2 ** -11, 1e6]);
  assert.deepStrictEqual([...castHost(src, "float16").data], [0x3c00, 0x3c02, 0x7c00]);
  assert.deepStrictEqual([...castHost(f32([1], [1 + 2 ** -8]), "bfloat16").data], [0x3f80]);
  const big = { dtype: "float64" as const, shape: [1], data: new Float64Array([2 ** 53]) };
  assert.deepStrictEqual([...castHost(big, "int64").data], [2n ** 53n]);
  assert.deepStrictEqual([...castHost(castHost(big, "int64"), "float64").data], [2 ** 53]);
  assert.throws(() => castHost(f32([1], [1.5]), "int32"), RangeError);
  assert.throws(() => castHost(f32([1], [2 ** 31]), "int32"), RangeError);
  assert.throws(() => castHost({ ...big, data: new Float64Array([2 ** 63]) }, "int64"), RangeError);
  assert.equal(castHost(src, "float32"), src);
});
