"""Token-id datasets and length-bucketed batches.

Each epoch's batches depend only on (seed, epoch), so a resumed run sees the
same batches as an uninterrupted one.  Sorting by the longer side within pools
of `pool` batches keeps padding low on both sides (sorting by the source alone
leaves the target a third padding on Multi30k); widths round up to a multiple
of `pad_multiple` (of a power-of-two multiple of it for long batches; capped at
the dataset's longest) so a compiled backend sees few shapes: it compiles once
per (source width, target width).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from seq2seq_ref import Batch, ModelConfig, make_batch
from seq2seq_ref.batch import make_packed_batch

from .vocab import Vocab


@dataclass
class EncodedPairs:
    src: list[list[int]]
    tgt: list[list[int]]
    texts: list[tuple[str, str]]

    def __len__(self) -> int:
        return len(self.src)

    def __getitem__(self, rows: slice) -> "EncodedPairs":
        return EncodedPairs(self.src[rows], self.tgt[rows], self.texts[rows])

    @property
    def max_src_len(self) -> int:
        return max(map(len, self.src))

    @property
    def max_tgt_len(self) -> int:
        return max(map(len, self.tgt)) + 1  # + EOS


def encode_pairs(pairs, src_vocab: Vocab, tgt_vocab: Vocab, max_len: int | None = None) -> tuple[EncodedPairs, int]:
    """Encode (source, target) texts; drop pairs with an empty source or a side longer than max_len.

    Returns the kept pairs and how many were dropped.
    """
    src, tgt, texts, dropped = [], [], [], 0
    for source, target in pairs:
        s, t = src_vocab.encode(source), tgt_vocab.encode(target)
        if not s or (max_len is not None and (len(s) > max_len or len(t) + 1 > max_len)):
            dropped += 1
            continue
        src.append(s)
        tgt.append(t)
        texts.append((source, target))
    return EncodedPairs(src, tgt, texts), dropped


def round_width(longest: int, pad_multiple: int, cap: int) -> int:
    """longest rounded up to a multiple of pad_multiple, or of pad_multiple * 2^k for long rows, so that the
    rare long batches share a few widths (each width is a compilation) while padding stays under a quarter;
    never past cap (the dataset's longest) unless longest is."""
    step = pad_multiple
    while 2 * step <= longest / 4:
        step *= 2
    return min(-(-longest // step) * step, max(cap, longest))


def epoch_batches(data: EncodedPairs, batch_size: int, seed: int, epoch: int, pool: int = 50,
                  drop_last: bool = True) -> list[np.ndarray]:
    """Index arrays of one epoch: shuffled, sorted by length within pools, batch order shuffled."""
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(data))
    # the longer side first (it sets one of the widths), then the total; the target gains <eos>
    lengths = np.array([max(len(s), len(t) + 1) * 10_000 + len(s) + len(t) for s, t in zip(data.src, data.tgt)])
    batches = []
    chunk = batch_size * pool
    for start in range(0, len(order), chunk):
        block = order[start:start + chunk]
        block = block[np.argsort(lengths[block], kind="stable")]
        batches += [block[i:i + batch_size] for i in range(0, len(block), batch_size)]
    if drop_last and len(data) >= batch_size:
        batches = [b for b in batches if len(b) == batch_size]
    return [batches[i] for i in rng.permutation(len(batches))]


def make_padded_batch(data: EncodedPairs, indices, config: ModelConfig, pad_multiple: int = 8) -> Batch:
    src = [data.src[i] for i in indices]
    tgt = [data.tgt[i] for i in indices]
    src_width = round_width(max(map(len, src)), pad_multiple, data.max_src_len)
    tgt_width = round_width(max(map(len, tgt)) + 1, pad_multiple, data.max_tgt_len)
    return make_batch(src, tgt, config, src_width=src_width, tgt_width=tgt_width)


def unk_dropout(batch: Batch, rate: float, rng: np.random.Generator, unk_id: int) -> Batch:
    """Each source token (padding excepted) becomes <unk> with probability rate, so that the model learns what an
    unseen input token means (word dropout to <unk>; Sennrich et al. 2016 drop whole source words)."""
    if rate == 0.0:
        return batch
    dropped = (rng.random(batch.src.shape) < rate) & (np.arange(batch.src.shape[1]) < batch.src_lengths[:, None])
    return batch._replace(src=np.where(dropped, unk_id, batch.src))


def sequential_batches(n: int, batch_size: int) -> list[np.ndarray]:
    """In order, for evaluation."""
    return [np.arange(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]


def pack_rows(data: EncodedPairs, order, rows: int, width: int, lookahead: int = 64) -> list[list[list[int]]]:
    """Packed batches of the pairs in `order`: each batch `rows` rows, each row the indices of the pairs it
    holds (both sides within `width` tokens, the target with its BOS/EOS); MATH.md (T14).

    First fit, in order: a pair goes to the first row with room on both sides; one that fits nowhere waits for
    the next batch, and a batch closes after `lookahead` such pairs in a row.  A last batch with an empty row
    is dropped (as drop_last drops a short one), so every batch has the same shape.
    """
    order = list(order)
    batches, waiting, position = [], [], 0
    while position < len(order) or waiting:
        src_room, tgt_room, content = [width] * rows, [width] * rows, [[] for _ in range(rows)]
        candidates, kept, misses = waiting, [], 0
        while misses <= lookahead:
            if candidates:
                i = candidates.pop(0)
            elif position < len(order):
                i, position = order[position], position + 1
            else:
                break
            s, t = len(data.src[i]), len(data.tgt[i]) + 1
            row = next((r for r in range(rows) if src_room[r] >= s and tgt_room[r] >= t), None)
            if row is None:
                kept.append(i)
                misses += 1
                continue
            content[row].append(i)
            src_room[row] -= s
            tgt_room[row] -= t
        waiting = kept + candidates
        if not all(content):
            break
        batches.append(content)
    return batches


def packed_rows_for(data: EncodedPairs, batch_size: int, width: int) -> int:
    """Rows of `width` tokens that hold about batch_size pairs (their longer side, the target with BOS/EOS):
    a packed run sees about as many sentences per step as an unpacked one."""
    longer = np.mean([max(len(s), len(t) + 1) for s, t in zip(data.src, data.tgt)])
    return max(1, round(batch_size * longer / width))


def make_packed_rows_batch(data: EncodedPairs, rows: list[list[int]], config: ModelConfig, width: int) -> Batch:
    return make_packed_batch([[data.src[i] for i in row] for row in rows], [[data.tgt[i] for i in row] for row in rows],
                             config, width, width)


class BatchPlan:
    """Which batch each training step sees: epochs of batches that depend only on (seed, epoch), so a resumed
    run sees the same batches as an uninterrupted one.  Length-bucketed and padded (epoch_batches), or packed
    into fixed [rows, pack] batches (pack_rows) when pack is a row width: one shape, so one compilation."""

    def __init__(self, data: EncodedPairs, config: ModelConfig, batch_size: int, seed: int, pad_multiple: int,
                 pack: int | None = None):
        self.data, self.config, self.batch_size, self.seed = data, config, batch_size, seed
        self.pad_multiple, self.pack = pad_multiple, pack
        if pack is not None:
            longest = max(data.max_src_len, data.max_tgt_len)
            if longest > pack:
                raise ValueError(f"pack: expected a row width of at least the longest training sentence "
                                 f"({longest} tokens, the target with its BOS/EOS), got {pack}")
            self.rows = packed_rows_for(data, batch_size, pack)
        self._counts: list[int] = []
        self._cached: tuple[int, list] | None = None

    def epoch(self, epoch: int) -> list:
        """The epoch's batches: index arrays, or lists of rows of indices when packed."""
        if self._cached is None or self._cached[0] != epoch:
            if self.pack is None:
                batches = epoch_batches(self.data, self.batch_size, self.seed, epoch)
            else:
                order = np.random.default_rng([self.seed, epoch]).permutation(len(self.data))
                batches = pack_rows(self.data, order, self.rows, self.pack)
            self._cached = (epoch, batches)
        return self._cached[1]

    @property
    def batches_per_epoch(self) -> int:
        """The first epoch's count (packed epochs differ by a batch or two)."""
        return self._count(0)

    def _count(self, epoch: int) -> int:
        while len(self._counts) <= epoch:
            self._counts.append(len(self.epoch(len(self._counts))) if self.pack is not None or not self._counts
                                else self._counts[0])
        return self._counts[epoch]

    def locate(self, step: int) -> tuple[int, int]:
        """(epoch, offset) of a step."""
        if self.pack is None:
            return divmod(step, self._count(0))
        epoch = 0
        while step >= self._count(epoch):
            step -= self._count(epoch)
            epoch += 1
        return epoch, step

    def batch(self, step: int) -> Batch:
        epoch, offset = self.locate(step)
        chosen = self.epoch(epoch)[offset]
        if self.pack is None:
            return make_padded_batch(self.data, chosen, self.config, self.pad_multiple)
        return make_packed_rows_batch(self.data, chosen, self.config, self.pack)
