/**
 * Parity (spec D2): train an xLSTM language model to output the parity of a bit string, then test it on longer
 * strings than it was trained on.
 *
 *   deno run -A scripts/parity.ts                      # README demo
 *   deno run -A scripts/parity.ts --config scripts/configs/parity_xlstm11.yaml --checkpoint run.safetensors
 *   deno run -A scripts/parity.ts --config scripts/configs/parity_xlstm10.yaml --small   # its layout, reduced sizes
 *
 * On a GPU the default is the reference's xLSTM[0:1] config (scripts/configs/parity_xlstm01.yaml: 2 sLSTM blocks,
 * E 64, lengths 3–40, validation 40–256, batch 256, 20,000 steps). On a CPU-only adapter (lavapipe) it runs a
 * reduced setting that finishes in a few minutes: one sLSTM block, E 32, train lengths 3–20, validation lengths
 * 21–40. `--help` lists the flags.
 */

import { trainCli } from "../src/train/cli.ts";

/** The reduced CPU setting, merged into the reference config. */
const REDUCED = {
  training: { batch_size: 64, lr: 0.01, lr_warmup_steps: 60, num_steps: 600, val_every_step: 200 },
  model: { embedding_dim: 32, context_length: 41 },
  dataset: {
    kwargs: {
      context_length: 21,
      max_sequence_length: 20,
      count: { train: 38400, validation: 512, test: 512 },
      subpar: {
        validation: { context_length: 41, min_sequence_length: 21, max_sequence_length: 40 },
        test: { context_length: 41, min_sequence_length: 21, max_sequence_length: 40 },
      },
    },
  },
};

Deno.exit(
  await trainCli(Deno.args, {
    script: "scripts/parity.ts",
    description: "Parity with xLSTM (NX-AI/xlstm experiments/main.py, spec D1–D3) on WebGPU.",
    defaultConfig: new URL("./configs/parity_xlstm01.yaml", import.meta.url),
    reduced: REDUCED,
    reducedLayout: { num_blocks: 1, slstm_at: [0] },
    reducedNote:
      "E 32, train lengths 3–20, validation lengths 21–40, batch 64, 600 steps, lr 1e-2 (default layout: 1 sLSTM block)",
  }),
);
