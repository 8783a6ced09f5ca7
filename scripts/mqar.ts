/**
 * Multi-Query Associative Recall (Zoology's MQAR, src/data/mqar.ts): the model reads key-value pairs, then must
 * recall the value of each key when it is queried later.
 *
 *   deno run -A scripts/mqar.ts                        # a small MQAR
 *   deno run -A scripts/mqar.ts --config scripts/configs/mqar_xlstm11.yaml --checkpoint run.safetensors
 *
 * On a GPU the default is scripts/configs/mqar_xlstm11.yaml (xLSTM[1:1], E 128, L 128, 16 pairs, vocabulary 512).
 * On a CPU-only adapter (lavapipe) it runs a reduced setting that finishes in a few minutes: one mLSTM block
 * (4 heads), E 64, L 64, 8 pairs, vocabulary 128. `--help` lists the flags.
 */

import { trainCli } from "../src/train/cli.ts";

/** The reduced CPU setting, merged into the default config. */
const REDUCED = {
  training: { batch_size: 64, lr: 0.01, lr_warmup_steps: 60, num_steps: 600, val_every_step: 200 },
  model: { embedding_dim: 64, context_length: 64 },
  dataset: {
    kwargs: { vocab_size: 128, context_length: 64, num_kv_pairs: 8, count: { train: 38400, validation: 512 } },
  },
};

Deno.exit(
  await trainCli(Deno.args, {
    script: "scripts/mqar.ts",
    description: "Multi-query associative recall with xLSTM on WebGPU.",
    defaultConfig: new URL("./configs/mqar_xlstm11.yaml", import.meta.url),
    reduced: REDUCED,
    reducedLayout: { num_blocks: 1, slstm_at: [] },
    reducedNote:
      "E 64, L 64, 8 key-value pairs, vocabulary 128, batch 64, 600 steps, lr 1e-2 (default layout: 1 mLSTM block)",
  }),
);
