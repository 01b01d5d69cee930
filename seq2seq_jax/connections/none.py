"""No attention (Sutskever et al. 2014): f_t = s_t."""
from __future__ import annotations

from flax import nnx


class NoAttention(nnx.Module):
    def __init__(self, params, config):
        pass

    def memory(self, keys):
        return {}

    def __call__(self, queries, memory):
        """queries [B, T, H] -> features [B, T, H], no weights."""
        return queries, None
