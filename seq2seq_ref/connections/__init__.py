"""The connections between encoder and decoder, one module each (interface: seq2seq_ref.components.Connection),
and their table by name (re-exported by seq2seq_ref.registry; the recurrent decoder reads it)."""
from __future__ import annotations

from .bahdanau import Bahdanau
from .luong import Luong
from .multihead import MultiHead
from .none import NoAttention

CONNECTIONS: dict = {}


def register_connection(name: str, connection) -> None:
    """A connection (components.Connection) under `name`."""
    CONNECTIONS[name] = connection


register_connection("none", NoAttention)
register_connection("bahdanau", Bahdanau)
register_connection("luong", Luong)
register_connection("multihead", MultiHead)
