"""General (multiplicative) attention (Luong et al. 2015), MATH.md (L1)-(L4): it reads the decoder output."""
from __future__ import annotations

from ..attention import luong_attention_backward, luong_attention_forward
from ..components import Connection


class Luong(Connection):
    name = "luong"

    @staticmethod
    def matmul_flops(config, batch, src_len, steps):
        """Per step (L1) s W_a and the scores, (L3) context, (L4) [ctx; s] W_c."""
        B, S, H, K = batch, src_len, config.hidden_dim, config.key_dim
        return steps * (2 * B * H * K + 2 * B * S * K + 2 * B * S * K + 2 * B * (K + H) * H)

    @staticmethod
    def param_shapes(config):
        H, K = config.hidden_dim, config.key_dim
        return {"attention/W_a": (H, K), "attention/W_c": (K + H, H)}

    @staticmethod
    def output_forward(queries, memory, params, config):
        """queries s_t [B, T, H] -> attentional states [B, T, H], alpha [B, T, S], cache."""
        return luong_attention_forward(queries, memory.keys, memory.src_mask, params["attention/W_a"],
                                       params["attention/W_c"])

    @staticmethod
    def output_backward(dfeatures, cache):
        dqueries, dkeys, dW_a, dW_c = luong_attention_backward(dfeatures, cache)
        return dqueries, dkeys, {}, {"attention/W_a": dW_a, "attention/W_c": dW_c}
