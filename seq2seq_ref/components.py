"""The two pluggable kinds of component, and the interface each implements.

A **cell** (lstm.LSTM, gru.GRU) is the recurrence of one layer and direction.
Its state is a tuple whose first entry is the output h; `state_names` names the
entries, and the bridge (encoder.bridge_forward) matches them by name.

A **connection** (connections/*.py) joins the decoder to the encoder
annotations.  Either it feeds the decoder input (`feeds_input`: its context
joins y_t, as Bahdanau's (A5), so training runs step by step), or it reads the
decoder output (the others: the decoder runs each layer over the whole target
at once, then the connection maps the top states to the output features).

Encoder, decoder, bridge and parameters are written once against these
interfaces; seq2seq_ref.registry names the implementations.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Memory(NamedTuple):
    """What a connection reads, built once per source sentence.

    keys:     [B, S, K]  the top encoder layer's outputs (annotations)
    src_mask: bool[B, S] False on source padding
    derived:  dict of arrays the connection precomputes from keys (Bahdanau's keys W_k, multi-head's
              per-head keys and values; the Transformer decoder's cross-attention keys and values); {} when
              it needs none
    """

    keys: np.ndarray
    src_mask: np.ndarray
    derived: dict


def repeat_memory(memory: Memory, times: int) -> Memory:
    """Each sentence's memory `times` times in a row (for beam search)."""
    repeat = lambda a: np.repeat(a, times, axis=0)  # noqa: E731
    return Memory(repeat(memory.keys), repeat(memory.src_mask), {k: repeat(v) for k, v in memory.derived.items()})


class Cell:
    """Interface of a recurrent cell; every method is a staticmethod of the implementing class.

    p is the cell's parameters by suffix (e.g. {"W_x", "W_h", "b"}); a state is a tuple of [B, H] arrays.
    """

    name: str
    state_names: tuple[str, ...]
    sides: tuple[str, ...] = ("encoder", "decoder")  # the sides of the model this family can serve
    own_encoder: bool = False  # True: the family brings its whole encoder stack (encoder_param_shapes,
    #                            encoder_init_param, encoder_dropout_shapes, encoder_forward, encoder_backward)
    #                            instead of being run layer by layer and direction by direction
    own_decoder: bool = False  # True: likewise for the decoder (decoder_param_shapes, decoder_init_param,
    #                            decoder_dropout_shapes, initial_states, decoder_forward, decoder_backward,
    #                            decoder_memory, decoder_step), reading the encoder through its own attention
    #                            (no connection)
    uses_heads: bool = False   # True: config.num_heads is this family's too
    uses_positions: bool = False  # True: it adds positions to √d-scaled embeddings, initialised N(0, 1/d)

    @staticmethod
    def check_config(config, side: str) -> None:
        """Raise ValueError (naming the field) for a config this family cannot serve on `side`."""

    @staticmethod
    def param_shapes(input_dim: int, hidden_dim: int) -> dict[str, tuple[int, ...]]:
        raise NotImplementedError

    @staticmethod
    def init_param(suffix: str, shape, hidden_dim: int, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError

    @staticmethod
    def forward(x, state, p, lengths):
        """x [B, T, D] -> hs [B, T, H], final state (each row's at its own length), cache."""
        raise NotImplementedError

    @staticmethod
    def backward(dhs, dstate, cache):
        """-> dx [B, T, D], dstate0 (a tuple), dp (a dict by suffix)."""
        raise NotImplementedError

    @staticmethod
    def step_forward(x, state, p, mask):
        """One step: x [B, D], mask bool[B] (False: carry the state) -> new state, cache."""
        raise NotImplementedError

    @staticmethod
    def step_backward(dstate, cache):
        """-> dx [B, D], dstate_prev, dp."""
        raise NotImplementedError


class Connection:
    """Interface of an encoder-decoder connection; methods are staticmethods of the implementing class."""

    name: str
    feeds_input: bool = False  # True: context_forward/backward; False: output_forward/backward
    has_weights: bool = True   # attention weights to return and plot

    @staticmethod
    def check_config(config) -> None:
        """Raise ValueError (naming the field) for a config this connection cannot serve."""
        if config.num_heads != 1 and not config.cells_use_heads:
            raise ValueError(f"num_heads: expected 1 with attention={config.attention!r} (heads are for "
                             f"'multihead' and Transformer sides), got {config.num_heads}")

    @staticmethod
    def param_shapes(config) -> dict[str, tuple[int, ...]]:
        return {}

    @staticmethod
    def init_param(name: str, shape, rng: np.random.Generator) -> np.ndarray:
        """Default: U(-1/sqrt(n), 1/sqrt(n)) with n the fan-in shape[0]."""
        bound = 1.0 / np.sqrt(shape[0])
        return rng.uniform(-bound, bound, size=shape)

    @staticmethod
    def input_dim(config) -> int:
        """Features the connection adds to the first decoder layer's input."""
        return 0

    @staticmethod
    def output_dim(config) -> int:
        """Features of the decoder output that the output layer reads."""
        return config.hidden_dim

    @staticmethod
    def memory_forward(keys, params) -> dict:
        return {}

    @staticmethod
    def memory_backward(dderived: dict, keys, params) -> tuple:
        """-> dkeys contribution (or 0.0) and parameter gradients."""
        return 0.0, {}

    # A connection that feeds the input implements:
    #   context_forward(query [B, H], memory, params, config) -> context [B, K], alpha [B, S], cache
    #   context_backward(dcontext, cache) -> dquery, dkeys, dderived, grads
    # one that reads the output implements:
    #   output_forward(queries [B, T, H], memory, params, config) -> features [B, T, F], alpha [B, T, S] or None,
    #                                                                cache
    #   output_backward(dfeatures, cache) -> dqueries, dkeys, dderived, grads
