"""The batch type both backends train on, and its builder from token-id lists."""
from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np

from .checks import as_int_array, check_id_sequences, check_lengths, check_source, check_tokens
from .config import ModelConfig
from .registry import DECODERS, ENCODERS


class Batch(NamedTuple):
    """Padded, right-aligned-with-padding token ids (a NamedTuple, so also a JAX pytree).

    src:         int[B, S]  source ids, pad_id past src_lengths
    src_lengths: int[B]     1 <= src_lengths <= S
    tgt_in:      int[B, T]  decoder inputs: BOS y_1 ... y_n, then pad
    tgt_out:     int[B, T]  decoder targets: y_1 ... y_n EOS, then pad
    tgt_lengths: int[B]     n + 1, the positions that count in the loss

    A packed batch (make_packed_batch; MATH.md (T14)) holds several sentences per row, one after the other:
    src_segments int[B, S] and tgt_segments int[B, T] number them 1, 2, ... in each row (0 on padding), the
    k-th target sentence being the translation of the k-th source sentence; the lengths are then each row's
    used width.  None (the default) for one sentence per row.
    """

    src: np.ndarray
    src_lengths: np.ndarray
    tgt_in: np.ndarray
    tgt_out: np.ndarray
    tgt_lengths: np.ndarray
    src_segments: np.ndarray | None = None
    tgt_segments: np.ndarray | None = None


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


def make_packed_batch(src_rows, tgt_rows, config: ModelConfig, src_width: int, tgt_width: int) -> Batch:
    """A packed Batch (several sentences per row, MATH.md (T14)) of fixed shape [B, src_width], [B, tgt_width].

    src_rows: B non-empty lists of non-empty source sequences (no BOS/EOS), the sentences of each row;
    tgt_rows: their targets, row by row and sentence by sentence (no BOS/EOS; each gains one, as make_batch's).
    The loss of a packed batch is that of the same pairs in an unpacked one: every sentence attends to itself
    only, and its positions start at 0.
    """
    if len(src_rows) == 0 or len(src_rows) != len(tgt_rows):
        raise ValueError(f"tgt_rows: expected as many rows as src_rows ({len(src_rows)}, at least one), "
                         f"got {len(tgt_rows)}")
    sides = {"src": ([], [], []), "tgt": ([], [], [])}
    for row, (sources, targets) in enumerate(zip(src_rows, tgt_rows)):
        if len(sources) == 0 or len(sources) != len(targets):
            raise ValueError(f"tgt_rows[{row}]: expected as many sentences as src_rows[{row}] ({len(sources)}, "
                             f"at least one), got {len(targets)}")
        check_id_sequences(f"src_rows[{row}]", sources, allow_empty=False)
        check_id_sequences(f"tgt_rows[{row}]", targets, allow_empty=True)
        src = [token for s in sources for token in s]
        tgt_in = [token for t in targets for token in (config.bos_id, *t)]
        tgt_out = [token for t in targets for token in (*t, config.eos_id)]
        sides["src"][0].append(src)
        sides["src"][1].append([k + 1 for k, s in enumerate(sources) for _ in s])
        sides["tgt"][0].append(tgt_in)
        sides["tgt"][1].append([k + 1 for k, t in enumerate(targets) for _ in range(len(t) + 1)])
        sides["tgt"][2].append(tgt_out)
    for name, width in (("src", src_width), ("tgt", tgt_width)):
        longest = max(map(len, sides[name][0]))
        if longest > width:
            raise ValueError(f"{name}_width: expected at least the longest packed row ({longest} tokens), got {width}")
    batch = Batch(
        src=pad_sequences(sides["src"][0], config.pad_id, src_width),
        src_lengths=np.array([len(s) for s in sides["src"][0]], dtype=np.int64),
        tgt_in=pad_sequences(sides["tgt"][0], config.pad_id, tgt_width),
        tgt_out=pad_sequences(sides["tgt"][2], config.pad_id, tgt_width),
        tgt_lengths=np.array([len(t) for t in sides["tgt"][0]], dtype=np.int64),
        src_segments=pad_sequences(sides["src"][1], 0, src_width),
        tgt_segments=pad_sequences(sides["tgt"][1], 0, tgt_width),
    )
    return check_batch(batch, config)


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
    if batch.src_segments is None and batch.tgt_segments is None:
        return Batch(src, src_lengths, tgt_in, tgt_out, tgt_lengths)
    return Batch(src, src_lengths, tgt_in, tgt_out, tgt_lengths, *check_segments(batch, config))


def check_segments(batch, config: ModelConfig) -> tuple[np.ndarray, np.ndarray]:
    """A packed batch's segment ids (T14): both sides or neither, stacks that pack, 1, 2, ... in order on each
    row's used width and 0 past it, as many sentences on both sides of a row."""
    stacks = {"encoder": ENCODERS[config.encoder], "decoder": DECODERS[config.decoder]}
    if any(stack.packs is False for stack in stacks.values()):
        packing = [name for name in ENCODERS if ENCODERS[name].packs and name in DECODERS and DECODERS[name].packs]
        raise ValueError(f"batch: expected no segment ids with encoder={config.encoder!r} and "
                         f"decoder={config.decoder!r} (packed batches need stacks that pack: {packing}), got some")
    counts = []
    for name, tokens, lengths in (("src_segments", batch.src, batch.src_lengths),
                                  ("tgt_segments", batch.tgt_in, batch.tgt_lengths)):
        segments = getattr(batch, name)
        if segments is None:
            raise ValueError(f"{name}: expected segment ids with the other side's (a packed batch has both), "
                             f"got None")
        segments = as_int_array(name, segments, 2)
        if segments.shape != np.shape(tokens):
            raise ValueError(f"{name}: expected the shape of its tokens {np.shape(tokens)}, got {segments.shape}")
        used = length_mask(np.asarray(lengths), segments.shape[1])
        steps = np.diff(segments, axis=1, prepend=0)
        ordered = np.where(used, (steps == 0) | (steps == 1), segments == 0) & (segments[:, :1] == 1)
        if not ordered.all():
            row = int(np.argwhere(~ordered)[0][0])
            raise ValueError(f"{name}[{row}]: expected 1, 2, ... in order on the row's used width and 0 past it, "
                             f"got {segments[row].tolist()}")
        counts.append(segments.max(axis=1))
    if not np.array_equal(*counts):
        row = int(np.argmax(counts[0] != counts[1]))
        raise ValueError(f"tgt_segments[{row}]: expected as many sentences as src_segments[{row}] "
                         f"({int(counts[0][row])}), got {int(counts[1][row])}")
    return as_int_array("src_segments", batch.src_segments, 2), as_int_array("tgt_segments", batch.tgt_segments, 2)
