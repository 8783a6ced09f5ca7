/**
 * Load units: which checkpoint tensors are read together to give which model tensors. Usually one gives one; an
 * xLSTMLarge checkpoint in the other weight mode (spec C2) needs a fused tensor split into its parts, or the parts
 * stacked into a fused one, using the converters of xlstm_large_weights.ts one group at a time, so host memory
 * still holds about one tensor.
 *
 * @module
 */

import type { xLSTMLargeConfig } from "../config.ts";
import { formatShape, type HostTensor, toFloat32 } from "../host_tensor.ts";
import type { CheckpointEntry } from "./checkpoint_reader.ts";
import { fuseXLSTMLargeStateDict, splitXLSTMLargeStateDict } from "./xlstm_large_weights.ts";

/** Checkpoint tensors read together, and the model tensors they give. */
export interface LoadUnit {
  /** `plain`: one tensor as stored; `split`: a fused tensor into its parts; `fuse`: parts into a fused tensor. */
  kind: "plain" | "split" | "fuse";
  /** The checkpoint tensors, in the order read. */
  entries: CheckpointEntry[];
  /** The model keys given, with their shapes. */
  outputs: [key: string, shape: number[]][];
}

/**
 * The single-mode parts (keys and shapes) of a fused xLSTMLarge key of `shape`, or null for any other key. The
 * split of an empty tensor of that shape names them without touching data.
 */
export function fusedParts(
  key: string,
  shape: readonly number[],
  config: xLSTMLargeConfig,
): [string, number[]][] | null {
  const empty: HostTensor = { dtype: "float32", shape: [...shape], data: new Float32Array(0) };
  const parts = Object.entries(splitXLSTMLargeStateDict({ [key]: empty }, config));
  return parts.length === 1 && parts[0][0] === key ? null : parts.map(([k, t]) => [k, t.shape]);
}

/**
 * Plans units giving the keys of `want` (a model's state_dict shapes) from `entries` (in read order); `shapeOf`
 * gives an entry's shape as read. An xLSTMLarge `config` enables splitting and fusing. Entries that fit no key are
 * returned in `unexpected`; parts missing or whose shapes do not fit their fused key are `problems` (`expectedFile`
 * names where a missing tensor should be).
 */
export function planUnits(
  entries: readonly CheckpointEntry[],
  want: ReadonlyMap<string, number[]>,
  shapeOf: (e: CheckpointEntry) => number[],
  config: xLSTMLargeConfig | null,
  expectedFile: (name: string) => string,
): { units: LoadUnit[]; unexpected: CheckpointEntry[]; problems: string[] } {
  const byKey = new Map(entries.map((e) => [e.key, e]));
  const claimed = new Set<CheckpointEntry>();
  const units: LoadUnit[] = [], unexpected: CheckpointEntry[] = [], problems: string[] = [];
  for (const [key, shape] of config ? want : []) {
    if (byKey.has(key)) continue;
    const parts = fusedParts(key, shape, config!);
    const found = parts?.map(([k]) => byKey.get(k));
    if (!parts || !found!.some((e) => e)) continue;
    found!.forEach((e) => e && claimed.add(e));
    const absent = parts.filter((_, i) => !found![i]).map(([k]) => k);
    if (absent.length) {
      for (const k of absent) problems.push(`${expectedFile(k)}: missing tensor "${k}" (a part of ${key})`);
      continue;
    }
    const group = found as CheckpointEntry[];
    const bad = group.findIndex((e, i) => shapeOf(e).join() !== parts[i][1].join());
    if (bad >= 0) {
      const e = group[bad];
      problems.push(
        `${e.file}: tensor "${e.name}" has shape ${formatShape(e.shape)}, but ${key} ${formatShape(shape)} ` +
          `needs ${formatShape(parts[bad][1])}`,
      );
    } else units.push({ kind: "fuse", entries: group, outputs: [[key, shape]] });
  }
  for (const e of entries) {
    if (claimed.has(e)) continue;
    if (want.has(e.key)) {
      units.push({ kind: "plain", entries: [e], outputs: [[e.key, shapeOf(e)]] });
      continue;
    }
    const parts = config && splitParts(e, config, problems);
    if (parts?.every(([k]) => want.has(k))) units.push({ kind: "split", entries: [e], outputs: parts });
    else if (parts !== undefined) unexpected.push(e);
  }
  // Sequential reads: each unit where its first tensor lies in the checkpoint.
  const order = new Map(entries.map((e, i) => [e, i]));
  units.sort((a, b) => order.get(a.entries[0])! - order.get(b.entries[0])!);
  return { units, unexpected, problems };
}

/** The parts of a fused entry; null for other entries; undefined (problem recorded) for one that does not split. */
function splitParts(
  e: CheckpointEntry,
  config: xLSTMLargeConfig,
  problems: string[],
): [string, number[]][] | null | undefined {
  try {
    return fusedParts(e.key, e.shape, config);
  } catch (err) {
    problems.push(`${e.file}: tensor "${e.name}": ${(err as Error).message}`);
    return undefined;
  }
}

/** Reads a unit's tensors one after another and gives its model tensors. */
export async function readUnit(
  unit: LoadUnit,
  read: (e: CheckpointEntry) => Promise<HostTensor>,
  config: xLSTMLargeConfig | null,
): Promise<Record<string, HostTensor>> {
  const record: Record<string, HostTensor> = {};
  for (const e of unit.entries) {
    const t = await read(e);
    // Parts stack as float32, whatever mix of float dtypes they were stored in.
    record[e.key] = unit.kind === "fuse" ? { dtype: "float32", shape: t.shape, data: toFloat32(t) } : t;
  }
  if (unit.kind === "plain") return record;
  return unit.kind === "fuse" ? fuseXLSTMLargeStateDict(record) : splitXLSTMLargeStateDict(record, config!);
}
