/**
 * Float64 reference for `sampleTokens`: the plain sort-based warpers (Hugging Face's temperature → top-k → top-p),
 * then the draw `u · kept mass` scanned in token order. It also reports how close the draw came to a decision
 * boundary, so a test can tell a real mismatch from one that float32 rounding on the GPU may legitimately flip.
 */

import type { ResolvedSampling } from "../../src/ops/sample.ts";

/** The chosen token and the smallest relative distance of a mass comparison from its threshold. */
export interface SampleRef {
  /** The token id. */
  token: number;
  /** min |mass − threshold| / kept mass over the top-p and draw comparisons; Infinity when none was made. */
  margin: number;
}

/** Chooses a token from one row of logits with the same uniform `u` the GPU drew. */
export function sampleRef(logits: ArrayLike<number>, s: ResolvedSampling, u: number): SampleRef {
  const V = logits.length;
  const x = Array.from(logits);
  let argmax = 0;
  for (let j = 1; j < V; j++) if (x[j] > x[argmax]) argmax = j;
  if (s.greedy) return { token: argmax, margin: Infinity };
  const max = x[argmax];
  // Decreasing logit, then increasing id: the order in which top-p keeps tokens.
  const order = x.map((_, j) => j).sort((a, b) => x[b] - x[a] || a - b);
  const kth = s.topK > 0 ? x[order[s.topK - 1]] : -Infinity;
  const kept = x.map((v) => v >= kth);
  const w = x.map((v, j) => (kept[j] ? Math.exp((v - max) * s.invTemperature) : 0));
  let margin = Infinity;
  if (s.topP < 1) {
    const total = w.reduce((a, b) => a + b, 0), threshold = s.topP * total;
    let before = 0;
    for (const j of order) {
      if (!kept[j]) continue;
      margin = Math.min(margin, Math.abs(before - threshold) / total);
      kept[j] = before < threshold;
      before += w[j];
      if (!kept[j]) w[j] = 0;
    }
  }
  const keptMass = w.reduce((a, b) => a + b, 0);
  if (!(keptMass > 0)) return { token: argmax, margin: Infinity }; // no finite distribution: the argmax
  const target = u * keptMass;
  let cum = 0, token = -1;
  for (let j = 0; j < V; j++) {
    if (!kept[j]) continue;
    cum += w[j];
    margin = Math.min(margin, Math.abs(cum - target) / keptMass);
    if (token < 0 && cum > target) token = j;
  }
  return { token, margin };
}
