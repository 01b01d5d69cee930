"""Generic input checks at the bottom of seq2seq_ref: they import nothing of the model but its config.

Every error names the argument, what was expected and what was given.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .config import ModelConfig


def check_config(config) -> ModelConfig:
    if not isinstance(config, ModelConfig):
        raise ValueError(f"config: expected a seq2seq_ref.ModelConfig, got {type(config).__name__}")
    return config


def as_int_array(name: str, value, ndim: int) -> np.ndarray:
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
    src = as_int_array("src", src, 2)
    src_lengths = as_int_array("src_lengths", src_lengths, 1)
    if src.shape[0] == 0 or src.shape[1] == 0:
        raise ValueError(f"src: expected a non-empty [B, S] array, got shape {src.shape}")
    check_lengths("src_lengths", src_lengths, src.shape[0], src.shape[1])
    check_tokens("src", src, config.src_vocab_size)
    if config.uses_positions and src.shape[1] > config.max_positions:
        raise ValueError(f"src: expected at most max_positions = {config.max_positions} positions (a Transformer "
                         f"side), got width {src.shape[1]}")
    return src, src_lengths
