"""General (multiplicative) attention (Luong et al. 2015), MATH.md (L1)-(L4): it reads the decoder output."""
from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from ..layers import masked_softmax


class Luong(nnx.Module):
    def __init__(self, params, config):
        self.W_a, self.W_c = nnx.Param(params["attention/W_a"]), nnx.Param(params["attention/W_c"])

    def memory(self, keys):
        return {}

    def __call__(self, queries, memory):
        """queries [B, T, H] -> attentional states [B, T, H], alpha [B, T, S]."""
        scores = jnp.einsum("bth,bsh->bts", queries @ self.W_a[...], memory.keys)     # (L1)
        alpha = masked_softmax(scores, memory.src_mask[:, None, :])                    # (L2)
        context = jnp.einsum("bts,bsk->btk", alpha, memory.keys)                       # (L3)
        return jnp.tanh(jnp.concatenate([context, queries], axis=-1) @ self.W_c[...]), alpha  # (L4)
