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
