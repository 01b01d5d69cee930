"""Attention over the encoder annotations: MATH.md equations (A1)-(A4) and (L1)-(L4).

keys [B, S, K] are the top encoder layer's states; src_mask bool[B, S] is
False on source padding, which gets exactly zero weight (a -inf score).
"""
from __future__ import annotations

import numpy as np

from .ops import masked_softmax, masked_softmax_backward


def bahdanau_attention_forward(query, keys, keys_proj, src_mask, W_q, v):
    """Additive attention for one decoder step, (A1)-(A4).

    query:     [B, H]     the decoder's previous top-layer state s_{t-1}
    keys:      [B, S, K]
    keys_proj: [B, S, A]  keys W_k, computed once per sequence
    src_mask:  bool[B, S]
    W_q: [H, A], v: [A]
    Returns context [B, K], alpha [B, S] and the cache.
    """
    u = np.tanh(keys_proj + (query @ W_q)[:, None, :])        # (A1)
    scores = u @ v                                            # (A2)
    alpha = masked_softmax(scores, src_mask)                  # (A3)
    context = (alpha[:, None, :] @ keys)[:, 0]                # (A4)
    return context, alpha, (query, keys, u, alpha, W_q, v)


def bahdanau_attention_backward(dcontext, cache):
    """Returns dquery [B, H], dkeys [B, S, K], dkeys_proj [B, S, A], dW_q [H, A], dv [A]."""
    query, keys, u, alpha, W_q, v = cache
    dalpha = (keys @ dcontext[:, :, None])[..., 0]            # (A4')
    dkeys = alpha[:, :, None] * dcontext[:, None, :]          # (A4')
    dscores = masked_softmax_backward(dalpha, alpha)          # (A3')
    dv = np.einsum("bsa,bs->a", u, dscores)                   # (A2')
    dpre = dscores[:, :, None] * v * (1.0 - u**2)             # (A2'), (A1')
    dquery_proj = dpre.sum(axis=1)
    return dquery_proj @ W_q.T, dkeys, dpre, query.T @ dquery_proj, dv


def luong_attention_forward(queries, keys, src_mask, W_a, W_c):
    """General (multiplicative) attention for T decoder steps at once, (L1)-(L4).

    queries:  [B, T, H]  the decoder's top-layer states h_t
    keys:     [B, S, K]
    src_mask: bool[B, S]
    W_a: [H, K], W_c: [K + H, H]
    Returns the attentional states [B, T, H], alpha [B, T, S] and the cache.
    """
    queries_proj = queries @ W_a                              # (L1)
    scores = queries_proj @ keys.transpose(0, 2, 1)           # (L1)
    alpha = masked_softmax(scores, src_mask[:, None, :])      # (L2)
    context = alpha @ keys                                    # (L3)
    joined = np.concatenate([context, queries], axis=-1)
    attentional = np.tanh(joined @ W_c)                       # (L4)
    return attentional, alpha, (queries, keys, queries_proj, alpha, joined, attentional, W_a, W_c)


def luong_attention_backward(dattentional, cache):
    """Returns dqueries [B, T, H], dkeys [B, S, K], dW_a [H, K], dW_c [K + H, H]."""
    queries, keys, queries_proj, alpha, joined, attentional, W_a, W_c = cache
    B, T, H = queries.shape
    K = keys.shape[2]
    dpre = dattentional * (1.0 - attentional**2)             # (L4')
    dW_c = joined.reshape(-1, K + H).T @ dpre.reshape(-1, H)
    djoined = dpre @ W_c.T
    dcontext, dqueries = djoined[..., :K], djoined[..., K:]
    dalpha = dcontext @ keys.transpose(0, 2, 1)               # (L3')
    dkeys = alpha.transpose(0, 2, 1) @ dcontext               # (L3')
    dscores = masked_softmax_backward(dalpha, alpha)          # (L2')
    dqueries_proj = dscores @ keys                            # (L1')
    dkeys += dscores.transpose(0, 2, 1) @ queries_proj        # (L1')
    dW_a = queries.reshape(-1, H).T @ dqueries_proj.reshape(-1, K)
    dqueries = dqueries + dqueries_proj @ W_a.T
    return dqueries, dkeys, dW_a, dW_c
