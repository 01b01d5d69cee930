"""The batch type both backends train on, and its builder from token-id lists."""
from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np

from .checks import as_int_array, check_id_sequences, check_lengths, check_source, check_tokens
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


def check_batch(batch, config: ModelConfig):
    """Validate a Batch against a config; returns it with numpy int arrays."""
    if not isinstance(batch, Batch):
        raise ValueError(f"batch: expected a seq2seq_ref.Batch, got {type(batch).__name__}")
    src, src_lengths = check_source(batch.src, batch.src_lengths, config)
    tgt_in = as_int_array("tgt_in", batch.tgt_in, 2)
    tgt_out = as_int_array("tgt_out", batch.tgt_out, 2)
    tgt_lengths = as_int_array("tgt_lengths", batch.tgt_lengths, 1)
    if tgt_in.shape[0] != src.shape[0] or tgt_in.shape[1] == 0:
        raise ValueError(f"tgt_in: expected shape ({src.shape[0]}, T) with T >= 1, got {tgt_in.shape}")
    if tgt_out.shape != tgt_in.shape:
        raise ValueError(f"tgt_out: expected the shape of tgt_in {tgt_in.shape}, got {tgt_out.shape}")
    check_lengths("tgt_lengths", tgt_lengths, tgt_in.shape[0], tgt_in.shape[1])
    check_tokens("tgt_in", tgt_in, config.tgt_vocab_size)
    check_tokens("tgt_out", tgt_out, config.tgt_vocab_size)
    return Batch(src, src_lengths, tgt_in, tgt_out, tgt_lengths)
