"""Input checks shared by both backends, in one place: run before any computation (or tracing).

Every error names the argument, what was expected and what was given.  This
module sits above what it checks (config, batch, params) and gathers their
checks; the generic array checks live at the bottom, in checks.py.
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from .batch import check_batch
from .checks import check_config, check_id_sequences, check_lengths, check_source, check_tokens
from .config import ModelConfig
from .params import check_params

__all__ = ["MAX_DECODE_LEN", "check_batch", "check_config", "check_decode_args", "check_decode_inputs",
           "check_dropout_rng", "check_flag", "check_id_sequences", "check_lengths", "check_params", "check_source", "check_tokens"]


# The longest output decoding may be asked for.  Every decoder allocates buffers in proportion to max_len
# (the output tokens [B, max_len], per beam; greedy's attention weights [B, max_len, S]; the JAX Transformer's
# key/value cache [B * beam, max_len, d] per block and its position table), and the JAX loop counts positions
# in int32.  2**16 is far above any sentence (hundreds of tokens at most) and keeps those buffers to megabytes
# per sentence, where 10**12 would ask for terabytes and fail deep inside NumPy or XLA.
MAX_DECODE_LEN = 2**16


def check_decode_args(max_len, beam_size=None, length_penalty=None, config: ModelConfig | None = None,
                      dtype=np.float32) -> None:
    """max_len in [1, MAX_DECODE_LEN]; beam_size in [1, tgt_vocab_size - 2]; length_penalty a finite real >= 0
    (any real type but bool, NumPy scalars included) whose normaliser (N1) at max_len, ((5 + max_len) / 6) **
    length_penalty, is finite in dtype, the dtype decoding computes in (the parameters')."""
    if isinstance(max_len, bool) or not isinstance(max_len, (int, np.integer)) or not 1 <= max_len <= MAX_DECODE_LEN:
        raise ValueError(f"max_len: expected an int in [1, {MAX_DECODE_LEN}], got {max_len!r}")
    if beam_size is not None:
        if isinstance(beam_size, bool) or not isinstance(beam_size, (int, np.integer)) or beam_size < 1:
            raise ValueError(f"beam_size: expected an int >= 1, got {beam_size!r}")
        if config is not None and beam_size > config.tgt_vocab_size - 2:
            raise ValueError(f"beam_size: expected at most tgt_vocab_size - 2 = {config.tgt_vocab_size - 2} (pad "
                             f"and bos are never generated), got {beam_size}")
    if length_penalty is not None:
        # comparisons only (a huge int never converts to float here): 0 <= x < inf also refuses NaN
        if (isinstance(length_penalty, (bool, np.bool_)) or not isinstance(length_penalty, numbers.Real)
                or not 0 <= length_penalty < math.inf):
            raise ValueError(f"length_penalty: expected a finite float >= 0, got {length_penalty!r}")
        # lp(max_len) = ((5 + max_len) / 6) ** alpha <= the dtype's largest value / 2, in logarithms; the
        # factor 2 spares the base's rounding in dtype (a relative alpha * eps, 1e-5 at float32's bound)
        log_base = math.log((5 + int(max_len)) / 6)
        bound = math.log(float(np.finfo(dtype).max) / 2) / log_base if log_base > 0 else math.inf
        if length_penalty > bound:
            raise ValueError(f"length_penalty: expected at most {bound:.4g} with max_len = {max_len}, where the "
                             f"length normaliser ((5 + max_len) / 6) ** length_penalty stays below half the largest "
                             f"{np.dtype(dtype).name}, got {length_penalty!r}")


def check_flag(value, name: str) -> bool:
    """A bool (NumPy's too), as a Python bool; anything else (1, "yes", None) is refused."""
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name}: expected True or False, got {value!r}")
    return bool(value)


def check_dropout_rng(config: ModelConfig, dropout_rng) -> None:
    if config.dropout > 0.0 and dropout_rng is None:
        raise ValueError(
            f"dropout_rng: expected a seed or random generator because config.dropout={config.dropout} "
            "(explicit so runs repeat exactly), got None"
        )


def check_decode_inputs(params, config, src, src_lengths, max_len, beam_size=None, length_penalty=None):
    """Everything greedy_decode / beam_search take; returns (src, src_lengths) as numpy arrays."""
    check_config(config)
    dtype = check_params(params, config)
    src, src_lengths = check_source(src, src_lengths, config)
    check_decode_args(max_len, beam_size, length_penalty, config, dtype)
    return src, src_lengths
