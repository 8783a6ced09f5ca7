import assert from "node:assert/strict";
import { linearWarmupCosine } from "../src/optim/schedule.ts";

Deno.test("linearWarmupCosine gives the reference values at the boundary steps (spec D1)", () => {
  // The parity configs: warm-up 2000, decay until 20000, lr 1e-3, min 1e-3 · 1e-3.
  const [warmup, until, max, min] = [2000, 20000, 1e-3, 1e-6];
  const lr = linearWarmupCosine({ warmupSteps: warmup, decayUntilStep: until, maxLr: max, minLr: min });
  assert.equal(lr(0), 0, "step 0 uses learning rate 0");
  assert.equal(lr(1), max / warmup);
  assert.equal(lr(1000), max / 2);
  assert.equal(lr(warmup - 1), (max * (warmup - 1)) / warmup);
  assert.equal(lr(warmup), max, "the peak at the end of warm-up");
  assert.equal(lr(warmup + 1), min + 0.5 * (1 + Math.cos(Math.PI / (until - warmup))) * (max - min));
  assert.equal(lr((warmup + until) / 2), min + 0.5 * (1 + Math.cos(Math.PI / 2)) * (max - min));
  assert.ok(Math.abs(lr((warmup + until) / 2) - (max + min) / 2) < 1e-18, "halfway: the mean");
  assert.equal(
    lr(until - 1),
    min + 0.5 * (1 + Math.cos((Math.PI * (until - 1 - warmup)) / (until - warmup))) * (max - min),
  );
  assert.ok(lr(until - 1) > min && lr(until - 1) - min < 1e-11, "just above min before decay_until");
  assert.equal(lr(until), min, "min from decay_until on");
  assert.equal(lr(until + 1), min);
  assert.equal(lr(10 * until), min);
  // Values of the reference's `compute_lr` evaluated by CPython (repr, so exact): bit for bit the same.
  const python: [number, number][] = [
    [1999, 0.0009995],
    [2001, 0.00099999999239218],
    [7777, 0.0007668929747209762],
    [11000, 0.0005005000000000001],
    [19999, 1.0000076078200134e-06],
  ];
  for (const [k, want] of python) assert.equal(lr(k), want, `step ${k}`);
  for (let k = warmup; k < until; k += 997) assert.ok(lr(k) >= lr(k + 997) || k + 997 >= until, `monotone at ${k}`);
});

Deno.test("linearWarmupCosine without warm-up, and with decay ending at warm-up", () => {
  const noWarmup = linearWarmupCosine({ warmupSteps: 0, decayUntilStep: 10, maxLr: 1, minLr: 0.1 });
  assert.equal(noWarmup(0), 1);
  assert.equal(noWarmup(5), 0.1 + 0.5 * (1 + Math.cos(Math.PI * 0.5)) * 0.9);
  assert.equal(noWarmup(10), 0.1);
  const flat = linearWarmupCosine({ warmupSteps: 4, decayUntilStep: 4, maxLr: 2, minLr: 0.5 });
  assert.deepEqual([0, 1, 3, 4, 5].map(flat), [0, 0.5, 1.5, 0.5, 0.5]);
  assert.throws(
    () => linearWarmupCosine({ warmupSteps: -1, decayUntilStep: 4, maxLr: 2, minLr: 0.5 }),
    /invalid steps/,
  );
});
