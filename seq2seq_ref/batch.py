"""The batch type both backends train on, and its builder from token-id lists."""
from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np

from .config import ModelConfig


class Batch(NamedTuple):
    """Padded, right-aligned-with-padding token ids (a NamedTuple, so also a JAX pytree).

    src:         int[B, S]  source ids, pad_id past src_lengths
    src_lengths: int[B]     1 <= src_lengths <= S
    tgt_in:      int[B, T]  decoder inputs: BOS y_1 ... y_n, then pad
    tgt_out:     int[B, T]  decoder targets: y_1 ... y_n EOS, then pad
    tgt_lengths: int[B]     n + 1, the positions that count in the loss
    """

    src: np.ndarray
    src_lengths: np.ndarray
    tgt_in: np.ndarray
    tgt_out: np.ndarray
    tgt_lengths: np.ndarray


def pad_sequences(sequences: Sequence[Sequence[int]], pad_id: int, width: int | None = None) -> np.ndarray:
    """int[len(sequences), width]: each sequence left-aligned, the rest pad_id."""
    width = max(len(s) for s in sequences) if width is None else width
    out = np.full((len(sequences), width), pad_id, dtype=np.int64)
    for row, seq in enumerate(sequences):
        out[row, : len(seq)] = seq
    return out


def make_batch(
    src_seqs: Sequence[Sequence[int]],
    tgt_seqs: Sequence[Sequence[int]],
    config: ModelConfig,
    src_width: int | None = None,
    tgt_width: int | None = None,
) -> Batch:
    """Build a Batch from unpadded id lists; BOS/EOS are added to the target here.

    src_seqs: B non-empty sequences of source ids (no BOS/EOS).
    tgt_seqs: B sequences of target ids (no BOS/EOS; may be empty).
    src_width, tgt_width: pad to at least this width (default: the longest).
    """
    from .validation import check_batch, check_id_sequences

    check_id_sequences("src_seqs", src_seqs, allow_empty=False)
    check_id_sequences("tgt_seqs", tgt_seqs, allow_empty=True)
    if len(src_seqs) != len(tgt_seqs):
        raise ValueError(
            f"tgt_seqs: expected as many sequences as src_seqs ({len(src_seqs)}), got {len(tgt_seqs)}"
        )
    src_lengths = np.array([len(s) for s in src_seqs], dtype=np.int64)
    tgt_lengths = np.array([len(t) + 1 for t in tgt_seqs], dtype=np.int64)
    src_width = max(int(src_lengths.max()), src_width or 0)
    tgt_width = max(int(tgt_lengths.max()), tgt_width or 0)
    batch = Batch(
        src=pad_sequences(src_seqs, config.pad_id, src_width),
        src_lengths=src_lengths,
        tgt_in=pad_sequences([[config.bos_id, *t] for t in tgt_seqs], config.pad_id, tgt_width),
        tgt_out=pad_sequences([[*t, config.eos_id] for t in tgt_seqs], config.pad_id, tgt_width),
        tgt_lengths=tgt_lengths,
    )
    check_batch(batch, config)
    return batch


def length_mask(lengths: np.ndarray, width: int) -> np.ndarray:
    """bool[B, width]: True at positions t < lengths[b]."""
    return np.arange(width)[None, :] < lengths[:, None]
