"""The JAX implementations by name, mirroring seq2seq_ref.registry (whose entries carry the metadata:
state_names, feeds_input, has_weights, parameter shapes)."""
from __future__ import annotations

from .connections.bahdanau import Bahdanau
from .connections.luong import Luong
from .connections.multihead import MultiHead
from .connections.none import NoAttention
from .gru import GRU
from .lstm import LSTM

CELLS = {
    "lstm": LSTM,
    "gru": GRU,
}

CONNECTIONS = {
    "none": NoAttention,
    "bahdanau": Bahdanau,
    "luong": Luong,
    "multihead": MultiHead,
}
