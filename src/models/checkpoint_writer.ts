/**
 * Writing a checkpoint directory shard by shard: the tensors of one shard are fetched one at a time, written as one
 * safetensors file (atomically), and dropped before the next shard; the config and, for sharded HF checkpoints,
 * the index come last, so a directory that has them is complete.
 *
 * @module
 */

import { join } from "node:path";
import { type HostDType, type HostTensor, numel } from "../host_tensor.ts";
import { castHost, writeSafetensors } from "../safetensors.ts";
import { type CheckpointFormat, HF_INDEX, isWeightFileName, planShards, shardFileName } from "./checkpoint_format.ts";

/** One tensor to write. */
export interface WriteEntry {
  /** Its name in the file. */
  name: string;
  /** Its stored shape. */
  shape: number[];
  /** Its stored dtype. */
  dtype: HostDType;
}

/** Options of {@linkcode writeCheckpointDir}. */
export interface WriteCheckpointOptions {
  /** Shard naming and index: `"hf"` (`model-0000k-of-0000n` + index) or `"xlstm"` (`model_{k}`). */
  format: CheckpointFormat;
  /** Upper bound of a shard's tensor bytes (a larger tensor gets a shard of its own). */
  maxShardBytes: number;
  /** The config file written with the weights. */
  config: { name: string; text: string };
  /** Fetches entry `i` (any float dtype; it is cast to the entry's dtype). Called once per entry, in order. */
  read(i: number): Promise<HostTensor>;
  /** Called after each shard is written. */
  onShard?(info: { file: string; tensors: number; bytes: number }): void;
}

/** What {@linkcode writeCheckpointDir} wrote. */
export interface WriteReport {
  /** Paths of the files written, weights first. */
  files: string[];
  /** Tensors written. */
  tensors: number;
  /** Tensor bytes written. */
  bytes: number;
  /** Largest tensor bytes held at once while writing (one shard). */
  peakShardBytes: number;
}

const DTYPE_BYTES: Record<HostDType, number> = {
  float32: 4,
  float64: 8,
  float16: 2,
  bfloat16: 2,
  int32: 4,
  int64: 8,
};

/** Stored bytes of an entry. */
function entryBytes(e: WriteEntry): number {
  return numel(e.shape) * DTYPE_BYTES[e.dtype];
}

/** Writes `text` to `path` atomically: a temporary sibling, synced, then renamed over it. */
async function writeTextAtomic(path: string, text: string): Promise<void> {
  const tmp = `${path}.tmp-${crypto.randomUUID()}`;
  try {
    await Deno.writeTextFile(tmp, text, { createNew: true });
    {
      using f = await Deno.open(tmp, { write: true });
      await f.sync();
    }
    await Deno.rename(tmp, path);
  } catch (e) {
    await Deno.remove(tmp).catch(() => {});
    throw e;
  }
}

/** Files whose presence says a directory holds a complete checkpoint. */
const MARKERS = ["config.json", "config.yaml", "config.yml", HF_INDEX];

async function removeIfPresent(path: string): Promise<void> {
  await Deno.remove(path).catch((e) => {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  });
}

/**
 * Writes `entries` into `dir` (created when absent). Host memory holds one shard at a time. An existing checkpoint
 * in `dir` is replaced: its config and index go first (so an interrupted rewrite never looks complete) and weight
 * files not in the new set are removed before the new config and index are written.
 */
export async function writeCheckpointDir(
  dir: string,
  entries: readonly WriteEntry[],
  options: WriteCheckpointOptions,
): Promise<WriteReport> {
  if (!(options.maxShardBytes > 0)) {
    throw new RangeError(`maxShardBytes must be positive, got ${options.maxShardBytes}`);
  }
  await Deno.mkdir(dir, { recursive: true });
  const path = (name: string) => join(dir, name);
  for (const marker of MARKERS) await removeIfPresent(path(marker));
  const shards = planShards(entries.map(entryBytes), options.maxShardBytes);
  const names = shards.map((_, k) => shardFileName(options.format, k, shards.length));
  const weightMap: Record<string, string> = {};
  const report: WriteReport = { files: [], tensors: 0, bytes: 0, peakShardBytes: 0 };
  for (const [k, shard] of shards.entries()) {
    const tensors: Record<string, HostTensor> = {};
    let bytes = 0;
    for (const i of shard) {
      const e = entries[i];
      const t = castHost(await options.read(i), e.dtype);
      if (t.shape.join() !== e.shape.join()) {
        throw new RangeError(`${e.name}: got shape [${t.shape}] for a planned shape [${e.shape}]`);
      }
      tensors[e.name] = t;
      weightMap[e.name] = names[k];
      bytes += entryBytes(e);
    }
    await writeSafetensors(path(names[k]), tensors, { metadata: { format: "pt" } });
    report.files.push(path(names[k]));
    report.tensors += shard.length;
    report.bytes += bytes;
    report.peakShardBytes = Math.max(report.peakShardBytes, bytes);
    options.onShard?.({ file: path(names[k]), tensors: shard.length, bytes });
  }
  const stale = (await Array.fromAsync(Deno.readDir(dir)))
    .filter((f) => f.isFile && isWeightFileName(f.name) && !names.includes(f.name));
  for (const f of stale) await Deno.remove(path(f.name));
  await writeTextAtomic(path(options.config.name), options.config.text);
  report.files.push(path(options.config.name));
  if (options.format === "hf" && shards.length > 1) {
    const index = { metadata: { total_size: report.bytes }, weight_map: weightMap };
    await writeTextAtomic(path(HF_INDEX), JSON.stringify(index, null, 2));
    report.files.push(path(HF_INDEX));
  }
  return report;
}
