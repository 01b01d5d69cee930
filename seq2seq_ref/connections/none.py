"""No attention (Sutskever et al. 2014): the source reaches the decoder through the bridge alone; f_t = s_t."""
from __future__ import annotations

from ..components import Connection


class NoAttention(Connection):
    name = "none"
    has_weights = False

    @staticmethod
    def matmul_flops(config, batch, src_len, steps):
        return 0

    @staticmethod
    def output_forward(queries, memory, params, config):
        """f_t = s_t: queries [B, T, H] -> features [B, T, H], no weights."""
        return queries, None, None

    @staticmethod
    def output_backward(dfeatures, cache):
        """-> dqueries, dkeys, dderived, grads."""
        return dfeatures, 0.0, {}, {}
