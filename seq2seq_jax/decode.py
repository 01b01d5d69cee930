"""Compiled greedy decoding and beam search: one XLA program each, a lax.while_loop over positions.

The same algorithm as seq2seq_ref.decode, tie-breaking included: argmax takes
the lowest token id; beam search ranks candidates by score, then by the step's
own log-probability, then by the lower flat index beam * V + token, as the
reference's np.lexsort does (over a shortlist that provably holds the winners).
"""
from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from seq2seq_ref.decode import DEFAULT_LENGTH_PENALTY, length_limits, length_normaliser
from seq2seq_ref.registry import CONNECTIONS
from seq2seq_ref.validation import check_decode_inputs

from .models import Seq2Seq
from .params import check_precision

SHORTLIST = 8  # candidates per beam slot that beam search ranks exactly (_best_candidates)


def _unfinished(carry, max_len):
    """while_loop condition: both decoders keep the step in carry[0] and the per-sentence done flags in carry[4]."""
    return (carry[0] < max_len) & ~jnp.all(carry[4])


@partial(jax.jit, static_argnames=("config", "max_len"))
def _greedy(params, config, src, src_lengths, max_len, limits):
    model = Seq2Seq(config, params)
    memory, states = model.encode(src, src_lengths, max_len=max_len)
    B, S = src.shape
    dtype = memory.keys.dtype

    def body(carry):
        t, tokens, weights, previous, finished, states = carry
        log_p, states, alpha = model.step_log_probs(previous, states, memory)
        token = jnp.where(finished, config.pad_id, jnp.argmax(log_p, axis=-1))
        tokens = tokens.at[:, t].set(token)
        if alpha is not None:
            weights = weights.at[:, t].set(jnp.where(finished[:, None], 0.0, alpha))
        return t + 1, tokens, weights, token, finished | (token == config.eos_id) | (t + 1 >= limits), states

    carry = (0, jnp.full((B, max_len), config.pad_id, src.dtype), jnp.zeros((B, max_len, S), dtype),
             jnp.full((B,), config.bos_id, src.dtype), jnp.zeros((B,), bool), states)
    _, tokens, weights, *_ = lax.while_loop(partial(_unfinished, max_len=max_len), body, carry)
    return tokens, weights


def greedy_decode(params, config, src, src_lengths, max_len, *, max_len_a=None, max_len_b=None):
    """As seq2seq_ref.decode.greedy_decode: tokens int[B, max_len], attention [B, max_len, S] or None."""
    src, src_lengths = check_decode_inputs(params, config, src, src_lengths, max_len)
    limits = length_limits(src_lengths, max_len, max_len_a, max_len_b).astype(np.int32)
    check_precision(params)
    tokens, weights = _greedy(params, config, src, src_lengths, int(max_len), limits)
    return tokens, (weights if CONNECTIONS[config.attention].has_weights else None)


def _ranked(keys, index):
    """Positions sorted by keys (lexicographically, ascending), ties by position: the reference's np.lexsort."""
    return lax.sort((*keys, index), dimension=-1, is_stable=True, num_keys=len(keys) + 1)[-1]


def _best_candidates(candidates, step, count, shortlist):
    """The first `count` flat indices of seq2seq_ref.decode.rank_candidates(candidates, step), each row [B, N].

    Sorting all K * V candidates of a row every step is what made beam search slow; lax.top_k shortlists
    `shortlist` of them by score, and only those are ranked by the three keys.  That is exact whenever the
    shortlist's last score is below the count-th best (every candidate left off then scores below it,
    checked at run time); otherwise (ties at that score, or fewer finite candidates than the shortlist
    holds) every candidate is ranked.
    """
    index = jnp.broadcast_to(jnp.arange(candidates.shape[1]), candidates.shape)
    shortlist = max(shortlist, count)
    if shortlist >= candidates.shape[1]:
        return _ranked((-candidates, -step), index)[:, :count]
    # the barrier keeps XLA on CPU from turning top_k into a sort of the whole row when its values are read
    values, listed = lax.optimization_barrier(lax.top_k(candidates, shortlist))
    listed = listed.astype(index.dtype)
    complete = jnp.all(values[:, shortlist - 1] < values[:, count - 1])
    return lax.cond(complete,
                    lambda: _ranked((-values, -jnp.take_along_axis(step, listed, axis=1)), listed)[:, :count],
                    lambda: _ranked((-candidates, -step), index)[:, :count])


@partial(jax.jit, static_argnames=("config", "beam_size", "max_len", "length_penalty"))
def _beam_search(params, config, src, src_lengths, beam_size, max_len, length_penalty, limits, best_bound):
    """seq2seq_ref.decode.beam_search step for step: a finished set beside the live beam, per-sentence stop.

    limits: int[B] each sentence's length limit (N3); best_bound: [B] lp(limit) in the scores' dtype (N2)."""
    model = Seq2Seq(config, params)
    memory, states = model.encode(src, src_lengths, max_len=max_len)
    B, K, V = src.shape[0], beam_size, config.tgt_vocab_size
    memory = jax.tree.map(lambda m: jnp.repeat(m, K, axis=0), memory)
    states = jax.tree.map(lambda s: jnp.repeat(s, K, axis=0), states)
    dtype = memory.keys.dtype
    rows = jnp.arange(B)[:, None]

    def body(carry):
        t, live_log_p, live_tokens, live_length, done, finished_scores, finished_tokens, states, previous = carry
        step, states, _ = model.step_log_probs(previous, states, memory)
        step = step.reshape(B, K * V)
        candidates = (live_log_p[..., None] + step.reshape(B, K, V)).reshape(B, K * V)
        top = _best_candidates(candidates, step, 2 * K, SHORTLIST * K)
        top_log_p, beam, token = jnp.take_along_axis(candidates, top, axis=1), top // V, (top % V).astype(src.dtype)
        extended = live_tokens[rows, beam].at[:, :, t].set(token)
        ends = (token[:, :K] == config.eos_id) & jnp.isfinite(top_log_p[:, :K])
        normaliser = length_normaliser((t + 1).astype(dtype), length_penalty)
        new_scores = jnp.where(ends, top_log_p[:, :K] / normaliser, -jnp.inf)
        pooled_scores = jnp.concatenate([finished_scores, new_scores], axis=1)
        pooled_tokens = jnp.concatenate([finished_tokens, extended[:, :K]], axis=1)
        kept = jnp.argsort(-pooled_scores, axis=1, stable=True)[:, :K]
        live = jnp.argsort((token == config.eos_id).astype(jnp.int8), axis=1, stable=True)[:, :K]
        update = ~done[:, None]
        finished_scores = jnp.where(update, jnp.take_along_axis(pooled_scores, kept, axis=1), finished_scores)
        finished_tokens = jnp.where(update[..., None], pooled_tokens[rows, kept], finished_tokens)
        live_log_p = jnp.where(update, jnp.take_along_axis(top_log_p, live, axis=1), live_log_p)
        live_tokens = jnp.where(update[..., None], extended[rows, live], live_tokens)
        live_length = jnp.where(done, live_length, t + 1)
        live_beam = jnp.take_along_axis(beam, live, axis=1)
        states = jax.tree.map(lambda s: s[(rows * K + live_beam).reshape(-1)], states)
        previous = jnp.take_along_axis(token, live, axis=1).reshape(-1)
        done = done | (live_log_p.max(axis=1) / best_bound <= finished_scores[:, 0]) | (t + 1 >= limits)  # (N2)
        return t + 1, live_log_p, live_tokens, live_length, done, finished_scores, finished_tokens, states, previous

    carry = (0, jnp.full((B, K), -jnp.inf, dtype).at[:, 0].set(0.0),
             jnp.full((B, K, max_len), config.pad_id, src.dtype), jnp.zeros((B,), src.dtype),
             jnp.zeros((B,), bool), jnp.full((B, K), -jnp.inf, dtype),
             jnp.full((B, K, max_len), config.pad_id, src.dtype), states, jnp.full((B * K,), config.bos_id, src.dtype))
    _, live_log_p, live_tokens, live_length, _, finished_scores, finished_tokens, *_ = lax.while_loop(
        partial(_unfinished, max_len=max_len), body, carry)
    live_scores = live_log_p / length_normaliser(live_length.astype(dtype), length_penalty)[:, None]
    scores = jnp.concatenate([finished_scores, live_scores], axis=1)
    index = jnp.broadcast_to(jnp.arange(2 * K), (B, 2 * K))
    group = jnp.where(jnp.isfinite(scores), (index >= K).astype(jnp.int32), 2)  # finished, unfinished, empty
    order = _ranked((group, -scores), index)[:, :K]
    all_tokens = jnp.concatenate([finished_tokens, live_tokens], axis=1)
    return all_tokens[rows, order], jnp.take_along_axis(scores, order, axis=1)


def beam_search(params, config, src, src_lengths, beam_size, max_len, length_penalty=DEFAULT_LENGTH_PENALTY, *,
                max_len_a=None, max_len_b=None):
    """As seq2seq_ref.decode.beam_search: tokens int[B, beam, max_len], scores [B, beam], best first."""
    src, src_lengths = check_decode_inputs(params, config, src, src_lengths, max_len, beam_size, length_penalty)
    limits = length_limits(src_lengths, max_len, max_len_a, max_len_b)
    check_precision(params)
    # on the host in float64, then rounded once to the scores' dtype (the parameters')
    best_bound = length_normaliser(limits.astype(np.float64), float(length_penalty)).astype(params["output/b"].dtype)
    return _beam_search(params, config, src, src_lengths, int(beam_size), int(max_len), float(length_penalty),
                        limits.astype(np.int32), best_bound)
