"""Multi-head scaled dot-product attention (Vaswani et al. 2017) as a connection, MATH.md (M0)-(M6)."""
from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from ..layers import masked_softmax


class MultiHead(nnx.Module):
    def __init__(self, params, config):
        for name in ("W_q", "b_q", "W_k", "b_k", "W_v", "b_v", "W_o", "b_o", "W_c"):
            setattr(self, name, nnx.Param(params[f"attention/{name}"]))
        self.num_heads = config.num_heads

    def memory(self, keys):
        return {"K": keys @ self.W_k[...] + self.b_k[...], "V": keys @ self.W_v[...] + self.b_v[...]}  # (M0)

    def __call__(self, queries, memory, heads=False):
        """queries [B, T, H] -> attentional states [B, T, H], weights averaged over heads [B, T, S] (heads:
        each head's, [B, heads, T, S])."""
        B, T, H = queries.shape
        d = H // self.num_heads
        split = lambda x: x.reshape(x.shape[0], x.shape[1], self.num_heads, d)  # noqa: E731  [B, N, heads, d]
        Q = split(queries @ self.W_q[...] + self.b_q[...])                                    # (M1)
        K, V = split(memory.derived["K"]), split(memory.derived["V"])
        scores = jnp.einsum("bthd,bshd->bhts", Q, K) / jnp.sqrt(jnp.asarray(d, queries.dtype))  # (M2)
        alpha = masked_softmax(scores, memory.src_mask[:, None, None, :])                    # (M3)
        merged = jnp.einsum("bhts,bshd->bthd", alpha, V).reshape(B, T, H)                    # (M4)
        o = merged @ self.W_o[...] + self.b_o[...]                                            # (M5)
        attentional = jnp.tanh(jnp.concatenate([o, queries], axis=-1) @ self.W_c[...])             # (M6)
        return attentional, alpha if heads else alpha.mean(axis=1)
