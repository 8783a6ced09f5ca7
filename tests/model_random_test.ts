/**
 * The GPU models against the float64 reference of `cpu/model.ts` on random configs (seed printed; replay with
 * `SEED=...`): stacks, LM models and standalone layers of random width, depth, block layout, head counts, conv sizes,
 * backends, biases and activations, with every parameter perturbed as the golden files do. Both the parallel forward
 * and the token-by-token step loop are checked. The reference itself is first checked against the golden cases.
 */

import { mLSTMLayerConfig, sLSTMLayerConfig, xLSTMBlockStackConfig, xLSTMLMModelConfig } from "../src/config.ts";
import type { Gpu } from "../src/gpu/runtime.ts";
import type { HostTensor } from "../src/host_tensor.ts";
import { xLSTMBlockStack } from "../src/models/block_stack.ts";
import { xLSTMLMModel } from "../src/models/lm_model.ts";
import { mLSTMLayer } from "../src/models/mlstm_layer.ts";
import { sLSTMLayer } from "../src/models/slstm_layer.ts";
import { readSafetensors } from "../src/safetensors.ts";
import { Tensor } from "../src/tensor.ts";
import { cpuForward, type CpuModelConfigs, type CpuModelKind, type CpuParams, cpuStep } from "./cpu/model.ts";
import { closeTestGpu, freshRng, relativeError, type Rng, testGpu } from "./util.ts";

/** The conformance tolerance (max |got − ref| / max |ref|) for outputs and step outputs. */
const TOL = 1e-4;
/** Rounds of random cases per run and the longest sequence (`MODEL_RANDOM_ROUNDS=50` for a longer hunt). */
const ROUNDS = Number(Deno.env.get("MODEL_RANDOM_ROUNDS") ?? 3);
const MAX_T = Number(Deno.env.get("MODEL_RANDOM_MAX_T") ?? 20);

// ---------------------------------------------------------------------------------------------------------------
// The reference against the golden cases (float64 results stored as float32)

const GOLDEN: [string, CpuModelKind][] = [
  ["mlstm_stack", "stack"],
  ["slstm_stack", "stack"],
  ["mixed_stack", "stack"],
  ["lm_untied", "lm"],
  ["lm_tied", "lm"],
  ["stack_step", "stack"],
  ["lm_step", "lm"],
  ["slstm_layer", "slstm_layer"],
  ["mlstm_layer", "mlstm_layer"],
];

function resolve<K extends CpuModelKind>(kind: K, raw: unknown): CpuModelConfigs[K] {
  const factory = { stack: xLSTMBlockStackConfig, lm: xLSTMLMModelConfig, mlstm_layer: mLSTMLayerConfig };
  return (kind === "slstm_layer"
    ? sLSTMLayerConfig(raw)
    : factory[kind as Exclude<K, "slstm_layer">](raw)) as CpuModelConfigs[K];
}

function float64(t: HostTensor): Float64Array {
  return Float64Array.from(t.data as ArrayLike<number>, Number);
}

Deno.test("the cpu model reference reproduces the golden cases", async () => {
  for (const [name, kind] of GOLDEN) {
    const url = new URL(`../../shared/golden/${name}`, import.meta.url);
    const side = JSON.parse(await Deno.readTextFile(`${url.pathname}.json`));
    const tensors = await readSafetensors(`${url.pathname}.safetensors`);
    const params: CpuParams = {};
    for (const [k, t] of Object.entries(tensors)) if (k.startsWith("param.")) params[k.slice(6)] = float64(t);
    const input = { shape: tensors.input.shape, data: float64(tensors.input) };
    const config = resolve(kind, side.config);
    const isStep = String(side.call).includes(".step(");
    const got = isStep ? cpuStep(kind, config, params, input) : cpuForward(kind, config, params, input);
    const checks: [string, Float64Array, HostTensor][] = [["output", got, tensors.output]];
    if (tensors.output_parallel) {
      checks.push(["output_parallel", cpuForward(kind, config, params, input), tensors.output_parallel]);
    }
    for (const [what, value, want] of checks) {
      const err = relativeError(value, float64(want));
      // the golden values are float64 results rounded to float32
      if (!(err <= 1e-6)) throw new Error(`golden ${name} ${what}: relative error ${err.toExponential(3)}`);
    }
  }
});

// ---------------------------------------------------------------------------------------------------------------
// Random configs

/** A random case: the reference's config dict, its resolution, and the input sizes. */
interface Case {
  kind: CpuModelKind;
  raw: Record<string, unknown>;
  config: CpuModelConfigs[CpuModelKind];
  batch: number;
  seq: number;
  vocab: number;
}

const pick = <T>(rng: Rng, items: readonly T[]): T => items[rng.int(items.length)];
const divisorsOf = (n: number, candidates: number[]): number[] => candidates.filter((c) => n % c === 0);
const ACT_FNS = ["gelu", "relu", "relu^2", "sigmoid", "swish", "selu"];
/** `group_norm_weight` values drawn; add `false` once sLSTMLayer honours it (it registers `group_norm.weight` always). */
const GROUP_NORM_WEIGHT = [true, false];

/** `proj_factor` and the rounding fields of an up-projection (spec A2.1), and the width they give. */
function randomUpProjection(rng: Rng, E: number): [Record<string, unknown>, number] {
  const proj_factor = pick(rng, [1.3, 2]), round_proj_up_to_multiple_of = pick(rng, [64, 16]);
  // rounding down is only drawn where it leaves a width
  const round_proj_up_dim_up = rng.uniform() < 0.7 || proj_factor * E < round_proj_up_to_multiple_of;
  const multiples = proj_factor * E / round_proj_up_to_multiple_of;
  const width = (round_proj_up_dim_up ? Math.ceil(multiples) : Math.floor(multiples)) * round_proj_up_to_multiple_of;
  return [{ proj_factor, round_proj_up_to_multiple_of, round_proj_up_dim_up }, width];
}

function randomMlstm(rng: Rng, E: number): Record<string, unknown> {
  const [upProjection, D] = randomUpProjection(rng, E);
  return {
    ...upProjection,
    num_heads: pick(rng, divisorsOf(D, [1, 2, 3, 4, 8])),
    qkv_proj_blocksize: pick(rng, divisorsOf(D, [2, 4, 8, 16])),
    conv1d_kernel_size: 1 + rng.int(4),
  };
}

function randomSlstm(rng: Rng, E: number): Record<string, unknown> {
  // at least two channels per head: the group norm maps a one-channel head to 0 (and the powerlaw init to NaN)
  const num_heads = pick(rng, divisorsOf(E, [1, 2, 3, 4, 8, 16]).filter((h) => E / h >= 2));
  return {
    embedding_dim: E,
    num_heads,
    conv1d_kernel_size: rng.int(5),
    backend: pick(rng, ["cuda", "vanilla"]),
    function: "slstm",
    bias_init: pick(rng, ["powerlaw_blockdependent", "small_init", "standard", "zeros"]),
    recurrent_weight_init: pick(rng, ["zeros", "standard"]),
    group_norm_weight: pick(rng, GROUP_NORM_WEIGHT),
  };
}

function randomStack(rng: Rng, E: number, T: number): Record<string, unknown> {
  const num_blocks = 1 + rng.int(4);
  const layout = pick(rng, ["mlstm", "slstm", "mixed", "mixed", "all"]);
  const slstm_at = layout === "mixed"
    ? Array.from({ length: num_blocks }, (_, i) => i).filter(() => rng.uniform() < 0.5)
    : layout === "all"
    ? "all"
    : [];
  const withMlstm = layout !== "slstm";
  const withSlstm = layout !== "mlstm";
  const { embedding_dim: _, ...slstm } = randomSlstm(rng, E);
  return {
    ...(withMlstm ? { mlstm_block: { mlstm: randomMlstm(rng, E) } } : {}),
    ...(withSlstm
      ? {
        slstm_block: {
          slstm,
          feedforward: rng.uniform() < 0.8
            ? { ...randomUpProjection(rng, E)[0], act_fn: pick(rng, ACT_FNS), bias: rng.uniform() < 0.5 }
            : null,
        },
      }
      : {}),
    context_length: T + rng.int(3),
    num_blocks,
    embedding_dim: E,
    slstm_at,
    bias: rng.uniform() < 0.5,
    add_post_blocks_norm: rng.uniform() < 0.7,
  };
}

function randomCase(rng: Rng, kind: CpuModelKind): Case {
  const E = pick(rng, [16, 32, 48]), batch = 1 + rng.int(3), seq = 1 + rng.int(MAX_T), vocab = 5 + rng.int(66);
  let raw: Record<string, unknown>;
  if (kind === "mlstm_layer") {
    raw = { ...randomMlstm(rng, E), embedding_dim: E, context_length: seq, bias: rng.uniform() < 0.5 };
  } else if (kind === "slstm_layer") {
    raw = randomSlstm(rng, E);
  } else {
    raw = randomStack(rng, E, seq);
    if (kind === "lm") Object.assign(raw, { vocab_size: vocab, tie_weights: rng.uniform() < 0.5 });
  }
  return { kind, raw, config: resolve(kind, raw), batch, seq, vocab };
}

// ---------------------------------------------------------------------------------------------------------------
// The GPU side

/** What the test needs of every model class. */
interface AnyModel {
  stateDict(): Promise<Record<string, HostTensor>>;
  loadStateDict(record: Record<string, HostTensor>): Promise<void>;
  forward(x: Tensor): Promise<Tensor | [Tensor, unknown]>;
  step(x: Tensor, state?: unknown): Promise<[Tensor, unknown]>;
  dispose(): void;
}

function createModel(kind: CpuModelKind, config: CpuModelConfigs[CpuModelKind], gpu: Gpu): Promise<AnyModel> {
  const options = { gpu, seed: 0 };
  switch (kind) {
    case "stack":
      return xLSTMBlockStack.create(config as xLSTMBlockStackConfig, options);
    case "lm":
      return xLSTMLMModel.create(config as xLSTMLMModelConfig, options);
    case "mlstm_layer":
      return mLSTMLayer.create(config as mLSTMLayerConfig, options);
    default:
      return sLSTMLayer.create(config as sLSTMLayerConfig, options);
  }
}

/** `p += N(0,1)·(0.1 + 0.25·std(p))` on every tensor (as the golden files), tied names kept equal. */
function perturb(rng: Rng, sd: Record<string, HostTensor>, tied: boolean): void {
  for (const [name, t] of Object.entries(sd)) {
    const p = t.data as Float32Array, n = p.length;
    const mean = p.reduce((a, b) => a + b, 0) / n;
    const std = n > 1 ? Math.sqrt(p.reduce((a, b) => a + (b - mean) ** 2, 0) / (n - 1)) : 0;
    sd[name] = { ...t, data: p.map((v) => v + rng.normal() * (0.1 + 0.25 * std)) };
  }
  if (tied) sd["lm_head.weight"] = sd["token_embedding.weight"];
}

function disposeTensors(value: unknown): void {
  if (value instanceof Tensor) value.dispose();
  else if (value && typeof value === "object") Object.values(value).forEach(disposeTensors);
}

/** Time slice `t` of `[B, T, ...]` as `[B, 1, ...]`. */
function sliceTime(h: HostTensor, t: number): HostTensor {
  const [B, T, ...rest] = h.shape, inner = rest.reduce((a, b) => a * b, 1);
  const src = h.data as Float32Array | Int32Array;
  const data = new (src.constructor as { new (n: number): Float32Array | Int32Array })(B * inner);
  for (let b = 0; b < B; b++) data.set(src.subarray((b * T + t) * inner, (b * T + t + 1) * inner), b * inner);
  return { dtype: h.dtype, shape: [B, 1, ...rest], data };
}

/** `[B, 1, W]` step outputs → `[B, T, W]`. */
function concatTime(parts: HostTensor[], B: number): Float64Array {
  const T = parts.length, W = parts[0].data.length / B, out = new Float64Array(B * T * W);
  parts.forEach((p, t) => {
    for (let b = 0; b < B; b++) out.set((p.data as Float32Array).subarray(b * W, (b + 1) * W), (b * T + t) * W);
  });
  return out;
}

interface Measured {
  forward: number;
  step: number;
  stepVsParallel: number;
  refStepVsParallel: number;
}

async function runCase(gpu: Gpu, rng: Rng, c: Case): Promise<Measured> {
  const config = c.config;
  const model = await createModel(c.kind, config, gpu);
  try {
    const sd = await model.stateDict();
    perturb(rng, sd, c.kind === "lm" && (config as xLSTMLMModelConfig).tie_weights);
    await model.loadStateDict(sd);
    const params: CpuParams = {};
    for (const [k, t] of Object.entries(sd)) params[k] = float64(t);
    const { batch: B, seq: T } = c;
    const input: HostTensor = c.kind === "lm"
      ? { dtype: "int32", shape: [B, T], data: Int32Array.from({ length: B * T }, () => rng.int(c.vocab)) }
      : {
        dtype: "float32",
        shape: [B, T, config.embedding_dim],
        data: Float32Array.from(rng.normals(B * T * config.embedding_dim)),
      };
    const refInput = { shape: input.shape, data: float64(input) };
    const refForward = cpuForward(c.kind, config, params, refInput);
    const refStep = cpuStep(c.kind, config, params, refInput);

    const x = Tensor.fromHost(gpu, input);
    const res = await model.forward(x);
    const gotForward = float64(await (Array.isArray(res) ? res[0] : res).toHost());
    disposeTensors([x, res]);
    const outs: Tensor[] = [];
    let state: unknown = undefined;
    for (let t = 0; t < T; t++) {
      const xt = Tensor.fromHost(gpu, sliceTime(input, t));
      const [yt, next] = await model.step(xt, state);
      xt.dispose();
      disposeTensors(state);
      state = next;
      outs.push(yt);
    }
    const gotStep = concatTime(await Tensor.toHostAll(outs), B);
    disposeTensors([outs, state]);
    return {
      forward: relativeError(gotForward, refForward),
      step: relativeError(gotStep, refStep),
      stepVsParallel: relativeError(gotStep, gotForward),
      refStepVsParallel: relativeError(refStep, refForward),
    };
  } finally {
    model.dispose();
  }
}

/** Kinds per round: mostly stacks and LMs, where blocks compose. */
const KINDS: CpuModelKind[] = ["stack", "stack", "lm", "lm", "mlstm_layer", "slstm_layer"];

Deno.test("GPU models match the float64 reference on random configs", async () => {
  const gpu = await testGpu();
  const rng = freshRng("model_random");
  const failures: string[] = [];
  let worst = 0;
  for (const kind of Array.from({ length: ROUNDS }, () => KINDS).flat()) {
    const c = randomCase(rng, kind);
    const layout = "_block_map" in c.config ? ` blocks ${c.config._block_map}` : "";
    const label = `${kind} B=${c.batch} T=${c.seq} E=${c.config.embedding_dim}${layout}`;
    const where = `${label} config ${JSON.stringify(c.raw)}`;
    try {
      const m = await runCase(gpu, rng, c);
      const bad = [
        !(m.forward <= TOL) && `forward ${m.forward.toExponential(2)}`,
        !(m.step <= TOL) && `step ${m.step.toExponential(2)}`,
        // the mLSTM step and parallel forms differ by design (golden README), by far less than the tolerance
        !(m.stepVsParallel <= TOL) && `step vs parallel ${m.stepVsParallel.toExponential(2)}`,
      ].filter(Boolean);
      const line = `forward ${m.forward.toExponential(1)}, step ${m.step.toExponential(1)}, step vs parallel ` +
        `${m.stepVsParallel.toExponential(1)} (reference ${m.refStepVsParallel.toExponential(1)})`;
      console.log(`  ${label}: ${line}`);
      worst = Math.max(worst, m.forward, m.step);
      if (bad.length) failures.push(`${bad.join(", ")} — ${where}`);
    } catch (e) {
      failures.push(`${(e as Error).stack} — ${where}`);
    }
  }
  console.log(`worst error vs the reference: ${worst.toExponential(1)} (tolerance ${TOL})`);
  if (failures.length) throw new Error(`${failures.length} case(s) failed:\n${failures.join("\n")}`);
});

Deno.test("close the GPU", async () => {
  await closeTestGpu();
});
