/**
 * Conversion of `xLSTMLarge` state_dicts between weight modes (spec C2): fused mode stacks, per block, the rows of
 * `[q, k, v, ogate_preact]` into `qkv_opreact`, of `[igate_preact, fgate_preact]` into `ifgate_preact` and of
 * `[proj_up_gate, proj_up]` into `proj_up_gate_z` (weights and biases alike), as the reference's
 * `utils.convert_single_weights_to_fused_weights`; the other keys are the same in both modes.
 *
 * @module
 */

import type { xLSTMLargeConfig } from "../config.ts";
import { formatShape, type HostData, type HostTensor } from "../host_tensor.ts";
import { StateDictError } from "./parameters.ts";

/** A fused Linear and the single-mode Linears whose rows it stacks, in order (names within a block). */
interface Group {
  fused: string;
  parts: string[];
}

const GROUPS: Group[] = [
  {
    fused: "mlstm_layer.qkv_opreact",
    parts: ["mlstm_layer.q", "mlstm_layer.k", "mlstm_layer.v", "mlstm_layer.ogate_preact"],
  },
  { fused: "mlstm_layer.ifgate_preact", parts: ["mlstm_layer.igate_preact", "mlstm_layer.fgate_preact"] },
  { fused: "ffn.proj_up_gate_z", parts: ["ffn.proj_up_gate", "ffn.proj_up"] },
];

/** Where `key` is a weight or bias of `module` (a name within a block): its prefix (`backbone.blocks.3.`). */
function prefixOf(key: string, module: string): string | null {
  for (const kind of [".weight", ".bias"]) {
    const suffix = module + kind;
    if (key === suffix || key.endsWith("." + suffix)) return key.slice(0, key.length - suffix.length);
  }
  return null;
}

/**
 * A single-mode state_dict record in fused mode's keys: per block, the parts of each group concatenated along
 * dim 0 under the fused name, at the position of the group's first key; other keys unchanged. The parts of a group
 * must all be present, with equal dtypes and (for weights) equal column counts.
 *
 * @example
 * ```ts
 * import { fuseXLSTMLargeStateDict } from "@xlstm/core";
 * const w = (rows: number) => ({ dtype: "float32" as const, shape: [rows, 2], data: new Float32Array(rows * 2) });
 * const fused = fuseXLSTMLargeStateDict({
 *   "backbone.blocks.0.mlstm_layer.igate_preact.weight": w(1),
 *   "backbone.blocks.0.mlstm_layer.fgate_preact.weight": w(1),
 * });
 * console.log(Object.keys(fused), fused["backbone.blocks.0.mlstm_layer.ifgate_preact.weight"].shape); // [2, 2]
 * ```
 */
export function fuseXLSTMLargeStateDict(record: Record<string, HostTensor>): Record<string, HostTensor> {
  const out: Record<string, HostTensor> = {};
  const problems: string[] = [];
  for (const key of Object.keys(record)) {
    const hit = GROUPS.flatMap((g) => g.parts.map((part) => ({ g, prefix: prefixOf(key, part) })))
      .find((h) => h.prefix !== null);
    if (!hit) {
      out[key] = record[key];
      continue;
    }
    const kind = key.endsWith(".bias") ? "bias" : "weight", fusedKey = `${hit.prefix}${hit.g.fused}.${kind}`;
    const names = hit.g.parts.map((part) => `${hit.prefix}${part}.${kind}`);
    const missing = names.filter((n) => !(n in record));
    if (missing.length) problems.push(`${fusedKey} needs ${missing.join(", ")}`);
    else if (key === names[0]) { // written where its first part was
      const fused = concatRows(names, names.map((n) => record[n]), problems);
      if (fused) out[fusedKey] = fused;
    }
  }
  if (problems.length) throw new StateDictError(`fuse state_dict: ${[...new Set(problems)].join("; ")}`);
  return out;
}

/**
 * A fused-mode state_dict record in single mode's keys: each fused tensor split along dim 0 into the parts it
 * stacks (`qkv_opreact` into q, k (qk_dim rows each), v and ogate_preact (v_dim rows each); the others into
 * halves), at the fused key's position; other keys unchanged.
 *
 * @example
 * ```ts
 * import { splitXLSTMLargeStateDict, xLSTMLargeConfig } from "@xlstm/core";
 * const cfg = xLSTMLargeConfig({ embedding_dim: 8, num_heads: 2, num_blocks: 1, vocab_size: 10 });
 * const rows = 2 * cfg.qk_dim + 2 * cfg.v_dim;
 * const single = splitXLSTMLargeStateDict({
 *   "backbone.blocks.0.mlstm_layer.qkv_opreact.weight": { dtype: "float32", shape: [rows, 8], data: new Float32Array(rows * 8) },
 * }, cfg);
 * console.log(Object.keys(single)); // q, k, v, ogate_preact weights
 * ```
 */
export function splitXLSTMLargeStateDict(
  record: Record<string, HostTensor>,
  config: Pick<xLSTMLargeConfig, "qk_dim" | "v_dim">,
): Record<string, HostTensor> {
  const out: Record<string, HostTensor> = {};
  const problems: string[] = [];
  for (const [key, t] of Object.entries(record)) {
    const g = GROUPS.find((g) => prefixOf(key, g.fused) !== null);
    if (!g) {
      out[key] = t;
      continue;
    }
    const prefix = prefixOf(key, g.fused)!, kind = key.endsWith(".bias") ? "bias" : "weight";
    const rows = t.shape[0] ?? 0;
    const parts = g.parts.length === 4
      ? [config.qk_dim, config.qk_dim, config.v_dim, config.v_dim]
      : [rows / 2, rows / 2];
    if (parts.reduce((a, b) => a + b, 0) !== rows || !Number.isInteger(parts[0]) || t.shape.length > 2) {
      problems.push(`${key} ${formatShape(t.shape)} does not split into rows [${parts.join(", ")}]`);
      continue;
    }
    const cols = t.shape[1] ?? 1;
    let row = 0;
    g.parts.forEach((part, i) => {
      const data = t.data.slice(row * cols, (row + parts[i]) * cols) as HostData;
      out[`${prefix}${part}.${kind}`] = { dtype: t.dtype, shape: [parts[i], ...t.shape.slice(1)], data };
      row += parts[i];
    });
  }
  if (problems.length) throw new StateDictError(`split state_dict: ${problems.join("; ")}`);
  return out;
}

/** The tensors stacked along dim 0, or null (with a problem recorded) when their dtypes or columns differ. */
function concatRows(names: string[], parts: HostTensor[], problems: string[]): HostTensor | null {
  const [first] = parts;
  const bad = parts.findIndex((p) =>
    p.dtype !== first.dtype || p.shape.length !== first.shape.length ||
    p.shape.slice(1).join() !== first.shape.slice(1).join()
  );
  if (bad >= 0) {
    problems.push(
      `${names[bad]} (${parts[bad].dtype} ${formatShape(parts[bad].shape)}) does not stack under ${names[0]} ` +
        `(${first.dtype} ${formatShape(first.shape)})`,
    );
    return null;
  }
  const total = parts.reduce((n, p) => n + p.data.length, 0);
  const data = new (first.data.constructor as new (n: number) => HostData)(total);
  let at = 0;
  for (const p of parts) {
    (data as Float32Array).set(p.data as Float32Array, at);
    at += p.data.length;
  }
  const rows = parts.reduce((n, p) => n + (p.shape[0] ?? 0), 0);
  return { dtype: first.dtype, shape: [rows, ...first.shape.slice(1)], data };
}
