/**
 * Converts xLSTM checkpoints between the Hugging Face layout (`NX-AI/xLSTM-7b`), the NX-AI internal layout and the
 * reference `xlstm` package's NeurIPS state_dicts (sLSTM tensors in the vanilla or the cuda layout), changing the
 * dtype and the sharding on the way. Streams: host memory holds one output shard. Needs no GPU.
 *
 *   deno run -A scripts/convert.ts --from ./xLSTM-7b --to ./xLSTM-7b-f16 --format xlstm --dtype float16
 *   deno run -A scripts/convert.ts --from lm.safetensors --config lm.yaml --to ./lm --format xlstm
 *
 * `--help` lists the flags.
 */

import { parseArgs } from "node:util";
import { ConfigError } from "../src/config.ts";
import { CheckpointError } from "../src/models/checkpoint_reader.ts";
import { convertCheckpoint } from "../src/models/pretrained.ts";
import { SafetensorsError } from "../src/safetensors.ts";

const USAGE =
  `Usage: deno run -A scripts/convert.ts --from <dir|file.safetensors> --to <dir> --format hf|xlstm [options]

Converts an xLSTM checkpoint, one shard in memory at a time.

  --from DIR|FILE      checkpoint directory (Hugging Face, NX-AI internal, or an xLSTMLMModel's config + state_dict),
                       or one .safetensors file (config beside it or in --config)
  --config FILE        config to use (YAML or JSON): xLSTMLMModelConfig, HF config.json or NX-AI config.yaml
  --to DIR             output directory (created; an earlier checkpoint there is replaced)
  --format hf|xlstm    hf: config.json + model-0000k-of-0000n.safetensors + index (xLSTMLarge only);
                       xlstm: config.yaml + model.safetensors or model_{k}.safetensors
  --dtype T            float32, float16 or bfloat16 (default: as stored)
  --shard-size SIZE    most bytes per weight file, e.g. 5GB, 500MB, 2GiB (default 5GB)
  --slstm-layout L     vanilla or cuda: layout of sLSTM recurrent kernels and biases written (default vanilla)
  --help               this text`;

const UNITS: Record<string, number> = { "": 1, b: 1, kb: 1e3, mb: 1e6, gb: 1e9, tb: 1e12 };
const BINARY: Record<string, number> = { kib: 2 ** 10, mib: 2 ** 20, gib: 2 ** 30, tib: 2 ** 40 };

/** Bytes of a size like `5GB` (decimal, as HF's max_shard_size), `2GiB` (binary) or `1000000`. */
export function parseSize(text: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([a-z]*)$/i.exec(text.trim());
  const unit = m?.[2].toLowerCase() ?? "";
  const scale = UNITS[unit] ?? BINARY[unit];
  if (!m || !scale || Number(m[1]) <= 0) throw new RangeError(`--shard-size: not a size: ${JSON.stringify(text)}`);
  return Math.floor(Number(m[1]) * scale);
}

function oneOf<T extends string>(flag: string, value: string | undefined, allowed: readonly T[]): T | undefined {
  if (value === undefined || (allowed as readonly string[]).includes(value)) return value as T | undefined;
  throw new RangeError(`--${flag} must be one of ${allowed.join(", ")}; got ${JSON.stringify(value)}`);
}

const mb = (bytes: number): string => `${(bytes / 1e6).toFixed(1)} MB`;

/** Runs the CLI on `args`, printing to `log`; returns the exit code (0 done, 1 bad checkpoint, 2 bad usage). */
export async function main(args: string[], log: (line: string) => void = console.log): Promise<number> {
  let options;
  try {
    const { values } = parseArgs({
      args,
      options: {
        from: { type: "string" },
        to: { type: "string" },
        config: { type: "string" },
        format: { type: "string" },
        dtype: { type: "string" },
        "shard-size": { type: "string" },
        "slstm-layout": { type: "string" },
        help: { type: "boolean" },
      },
    });
    if (values.help) {
      log(USAGE);
      return 0;
    }
    if (!values.from || !values.to || !values.format) throw new RangeError("--from, --to and --format are required");
    options = {
      from: values.from,
      to: values.to,
      config: values.config,
      format: oneOf("format", values.format, ["hf", "xlstm"] as const)!,
      dtype: oneOf("dtype", values.dtype, ["float32", "float16", "bfloat16"] as const),
      maxShardBytes: values["shard-size"] === undefined ? undefined : parseSize(values["shard-size"]),
      slstmLayout: oneOf("slstm-layout", values["slstm-layout"], ["vanilla", "cuda"] as const),
    };
  } catch (e) {
    log(`${(e as Error).message}\n\n${USAGE}`);
    return 2;
  }
  const start = performance.now();
  try {
    const report = await convertCheckpoint(options.from, options.to, {
      ...options,
      onShard: ({ file, tensors, bytes }) => log(`wrote ${file}: ${tensors} tensors, ${mb(bytes)}`),
    });
    const seconds = (performance.now() - start) / 1000;
    const rate = mb(report.bytes / Math.max(seconds, 1e-9));
    log(
      `converted ${options.from} → ${options.to} (${options.format}): ${report.tensors} tensors, ` +
        `${mb(report.bytes)} in ${seconds.toFixed(2)} s (${rate}/s); largest shard held ${mb(report.peakShardBytes)}`,
    );
    return 0;
  } catch (e) {
    const known = [CheckpointError, ConfigError, SafetensorsError, RangeError, Deno.errors.NotFound];
    if (known.some((k) => e instanceof k)) {
      log((e as Error).message);
      return 1;
    }
    throw e;
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
