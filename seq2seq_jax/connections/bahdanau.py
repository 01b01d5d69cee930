"""Additive attention (Bahdanau et al. 2015), MATH.md (A0)-(A5): its context joins the decoder input."""
from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from ..layers import masked_softmax


class Bahdanau(nnx.Module):
    def __init__(self, params, config):
        self.W_q, self.W_k = nnx.Param(params["attention/W_q"]), nnx.Param(params["attention/W_k"])
        self.v = nnx.Param(params["attention/v"])

    def memory(self, keys):
        return {"keys_proj": keys @ self.W_k[...]}  # (A0)

    def context(self, query, memory):
        """query s_{t-1} [B, H] -> context [B, K], alpha [B, S]."""
        u = jnp.tanh(memory.derived["keys_proj"] + (query @ self.W_q[...])[:, None, :])  # (A1)
        alpha = masked_softmax(u @ self.v[...], memory.src_mask)                           # (A2), (A3)
        return jnp.einsum("bs,bsk->bk", alpha, memory.keys), alpha                         # (A4)
