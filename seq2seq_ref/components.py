"""The pluggable components, and the interface each implements.

A **stack** is a whole side of the model: an EncoderStack turns the embedded
source into annotations (the keys) and final states; a DecoderStack turns the
embedded target, the keys and its initial states (the bridge from the
encoder's, (B3)) into the features the output layer reads.  The Transformer's
stacks (transformer.py, transformer_decoder.py) implement them directly;
encoder.RecurrentEncoder(cell) and decoder.RecurrentDecoder(cell) make stacks of
any recurrent cell.

A **cell** (lstm.LSTM, gru.GRU) is the recurrence of one layer and direction.
Its state is a tuple whose first entry is the output h; `state_names` names the
entries, and the bridge (RecurrentDecoder.initial_states) matches them by name.

A **connection** (connections/*.py) joins a recurrent decoder to the encoder
annotations.  Either it feeds the decoder input (`feeds_input`: its context
joins y_t, as Bahdanau's (A5), so training runs step by step), or it reads the
decoder output (the others: the decoder runs each layer over the whole target
at once, then the connection maps the top states to the output features).

The model, the parameters and decoding are written once against these
interfaces; seq2seq_ref.registry names the implementations.  What a component
needs of the config it declares as attributes (uses_heads, one_width, ...):
no shared code compares a component's name.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np


def one_of(names) -> str:
    """How an error names what it expected: 'a', or one of ('a', 'b')."""
    names = tuple(names)
    return repr(names[0]) if len(names) == 1 else f"one of {names}"


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
    A registered cell serves both sides through encoder.RecurrentEncoder and decoder.RecurrentDecoder
    (registry.register_cell).
    """

    name: str
    state_names: tuple[str, ...]

    @staticmethod
    def check_config(config, side: str) -> None:
        """Raise ValueError (naming the field) for a config this cell cannot serve on `side`."""

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


def layer_params(params, prefix: str, cell) -> dict[str, np.ndarray]:
    """The cell parameters under prefix, by suffix: {"W_x": params[prefix + "/W_x"], ...}."""
    return {suffix: params[f"{prefix}/{suffix}"] for suffix in cell.param_shapes(1, 1)}


def cell_step_flops(cell, batch: int, input_dim: int, hidden_dim: int) -> int:
    """Matrix-multiply FLOPs of one step of `cell` for `batch` rows: every 2-D parameter [n, m] is one
    [batch, n] x [n, m] product (2 FLOPs per multiply-add; elementwise gate math left out)."""
    shapes = cell.param_shapes(input_dim, hidden_dim).values()
    return sum(2 * batch * shape[0] * shape[1] for shape in shapes if len(shape) == 2)


class EncoderStack:
    """Interface of a whole encoder side (encoder.RecurrentEncoder(cell), transformer.TransformerEncoder).

    A stack owns the parameters named encoder/..., its dropout places, and its forward and backward; it hands
    the decoder its annotations (keys [B, S, K]) and one final state per layer (a tuple named by
    state_names, first entry h [B, H]), which the decoder's bridge reads.
    """

    name: str
    state_names: tuple[str, ...]
    has_directions: bool = False  # True: config.bidirectional adds a second, backward direction
    one_width: bool = False       # True: its embeddings and layers have one width (embed_dim == hidden_dim)
    uses_heads: bool = False      # True: config.num_heads is this stack's too
    uses_positions: bool = False  # True: it adds positions to √d-scaled embeddings (initialised N(0, 1/d)),
    #                               up to config.max_positions
    packs: bool = False           # True: forward takes segment ids, several sentences per row (a packed batch)

    def check_config(self, config) -> None:
        """Raise ValueError (naming the field) for a config this stack cannot serve."""

    def param_shapes(self, config) -> dict[str, tuple[int, ...]]:
        """Its parameters by flat name (encoder/...), in the order init_params draws them."""
        raise NotImplementedError

    def init_param(self, name: str, shape, config, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError

    def dropout_shapes(self, config, B: int, S: int) -> dict[str, tuple[int, ...]]:
        """(D1) its dropout places by name, for a [B, S] source."""
        raise NotImplementedError

    def forward(self, x, lengths, params, config, dropout_masks, segments=None):
        """x [B, S, E] embedded source, lengths int[B] -> keys [B, S, K], L final-state tuples, cache.
        segments: a packed batch's source segment ids int[B, S] (only where `packs`), else None."""
        raise NotImplementedError

    def backward(self, dkeys, dstates, cache):
        """dkeys [B, S, K]; dstates: the final states' gradients, or None when the decoder took no state.
        -> dx [B, S, E], the parameter gradients (a dict)."""
        raise NotImplementedError

    def matmul_flops(self, config, batch: int, src_len: int) -> int:
        """Matrix-multiply FLOPs of one forward pass (the benchmarks' FLOP count)."""
        raise NotImplementedError


class DecoderStack:
    """Interface of a whole decoder side (decoder.RecurrentDecoder(cell), transformer_decoder.TransformerDecoder).

    A stack owns the parameters named decoder/... (and attention/... when uses_connection: the connection
    config.attention joins it), its dropout places, the bridge from the encoder's final states (B3), the
    teacher-forced forward and backward, and decoding's one-position step.
    """

    name: str
    uses_connection: bool = True  # True: config.attention's connection (parameters attention/...) joins it;
    #                               False: it reads the encoder through its own attention
    one_width: bool = False
    uses_heads: bool = False
    uses_positions: bool = False
    position_cache: bool = False  # True: its decoding state holds every position decoded so far (it grows)
    packs: bool = False           # True: forward takes segment ids, several sentences per row (a packed batch)

    def accepts(self, connection) -> bool:
        """Whether config.attention may name this connection with this decoder."""
        return True

    def check_config(self, config) -> None:
        """Raise ValueError (naming the field) for a config this stack cannot serve."""

    def param_shapes(self, config) -> dict[str, tuple[int, ...]]:
        raise NotImplementedError

    def init_param(self, name: str, shape, config, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError

    def dropout_shapes(self, config, B: int, S: int, T: int) -> dict[str, tuple[int, ...]]:
        raise NotImplementedError

    def initial_states(self, encoder_states, encoder_state_names, config):
        """(B3) the decoding states from the encoder's final ones (named by encoder_state_names)."""
        raise NotImplementedError

    def initial_states_backward(self, dstates, encoder_state_names, config):
        """(B3') gradients back to the encoder's final states, or None when the decoder took none."""
        raise NotImplementedError

    def memory(self, keys, src_mask, params, config) -> Memory:
        """What decoding reads of the source, with what it precomputes once per sentence."""
        raise NotImplementedError

    def forward(self, y, tgt_lengths, init_states, keys, src_mask, params, config, dropout_masks, segments=None):
        """y [B, T, E] embedded tgt_in -> features [B, T, F], alpha [B, T, S] (or None), cache.
        segments: a packed batch's (source, target) segment ids (only where `packs`), else None."""
        raise NotImplementedError

    def backward(self, dfeatures, cache):
        """-> dy [B, T, E], dinit_states (or None), dkeys [B, S, K], the parameter gradients."""
        raise NotImplementedError

    def head_weights(self, alpha, cache):
        """Every block's and head's attention weights [B, L, H, T, S] of a forward (alpha and cache, what it
        returned); None without weights.  Default: one block, one head (alpha itself)."""
        return None if alpha is None else alpha[:, None, None]

    def step(self, y_t, states, memory: Memory, params, config, step_mask=None):
        """One decoding position: y_t [B, E] -> feature [B, F], new states, alpha [B, S] (or None).
        step_mask: bool[B], False where a row's target has ended (a recurrent state is then carried); None:
        every row steps."""
        raise NotImplementedError

    def matmul_flops(self, config, batch: int, src_len: int, tgt_len: int, decoding: bool = False) -> int:
        """Matrix-multiply FLOPs of one teacher-forced pass (decoding: tgt_len steps one position at a time),
        its connection's included."""
        raise NotImplementedError


class Connection:
    """Interface of an encoder-decoder connection; methods are staticmethods of the implementing class."""

    name: str
    feeds_input: bool = False  # True: context_forward/backward; False: output_forward/backward
    has_weights: bool = True   # attention weights to return and plot
    uses_heads: bool = False   # True: config.num_heads is this connection's, and head_weights gives each head's

    @staticmethod
    def head_weights(cache):
        """(uses_heads) each head's weights [B, heads, T, S] of an output_forward, from its cache."""
        raise NotImplementedError

    @staticmethod
    def check_config(config) -> None:
        """Raise ValueError (naming the field) for a config this connection cannot serve."""

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
    def matmul_flops(config, batch: int, src_len: int, steps: int) -> int:
        """Matrix-multiply FLOPs over `steps` decoder positions (the benchmarks' FLOP count), memory_forward's
        included.  A connection that does not say is never timed at 0 FLOPs: the benchmark refuses it."""
        raise NotImplementedError

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
