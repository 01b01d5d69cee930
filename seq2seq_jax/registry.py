"""The JAX implementations by name, mirroring seq2seq_ref.registry (whose entries carry the metadata: state
names, what a stack or connection uses, parameter shapes).  Each ENCODERS/DECODERS entry builds the stack's
module from (config, flat params, custom_vjp); a registered cell serves both sides through the recurrent stacks."""
from __future__ import annotations

from functools import partial

from .connections.bahdanau import Bahdanau
from .connections.luong import Luong
from .connections.multihead import MultiHead
from .connections.none import NoAttention
from .gru import GRU
from .lstm import LSTM
from .recurrent import RecurrentDecoder, RecurrentEncoder
from .transformer import TransformerEncoder
from .transformer_decoder import TransformerDecoder

CELLS: dict = {}
ENCODERS: dict = {}
DECODERS: dict = {}
CONNECTIONS: dict = {}


def register_cell(name: str, cell) -> None:
    """A JAX cell module class (seq2seq_jax.gru.GRU's interface) under `name`, on both sides."""
    CELLS[name] = cell
    ENCODERS[name] = partial(RecurrentEncoder, cell)
    DECODERS[name] = partial(RecurrentDecoder, cell)


def register_connection(name: str, connection) -> None:
    """A JAX connection module class (seq2seq_jax.connections.*) under `name`."""
    CONNECTIONS[name] = connection


register_cell("lstm", LSTM)
register_cell("gru", GRU)
ENCODERS["transformer"] = TransformerEncoder
DECODERS["transformer"] = TransformerDecoder
register_connection("none", NoAttention)
register_connection("bahdanau", Bahdanau)
register_connection("luong", Luong)
register_connection("multihead", MultiHead)
