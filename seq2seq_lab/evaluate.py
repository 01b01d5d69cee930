"""Decoding many sentences, and the scores: exact match, token accuracy, perplexity, BLEU, chrF."""
from __future__ import annotations

import math

import numpy as np

from seq2seq_ref.batch import pad_sequences

from .batching import EncodedPairs, make_padded_batch, round_width, sequential_batches
from .vocab import EOS_ID, PAD_ID, UNK_ID


# Rows per batch are capped so that rows * source width * max_len (the attention weights kept for
# plotting) and rows * target width * vocabulary (the logits of perplexity) stay under this many entries.
DECODE_BUDGET = 1 << 22


def decode_ids(backend, params, sources: list[list[int]], max_len: int, batch_size: int = 256, beam: int = 1,
               length_penalty: float = 0.6, pad_multiple: int = 8):
    """Output ids (each up to and including EOS) and, for greedy decoding, attention weights per sentence.

    Batches are padded to batch_size rows and widths to pad_multiple, so a
    compiled backend sees few shapes; long sources get fewer rows per batch
    (DECODE_BUDGET), so memory stays bounded whatever the input.
    """
    outputs, weights = [], []
    longest = max(map(len, sources))
    batch_size = max(1, min(batch_size, DECODE_BUDGET // (round_width(longest, pad_multiple, longest)
                                                           * max_len * max(beam, 1))))
    for indices in sequential_batches(len(sources), batch_size):
        rows = [sources[i] for i in indices]
        rows += [rows[0]] * (min(batch_size, len(sources)) - len(rows))
        width = round_width(max(map(len, rows)), pad_multiple, longest)
        src = pad_sequences(rows, PAD_ID, width)
        lengths = np.array([len(r) for r in rows])
        if beam > 1:
            tokens, _ = backend.beam(params, src, lengths, beam, max_len, length_penalty)
            tokens, alpha = tokens[:, 0], None
        else:
            tokens, alpha = backend.greedy(params, src, lengths, max_len)
        for row in range(len(indices)):
            ids = tokens[row].tolist()
            ids = ids[: ids.index(EOS_ID) + 1] if EOS_ID in ids else ids
            outputs.append(ids)
            weights.append(None if alpha is None else alpha[row, : len(ids), : len(rows[row])])
    return outputs, weights


def perplexity(backend, params, data: EncodedPairs, config, batch_size: int = 256) -> float:
    total, tokens = 0.0, 0
    batch_size = max(1, min(batch_size, DECODE_BUDGET // (data.max_tgt_len * config.tgt_vocab_size)))  # logits
    for indices in sequential_batches(len(data), batch_size):
        batch = make_padded_batch(data, indices, config)
        total += backend.nll(params, batch)
        tokens += int(batch.tgt_lengths.sum())
    return math.exp(total / tokens)


def _decode_with_references(backend, params, data: EncodedPairs, batch_size: int, beam: int = 1,
                            max_len: int | None = None, length_penalty: float = 0.6):
    """Each sentence's output ids and its reference ids (target + EOS).

    Decodes up to 5 tokens past the longest reference, and never past max_len
    (the run's --max-len: no training target was longer).
    """
    limit = data.max_tgt_len + 5 if max_len is None else min(data.max_tgt_len + 5, max_len)
    outputs, _ = decode_ids(backend, params, data.src, limit, batch_size, beam, length_penalty)
    return outputs, [[*target, EOS_ID] for target in data.tgt]


def references_by_source(texts: list[tuple[str, str]]) -> tuple[list[int], list[list[str | None]]]:
    """Multiple references where a source repeats (Tatoeba-style files list each translation on its own line).

    Returns the row of each distinct source's first occurrence (in order), and sacrebleu's reference streams:
    stream k holds every source's k-th reference, None where a source has fewer.
    """
    rows, targets = {}, {}
    for row, (source, target) in enumerate(texts):
        rows.setdefault(source, row)
        targets.setdefault(source, []).append(target)
    most = max(map(len, targets.values()))
    streams = [[refs[k] if k < len(refs) else None for refs in targets.values()] for k in range(most)]
    return list(rows.values()), streams


def evaluate(backend, params, config, data: EncodedPairs, tgt_vocab, batch_size: int = 256, beam: int = 1,
             with_perplexity: bool = True, max_len: int | None = None, length_penalty: float = 0.6) -> dict:
    """Scores of greedy (or beam) output against the references, decoding at most max_len tokens.

    exact_match and token_accuracy are per pair; BLEU and chrF (sacrebleu, on detokenised text) score each
    distinct source once against all of its references (with BLEU's brevity penalty and the outputs' length over
    the references'); unk_outputs counts outputs holding <unk>.
    """
    from sacrebleu.metrics import BLEU, CHRF

    outputs, references = _decode_with_references(backend, params, data, batch_size, beam, max_len, length_penalty)
    correct = sum(sum(a == b for a, b in zip(o, r)) for o, r in zip(outputs, references))
    rows, streams = references_by_source(data.texts)
    hypotheses = [tgt_vocab.decode(outputs[row]) for row in rows]
    bleu, chrf = BLEU(), CHRF()
    bleu_score = bleu.corpus_score(hypotheses, streams)
    scores = {
        "examples": len(outputs),
        "exact_match": float(np.mean([o == r for o, r in zip(outputs, references)])),
        "token_accuracy": correct / sum(map(len, references)),
        "bleu": bleu_score.score,
        "bleu_brevity_penalty": bleu_score.bp,  # below 1: the outputs are shorter than the references
        "bleu_length_ratio": bleu_score.sys_len / max(bleu_score.ref_len, 1),
        "chrf": chrf.corpus_score(hypotheses, streams).score,
        "distinct_sources": len(rows),
        "unk_outputs": sum(UNK_ID in output for output in outputs),
        "bleu_signature": str(bleu.get_signature()),
        "chrf_signature": str(chrf.get_signature()),
    }
    if with_perplexity:
        scores["perplexity"] = perplexity(backend, params, data, config, batch_size)
    return scores
