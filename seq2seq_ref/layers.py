"""Embedding, affine, dropout and the loss: MATH.md equations (E1), (O1)-(O3), (D1)."""
from __future__ import annotations

import numpy as np


def embedding_forward(ids, W):
    """(E1) x = W[ids].

    ids: int[...]       token ids
    W:   [V, E]         embedding table
    Returns out [..., E] and the cache.
    """
    return W[ids], (ids, W.shape)


def embedding_backward(dout, cache):
    """(E1') dW [V, E]: each row sums the gradients of the positions that used it."""
    ids, shape = cache
    dW = np.zeros(shape, dtype=dout.dtype)
    np.add.at(dW, ids.reshape(-1), dout.reshape(-1, shape[1]))  # (E1') a token repeated in the batch adds up
    return dW


def affine_forward(x, W, b):
    """(O1) out = x W + b over the last axis.

    x: [..., D], W: [D, M], b: [M].  Returns out [..., M] and the cache.
    """
    return x @ W + b, (x, W)


def affine_backward(dout, cache):
    """(O1') Returns dx [..., D], dW [D, M], db [M]."""
    x, W = cache
    D, M = W.shape
    dW = x.reshape(-1, D).T @ dout.reshape(-1, M)
    return dout @ W.T, dW, dout.reshape(-1, M).sum(axis=0)


def dropout_forward(x, keep_mask):
    """(D1) inverted dropout: keep_mask holds 0 or 1/(1-p); None means no dropout."""
    return x if keep_mask is None else x * keep_mask


dropout_backward = dropout_forward  # (D1') the same elementwise scaling, applied to the gradient


def log_softmax(logits):
    """Stable log-softmax over the last axis (subtract the max before exp)."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def softmax_cross_entropy(logits, targets, mask, label_smoothing=0.0):
    """(O2)-(O3) mean smoothed cross-entropy over the real (mask=True) positions.

    logits:  [B, T, V]
    targets: int[B, T]
    mask:    bool[B, T]   True where the position counts
    label_smoothing: eps; the target distribution is (1-eps) one_hot + eps/V
    Returns loss (a scalar) and dlogits [B, T, V].
    """
    V = logits.shape[-1]
    log_p = log_softmax(logits)
    n_real = mask.sum().astype(logits.dtype)  # not int64: float32 / int64 promotes to float64
    target_log_p = np.take_along_axis(log_p, targets[..., None], axis=-1)[..., 0]
    per_token = -(1 - label_smoothing) * target_log_p - label_smoothing * log_p.mean(axis=-1)
    loss = (per_token * mask).sum() / n_real
    # (O3) dL/dlogits = (softmax - q) / N on real positions, 0 on padding
    dlogits = np.exp(log_p)
    dlogits -= label_smoothing / V
    np.put_along_axis(
        dlogits, targets[..., None], np.take_along_axis(dlogits, targets[..., None], -1) - (1 - label_smoothing), -1
    )
    dlogits *= (mask / n_real)[..., None]
    return loss, dlogits
