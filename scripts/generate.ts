/**
 * Text generation from the command line: a prompt in, text streamed out as tokens come back from the GPU, then the
 * time to first token and the decode speed on stderr. Tokens are chosen on the GPU (greedy, or seeded temperature /
 * top-k / top-p sampling) and read back in chunks; `--state-out` / `--state-in` save and resume a session exactly.
 *
 *   deno run -A scripts/generate.ts --model ./xLSTM-7b --tokenizer ./xLSTM-7b/tokenizer.json --prompt "…" \
 *     --dtype float16 --max-new-tokens 64 --temperature 0.8 --top-k 50 --top-p 0.95 --seed 0
 *   deno run -A scripts/generate.ts --random-config tiny.yaml --tokenizer tests/fixtures/tokenizer.json --prompt "the"
 *
 * `--help` lists the flags.
 */

import { parseArgs } from "node:util";
// deno-lint-ignore no-import-prefix
import { Tokenizer } from "npm:@huggingface/tokenizers@0.2.0";
import { ConfigError, xLSTMLargeConfig } from "../src/config.ts";
import { generateTokens } from "../src/generate/generate.ts";
import { type Generatable, releaseState } from "../src/generate/model.ts";
import { loadGenerationState, saveGenerationState } from "../src/generate/state_file.ts";
import { CheckpointError, readCheckpointConfig } from "../src/models/checkpoint_reader.ts";
import { xLSTMLMModel } from "../src/models/lm_model.ts";
import type { WeightDType } from "../src/models/parameters.ts";
import { loadPretrained, type PretrainedModel } from "../src/models/pretrained.ts";
import { xLSTMLarge } from "../src/models/xlstm_large.ts";
import type { Sampling } from "../src/ops/sample.ts";
import { SafetensorsError } from "../src/safetensors.ts";

const USAGE = `Usage: deno run -A scripts/generate.ts (--model DIR | --random-config FILE) --tokenizer FILE [options]

Generates text after a prompt, streaming it as the tokens arrive.

  --model DIR|FILE         checkpoint (Hugging Face NX-AI/xLSTM-7b, NX-AI internal, or an xLSTMLMModel's)
  --random-config FILE     instead: random weights for a config (YAML/JSON: xLSTMLargeConfig or xLSTMLMModelConfig)
  --init-seed N            seed of the random weights (default 0)
  --tokenizer FILE         tokenizer.json (tokenizer_config.json beside it is read when present)
  --prompt TEXT            prompt (default empty); BOS (id 0) is prepended unless resuming
  --max-new-tokens N       tokens to generate (default 64)
  --temperature T          sample at temperature T (0: greedy); without any sampling flag: greedy, or the
                           resumed session's sampling
  --top-k K                keep the K most likely tokens (default: all)
  --top-p P                keep the smallest set of likely tokens with mass >= P (default 1: all)
  --seed N                 seed of the draws (default 0, or the resumed session's)
  --state-in FILE          resume the session saved in FILE (the prompt, if any, continues it)
  --state-out FILE         save the session after generating
  --dtype float32|float16  weight dtype (float16 needs shader-f16; xLSTMLarge only; default float32)
  --weight-mode single|fused
                           xLSTMLarge weight layout on the GPU (default: the checkpoint's); fused runs fewer
                           dispatches per token, from a checkpoint in either mode
  --tokens-per-readback N  tokens per GPU readback (default 16)
  --help                   this text`;

/** Parsed command line. */
interface Options {
  model?: string;
  randomConfig?: string;
  initSeed: number;
  tokenizer: string;
  prompt: string;
  maxNewTokens: number;
  sampling?: Sampling;
  seed?: number;
  stateIn?: string;
  stateOut?: string;
  dtype: WeightDType;
  weightMode?: "single" | "fused";
  tokensPerReadback: number;
}

function integer(flag: string, text: string | undefined, fallback?: number): number | undefined {
  if (text === undefined) return fallback;
  const n = Number(text);
  if (!/^\d+$/.test(text.trim()) || !Number.isSafeInteger(n)) {
    throw new RangeError(`--${flag} must be a non-negative integer, got ${JSON.stringify(text)}`);
  }
  return n;
}

function number(flag: string, text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  const n = Number(text);
  if (text.trim() === "" || !Number.isFinite(n)) {
    throw new RangeError(`--${flag} must be a number, got ${JSON.stringify(text)}`);
  }
  return n;
}

function parse(args: string[]): Options | null {
  const flag = { type: "string" } as const;
  const { values: v } = parseArgs({
    args,
    options: {
      model: flag,
      "random-config": flag,
      "init-seed": flag,
      tokenizer: flag,
      prompt: flag,
      "max-new-tokens": flag,
      temperature: flag,
      "top-k": flag,
      "top-p": flag,
      seed: flag,
      "state-in": flag,
      "state-out": flag,
      dtype: flag,
      "weight-mode": flag,
      "tokens-per-readback": flag,
      help: { type: "boolean" },
    },
  });
  if (v.help) return null;
  const s = (name: Exclude<keyof typeof v, "help">) => v[name];
  if (!s("model") === !s("random-config")) throw new RangeError("pass exactly one of --model and --random-config");
  if (!s("tokenizer")) throw new RangeError("--tokenizer is required");
  const dtype = s("dtype") ?? "float32";
  if (dtype !== "float32" && dtype !== "float16") {
    throw new RangeError(`--dtype must be float32 or float16, got ${dtype}`);
  }
  const weightMode = s("weight-mode");
  if (weightMode !== undefined && weightMode !== "single" && weightMode !== "fused") {
    throw new RangeError(`--weight-mode must be single or fused, got ${weightMode}`);
  }
  const temperature = number("temperature", s("temperature"));
  const topK = integer("top-k", s("top-k")), topP = number("top-p", s("top-p"));
  const sampled = temperature !== undefined || topK !== undefined || topP !== undefined;
  return {
    model: s("model"),
    randomConfig: s("random-config"),
    initSeed: integer("init-seed", s("init-seed"), 0)!,
    tokenizer: s("tokenizer")!,
    prompt: s("prompt") ?? "",
    maxNewTokens: integer("max-new-tokens", s("max-new-tokens"), 64)!,
    sampling: sampled ? { temperature: temperature ?? 1, topK, topP } : undefined,
    seed: integer("seed", s("seed")),
    stateIn: s("state-in"),
    stateOut: s("state-out"),
    dtype,
    weightMode,
    tokensPerReadback: integer("tokens-per-readback", s("tokens-per-readback"), 16)!,
  };
}

async function readTokenizer(path: string): Promise<Tokenizer> {
  const json = JSON.parse(await Deno.readTextFile(path));
  const configPath = path.replace(/[^/\\]*$/, "tokenizer_config.json");
  const config = await Deno.readTextFile(configPath).then(JSON.parse, () => ({}));
  return new Tokenizer(json, config);
}

async function loadModel(o: Options): Promise<PretrainedModel> {
  if (o.model) return await loadPretrained(o.model, { weightDtype: o.dtype, weightMode: o.weightMode });
  const found = await readCheckpointConfig(o.randomConfig!);
  const create = { seed: o.initSeed, weightDtype: o.dtype };
  if (found.architecture === "xLSTMLarge") {
    const weight_mode = o.weightMode ?? found.config.weight_mode;
    return await xLSTMLarge.create(xLSTMLargeConfig({ ...found.config, weight_mode }), create);
  }
  if (o.weightMode) throw new RangeError(`--weight-mode applies to xLSTMLarge; ${o.randomConfig} is an xLSTMLMModel`);
  return await xLSTMLMModel.create(found.config, create);
}

/**
 * Decodes the generated ids so far and returns the text not printed yet, holding back a trailing replacement
 * character (a multi-byte character whose bytes span tokens).
 */
function streamer(tokenizer: Tokenizer): (ids: number[]) => string {
  let printed = 0;
  return (ids) => {
    const text = tokenizer.decode(ids, { skip_special_tokens: false });
    const ready = text.endsWith("\uFFFD") ? text.replace(/\uFFFD+$/, "") : text;
    const fresh = ready.slice(printed);
    printed = Math.max(printed, ready.length);
    return fresh;
  };
}

/** Runs the CLI on `args`; returns the exit code (0 done, 1 failed, 2 bad usage). */
export async function main(args: string[]): Promise<number> {
  let o: Options | null;
  try {
    o = parse(args);
  } catch (e) {
    console.error(`${(e as Error).message}\n\n${USAGE}`);
    return 2;
  }
  if (!o) {
    console.log(USAGE);
    return 0;
  }
  const out = new TextEncoder();
  try {
    const tokenizer = await readTokenizer(o.tokenizer);
    const model = await loadModel(o);
    // Either model class; their states differ, and the loop treats them alike.
    const lm: Generatable<unknown> = model;
    const V = model.config.vocab_size;
    const resume = o.stateIn ? await loadGenerationState(o.stateIn, lm) : undefined;
    const ids = [...(resume ? [] : [0]), ...tokenizer.encode(o.prompt, { add_special_tokens: false }).ids];
    const bad = ids.find((id) => id >= V);
    if (bad !== undefined) throw new RangeError(`the tokenizer gave id ${bad}, outside the model's vocabulary of ${V}`);
    const prompt = ids.length
      ? { dtype: "int32" as const, shape: [1, ids.length], data: Int32Array.from(ids) }
      : undefined;
    const generated: number[] = [], next = streamer(tokenizer);
    const r = await generateTokens(lm, prompt, {
      maxNewTokens: o.maxNewTokens,
      sampling: o.sampling,
      seed: o.seed,
      resume,
      tokensPerReadback: o.tokensPerReadback,
      onTokens: async (chunk) => {
        generated.push(...chunk.tokens[0]);
        await Deno.stdout.write(out.encode(next(generated)));
      },
    });
    await Deno.stdout.write(out.encode(next(generated) + "\n"));
    if (o.stateOut) await saveGenerationState(o.stateOut, lm, r.checkpoint);
    const t = r.timing;
    console.error(
      `time to first token ${t.timeToFirstTokenMs.toFixed(1)} ms (${t.promptTokens} prompt tokens), ` +
        `${t.newTokens} tokens at ${t.decodeTokensPerSecond.toFixed(1)} tokens/s, ${t.readbacks} readbacks` +
        (o.stateOut ? `; session saved to ${o.stateOut}` : ""),
    );
    releaseState(r.checkpoint.state);
    if (resume) releaseState(resume.state);
    model.dispose();
    return 0;
  } catch (e) {
    const known = [CheckpointError, ConfigError, SafetensorsError, RangeError, TypeError, Deno.errors.NotFound];
    if (known.some((k) => e instanceof k)) {
      console.error(`error: ${(e as Error).message}`);
      return 1;
    }
    throw e;
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
