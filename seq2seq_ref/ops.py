"""Small operations shared by the layers (each with its backward where it has one): the numerically safe
sigmoid, the masked softmax of attention (A3), the reversal of padded sequences for a backward-direction
encoder, and one-GEMM linear maps.  seq2seq_jax.layers mirrors them."""
from __future__ import annotations

import numpy as np


def sigmoid(x):
    # 1 / (1 + e^-x) = exp(-log(1 + e^-x)): logaddexp never overflows, and unlike 0.5 (1 + tanh(x / 2))
    # it does not cancel for x << 0, so sigma stays relatively exact on both sides in any precision.
    return np.exp(-np.logaddexp(0.0, -x))


def masked_softmax(scores, mask):
    """(A3) alpha = softmax over the last axis with masked positions at exactly 0.

    scores: [..., S]; mask: bool, broadcastable to scores.  A row with no True (an all-padding source, which
    validation refuses but validate=False lets through) gets all-zero weights, not NaN.
    """
    scores = np.where(mask, scores, -np.inf)
    top = scores.max(axis=-1, keepdims=True)
    weights = np.exp(scores - np.where(np.isfinite(top), top, 0.0))  # exp(-inf) = 0 exactly
    total = weights.sum(axis=-1, keepdims=True)
    return weights / np.where(total > 0, total, 1.0)


def masked_softmax_backward(dalpha, alpha):
    """(A3') dscores = alpha * (dalpha - sum(dalpha * alpha)); zero where alpha is."""
    return alpha * (dalpha - (dalpha * alpha).sum(axis=-1, keepdims=True))


def reverse_padded(x, lengths):
    """Reverse each sequence's first lengths[b] steps along axis 1; padding stays put.

    x: [B, T, ...], lengths: int[B].  The permutation is its own inverse, so the
    same call maps gradients back.
    """
    B, T = x.shape[:2]
    t = np.arange(T)[None, :]
    index = np.where(t < lengths[:, None], lengths[:, None] - 1 - t, t)
    return x[np.arange(B)[:, None], index]


def linear(x, W, b=None):
    """x W (+ b) over the last axis, as one matrix product over all leading axes: x [..., n], W [n, m].

    numpy multiplies a [B, T, n] stack by W matrix by matrix; flattened to [B T, n] it is one GEMM.
    """
    out = x.reshape(-1, x.shape[-1]) @ W
    if b is not None:
        out += b
    return out.reshape(*x.shape[:-1], W.shape[1])
