/**
 * Fused sLSTM forward at the README sLSTM block size (B=4, H=128, NH=4, S=256): the whole sequence is recorded,
 * then one `finish`. `deno bench -A bench/slstm_bench.ts` times it per sequence; `deno run -A bench/slstm_bench.ts`
 * prints µs per time step, per (sequence, step), and the cost of an empty finish for comparison.
 */

import { createGpu } from "../src/gpu/device.ts";
import { planSlstm, slstmRecurrentForward } from "../src/ops/slstm.ts";
import { Rng } from "../src/random.ts";
import { Tensor } from "../src/tensor.ts";

const B = 4, H = 128, NH = 4, S = 256, DH = H / NH;

const gpu = await createGpu();
const rng = new Rng(1);
const upload = (shape: number[], std: number): Tensor =>
  Tensor.fromHost(gpu, {
    dtype: "float32",
    shape,
    data: Float32Array.from(rng.normals(shape.reduce((a, b) => a * b), std)),
  });
const wx = upload([B, S, 4 * H], 1), r = upload([NH, 4 * DH, DH], 1 / Math.sqrt(DH)), bias = upload([4 * H], 0.5);
const plan = planSlstm(gpu, DH);
console.log(
  `adapter: ${gpu.adapterName}; B=${B} H=${H} NH=${NH} S=${S}; workgroup ${plan.workgroup}, R in ` +
    `${plan.rInWorkgroup ? "workgroup" : "global"} memory, ${plan.stepsPerDispatch} steps per dispatch`,
);

/** Records one whole sequence and waits for it once. */
async function sequence(): Promise<void> {
  const { y, state } = slstmRecurrentForward(wx, r, bias, null, { numHeads: NH });
  await gpu.finish();
  y.dispose();
  state.dispose();
}

Deno.bench({ name: `slstm forward B${B} H${H} NH${NH}: one sequence of ${S} steps + one finish`, fn: sequence });

if (import.meta.main) {
  const time = async (fn: () => Promise<void>, reps: number): Promise<number> => {
    await fn();
    const start = performance.now();
    for (let i = 0; i < reps; i++) await fn();
    return (performance.now() - start) * 1000 / reps;
  };
  const reps = Number(Deno.args[0] ?? 10);
  const dispatches = gpu.dispatchCount;
  await sequence();
  const perDispatch = gpu.dispatchCount - dispatches;
  const us = await time(sequence, reps);
  const finishUs = await time(() => gpu.finish(), reps);
  console.log(
    `${perDispatch} dispatch(es) per sequence; ${us.toFixed(0)} µs per sequence = ${(us / S).toFixed(2)} µs/step, ` +
      `${(us / (S * B)).toFixed(3)} µs per (sequence, step); an empty finish costs ${finishUs.toFixed(0)} µs ` +
      `(${((us - finishUs) / S).toFixed(2)} µs/step without it)`,
  );
  gpu.destroy();
}
