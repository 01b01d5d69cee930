"""The JAX implementations by name, mirroring seq2seq_ref.registry (whose entries carry the metadata:
state_names, feeds_input, has_weights, parameter shapes)."""
from __future__ import annotations

from .connections.bahdanau import Bahdanau
from .connections.luong import Luong
from .connections.multihead import MultiHead
from .connections.none import NoAttention
from .gru import GRU
from .lstm import LSTM
from .transformer import TransformerEncoder
from .transformer_decoder import TransformerDecoder

CELLS = {
    "lstm": LSTM,
    "gru": GRU,
}

# Families that bring their own encoder stack (seq2seq_ref's own_encoder), by name.
ENCODERS = {
    "transformer": TransformerEncoder,
}
DECODERS = {
    "transformer": TransformerDecoder,
}

CONNECTIONS = {
    "none": NoAttention,
    "bahdanau": Bahdanau,
    "luong": Luong,
    "multihead": MultiHead,
}
