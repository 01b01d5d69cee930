"""Multi-head scaled dot-product attention (Vaswani et al. 2017) as a connection, MATH.md (M0)-(M6).

The query is the decoder's top state s_t, keys and values the encoder
annotations; num_heads heads of width d = H / num_heads.  It reads the decoder
output, as Luong's does, so teacher-forced training keeps the parallel path.
"""
from __future__ import annotations

import math

import numpy as np

from ..ops import masked_softmax, masked_softmax_backward
from ..components import Connection


def split_heads(x, num_heads):
    """[B, N, H] -> [B, heads, N, d]."""
    B, N, H = x.shape
    return x.reshape(B, N, num_heads, H // num_heads).transpose(0, 2, 1, 3)


def merge_heads(x):
    """[B, heads, N, d] -> [B, N, H]."""
    B, heads, N, d = x.shape
    return x.transpose(0, 2, 1, 3).reshape(B, N, heads * d)


def multihead_attention_forward(queries, K, V, src_mask, W_q, b_q, W_o, b_o, W_c, num_heads):
    """All T decoder steps at once, (M1)-(M6), given the projected keys and values (M0).

    queries:  [B, T, H]   the decoder's top-layer states s_t
    K, V:     [B, S, H]   keys W_k + b_k, keys W_v + b_v (once per sentence)
    src_mask: bool[B, S]
    W_q, W_o: [H, H];  b_q, b_o: [H];  W_c: [2H, H]
    Returns the attentional states [B, T, H], the weights [B, heads, T, S] and the cache.
    """
    d = queries.shape[-1] // num_heads
    Q = queries @ W_q + b_q                                               # (M1)
    Q_h, K_h, V_h = (split_heads(x, num_heads) for x in (Q, K, V))
    scores = Q_h @ K_h.transpose(0, 1, 3, 2) / math.sqrt(d)                # (M2) a Python float keeps the dtype
    alpha = masked_softmax(scores, src_mask[:, None, None, :])            # (M3)
    heads = merge_heads(alpha @ V_h)                                      # (M4)
    o = heads @ W_o + b_o                                                 # (M5)
    joined = np.concatenate([o, queries], axis=-1)
    attentional = np.tanh(joined @ W_c)                                   # (M6)
    cache = (queries, Q_h, K_h, V_h, alpha, heads, joined, attentional, W_q, W_o, W_c, d)
    return attentional, alpha, cache


def multihead_attention_backward(dattentional, cache):
    """Returns dqueries [B, T, H], dK, dV [B, S, H], dW_q, db_q, dW_o, db_o, dW_c."""
    queries, Q_h, K_h, V_h, alpha, heads, joined, attentional, W_q, W_o, W_c, d = cache
    H = queries.shape[-1]
    flat = lambda x: x.reshape(-1, x.shape[-1])  # noqa: E731
    dpre = dattentional * (1.0 - attentional**2)                          # (M6')
    dW_c = flat(joined).T @ flat(dpre)
    djoined = dpre @ W_c.T
    do, dqueries = djoined[..., :H], djoined[..., H:]
    dW_o, db_o = flat(heads).T @ flat(do), flat(do).sum(axis=0)          # (M5')
    dheads = split_heads(do @ W_o.T, Q_h.shape[1])
    dalpha = dheads @ V_h.transpose(0, 1, 3, 2)                           # (M4')
    dV_h = alpha.transpose(0, 1, 3, 2) @ dheads                           # (M4')
    dscores = masked_softmax_backward(dalpha, alpha) / math.sqrt(d)       # (M3'), (M2')
    dQ = merge_heads(dscores @ K_h)                                       # (M2')
    dK = merge_heads(dscores.transpose(0, 1, 3, 2) @ Q_h)                 # (M2')
    dW_q, db_q = flat(queries).T @ flat(dQ), flat(dQ).sum(axis=0)        # (M1')
    dqueries = dqueries + dQ @ W_q.T                                      # (M1')
    return dqueries, dK, merge_heads(dV_h), dW_q, db_q, dW_o, db_o, dW_c


class MultiHead(Connection):
    name = "multihead"
    uses_heads = True

    @staticmethod
    def matmul_flops(config, batch, src_len, steps):
        """(M0) once: keys W_k and keys W_v; per step (M1) s W_q, (M2) scores and (M4) context (heads x d = H wide
        in all), (M5) heads W_o, (M6) [o; s] W_c."""
        B, S, H, K = batch, src_len, config.hidden_dim, config.key_dim
        return 2 * (2 * B * S * K * H) + steps * (2 * B * H * H + 2 * B * S * H + 2 * B * S * H + 2 * B * H * H
                                                  + 2 * B * 2 * H * H)

    @staticmethod
    def check_config(config):
        if config.hidden_dim % config.num_heads:
            raise ValueError(f"num_heads: expected a divisor of hidden_dim ({config.hidden_dim}), "
                             f"got {config.num_heads}")

    @staticmethod
    def param_shapes(config):
        H, K = config.hidden_dim, config.key_dim
        return {"attention/W_q": (H, H), "attention/b_q": (H,), "attention/W_k": (K, H), "attention/b_k": (H,),
                "attention/W_v": (K, H), "attention/b_v": (H,), "attention/W_o": (H, H), "attention/b_o": (H,),
                "attention/W_c": (2 * H, H)}

    @staticmethod
    def init_param(name, shape, rng):
        """Biases 0; matrices U(-1/sqrt(n), 1/sqrt(n)), n the fan-in."""
        if name.rsplit("/", 1)[1].startswith("b_"):
            return np.zeros(shape)
        return Connection.init_param(name, shape, rng)

    @staticmethod
    def memory_forward(keys, params):
        """(M0) per-sentence keys and values: K = keys W_k + b_k, V = keys W_v + b_v, both [B, S, H]."""
        return {"K": keys @ params["attention/W_k"] + params["attention/b_k"],
                "V": keys @ params["attention/W_v"] + params["attention/b_v"]}

    @staticmethod
    def memory_backward(dderived, keys, params):
        flat_keys = keys.reshape(-1, keys.shape[-1])
        grads, dkeys = {}, 0.0
        for part in ("K", "V"):                                           # (M0')
            d = dderived[part]
            grads[f"attention/W_{part.lower()}"] = flat_keys.T @ d.reshape(-1, d.shape[-1])
            grads[f"attention/b_{part.lower()}"] = d.reshape(-1, d.shape[-1]).sum(axis=0)
            dkeys = dkeys + d @ params[f"attention/W_{part.lower()}"].T
        return dkeys, grads

    @staticmethod
    def output_forward(queries, memory, params, config):
        """queries s_t [B, T, H] -> attentional states [B, T, H], weights averaged over heads [B, T, S], cache."""
        attentional, alpha, cache = multihead_attention_forward(
            queries, memory.derived["K"], memory.derived["V"], memory.src_mask, params["attention/W_q"],
            params["attention/b_q"], params["attention/W_o"], params["attention/b_o"], params["attention/W_c"],
            config.num_heads)
        return attentional, alpha.mean(axis=1), cache

    @staticmethod
    def head_weights(cache):
        """Each head's (M3) weights [B, heads, T, S], before output_forward averaged them."""
        return cache[4]

    @staticmethod
    def output_backward(dfeatures, cache):
        dqueries, dK, dV, dW_q, db_q, dW_o, db_o, dW_c = multihead_attention_backward(dfeatures, cache)
        grads = {"attention/W_q": dW_q, "attention/b_q": db_q, "attention/W_o": dW_o, "attention/b_o": db_o,
                 "attention/W_c": dW_c}
        return dqueries, 0.0, {"K": dK, "V": dV}, grads
