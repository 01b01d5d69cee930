"""Input checks shared by both backends, in one place: run before any computation (or tracing).

Every error names the argument, what was expected and what was given.  This
module sits above what it checks (config, batch, params) and gathers their
checks; the generic array checks live at the bottom, in checks.py.
"""
from __future__ import annotations

import numpy as np

from .batch import check_batch
from .checks import check_config, check_id_sequences, check_lengths, check_source, check_tokens
from .config import ModelConfig
from .params import check_params

__all__ = ["check_batch", "check_config", "check_decode_args", "check_decode_inputs", "check_dropout_rng",
           "check_id_sequences", "check_lengths", "check_params", "check_source", "check_tokens"]


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
