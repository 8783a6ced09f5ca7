/**
 * xLSTMLarge inference: prefill tokens/s, decode tokens/s at batch 1 (greedy and sampled, through `generateTokens`:
 * tokens chosen on the GPU, read back every 16), dispatches per decoded token and GPU memory in use. Timings do not
 * depend on the weights, so the 7B shape runs with zero weights (`initialize: false`).
 *
 *   deno run -A bench/generate_bench.ts                    # tiny model (for CPU adapters)
 *   XLSTM_BENCH_SIZE=7b deno run -A bench/generate_bench.ts  # E 4096, 32 blocks, 8 heads, V 50304 (f16 if possible)
 *   deno bench -A bench/generate_bench.ts                  # Deno's timing of one decode run
 *
 * Environment: XLSTM_BENCH_SIZE (tiny | 7b), XLSTM_BENCH_PROMPT (prefill tokens), XLSTM_BENCH_TOKENS (decoded
 * tokens), XLSTM_BENCH_DTYPE (float32 | float16; default float16 where the adapter has shader-f16, for 7b),
 * XLSTM_BENCH_WEIGHT_MODE (single | fused; default fused, the fewest dispatches per token).
 */

import { noGrad } from "../src/autograd.ts";
import { xLSTMLargeConfig } from "../src/config.ts";
import { generateTokens } from "../src/generate/generate.ts";
import { releaseState } from "../src/generate/model.ts";
import { createGpu } from "../src/gpu/device.ts";
import { xLSTMLarge } from "../src/models/xlstm_large.ts";
import type { Sampling } from "../src/ops/sample.ts";
import { Tensor } from "../src/tensor.ts";

const SIZES = {
  tiny: { dims: { embedding_dim: 64, num_heads: 2, num_blocks: 2, vocab_size: 1024 }, prompt: 64, tokens: 48 },
  "7b": { dims: { embedding_dim: 4096, num_heads: 8, num_blocks: 32, vocab_size: 50304 }, prompt: 2048, tokens: 256 },
};
const sizeName = (Deno.env.get("XLSTM_BENCH_SIZE") ?? "tiny") as keyof typeof SIZES;
const size = SIZES[sizeName];
if (!size) throw new RangeError(`XLSTM_BENCH_SIZE must be one of ${Object.keys(SIZES).join(", ")}, got ${sizeName}`);
const envInt = (name: string, fallback: number) => Number(Deno.env.get(name) ?? fallback);
const P = envInt("XLSTM_BENCH_PROMPT", size.prompt), N = envInt("XLSTM_BENCH_TOKENS", size.tokens);

const gpu = await createGpu();
const dtype = Deno.env.get("XLSTM_BENCH_DTYPE") ?? (sizeName === "7b" && gpu.hasF16 ? "float16" : "float32");
const weightMode = Deno.env.get("XLSTM_BENCH_WEIGHT_MODE") ?? "fused";
const config = xLSTMLargeConfig({ ...size.dims, weight_mode: weightMode });
const model = await xLSTMLarge.create(config, {
  gpu,
  seed: 0,
  initialize: sizeName === "tiny",
  weightDtype: dtype as "float32" | "float16",
});
const weightBytes = gpu.allocatedBytes;
const prompt = { dtype: "int32" as const, shape: [1, P], data: Int32Array.from({ length: P }, (_, i) => i % 100) };
const SAMPLED: Sampling = { temperature: 0.8, topK: 50, topP: 0.95 };

/** One prefill forward of the prompt and a wait for it; returns milliseconds. */
async function prefill(): Promise<number> {
  const ids = Tensor.fromHost(gpu, prompt);
  await gpu.finish();
  const t0 = performance.now();
  const [logits, state] = noGrad(() => model.apply(ids));
  await gpu.finish();
  const ms = performance.now() - t0;
  logits.dispose();
  releaseState(state);
  ids.dispose();
  return ms;
}

/** A generation of `n` tokens after a one-token prompt; returns its timing and the dispatches it recorded. */
async function decode(n: number, sampling: Sampling) {
  const before = gpu.dispatchCount;
  const r = await generateTokens(model, { dtype: "int32", shape: [1, 1], data: new Int32Array(1) }, {
    maxNewTokens: n,
    sampling,
    seed: 1,
  });
  releaseState(r.checkpoint.state);
  return { timing: r.timing, dispatches: gpu.dispatchCount - before };
}

Deno.bench({
  name: `xLSTMLarge ${sizeName} decode ${N} tokens (greedy, batch 1)`,
  n: 3,
  async fn() {
    await decode(N, "greedy");
  },
});

if (import.meta.main) {
  await prefill(); // compiles the pipelines
  const prefillMs = Math.min(await prefill(), await prefill());
  await decode(4, "greedy");
  const greedy = await decode(N, "greedy"), sampled = await decode(N, SAMPLED);
  const short = await decode(Math.max(2, N >> 1), "greedy");
  const perToken = (greedy.dispatches - short.dispatches) / (N - Math.max(2, N >> 1));
  const mb = (b: number) => `${(b / 2 ** 20).toFixed(1)} MiB`;
  const rows: [string, string][] = [
    ["adapter", gpu.adapterName],
    [
      "model",
      `xLSTMLarge ${sizeName}: E ${config.embedding_dim}, ${config.num_blocks} blocks, ${config.num_heads} heads, ` +
      `V ${config.vocab_size}, ${
        (model.numParameters() / 1e6).toFixed(1)
      } M parameters, ${dtype} weights, ${weightMode} mode`,
    ],
    ["prefill", `${P} tokens in ${prefillMs.toFixed(1)} ms: ${(P / prefillMs * 1000).toFixed(0)} tokens/s`],
    ["time to first token", `${greedy.timing.timeToFirstTokenMs.toFixed(1)} ms (1-token prompt, incl. one readback)`],
    ["decode, greedy", `${greedy.timing.decodeTokensPerSecond.toFixed(1)} tokens/s over ${N} tokens (batch 1)`],
    ["decode, top-k 50 top-p 0.95", `${sampled.timing.decodeTokensPerSecond.toFixed(1)} tokens/s`],
    ["dispatches per decoded token", perToken.toFixed(1)],
    ["readbacks", `${greedy.timing.readbacks} for ${N} tokens`],
    ["GPU memory", `weights ${mb(weightBytes)}, in use after decoding ${mb(gpu.allocatedBytes)}`],
  ];
  for (const [k, v] of rows) console.log(`| ${k.padEnd(30)} | ${v} |`);
  model.dispose();
  gpu.destroy();
}
