"""The Transformer's layers (Vaswani et al. 2017), MATH.md (T1)-(T4), each forward beside its backward.

Sinusoidal positions, layer normalisation, multi-head self-attention with a
key-padding mask and an optional causal mask, and the position-wise
feed-forward network; the pre-LN residual block is x + Sublayer(LN(x)).
Batched over rows and heads: no Python loop over either.
"""
from __future__ import annotations

import math

import numpy as np

from .ops import linear, masked_softmax, masked_softmax_backward
from .connections.multihead import merge_heads, split_heads
from .layers import dropout_backward, dropout_forward


ATTENTION = ("W_q", "b_q", "W_k", "b_k", "W_v", "b_v", "W_o", "b_o")  # an attention sublayer's parameters (T4)
FFN = ("W_1", "b_1", "W_2", "b_2")                                      # the feed-forward sublayer's (T3)


def sublayer_param_shapes(d: int, ffn_dim: int, attention: dict[str, int], norms: int) -> dict:
    """A pre-LN block's parameters by suffix, for both stacks: each attention sublayer by its name with the
    width its keys and values read (d for self-attention), the feed-forward sublayer, and `norms` layer
    norms ln_1 ... ln_norms."""
    shapes = {}
    for sublayer, key_dim in attention.items():
        shapes.update({f"{sublayer}/{name}": ((key_dim if name in ("W_k", "W_v") else d), d) if name.startswith("W")
                       else (d,) for name in ATTENTION})
    shapes.update({"ffn/W_1": (d, ffn_dim), "ffn/b_1": (ffn_dim,), "ffn/W_2": (ffn_dim, d), "ffn/b_2": (d,)})
    shapes.update({f"ln_{n}/{name}": (d,) for n in range(1, norms + 1) for name in ("gamma", "beta")})
    return shapes


def block_params(params, prefix: str) -> dict:
    """The parameters under prefix (a block's, "decoder/l0/"), by suffix."""
    return {name[len(prefix):]: value for name, value in params.items() if name.startswith(prefix)}


def sinusoidal_positions(length: int, width: int, dtype=np.float64) -> np.ndarray:
    """(T1) P[t, 2i] = sin(t / 10000^(2i/d)), P[t, 2i+1] = cos(t / 10000^(2i/d)): [length, width]."""
    position = np.arange(length)[:, None]
    rate = np.exp(-np.log(10000.0) * (np.arange(0, width, 2) / width))
    P = np.zeros((length, width))
    P[:, 0::2] = np.sin(position * rate)
    P[:, 1::2] = np.cos(position * rate)[:, : width // 2]
    return P.astype(dtype)


def layer_norm_forward(x, gamma, beta, eps=1e-5):
    """(T2) y = gamma ⊙ (x - mean) / sqrt(var + eps) + beta over the last axis.

    x: [..., d]; gamma, beta: [d].  Returns y [..., d] and the cache.
    """
    centred = x - x.mean(axis=-1, keepdims=True)
    inv_std = 1.0 / np.sqrt((centred * centred).mean(axis=-1, keepdims=True) + eps)
    x_hat = centred * inv_std
    return gamma * x_hat + beta, (x_hat, inv_std, gamma)


def layer_norm_backward(dy, cache):
    """(T2') dx = inv_std (dx̂ - mean(dx̂) - x̂ mean(dx̂ ⊙ x̂)), dx̂ = dy ⊙ gamma.  Returns dx, dgamma, dbeta."""
    x_hat, inv_std, gamma = cache
    d = x_hat.shape[-1]
    dx_hat = dy * gamma
    dx = inv_std * (dx_hat - dx_hat.mean(axis=-1, keepdims=True)
                    - x_hat * (dx_hat * x_hat).mean(axis=-1, keepdims=True))
    return dx, (dy * x_hat).reshape(-1, d).sum(axis=0), dy.reshape(-1, d).sum(axis=0)


# While a gradient check watches for kinks (gradcheck.relu_signs), every relu appends its sign pattern here.
relu_sign_log: list | None = None


def relu(x):
    """max(x, 0): not differentiable at 0, so a finite-difference stencil that crosses 0 measures nothing."""
    if relu_sign_log is not None:
        relu_sign_log.append(x > 0)
    return np.maximum(x, 0.0)


def feed_forward_forward(x, W_1, b_1, W_2, b_2):
    """(T3) y = relu(x W_1 + b_1) W_2 + b_2.  x: [..., d], W_1: [d, f], W_2: [f, d].  Returns y and the cache."""
    hidden = relu(linear(x, W_1, b_1))
    return linear(hidden, W_2, b_2), (x, hidden, W_1, W_2)


def feed_forward_backward(dy, cache):
    """(T3') Returns dx, dW_1, db_1, dW_2, db_2."""
    x, hidden, W_1, W_2 = cache
    flat = lambda a: a.reshape(-1, a.shape[-1])  # noqa: E731
    dhidden = linear(dy, W_2.T) * (hidden > 0)
    return (linear(dhidden, W_1.T), flat(x).T @ flat(dhidden), flat(dhidden).sum(axis=0),
            flat(hidden).T @ flat(dy), flat(dy).sum(axis=0))


def attention_mask(lengths, width, causal: bool) -> np.ndarray:
    """bool[B, 1, width, width]: key j visible to query t when j < length (and j <= t when causal)."""
    keys = np.arange(width)[None, :] < lengths[:, None]
    mask = np.broadcast_to(keys[:, None, :], (len(lengths), width, width))
    if causal:
        mask = mask & np.tril(np.ones((width, width), dtype=bool))
    return mask[:, None]


def segment_positions(segments) -> np.ndarray:
    """(T14) each token's position within its own sentence, int[B, W], from segment ids int[B, W] (the k-th
    sentence of a row is k, padding 0): positions restart at 0 where the segment id changes."""
    index = np.arange(segments.shape[1])
    starts = np.where(np.diff(segments, axis=1, prepend=-1) != 0, index, 0)
    return index - np.maximum.accumulate(starts, axis=1)


def segment_mask(query_segments, key_segments, causal: bool) -> np.ndarray:
    """(T14) bool[B, 1, Tq, Tk]: key k visible to query q when both belong to the same sentence of the row
    (a padding key never; and k <= q when causal, which within one sentence is position order)."""
    mask = (query_segments[:, :, None] == key_segments[:, None, :]) & (key_segments[:, None, :] > 0)
    if causal:
        mask = mask & np.tril(np.ones((query_segments.shape[1], key_segments.shape[1]), dtype=bool))
    return mask[:, None]


def attention_forward(x, memory, mask, W_q, b_q, W_k, b_k, W_v, b_v, W_o, b_o, num_heads, weight_keep=None):
    """(T4) multi-head scaled dot-product attention: queries from x, keys and values from memory.

    x: [B, T, d]; memory: [B, S, K] (x itself for self-attention); mask: bool, broadcastable to
    [B, heads, T, S]; W_q, W_o: [d, d], W_k, W_v: [K, d], b_*: [d]; weight_keep: dropout keep mask on
    the weights [B, heads, T, S] (D1), or None.
    Returns y [B, T, d], the weights alpha [B, heads, T, S] and the cache.
    """
    d_head = W_q.shape[1] // num_heads
    Q = split_heads(linear(x, W_q, b_q), num_heads)
    K, V = (split_heads(linear(memory, W, b), num_heads) for W, b in ((W_k, b_k), (W_v, b_v)))
    alpha = attention_weights(Q, K, mask)
    dropped = dropout_forward(alpha, weight_keep)
    heads = merge_heads(dropped @ V)
    cache = (x, memory, Q, K, V, alpha, dropped, weight_keep, heads, W_q, W_k, W_v, W_o, d_head)
    return linear(heads, W_o, b_o), alpha, cache


def attention_cache_weights(cache):
    """The weights alpha [B, heads, T, S] that attention_forward computed (before any dropout), from its cache."""
    return cache[5]


def attention_weights(Q, K, mask):
    """(T4) alpha = softmax(Q K^T / sqrt(d_h)), masked: Q [B, heads, T, d_h], K [B, heads, S, d_h] -> [B, heads, T, S]."""
    return masked_softmax(Q @ K.transpose(0, 1, 3, 2) / math.sqrt(Q.shape[-1]), mask)  # a Python float keeps Q's dtype


def attention_over(x, K, V, mask, W_q, b_q, W_o, b_o, num_heads):
    """(T4) for decoding, over keys and values already projected and split (the decoder's caches).

    x: [B, T, d]; K, V: [B, heads, S, d_h]; mask: bool, broadcastable to [B, heads, T, S].
    Returns y [B, T, d] and the weights alpha [B, heads, T, S]; no dropout, no cache.
    """
    alpha = attention_weights(split_heads(linear(x, W_q, b_q), num_heads), K, mask)
    return linear(merge_heads(alpha @ V), W_o, b_o), alpha


def attention_backward(dy, cache):
    """(T4') Returns dx, dmemory and the gradients of W_q, b_q, W_k, b_k, W_v, b_v, W_o, b_o (in that order)."""
    x, memory, Q, K, V, alpha, dropped, weight_keep, heads, W_q, W_k, W_v, W_o, d_head = cache
    flat = lambda a: a.reshape(-1, a.shape[-1])  # noqa: E731
    dW_o, db_o = flat(heads).T @ flat(dy), flat(dy).sum(axis=0)
    dheads = split_heads(linear(dy, W_o.T), Q.shape[1])
    dalpha = dropout_backward(dheads @ V.transpose(0, 1, 3, 2), weight_keep)
    dV = merge_heads(dropped.transpose(0, 1, 3, 2) @ dheads)
    dscores = masked_softmax_backward(dalpha, alpha) / math.sqrt(d_head)
    dQ, dK = merge_heads(dscores @ K), merge_heads(dscores.transpose(0, 1, 3, 2) @ Q)
    grads = [flat(x).T @ flat(dQ), flat(dQ).sum(axis=0), flat(memory).T @ flat(dK), flat(dK).sum(axis=0),
             flat(memory).T @ flat(dV), flat(dV).sum(axis=0), dW_o, db_o]
    return (linear(dQ, W_q.T), linear(dK, W_k.T) + linear(dV, W_v.T), *grads)


def self_attention_forward(x, mask, W_q, b_q, W_k, b_k, W_v, b_v, W_o, b_o, num_heads, weight_keep=None):
    """(T4) attention of x over itself (attention_forward with memory = x).  Returns y [B, T, d] and the cache."""
    y, _, cache = attention_forward(x, x, mask, W_q, b_q, W_k, b_k, W_v, b_v, W_o, b_o, num_heads, weight_keep)
    return y, cache


def self_attention_backward(dy, cache):
    """(T4') x is both the queries' and the memory's input: its gradient is the sum of both.  Returns dx and the
    gradients of W_q, b_q, W_k, b_k, W_v, b_v, W_o, b_o."""
    dx, dmemory, *grads = attention_backward(dy, cache)
    return (dx + dmemory, *grads)


def init_block_param(name, shape, rng):
    """Layer-norm gains 1, every bias and shift 0, matrices U(-1/sqrt(n), 1/sqrt(n)) with n the fan-in."""
    suffix = name.rsplit("/", 1)[1]
    if suffix == "gamma":
        return np.ones(shape)
    if suffix == "beta" or suffix.startswith("b_"):
        return np.zeros(shape)
    bound = 1.0 / np.sqrt(shape[0])
    return rng.uniform(-bound, bound, size=shape)


def check_width(config, side: str) -> None:
    """What both Transformer stacks need: one width d = embed_dim = hidden_dim, split evenly by the heads."""
    if config.embed_dim != config.hidden_dim:
        raise ValueError(f"embed_dim: expected hidden_dim ({config.hidden_dim}) with {side}={getattr(config, side)!r} "
                         f"(its width d is both), got {config.embed_dim}")
    if config.hidden_dim % config.num_heads:
        raise ValueError(f"num_heads: expected a divisor of hidden_dim ({config.hidden_dim}) with "
                         f"{side}={getattr(config, side)!r}, got {config.num_heads}")
