"""Decoding many sentences, and the scores: exact match, token accuracy, perplexity, BLEU, chrF."""
from __future__ import annotations

import math
import sys

import numpy as np

from seq2seq_ref.batch import pad_sequences
from seq2seq_ref.decode import DEFAULT_LENGTH_PENALTY

from .batching import EncodedPairs, make_padded_batch, round_width, sequential_batches
from .vocab import EOS_ID, PAD_ID, UNK_ID


# Rows per batch are capped so that rows * source width * max_len (the attention weights kept for
# plotting) and rows * target width * vocabulary (the logits of perplexity) stay under this many entries.
DECODE_BUDGET = 1 << 22

# Source tokens (padding included) per decoding batch: 128 sentences of 32 tokens, enough rows for full matrix
# products, few enough that beam search's state (beam x rows) stays small
DEFAULT_BATCH_TOKENS = 4096


def decode_plan(lengths: list[int], batch_tokens: int, max_rows: int | None = None, pad_multiple: int = 8,
                max_width: int | None = None) -> list[tuple[list[int], int, int]]:
    """Batches for decoding sources of these lengths: (indices, rows, width) each.

    Longest first (a batch too large for memory fails at once, not at the end), so that sources of one length
    share batches; a batch's width is its longest source rounded up by round_width, never past max_width (a
    Transformer's max_positions), so that other inputs and other files reuse the compiled shapes; its rows fill
    batch_tokens padded source tokens (at least one row, at most max_rows). Only the last batch is short of
    rows, and is padded to a power of two: a compiled backend sees about one program per width.
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])  # stable: equal lengths keep input order
    cap = sys.maxsize if max_width is None else max_width
    plan, start = [], 0
    while start < len(order):
        width = round_width(lengths[order[start]], pad_multiple, cap)
        full = max(1, min(batch_tokens // width, max_rows or len(order)))
        indices = order[start:start + full]
        rows = full if len(indices) == full else min(full, 1 << (len(indices) - 1).bit_length())
        plan.append((indices, rows, width))
        start += len(indices)
    return plan


def width_limit(config) -> int | None:
    """The widest source batch config's model takes: max_positions where it encodes positions."""
    return config.max_positions if config is not None and config.uses_positions else None


def decode_ids(backend, params, sources: list[list[int]], max_len: int, batch_size: int | None = None,
               beam: int = 1, length_penalty: float = DEFAULT_LENGTH_PENALTY, pad_multiple: int = 8,
               n_best: int = 1, progress: bool = False, batch_tokens: int = DEFAULT_BATCH_TOKENS,
               max_width: int | None = None, max_len_a: float | None = None, max_len_b: int | None = None,
               early_stop: bool = False):
    """Each sentence's n_best hypotheses, best first, and for greedy decoding its attention weights; in the
    order of sources.

    A hypothesis is (ids up to and including EOS, score): beam search's length-normalised log-probability
    (MATH.md (N1)), None for greedy decoding, which has one. Batches follow decode_plan (sorted by length,
    batch_tokens source tokens each, at most batch_size rows, widths up to max_width); long sources get fewer
    rows per batch (DECODE_BUDGET), so memory stays bounded whatever the input. Each sentence is decoded
    independently of its batch, so the results are those of decoding it alone. progress: a bar on stderr when
    it is a terminal. max_len_a, max_len_b: a per-sentence length limit a * |source| + b below max_len
    (MATH.md (N3)); early_stop: beam search stops a sentence once beam hypotheses have finished ((N4)).
    """
    from tqdm import tqdm

    limit = dict(max_len_a=max_len_a, max_len_b=max_len_b)
    hypotheses, weights = [None] * len(sources), [None] * len(sources)
    lengths = [len(source) for source in sources]
    batch_tokens = min(batch_tokens, DECODE_BUDGET // (max_len * max(beam, 1)))  # attention: width * max_len a row
    with tqdm(total=len(sources), disable=None if progress else True, file=sys.stderr, unit="sentence",
              desc="decoding", dynamic_ncols=True, leave=False) as bar:
        for indices, rows, width in decode_plan(lengths, batch_tokens, batch_size, pad_multiple, max_width):
            batch = [sources[i] for i in indices]
            batch += [batch[0]] * (rows - len(batch))
            src = pad_sequences(batch, PAD_ID, width)
            if beam > 1:
                tokens, scores = backend.beam(params, src, np.array(list(map(len, batch))), beam, max_len,
                                              length_penalty, early_stop=early_stop, **limit)
                alpha = None
            else:
                tokens, alpha = backend.greedy(params, src, np.array(list(map(len, batch))), max_len, **limit)
                tokens, scores = tokens[:, None], None
            for row, index in enumerate(indices):
                found = []
                for k in range(min(n_best, tokens.shape[1])):
                    score = None if scores is None else float(scores[row, k])
                    if score is not None and not math.isfinite(score):
                        break  # an empty slot: beam search found fewer hypotheses
                    ids = tokens[row, k].tolist()
                    # through EOS; one cut off by its length limit ends where the padding starts
                    end = ids.index(EOS_ID) + 1 if EOS_ID in ids else ids.index(PAD_ID) if PAD_ID in ids else None
                    found.append((ids[:end], score))
                hypotheses[index] = found
                # a copy: a view would keep the whole batch's weights alive
                weights[index] = None if alpha is None else alpha[row, : len(found[0][0]), : lengths[index]].copy()
            bar.update(len(indices))
    return hypotheses, weights


def perplexity(backend, params, data: EncodedPairs, config, batch_size: int = 256) -> float:
    total, tokens = 0.0, 0
    batch_size = max(1, min(batch_size, DECODE_BUDGET // (data.max_tgt_len * config.tgt_vocab_size)))  # logits
    for indices in sequential_batches(len(data), batch_size):
        batch = make_padded_batch(data, indices, config)
        total += backend.nll(params, batch)
        tokens += int(batch.tgt_lengths.sum())
    return math.exp(total / tokens)


def _decode_with_references(backend, params, data: EncodedPairs, beam: int = 1, max_len: int | None = None,
                            length_penalty: float = DEFAULT_LENGTH_PENALTY, progress: bool = False,
                            batch_tokens: int = DEFAULT_BATCH_TOKENS, max_width: int | None = None, **search):
    """Each sentence's output ids and its reference ids (target + EOS).

    Decodes up to 5 tokens past the longest reference, and never past max_len
    (the run's --max-len: no training target was longer). search: decode_ids' max_len_a, max_len_b, early_stop.
    """
    limit = data.max_tgt_len + 5 if max_len is None else min(data.max_tgt_len + 5, max_len)
    hypotheses, _ = decode_ids(backend, params, data.src, limit, beam=beam, length_penalty=length_penalty,
                               progress=progress, batch_tokens=batch_tokens, max_width=max_width, **search)
    return [found[0][0] for found in hypotheses], [[*target, EOS_ID] for target in data.tgt]


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
             with_perplexity: bool = True, max_len: int | None = None,
             length_penalty: float = DEFAULT_LENGTH_PENALTY, progress: bool = False,
             batch_tokens: int = DEFAULT_BATCH_TOKENS, **search) -> dict:
    """Scores of greedy (or beam) output against the references, decoding at most max_len tokens.

    exact_match and token_accuracy are per pair; BLEU and chrF (sacrebleu, on detokenised text) score each
    distinct source once against all of its references (with BLEU's brevity penalty and the outputs' length over
    the references'); unk_outputs counts outputs holding <unk>. BLEU splits char-level targets into characters
    (sacrebleu's tok:char): a date or a number is one word to its default 13a tokeniser, and a sentence of one
    word has no 4-grams, so 13a BLEU would read 0 even for exact output. progress: a bar over the decoding on
    stderr when it is a terminal. batch_size: pairs per batch of perplexity; batch_tokens: source tokens per
    decoding batch (decode_plan); search: decode_ids' max_len_a, max_len_b and early_stop.
    """
    from sacrebleu.metrics import BLEU, CHRF

    outputs, references = _decode_with_references(backend, params, data, beam, max_len, length_penalty, progress,
                                                   batch_tokens, width_limit(config), **search)
    correct = sum(sum(a == b for a, b in zip(o, r)) for o, r in zip(outputs, references))
    rows, streams = references_by_source(data.texts)
    hypotheses = [tgt_vocab.decode(outputs[row]) for row in rows]
    bleu, chrf = BLEU(tokenize="char" if tgt_vocab.tokenizer == "char" else None), CHRF()
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
