"""The Transformer's layers in JAX, MATH.md (T1)-(T4): the reference's seq2seq_ref.transformer_layers, whose
backward passes autodiff gives here."""
from __future__ import annotations

import jax.numpy as jnp

from .layers import dropout, masked_softmax


def layer_norm(x, gamma, beta, eps=1e-5):
    """(T2) over the last axis."""
    mean = x.mean(axis=-1, keepdims=True)
    x_hat = (x - mean) / jnp.sqrt(((x - mean) ** 2).mean(axis=-1, keepdims=True) + eps)
    return gamma * x_hat + beta


def feed_forward(x, W_1, b_1, W_2, b_2):
    """(T3) relu(x W_1 + b_1) W_2 + b_2."""
    return jnp.maximum(x @ W_1 + b_1, 0.0) @ W_2 + b_2


def self_attention(x, mask, W_q, b_q, W_k, b_k, W_v, b_v, W_o, b_o, num_heads, weight_keep=None):
    """(T4) x [B, T, d], mask bool broadcastable to [B, heads, T, T] -> [B, T, d]; weight_keep: (D1) on the
    weights [B, heads, T, T], or None."""
    B, T, d = x.shape
    d_head = d // num_heads
    split = lambda a: a.reshape(B, T, num_heads, d_head)  # noqa: E731
    Q, K, V = (split(x @ W + b) for W, b in ((W_q, b_q), (W_k, b_k), (W_v, b_v)))
    alpha = masked_softmax(jnp.einsum("bthd,bshd->bhts", Q, K) / jnp.sqrt(jnp.asarray(d_head, x.dtype)), mask)
    alpha = dropout(alpha, weight_keep)
    return jnp.einsum("bhts,bshd->bthd", alpha, V).reshape(B, T, d) @ W_o + b_o
