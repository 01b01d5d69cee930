"""Building blocks every JAX component shares: stable sigmoid, masked softmax, masks, dropout, reversal,
embedding and affine layers.  Equation numbers are MATH.md's."""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx
from jax import lax


def sigmoid(x):
    # Stable on both sides (XLA's logistic); 0.5 (1 + tanh(x / 2)) cancels for x << 0 in float32 and bf16.
    return jax.nn.sigmoid(x)


def reverse_padded(x, lengths):
    """Reverse each sequence's first lengths[b] steps along axis 1; padding stays put (B1)."""
    B, T = x.shape[:2]
    t = jnp.arange(T)[None, :]
    index = jnp.where(t < lengths[:, None], lengths[:, None] - 1 - t, t)
    return x[jnp.arange(B)[:, None], index]


def masked_softmax(scores, mask):
    """(A3) padded positions get a -inf score, hence exactly zero weight; an all-masked row is all zeros."""
    scores = jnp.where(mask, scores, -jnp.inf)
    top = lax.stop_gradient(scores.max(axis=-1, keepdims=True))  # a shift: softmax does not depend on it
    weights = jnp.exp(scores - jnp.where(jnp.isfinite(top), top, 0.0))
    total = weights.sum(axis=-1, keepdims=True)
    return weights / jnp.where(total > 0, total, 1.0)


def length_mask(lengths, width):
    return jnp.arange(width)[None, :] < lengths[:, None]


def dropout(x, keep_mask):
    """(D1); keep_mask None means no dropout."""
    return x if keep_mask is None else x * keep_mask


class Embed(nnx.Module):
    def __init__(self, W):
        self.W = nnx.Param(W)

    def __call__(self, ids):
        return jnp.take(self.W[...], ids, axis=0)  # (E1)


class Linear(nnx.Module):
    def __init__(self, W, b):
        self.W, self.b = nnx.Param(W), nnx.Param(b)

    def __call__(self, x):
        return x @ self.W[...] + self.b[...]  # (O1)


class TiedLinear(nnx.Module):
    """The output layer of tied embeddings: it owns only its bias; the matrix is an embedding's, [V, E]."""

    def __init__(self, b):
        self.b = nnx.Param(b)

    def __call__(self, x, embedding):
        return x @ embedding.T + self.b[...]  # (W1) W_out = Eᵀ in (O1)
