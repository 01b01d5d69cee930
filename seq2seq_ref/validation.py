"""Input checks shared by both backends: run before any computation (or tracing).

Every error names the argument, what was expected and what was given.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from .config import ModelConfig


def check_config(config) -> ModelConfig:
    if not isinstance(config, ModelConfig):
        raise ValueError(f"config: expected a seq2seq_ref.ModelConfig, got {type(config).__name__}")
    return config


def _as_int_array(name: str, value, ndim: int) -> np.ndarray:
    array = np.asarray(value)
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{name}: expected an integer array, got dtype {array.dtype}")
    if array.ndim != ndim:
        raise ValueError(f"{name}: expected {ndim} dimensions, got shape {array.shape}")
    return array


def check_id_sequences(name: str, sequences: Sequence[Sequence[int]], allow_empty: bool) -> None:
    if len(sequences) == 0:
        raise ValueError(f"{name}: expected at least one sequence, got none")
    for row, seq in enumerate(sequences):
        if not allow_empty and len(seq) == 0:
            raise ValueError(f"{name}[{row}]: expected a non-empty sequence, got length 0")
        for token in seq:
            if isinstance(token, bool) or not isinstance(token, (int, np.integer)):
                raise ValueError(f"{name}[{row}]: expected integer token ids, got {token!r}")


def check_tokens(name: str, tokens: np.ndarray, vocab_size: int) -> None:
    """Every id, padding included (it is still looked up), must lie in [0, vocab_size)."""
    bad = (tokens < 0) | (tokens >= vocab_size)
    if bad.any():
        row, col = map(int, np.argwhere(bad)[0])
        raise ValueError(
            f"{name}: expected token ids in [0, {vocab_size}), got {int(tokens[row, col])} at [{row}, {col}]"
        )


def check_lengths(name: str, lengths: np.ndarray, batch_size: int, width: int) -> None:
    if lengths.shape != (batch_size,):
        raise ValueError(f"{name}: expected shape ({batch_size},), got {lengths.shape}")
    bad = (lengths < 1) | (lengths > width)
    if bad.any():
        row = int(np.argmax(bad))
        raise ValueError(
            f"{name}: expected lengths in [1, {width}] (the padded width), got {int(lengths[row])} at [{row}]"
        )


def check_source(src, src_lengths, config: ModelConfig) -> tuple[np.ndarray, np.ndarray]:
    """Validate a padded source batch; returns (src int[B, S], src_lengths int[B])."""
    src = _as_int_array("src", src, 2)
    src_lengths = _as_int_array("src_lengths", src_lengths, 1)
    if src.shape[0] == 0 or src.shape[1] == 0:
        raise ValueError(f"src: expected a non-empty [B, S] array, got shape {src.shape}")
    check_lengths("src_lengths", src_lengths, src.shape[0], src.shape[1])
    check_tokens("src", src, config.src_vocab_size)
    return src, src_lengths


def check_batch(batch, config: ModelConfig):
    """Validate a Batch against a config; returns it with numpy int arrays."""
    from .batch import Batch

    if not isinstance(batch, Batch):
        raise ValueError(f"batch: expected a seq2seq_ref.Batch, got {type(batch).__name__}")
    src, src_lengths = check_source(batch.src, batch.src_lengths, config)
    tgt_in = _as_int_array("tgt_in", batch.tgt_in, 2)
    tgt_out = _as_int_array("tgt_out", batch.tgt_out, 2)
    tgt_lengths = _as_int_array("tgt_lengths", batch.tgt_lengths, 1)
    if tgt_in.shape[0] != src.shape[0] or tgt_in.shape[1] == 0:
        raise ValueError(f"tgt_in: expected shape ({src.shape[0]}, T) with T >= 1, got {tgt_in.shape}")
    if tgt_out.shape != tgt_in.shape:
        raise ValueError(f"tgt_out: expected the shape of tgt_in {tgt_in.shape}, got {tgt_out.shape}")
    check_lengths("tgt_lengths", tgt_lengths, tgt_in.shape[0], tgt_in.shape[1])
    check_tokens("tgt_in", tgt_in, config.tgt_vocab_size)
    check_tokens("tgt_out", tgt_out, config.tgt_vocab_size)
    return Batch(src, src_lengths, tgt_in, tgt_out, tgt_lengths)


def check_params(params: Mapping[str, np.ndarray], config: ModelConfig) -> np.dtype:
    """Every expected name present with its shape, nothing extra, one float dtype.

    Returns that dtype.
    """
    from .params import param_shapes

    if not isinstance(params, Mapping):
        raise ValueError(f"params: expected a dict of name -> array, got {type(params).__name__}")
    expected = param_shapes(config)
    missing = sorted(set(expected) - set(params))
    extra = sorted(set(params) - set(expected))
    if missing or extra:
        raise ValueError(
            f"params: expected the names of param_shapes(config) for attention={config.attention!r}, "
            f"num_layers={config.num_layers}, bidirectional={config.bidirectional}; "
            f"missing {missing}, unexpected {extra}"
        )
    dtypes = set()
    for name, shape in expected.items():
        value = params[name]
        if tuple(np.shape(value)) != shape:
            raise ValueError(f"params[{name!r}]: expected shape {shape}, got {tuple(np.shape(value))}")
        dtype = np.dtype(getattr(value, "dtype", np.asarray(value).dtype))
        if not np.issubdtype(dtype, np.floating):
            raise ValueError(f"params[{name!r}]: expected a floating dtype, got {dtype}")
        dtypes.add(dtype)
    if len(dtypes) != 1:
        raise ValueError(f"params: expected one floating dtype for every tensor, got a mix of {sorted(map(str, dtypes))}")
    return dtypes.pop()


def check_decode_args(max_len, beam_size=None, length_penalty=None, config: ModelConfig | None = None) -> None:
    if isinstance(max_len, bool) or not isinstance(max_len, (int, np.integer)) or max_len < 1:
        raise ValueError(f"max_len: expected an int >= 1, got {max_len!r}")
    if beam_size is not None:
        if isinstance(beam_size, bool) or not isinstance(beam_size, (int, np.integer)) or beam_size < 1:
            raise ValueError(f"beam_size: expected an int >= 1, got {beam_size!r}")
        if config is not None and beam_size > config.tgt_vocab_size - 2:
            raise ValueError(f"beam_size: expected at most tgt_vocab_size - 2 = {config.tgt_vocab_size - 2} (pad "
                             f"and bos are never generated), got {beam_size}")
    if length_penalty is not None:
        if isinstance(length_penalty, bool) or not isinstance(length_penalty, (int, float)) or length_penalty < 0:
            raise ValueError(f"length_penalty: expected a float >= 0, got {length_penalty!r}")


def check_dropout_rng(config: ModelConfig, dropout_rng) -> None:
    if config.dropout > 0.0 and dropout_rng is None:
        raise ValueError(
            f"dropout_rng: expected a seed or random generator because config.dropout={config.dropout} "
            "(explicit so runs repeat exactly), got None"
        )


def check_decode_inputs(params, config, src, src_lengths, max_len, beam_size=None, length_penalty=None):
    """Everything greedy_decode / beam_search take; returns (src, src_lengths) as numpy arrays."""
    check_config(config)
    check_params(params, config)
    src, src_lengths = check_source(src, src_lengths, config)
    check_decode_args(max_len, beam_size, length_penalty, config)
    return src, src_lengths
