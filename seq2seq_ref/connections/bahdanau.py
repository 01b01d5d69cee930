"""Additive attention (Bahdanau et al. 2015), MATH.md (A0)-(A5): its context joins the decoder input."""
from __future__ import annotations

from ..attention import bahdanau_attention_backward, bahdanau_attention_forward
from ..components import Connection


class Bahdanau(Connection):
    name = "bahdanau"
    feeds_input = True

    @staticmethod
    def matmul_flops(config, batch, src_len, steps):
        """(A0) once; per step (A1) the query projection, (A2) scores, (A4) context."""
        B, S, H, K, A = batch, src_len, config.hidden_dim, config.key_dim, config.attention_dim
        return 2 * B * S * K * A + steps * (2 * B * H * A + 2 * B * S * A + 2 * B * S * K)

    @staticmethod
    def param_shapes(config):
        H, K, A = config.hidden_dim, config.key_dim, config.attention_dim
        return {"attention/W_q": (H, A), "attention/W_k": (K, A), "attention/v": (A,)}

    @staticmethod
    def input_dim(config):
        return config.key_dim  # (A5) [y_t ; ctx_t]

    @staticmethod
    def output_dim(config):
        """H, or H + K + E with the deep output (A6) [s_t ; ctx_t ; y_t]."""
        return config.hidden_dim + (config.key_dim + config.embed_dim if config.deep_output else 0)

    @staticmethod
    def memory_forward(keys, params):
        return {"keys_proj": keys @ params["attention/W_k"]}  # (A0) once per sentence, not per step

    @staticmethod
    def memory_backward(dderived, keys, params):
        dkeys_proj, W_k = dderived["keys_proj"], params["attention/W_k"]
        K, A = W_k.shape
        dW_k = keys.reshape(-1, K).T @ dkeys_proj.reshape(-1, A)  # (A0')
        return dkeys_proj @ W_k.T, {"attention/W_k": dW_k}       # (A0')

    @staticmethod
    def context_forward(query, memory, params, config):
        """query s_{t-1} [B, H] -> context [B, K], alpha [B, S], cache."""
        return bahdanau_attention_forward(query, memory.keys, memory.derived["keys_proj"], memory.src_mask,
                                          params["attention/W_q"], params["attention/v"])

    @staticmethod
    def context_backward(dcontext, cache):
        """-> dquery [B, H], dkeys [B, S, K], dderived, grads."""
        dquery, dkeys, dkeys_proj, dW_q, dv = bahdanau_attention_backward(dcontext, cache)
        return dquery, dkeys, {"keys_proj": dkeys_proj}, {"attention/W_q": dW_q, "attention/v": dv}
