"""seq2seq_jax: the reference model in Flax, jit-compiled (see issue 3)."""
