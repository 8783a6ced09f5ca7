/** Float64 reference for `crossEntropy`: mean cross-entropy over non-ignored rows, argmax accuracy, gradient. */

/** Results of {@linkcode crossEntropyRef}. */
export interface CrossEntropyRef {
  /** Mean over counted rows of `logsumexp(x) − x[label]`; 0 when no row counts; NaN for a label outside [0, V). */
  loss: number;
  /** Counted rows whose first argmax equals the label. */
  correct: number;
  /** Rows whose label is not `ignoreIndex`. */
  count: number;
  /** `scale · (softmax(x) − onehot(label)) / count` per counted row, 0 on ignored rows. */
  dLogits: Float64Array;
}

/** Cross-entropy of `logits [N, V]` (row-major) against `labels [N]`, written from the definition in float64. */
export function crossEntropyRef(
  logits: ArrayLike<number>,
  labels: ArrayLike<number>,
  vocab: number,
  ignoreIndex = -1,
  scale = 1,
): CrossEntropyRef {
  const rows = labels.length;
  let sum = 0, correct = 0, count = 0;
  const lse = new Float64Array(rows);
  for (let r = 0; r < rows; r++) {
    const row = Array.from({ length: vocab }, (_, c) => logits[r * vocab + c]);
    const max = Math.max(...row);
    lse[r] = max + Math.log(row.reduce((acc, x) => acc + Math.exp(x - max), 0));
    const label = labels[r];
    if (label === ignoreIndex) continue;
    count++;
    if (label < 0 || label >= vocab) {
      sum = NaN;
      continue;
    }
    sum += lse[r] - row[label];
    if (row.indexOf(max) === label) correct++;
  }
  const dLogits = new Float64Array(rows * vocab);
  for (let r = 0; r < rows; r++) {
    const label = labels[r];
    if (label === ignoreIndex || count === 0) continue;
    const valid = label >= 0 && label < vocab;
    for (let c = 0; c < vocab; c++) {
      const d = Math.exp(logits[r * vocab + c] - lse[r]) - (c === label ? 1 : 0);
      dLogits[r * vocab + c] = valid ? (scale * d) / count : NaN;
    }
  }
  return { loss: count ? sum / count : 0, correct, count, dLogits };
}
