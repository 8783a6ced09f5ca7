import assert from "node:assert/strict";
import { createGpu, GpuUnavailableError } from "../src/gpu/device.ts";
import { GpuError, grid, Params, sizeClass } from "../src/gpu/runtime.ts";
import { checkLoopLimit } from "../src/gpu/self_test.ts";
import { Tensor, tidy } from "../src/tensor.ts";
import { closeTestGpu, testGpu } from "./util.ts";

Deno.test("a machine without an adapter gets an error that says what to install", async () => {
  const noAdapter = { requestAdapter: () => Promise.resolve(null) };
  await assert.rejects(() => createGpu(noAdapter), (e: Error) => {
    assert.ok(e instanceof GpuUnavailableError);
    assert.match(e.message, /no adapter/);
    assert.match(e.message, /mesa-vulkan-drivers/);
    assert.match(e.message, /GPU driver/);
    return true;
  });
  await assert.rejects(() => createGpu(null), /navigator\.gpu is not available/);
});

Deno.test("the device gets the adapter's limits, not WebGPU's defaults", async () => {
  const gpu = await testGpu();
  const adapter = await navigator.gpu.requestAdapter();
  assert.equal(gpu.limits.maxStorageBufferBindingSize, adapter!.limits.maxStorageBufferBindingSize);
  assert.equal(gpu.limits.maxBufferSize, adapter!.limits.maxBufferSize);
  assert.equal(gpu.hasF16, adapter!.features.has("shader-f16"));
});

Deno.test("a WGSL compile error names the shader and carries the compiler's message", async () => {
  const gpu = await testGpu();
  const pipeline = gpu.pipeline({
    name: "deliberately_broken",
    code: "@compute @workgroup_size(1) fn main() { let x: f32 = 1u; }",
  });
  gpu.dispatch(pipeline, [], null, [1]);
  await assert.rejects(() => gpu.check(), (e: Error) => {
    assert.ok(e instanceof GpuError);
    assert.match(e.message, /shader "deliberately_broken"/);
    assert.match(e.message, /expected to be `f32`/);
    return true;
  });
});

Deno.test("the loop self-test tells a truncating device from a faithful one", async () => {
  const gpu = await testGpu();
  const short = await checkLoopLimit(gpu, 1000);
  assert.deepEqual(short, { requested: 1000, counted: 1000, truncates: false });
  const long = await checkLoopLimit(gpu);
  if (gpu.adapterName.includes("llvmpipe")) assert.equal(long.counted, 65535);
  assert.equal(long.truncates, long.counted !== 70000);
});

Deno.test("buffers return to the pool and are reused; tidy disposes what it does not return", async () => {
  const gpu = await testGpu();
  const a = Tensor.zeros(gpu, [1000]);
  const buffer = a.buffer;
  a.dispose();
  const b = Tensor.zeros(gpu, [999]);
  assert.equal(b.buffer, buffer, "same size class reuses the buffer");
  const kept = tidy(() => {
    const t = Tensor.zeros(gpu, [10]);
    t.reshape([2, 5]);
    return t.reshape([5, 2]);
  });
  assert.deepEqual((await kept.toHost()).shape, [5, 2]);
  b.dispose(), kept.dispose();
});

Deno.test("uploads after recorded work do not overtake it", async () => {
  const gpu = await testGpu();
  const src = Tensor.fromHost(gpu, { dtype: "float32", shape: [4], data: new Float32Array([1, 2, 3, 4]) });
  const copy = src.clone();
  src.dispose();
  // The pool hands src's buffer to the next tensor while the copy from it is still only recorded.
  const next = Tensor.fromHost(gpu, { dtype: "float32", shape: [4], data: new Float32Array([9, 9, 9, 9]) });
  assert.deepEqual([...(await copy.toHost()).data], [1, 2, 3, 4]);
  assert.deepEqual([...(await next.toHost()).data], [9, 9, 9, 9]);
});

Deno.test("helpers: size classes, grids, params", () => {
  assert.equal(sizeClass(1), 256);
  assert.equal(sizeClass(1000), 1024);
  assert.equal(sizeClass(1025), 1280);
  assert.deepEqual(grid(100, 64), [2, 1]);
  const [x, y] = grid(70000 * 256, 256);
  assert.ok(x <= 65535 && x * (y ?? 1) >= 70000);
  assert.equal(new Params().u32(1).f32(0.5).bytes().byteLength, 16);
});

Deno.test("Tensor.from checks data against the shape and converts dtypes", async () => {
  const gpu = await testGpu();
  assert.throws(
    () => Tensor.fromHost(gpu, { dtype: "float32", shape: [2, 3], data: new Float32Array(5) }),
    /shape \[2, 3\] needs 6 elements, data has 5/,
  );
  const ids = Tensor.fromHost(gpu, { dtype: "int64", shape: [2], data: new BigInt64Array([3n, 7n]) });
  assert.equal(ids.dtype, "int32");
  assert.deepEqual([...(await ids.toHost()).data], [3, 7]);
  await closeTestGpu();
});
