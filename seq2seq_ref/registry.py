"""The pluggable components by name: adding a cell or a connection is its module plus one line here."""
from __future__ import annotations

from .connections.bahdanau import Bahdanau
from .connections.luong import Luong
from .connections.multihead import MultiHead
from .connections.none import NoAttention
from .gru import GRU
from .lstm import LSTM
from .transformer import Transformer

CELLS = {
    "lstm": LSTM,
    "gru": GRU,
    "transformer": Transformer,
}

CONNECTIONS = {
    "none": NoAttention,
    "bahdanau": Bahdanau,
    "luong": Luong,
    "multihead": MultiHead,
}
