/** The reference README's stack config, verbatim, shared by the demo, the benchmarks and the tests. */
export const README_STACK_YAML = `mlstm_block:
  mlstm:
    conv1d_kernel_size: 4
    qkv_proj_blocksize: 4
    num_heads: 4
slstm_block:
  slstm:
    backend: cuda
    num_heads: 4
    conv1d_kernel_size: 4
    bias_init: powerlaw_blockdependent
  feedforward:
    proj_factor: 1.3
    act_fn: gelu
context_length: 256
num_blocks: 7
embedding_dim: 128
slstm_at: [1]
`;

/** The reference README's LM config: the same YAML with `vocab_size: 50304` added. */
export const README_LM_YAML = `${README_STACK_YAML}vocab_size: 50304
`;
