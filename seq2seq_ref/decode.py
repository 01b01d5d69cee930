"""Greedy decoding and beam search (MATH.md, "Decoding").

Both feed back their own predictions one step at a time through
the decoder stack's step.  pad and bos are never generated.  Ties go to the lower
token id (greedy) and to the lower flat index beam * V + token (beam search);
the JAX twin breaks them the same way.
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from .batch import length_mask
from .components import Memory, repeat_memory
from .params import tied_views
from .registry import CONNECTIONS, DECODERS, ENCODERS
from .layers import log_softmax
from .validation import check_decode_inputs, check_flag

# alpha of (N1) where none is given: GNMT's 0.6 (Wu et al. 2016), the default of both libraries and the CLI
DEFAULT_LENGTH_PENALTY = 0.6
SHORTLIST = 8  # candidates per beam slot that beam search ranks exactly (best_candidates)


def encode(params, config, src, src_lengths):
    """Returns the decoder's Memory and its initial decoding states (a recurrent decoder's: L state tuples of
    its cell, (B3); a Transformer decoder's: its empty key/value cache).

    params: every name the model reads, tied ones as tied_views gives them (as for step_log_probs)."""
    encoder, decoder = ENCODERS[config.encoder], DECODERS[config.decoder]
    keys, states, _ = encoder.forward(params["src_embed/W"][src], src_lengths, params, config, {})
    memory = decoder.memory(keys, length_mask(src_lengths, src.shape[1]), params, config)
    return memory, decoder.initial_states(states, encoder.state_names, config)


def step_log_probs(params, config, tokens, states, memory: Memory):
    """log p(next token | prefix) [N, V] for N prefixes ending in tokens int[N]; new states; alpha."""
    y = params["tgt_embed/W"][tokens]
    feature, states, alpha = DECODERS[config.decoder].step(y, states, memory, params, config)
    log_p = log_softmax(feature @ params["output/W"] + params["output/b"])
    log_p[:, [config.pad_id, config.bos_id]] = -np.inf
    return log_p, states, alpha


def check_length_limit(max_len_a=None, max_len_b=None) -> None:
    """max_len_a a finite real >= 0 or None, max_len_b an int >= 0 or None ((N3), length_limits)."""
    if (max_len_a is not None and (isinstance(max_len_a, (bool, np.bool_)) or not isinstance(max_len_a, numbers.Real)
                                   or not 0 <= max_len_a < math.inf)):
        raise ValueError(f"max_len_a: expected a finite real >= 0 or None, got {max_len_a!r}")
    if max_len_b is not None and (isinstance(max_len_b, (bool, np.bool_))
                                  or not isinstance(max_len_b, (int, np.integer)) or max_len_b < 0):
        raise ValueError(f"max_len_b: expected an int >= 0 or None, got {max_len_b!r}")


def length_limits(src_lengths, max_len, max_len_a=None, max_len_b=None):
    """(N3) each sentence's longest output, EOS counted: int[B].

    Off (both None): max_len for every sentence.  Otherwise fairseq's a * |source| + b, rounded down, at
    least 1 and at most max_len; a missing one of the two counts as 0.
    max_len_a: a finite real >= 0 or None; max_len_b: an int >= 0 or None.
    """
    src_lengths = np.asarray(src_lengths)
    check_length_limit(max_len_a, max_len_b)
    if max_len_a is None and max_len_b is None:
        return np.full(src_lengths.shape, max_len, dtype=np.int64)
    # a huge b is capped before it meets a float, so it never overflows
    limit = np.floor(float(max_len_a or 0) * src_lengths + min(int(max_len_b or 0), max_len))
    return np.clip(limit, 1, max_len).astype(np.int64)


def take_rows(memory: Memory, rows) -> Memory:
    """The memory of the given rows int[N] only (the sentences still decoding)."""
    return Memory(memory.keys[rows], memory.src_mask[rows], {k: v[rows] for k, v in memory.derived.items()})


def shrinks(done_in_work) -> bool:
    """Whether the working set leaves out its done sentences now: once a quarter of it is done, so that the
    memory and states are copied O(log B) times while done sentences cost at most a third more work."""
    return 4 * done_in_work.sum() >= len(done_in_work)


def greedy_decode(params, config, src, src_lengths, max_len, *, max_len_a=None, max_len_b=None):
    """Pick the most likely token at every step until EOS or the sentence's length limit.

    src: int[B, S], src_lengths: int[B], max_len: int >= 1
    max_len_a, max_len_b: a per-sentence limit a * |source| + b below max_len ((N3), length_limits); off
    by default.
    Returns tokens int[B, max_len] (EOS included, pad after it and past the limit) and the
    attention weights [B, max_len, S] (0 after EOS), or None without attention.
    Finished sentences leave the batch (shrinks): rows are independent, so that changes no result.
    """
    src, src_lengths = check_decode_inputs(params, config, src, src_lengths, max_len)
    limits = length_limits(src_lengths, max_len, max_len_a, max_len_b)
    params = tied_views(params, config)  # (W1)
    memory, states = encode(params, config, src, src_lengths)
    B, S = src.shape
    tokens = np.full((B, max_len), config.pad_id, dtype=np.int64)
    has_weights = CONNECTIONS[config.attention].has_weights
    weights = np.zeros((B, max_len, S), dtype=memory.keys.dtype) if has_weights else None
    previous = np.full(B, config.bos_id)
    finished = np.zeros(B, dtype=bool)
    work = np.arange(B)  # the sentences whose rows states, memory and previous hold
    for t in range(limits.max()):
        log_p, states, alpha = step_log_probs(params, config, previous, states, memory)
        previous = np.where(finished[work], config.pad_id, log_p.argmax(axis=1))
        tokens[work, t] = previous
        if weights is not None:
            weights[work, t] = np.where(finished[work, None], 0.0, alpha)
        finished[work] |= (previous == config.eos_id) | (t + 1 >= limits[work])
        if finished.all():
            break
        if shrinks(finished[work]):
            keep = np.flatnonzero(~finished[work])
            work, previous, memory = work[keep], previous[keep], take_rows(memory, keep)
            states = [tuple(s[keep] for s in state) for state in states]
    return tokens, weights


def length_normaliser(lengths, length_penalty):
    """(N1) GNMT's lp(Y) = ((5 + |Y|) / 6) ** alpha (Wu et al. 2016); alpha = 0 leaves scores as log-probs."""
    return ((5.0 + lengths) / 6.0) ** length_penalty


def rank_candidates(candidates, step_log_p):
    """Indices [B, K*V] of the candidates, best first: by score, ties by the step's own log-probability, then
    the lower flat index beam * V + token.

    The second key makes beam 1 pick exactly greedy's argmax even where adding the prefix's log-probability
    rounds two different step log-probabilities to one sum (float32).
    """
    index = np.broadcast_to(np.arange(candidates.shape[1]), candidates.shape)
    return np.lexsort((index, -step_log_p, -candidates), axis=-1)


def best_candidates(candidates, step_log_p, count, shortlist):
    """rank_candidates(candidates, step_log_p)[:, :count], [B, count], ranking a shortlist per row.

    Ranking all K * V candidates of a row every step is most of beam search's time; a partition takes each
    row's `shortlist` best scores (in any order), and only those are ranked.  That is exact whenever the
    shortlist's lowest score is below the count-th best ranked: every candidate left off scores at most
    that lowest score.  A row where it is not (ties across the cut, or too few finite scores) is ranked in
    full.  The JAX twin checks the same condition.
    """
    if shortlist >= candidates.shape[1]:
        return rank_candidates(candidates, step_log_p)[:, :count]
    listed = np.argpartition(-candidates, shortlist - 1, axis=1)[:, :shortlist]
    values = np.take_along_axis(candidates, listed, axis=1)
    order = np.lexsort((listed, -np.take_along_axis(step_log_p, listed, axis=1), -values), axis=-1)[:, :count]
    best = np.take_along_axis(listed, order, axis=1)
    exact = values.min(axis=1) < np.take_along_axis(values, order[:, -1:], axis=1)[:, 0]
    if not exact.all():
        best[~exact] = rank_candidates(candidates[~exact], step_log_p[~exact])[:, :count]
    return best


def final_order(finished_scores, live_scores):
    """Indices into [finished; live] [B, 2K]: finished hypotheses first, then unfinished, each by score;
    empty slots (score -inf) last."""
    scores = np.concatenate([finished_scores, live_scores], axis=1)
    index = np.broadcast_to(np.arange(scores.shape[1]), scores.shape)
    group = np.where(np.isfinite(scores), index >= finished_scores.shape[1], 2)  # 2: an empty slot
    return np.lexsort((index, -scores, group), axis=-1)


def ranked_hypotheses(finished_scores, finished_tokens, live_log_p, live_tokens, live_length, length_penalty):
    """What beam search returns from its final sets, ranked by final_order: the finished hypotheses
    (finished_tokens int[B, K, max_len], finished_scores [B, K]), then the unfinished ones (live_tokens, their
    live_length int[B] tokens, no EOS) scored log p(prefix) / lp(|prefix|) in the scores' dtype.
    Returns tokens int[B, K, max_len] and scores [B, K], best first (both backends and the torch baseline)."""
    K = finished_scores.shape[1]
    live_scores = live_log_p / length_normaliser(live_length.astype(live_log_p.dtype), length_penalty)[:, None]
    order = final_order(finished_scores, live_scores)[:, :K]
    rows = np.arange(len(order))[:, None]
    scores = np.concatenate([finished_scores, live_scores], axis=1)
    return np.concatenate([finished_tokens, live_tokens], axis=1)[rows, order], np.take_along_axis(scores, order, 1)


def beam_search(params, config, src, src_lengths, beam_size, max_len, length_penalty=DEFAULT_LENGTH_PENALTY, *,
                max_len_a=None, max_len_b=None, early_stop=False):
    """Beam search with a separate set of finished hypotheses (as fairseq and OpenNMT; MATH.md "Decoding").

    Each step ranks the K * V extensions of the K live prefixes and takes the best 2K. An EOS among the
    first K moves its hypothesis into the finished set, scored s(Y) = log p(Y) / lp(|Y|), |Y| counting EOS;
    the finished set keeps the K best. The first K non-EOS extensions stay live. A sentence is done when no
    live prefix can beat its best finished hypothesis: log p only falls as a prefix grows and lp(|Y|) <=
    lp(n), n the sentence's length limit, so log p(prefix) / lp(n) bounds every completion (N2). Otherwise
    it stops at n. Unfinished hypotheses (cut off at n or at the stop) are returned only after every
    finished one, scored log p(prefix) / lp(|prefix|).
    length_penalty: alpha of (N1), a finite real >= 0 (0: scores are log-probabilities).
    max_len_a, max_len_b: the limit n = a * |source| + b below max_len ((N3), length_limits); off (n =
    max_len) by default.
    early_stop: also done once the finished set is full (beam_size hypotheses; (N4), fairseq's and
    CTranslate2's rule): faster, but a longer hypothesis that would have scored better can be missed, as the
    (N2) bound cannot be.
    Returns tokens int[B, beam_size, max_len] (pad after EOS) and scores [B, beam_size], best first.
    """
    src, src_lengths = check_decode_inputs(params, config, src, src_lengths, max_len, beam_size, length_penalty)
    limits = length_limits(src_lengths, max_len, max_len_a, max_len_b)
    early_stop = check_flag(early_stop, "early_stop")
    length_penalty = float(length_penalty)  # a Python float: a NumPy scalar would set the normaliser's dtype
    params = tied_views(params, config)  # (W1)
    memory, states = encode(params, config, src, src_lengths)
    B, K, V = src.shape[0], beam_size, config.tgt_vocab_size
    memory = repeat_memory(memory, K)
    states = [tuple(np.repeat(s, K, axis=0) for s in state) for state in states]

    dtype = memory.keys.dtype
    live_log_p = np.full((B, K), -np.inf, dtype=dtype)
    live_log_p[:, 0] = 0.0  # one live start per sentence, so the first step's K picks differ
    live_tokens = np.full((B, K, max_len), config.pad_id, dtype=np.int64)
    finished_scores = np.full((B, K), -np.inf, dtype=dtype)
    finished_tokens = np.full((B, K, max_len), config.pad_id, dtype=np.int64)
    live_length = np.zeros(B, dtype=np.int64)
    done = np.zeros(B, dtype=bool)
    previous = np.full(B * K, config.bos_id)
    best_bound = length_normaliser(limits.astype(dtype), length_penalty)  # (N2), in the scores' dtype
    work = np.arange(B)  # the sentences whose K rows each states, memory and previous hold
    for t in range(limits.max()):
        n, rows = len(work), np.arange(len(work))[:, None]
        step, states, _ = step_log_probs(params, config, previous, states, memory)
        step = step.reshape(n, K * V)
        candidates = (live_log_p[work][..., None] + step.reshape(n, K, V)).reshape(n, K * V)
        top = best_candidates(candidates, step, 2 * K, SHORTLIST * K)  # = rank_candidates(...)[:, :2K]
        top_log_p, beam, token = np.take_along_axis(candidates, top, axis=1), top // V, top % V
        extended = live_tokens[work[:, None], beam]
        extended[:, :, t] = token
        # finish: an EOS among the first K
        ends = (token[:, :K] == config.eos_id) & np.isfinite(top_log_p[:, :K])
        normaliser = length_normaliser(dtype.type(t + 1), length_penalty)
        new_scores = np.where(ends, top_log_p[:, :K] / normaliser, -np.inf)
        pooled_scores = np.concatenate([finished_scores[work], new_scores], axis=1)
        pooled_tokens = np.concatenate([finished_tokens[work], extended[:, :K]], axis=1)
        kept = np.argsort(-pooled_scores, axis=1, kind="stable")[:, :K]
        # continue: the first K that do not end
        live = np.argsort(token == config.eos_id, axis=1, kind="stable")[:, :K]
        update = ~done[work, None]
        finished_scores[work] = np.where(update, np.take_along_axis(pooled_scores, kept, axis=1),
                                         finished_scores[work])
        finished_tokens[work] = np.where(update[..., None], pooled_tokens[rows, kept], finished_tokens[work])
        live_log_p[work] = np.where(update, np.take_along_axis(top_log_p, live, axis=1), live_log_p[work])
        live_tokens[work] = np.where(update[..., None], extended[rows, live], live_tokens[work])
        live_length[work] = np.where(done[work], live_length[work], t + 1)
        done[work] |= ((live_log_p[work].max(axis=1) / best_bound[work] <= finished_scores[work, 0])  # (N2)
                       | (t + 1 >= limits[work])                                                    # (N3)
                       | (early_stop & np.isfinite(finished_scores[work, -1])))                     # (N4)
        if done.all():
            break
        keep = np.flatnonzero(~done[work]) if shrinks(done[work]) else np.arange(n)
        live_beam = np.take_along_axis(beam, live, axis=1)[keep]
        source_rows = (keep[:, None] * K + live_beam).reshape(-1)  # follow the live beams, keep's sentences
        states = [tuple(s[source_rows] for s in state) for state in states]
        previous = np.take_along_axis(token, live, axis=1)[keep].reshape(-1)
        if len(keep) < n:
            work, memory = work[keep], take_rows(memory, (keep[:, None] * K + np.arange(K)).reshape(-1))
    return ranked_hypotheses(finished_scores, finished_tokens, live_log_p, live_tokens, live_length, length_penalty)
