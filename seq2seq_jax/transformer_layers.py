"""The Transformer's layers in JAX, MATH.md (T1)-(T4): the reference's seq2seq_ref.transformer_layers, whose
backward passes autodiff gives here."""
from __future__ import annotations

import jax.numpy as jnp
from jax import lax

from .layers import dropout, masked_softmax


def segment_positions(segments):
    """(T14) each token's position within its own sentence [B, W], as seq2seq_ref.transformer_layers'."""
    index = jnp.arange(segments.shape[1])
    starts = jnp.where(jnp.diff(segments, axis=1, prepend=-1) != 0, index, 0)
    return index - lax.cummax(starts, axis=1)


def segment_mask(query_segments, key_segments, causal: bool):
    """(T14) bool[B, 1, Tq, Tk]: same sentence of the row, never a padding key (and k <= q when causal)."""
    mask = (query_segments[:, :, None] == key_segments[:, None, :]) & (key_segments[:, None, :] > 0)
    if causal:
        mask = mask & jnp.tril(jnp.ones((query_segments.shape[1], key_segments.shape[1]), bool))
    return mask[:, None]


def layer_norm(x, gamma, beta, eps=1e-5):
    """(T2) over the last axis."""
    mean = x.mean(axis=-1, keepdims=True)
    x_hat = (x - mean) / jnp.sqrt(((x - mean) ** 2).mean(axis=-1, keepdims=True) + eps)
    return gamma * x_hat + beta


def feed_forward(x, W_1, b_1, W_2, b_2):
    """(T3) relu(x W_1 + b_1) W_2 + b_2."""
    return jnp.maximum(x @ W_1 + b_1, 0.0) @ W_2 + b_2


def project(x, W, b, num_heads):
    """x [B, N, D] -> (x W + b) split into heads [B, heads, N, d_h]: heads lead, so that the products of (T4)
    batch over (B, heads) without a transpose of keys and values at every use (the decoders' caches)."""
    y = x @ W + b
    return y.reshape(*y.shape[:-1], num_heads, y.shape[-1] // num_heads).swapaxes(-2, -3)


def attend(Q, K, V, mask, W_o, b_o, weight_keep=None):
    """(T4) given the heads' queries [B, heads, T, d_h], keys and values [B, heads, S, d_h] and a mask
    broadcastable to [B, heads, T, S] -> y [B, T, d] and the weights alpha [B, heads, T, S]."""
    B, heads, T, d_head = Q.shape
    alpha = masked_softmax(jnp.einsum("bhtd,bhsd->bhts", Q, K) / jnp.sqrt(jnp.asarray(d_head, Q.dtype)), mask)
    out = jnp.einsum("bhts,bhsd->bhtd", dropout(alpha, weight_keep), V).swapaxes(1, 2).reshape(B, T, heads * d_head)
    return out @ W_o + b_o, alpha


def attention(x, memory, mask, W_q, b_q, W_k, b_k, W_v, b_v, W_o, b_o, num_heads, weight_keep=None):
    """(T4) queries from x [B, T, d], keys and values from memory [B, S, K] -> y [B, T, d], alpha."""
    return attend(project(x, W_q, b_q, num_heads), project(memory, W_k, b_k, num_heads),
                  project(memory, W_v, b_v, num_heads), mask, W_o, b_o, weight_keep)


def self_attention(x, mask, W_q, b_q, W_k, b_k, W_v, b_v, W_o, b_o, num_heads, weight_keep=None):
    """(T4) x [B, T, d] over itself, mask bool broadcastable to [B, heads, T, T] -> [B, T, d]."""
    return attention(x, x, mask, W_q, b_q, W_k, b_k, W_v, b_v, W_o, b_o, num_heads, weight_keep)[0]
