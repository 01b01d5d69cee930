"""The pluggable components by name: adding one is its module plus one line here (a connection: in
connections/__init__.py).

CELLS: recurrent cells, each serving both sides as RecurrentEncoder(cell) and RecurrentDecoder(cell)
(register_cell); ENCODERS, DECODERS: every stack a side can be, by the name config.encoder / config.decoder
takes; CONNECTIONS: what joins a recurrent decoder to the encoder, by config.attention.
"""
from __future__ import annotations

from .connections import CONNECTIONS, register_connection
from .decoder import RecurrentDecoder
from .encoder import RecurrentEncoder
from .gru import GRU
from .lstm import LSTM
from .transformer import TransformerEncoder
from .transformer_decoder import TransformerDecoder

__all__ = ["CELLS", "CONNECTIONS", "DECODERS", "ENCODERS", "register_cell", "register_connection"]

CELLS: dict = {}
ENCODERS: dict = {}
DECODERS: dict = {}


def register_cell(name: str, cell) -> None:
    """A recurrent cell (components.Cell) under `name`, on both sides."""
    CELLS[name] = cell
    ENCODERS[name] = RecurrentEncoder(cell)
    DECODERS[name] = RecurrentDecoder(cell)


register_cell("lstm", LSTM)
register_cell("gru", GRU)
ENCODERS["transformer"] = TransformerEncoder()
DECODERS["transformer"] = TransformerDecoder()
