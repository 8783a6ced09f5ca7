/**
 * Parameter initialisation vs the reference (spec A7, G3; golden `*.init_stats.json`): every model is built from the
 * case's README-size config with a fresh seed and its state_dict compared tensor by tensor. Deterministic tensors must
 * match the listed constant or values; random ones must match the reference's mean and std within sampling error and
 * have the extremes the reference's distribution implies (bounded for uniform inits, Gaussian tails otherwise).
 */

import assert from "node:assert/strict";
import { mLSTMLayerConfig, sLSTMLayerConfig, xLSTMBlockStackConfig, xLSTMLMModelConfig } from "../src/config.ts";
import type { Gpu } from "../src/gpu/runtime.ts";
import { formatShape, type HostTensor } from "../src/host_tensor.ts";
import { xLSTMBlockStack } from "../src/models/block_stack.ts";
import { xLSTMLMModel } from "../src/models/lm_model.ts";
import { mLSTMLayer } from "../src/models/mlstm_layer.ts";
import { type Module, rootScope } from "../src/models/module.ts";
import { sLSTMLayer } from "../src/models/slstm_layer.ts";
import { closeTestGpu, freshRng, testGpu } from "./util.ts";

const GOLDEN = new URL("../../shared/golden/", import.meta.url);
/** Model classes without a port yet; every other class in the golden data must be handled below. */
const NOT_PORTED = new Set(["xLSTMLarge"]);

/** One tensor's entry in an init_stats file (std is torch's unbiased std; min/max are of the first seed). */
interface RefStats {
  shape: number[];
  numel: number;
  mean: number;
  std: number;
  min: number;
  max: number;
  mean_seed2: number;
  std_seed2: number;
  deterministic: boolean;
  constant?: number;
  values?: number[];
}

type SectionName = "as_constructed" | "after_reset_parameters";
type StateDict = Record<string, HostTensor>;

interface InitStatsFile {
  case: string;
  model_class?: string;
  config?: Record<string, unknown>;
  as_constructed?: Record<string, RefStats>;
  after_reset_parameters?: Record<string, RefStats>;
}

/** Our state_dicts in the reference's two states; a class without `reset_parameters` stats gives only the first. */
type Build = (
  config: Record<string, unknown>,
  gpu: Gpu,
  seed: number,
) => Promise<Partial<Record<SectionName, StateDict>>>;

/** The model's state_dict, then (when `reset` is given) the state_dict after it; the model is freed afterwards. */
async function take(model: Module, reset?: () => void): Promise<Partial<Record<SectionName, StateDict>>> {
  try {
    const out: Partial<Record<SectionName, StateDict>> = { as_constructed: await model.stateDict() };
    if (reset) {
      reset();
      out.after_reset_parameters = await model.stateDict();
    }
    return out;
  } finally {
    model.dispose();
  }
}

/** Entries of `sd` under `prefix`, with the prefix removed. */
function under(sd: StateDict, prefix: string): StateDict {
  return Object.fromEntries(
    Object.entries(sd).filter(([k]) => k.startsWith(prefix)).map(([k, t]) => [k.slice(prefix.length), t]),
  );
}

const BUILDERS: Record<string, Build> = {
  xLSTMBlockStack: async (c, gpu, seed) => take(await xLSTMBlockStack.create(xLSTMBlockStackConfig(c), { gpu, seed })),
  xLSTMLMModel: async (c, gpu, seed) => {
    const lm = await xLSTMLMModel.create(xLSTMLMModelConfig(c), { gpu, seed });
    return take(lm, () => lm.resetParameters());
  },
  mLSTMLayer: async (c, gpu, seed) => take(await mLSTMLayer.create(mLSTMLayerConfig(c), { gpu, seed })),
  // A standalone sLSTMLayer skips its own reset (G3); the in-block construction is the reset one.
  sLSTMLayer: async (c, gpu, seed) => {
    const cfg = sLSTMLayerConfig(c);
    const constructed = await take(await sLSTMLayer.create(cfg, { gpu, seed }));
    const reset = await take(new sLSTMLayer(await rootScope({ gpu, seed }), cfg, true));
    return { as_constructed: constructed.as_constructed, after_reset_parameters: reset.as_constructed };
  },
  // No standalone cell module: the layer's `slstm_cell.` parameters are the cell's.
  sLSTMCell: async (c, gpu, seed) => {
    const { hidden_size, ...rest } = c;
    const cfg = sLSTMLayerConfig({ ...rest, embedding_dim: hidden_size });
    const { as_constructed } = await take(await sLSTMLayer.create(cfg, { gpu, seed }));
    return { as_constructed: under(as_constructed!, "slstm_cell.") };
  },
};

/** Count, mean, sum of squared deviations and largest |value|: enough to pool samples exactly. */
interface Moments {
  n: number;
  mean: number;
  m2: number;
  absMax: number;
}

function pool(parts: Moments[]): Moments {
  const n = parts.reduce((s, p) => s + p.n, 0);
  const mean = parts.reduce((s, p) => s + p.n * p.mean, 0) / n;
  const m2 = parts.reduce((s, p) => s + p.m2 + p.n * (p.mean - mean) ** 2, 0);
  return { n, mean, m2, absMax: Math.max(...parts.map((p) => p.absMax)) };
}

function moments(data: ArrayLike<number>): Moments {
  let sum = 0, absMax = 0;
  for (let i = 0; i < data.length; i++) {
    sum += data[i];
    absMax = Math.max(absMax, Math.abs(data[i]));
  }
  const mean = sum / data.length;
  let m2 = 0;
  for (let i = 0; i < data.length; i++) m2 += (data[i] - mean) ** 2;
  return { n: data.length, mean, m2, absMax };
}

/** Unbiased std, as torch.std. */
const sd = (m: Moments): number => Math.sqrt(m.m2 / (m.n - 1));

/** Both reference seeds of one tensor; `absMax` is the first seed's (the only one with min/max). */
function refMoments(s: RefStats): Moments[] {
  const absMax = Math.max(Math.abs(s.min), Math.abs(s.max));
  return [
    { n: s.numel, mean: s.mean, m2: s.std ** 2 * (s.numel - 1), absMax },
    { n: s.numel, mean: s.mean_seed2, m2: s.std_seed2 ** 2 * (s.numel - 1), absMax: 0 },
  ];
}

/** Standard errors allowed between our sample and the reference's (a false alarm is below ~1e-6 per check). */
const Z = 6;
/** Samples smaller than this are only checked for finiteness: their std is too uncertain to test. */
const MIN_SAMPLE = 16;
/** Below this the extremes say little about the distribution. */
const MIN_EXTREMES = 64;

/**
 * Compares our sample with the reference's (both seeds pooled; its `absMax` is the first seed's). The std is compared
 * on a log scale, whose sampling error is nearly normal even for small samples.
 */
function compareRandom(label: string, ours: Moments, ref: Moments): string[] {
  const problems: string[] = [];
  const n = ours.n, sO = sd(ours), sR = sd(ref);
  if (n < MIN_SAMPLE) return problems;
  const logTol = Z * Math.sqrt(0.5 / (n - 1) + 0.5 / (ref.n - 1));
  if (!(Math.abs(Math.log(sO / sR)) <= logTol)) {
    problems.push(
      `${label}: std ${sO.toPrecision(5)}, reference ${sR.toPrecision(5)} (allowed ratio e^±${logTol.toFixed(3)})`,
    );
  }
  const pooledSd = Math.sqrt((ours.m2 + ref.m2) / (n + ref.n - 2));
  const meanTol = Z * pooledSd * Math.sqrt(1 / n + 1 / ref.n);
  if (!(Math.abs(ours.mean - ref.mean) <= meanTol)) {
    problems.push(
      `${label}: mean ${ours.mean.toExponential(3)}, reference ${ref.mean.toExponential(3)} (±${
        meanTol.toExponential(2)
      })`,
    );
  }
  if (n < MIN_EXTREMES) return problems;
  // U(±B) has std B/√3: a reference whose largest |value| stays within √3 stds (plus ~6 standard errors of the std
  // estimate) is uniform. Gaussian samples of this size reach ≥ 2.3 stds.
  const bound = ref.absMax;
  if (bound <= Math.sqrt(3) * sR * (1 + 2 / Math.sqrt(n))) {
    // Uniform U(±B): the largest of n |values| falls short of B by about B/n (below B·(1 − 12/n) with p ≈ e^-12).
    const slack = 12 / n;
    if (!(ours.absMax <= bound * (1 + slack) && ours.absMax >= bound * (1 - slack))) {
      problems.push(
        `${label}: max |value| ${ours.absMax.toPrecision(6)}, uniform reference bound ≈ ${bound.toPrecision(6)}`,
      );
    }
  } else {
    // Gaussian: max |x| / std concentrates around √(2 ln 2n); a uniform init would stay at √3.
    const c = Math.sqrt(2 * Math.log(2 * n)), ratio = ours.absMax / sO;
    if (!(ratio >= c - 1.75 && ratio <= c + 2.5)) {
      problems.push(
        `${label}: max |value| is ${ratio.toFixed(2)} stds, Gaussian expects ${c.toFixed(2)} (−1.75, +2.5)`,
      );
    }
  }
  return problems;
}

/** A deterministic tensor must equal the listed constant or values (or match all listed stats when neither is). */
function compareDeterministic(name: string, data: Float32Array, s: RefStats): string[] {
  const near = (a: number, b: number) => Math.abs(a - b) <= 1e-6 * Math.max(1, Math.abs(b));
  const want = s.constant !== undefined ? () => s.constant! : s.values ? (i: number) => s.values![i] : null;
  if (want) {
    const bad = data.findIndex((v, i) => !near(v, want(i)));
    return bad < 0 ? [] : [`${name}[${bad}] = ${data[bad]}, reference ${want(bad)}`];
  }
  const m = moments(data);
  const got = {
    mean: m.mean,
    std: sd(m),
    min: data.reduce((a, b) => Math.min(a, b)),
    max: data.reduce((a, b) => Math.max(a, b)),
  };
  const off = (["mean", "std", "min", "max"] as const).filter((k) => !near(got[k], s[k]));
  return off.map((k) => `${name}: deterministic ${k} ${got[k]}, reference ${s[k]}`);
}

/** Every problem of our state_dict against one section of the reference's init stats. */
function compareSection(label: string, ours: StateDict, ref: Record<string, RefStats>): string[] {
  const problems: string[] = [];
  const ourKeys = Object.keys(ours), refKeys = Object.keys(ref);
  if (ourKeys.join() !== refKeys.join()) {
    problems.push(
      `${label}: keys differ (ours ${ourKeys.length}, reference ${refKeys.length}):\n    ours ${ourKeys}\n    ref  ${refKeys}`,
    );
  }
  const groups = new Map<string, { ours: Moments[]; ref: Moments[] }>();
  for (const [name, s] of Object.entries(ref)) {
    const t = ours[name];
    if (!t) continue;
    const data = t.data as Float32Array;
    if (formatShape(t.shape) !== formatShape(s.shape)) {
      problems.push(`${label} ${name}: shape ${formatShape(t.shape)}, reference ${formatShape(s.shape)}`);
      continue;
    }
    if (!data.every(Number.isFinite)) {
      problems.push(`${label} ${name}: non-finite values`);
      continue;
    }
    if (s.deterministic) {
      problems.push(...compareDeterministic(`${label} ${name}`, data, s));
      continue;
    }
    // Tiny tensors (the mLSTM igate bias) are pooled over blocks, where the same name has the same init.
    const role = s.numel >= MIN_SAMPLE ? name : name.replace(/blocks\.\d+\./, "blocks.*.");
    const g = groups.get(role) ?? { ours: [], ref: [] };
    g.ours.push(moments(data));
    g.ref.push(...refMoments(s));
    groups.set(role, g);
  }
  for (const [role, g] of groups) {
    problems.push(...compareRandom(`${label} ${role}`, pool(g.ours), pool(g.ref)));
  }
  return problems;
}

/** The golden init_stats files, grouped by model class and config (several cases share the README configs). */
async function loadCases(): Promise<Map<string, InitStatsFile[]>> {
  const manifest = JSON.parse(await Deno.readTextFile(new URL("manifest.json", GOLDEN)));
  const byModel = new Map<string, InitStatsFile[]>();
  for (const entry of Object.values(manifest.cases) as { init_stats?: string }[]) {
    if (!entry.init_stats) continue;
    const file: InitStatsFile = JSON.parse(await Deno.readTextFile(new URL(entry.init_stats, GOLDEN)));
    if (!file.model_class || !file.as_constructed || NOT_PORTED.has(file.model_class)) continue;
    const key = `${file.model_class} ${JSON.stringify(file.config)}`;
    byModel.set(key, [...byModel.get(key) ?? [], file]);
  }
  return byModel;
}

const cases = await loadCases();

Deno.test("init: every golden init_stats model class is covered", () => {
  const classes = new Set([...cases.values()].map((files) => files[0].model_class!));
  assert.deepEqual([...classes].filter((c) => !BUILDERS[c]), []);
  assert.ok(cases.size >= 7, `only ${cases.size} distinct init_stats models found`);
});

for (const files of cases.values()) {
  const { model_class: cls, config } = files[0];
  const names = files.map((f) => f.case).join(", ");
  Deno.test(`init matches the reference statistics: ${cls} (${names})`, async () => {
    const seed = freshRng(`init ${names}`).seed;
    const ours = await BUILDERS[cls!](config!, await testGpu(), seed);
    const problems: string[] = [];
    for (const file of files) {
      for (const section of ["as_constructed", "after_reset_parameters"] as const) {
        const ref = file[section];
        if (!ref) continue;
        const dict = ours[section];
        if (!dict) problems.push(`${file.case} ${section}: not produced by our model`);
        else problems.push(...compareSection(`${file.case} ${section}`, dict, ref));
      }
    }
    assert.equal(problems.length, 0, `${problems.length} init mismatch(es):\n  ${problems.join("\n  ")}`);
  });
}

Deno.test("init: release the GPU", async () => {
  await closeTestGpu();
});
