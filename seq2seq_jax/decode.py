"""Compiled greedy decoding and beam search: lax.while_loop over positions, driven from the host so that
finished sentences leave the batch (_decode), in phases whose decoder cache grows with the positions (spans).

The same algorithm as seq2seq_ref.decode, tie-breaking included: argmax takes
the lowest token id; beam search ranks candidates by score, then by the step's
own log-probability, then by the lower flat index beam * V + token, as the
reference's np.lexsort does (over a shortlist that provably holds the winners).
"""
from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from seq2seq_ref.decode import DEFAULT_LENGTH_PENALTY, SHORTLIST, length_limits, length_normaliser, ranked_hypotheses
from seq2seq_ref.registry import CONNECTIONS, DECODERS
from seq2seq_ref.validation import check_decode_inputs, check_flag

from .models import Seq2Seq
from .params import check_precision


FIRST_SPAN = 16  # the position the first decoding phase runs to
MIN_ROWS = 8      # a working batch is not shrunk below this many sentences
SHRINK = 4        # working batch sizes: MIN_ROWS * SHRINK ** k


class GreedyState(NamedTuple):
    """The carry of greedy decoding's loop at step t, a row per sentence of the working batch."""

    t: jax.Array            # int32 scalar: the position decoded next
    tokens: jax.Array       # int[B, max_len] decoded so far (pad after EOS)
    weights: jax.Array      # [B, max_len, S] the attention weights of each step (0 after EOS)
    previous: jax.Array     # int[B] the tokens fed back at t
    done: jax.Array         # bool[B] sentences past EOS or their length limit
    limits: jax.Array       # int[B] each sentence's length limit (N3)
    states: list            # the decoder's states, a row per sentence

    def select(self, rows, beam_size=1):
        return GreedyState(self.t, *(a[rows] for a in self[1:6]), _rows(self.states, rows, beam_size))


class BeamState(NamedTuple):
    """The carry of beam search's loop at step t: a live beam and a finished set per sentence."""

    t: jax.Array                # int32 scalar: the position decoded next
    live_log_p: jax.Array       # [B, K] log-probability of each live prefix (-inf: an empty slot)
    live_tokens: jax.Array      # int[B, K, max_len] the live prefixes
    live_length: jax.Array      # int[B] their length (the step a sentence stopped at, once done)
    done: jax.Array             # bool[B] sentences whose search is over ((N2)-(N4))
    finished_scores: jax.Array  # [B, K] normalised scores of the finished hypotheses, best first
    finished_tokens: jax.Array  # int[B, K, max_len] the finished hypotheses, EOS included
    limits: jax.Array           # int[B] each sentence's length limit (N3)
    best_bound: jax.Array       # [B] lp(limit), the (N2) bound's normaliser, in the scores' dtype
    previous: jax.Array         # int[B * K] the tokens fed back at t
    states: list                # the decoder's states, K rows per sentence

    def select(self, rows, beam_size):
        return BeamState(self.t, *(a[rows] for a in self[1:9]), _rows(self.previous, rows, beam_size),
                         _rows(self.states, rows, beam_size))


def _rows(tree, sentences, beam_size):
    """The rows of the given sentences (beam_size consecutive rows each) of every array in tree."""
    rows = (sentences[:, None] * beam_size + jnp.arange(beam_size)).reshape(-1)
    return jax.tree.map(lambda a: a[rows], tree)


def spans(config, max_len):
    """The phases of a decoding loop, by the position each runs to (exclusive).

    For a decoder with a cache of positions (the Transformer), doubling from FIRST_SPAN to max_len, the cache
    only as long as its phase's span: a step reads, and beam search copies, at most twice the positions
    written so far instead of max_len (as a cache grown by concatenation would, at a fixed shape).  One
    phase otherwise.
    """
    if not DECODERS[config.decoder].position_cache:
        return (max_len,)
    out, span = [], min(FIRST_SPAN, max_len)
    while span < max_len:
        out.append(span)
        span *= 2
    return (*out, max_len)


def _decode(run, state, memory, config, max_len, beam_size, emit):
    """The decoding loop, driven from the host: run(memory, state, span, min_live) is the compiled loop over
    positions, up to span or until at most min_live sentences are still decoding.

    Sentences that are done leave the work: once at most half the working batch is live (at most
    _smaller_bucket's count), emit(state, rows, sentences) takes the finished rows' results, and the live ones
    go on in a batch of the smallest size MIN_ROWS * SHRINK ** k that holds them (filled with copies marked
    done, never emitted), so a long file compiles a few programs per source width, and a batch's last, longest
    sentences no longer drag all its rows along.  Each sentence is decoded independently of its batch, so
    this changes no result.
    """
    sentence = np.arange(len(state.done))  # each working row's sentence; -1: a filler row
    for span in spans(config, max_len):
        while True:
            rows = len(sentence)
            state = run(memory, state, span, _smaller_bucket(rows))
            done = np.asarray(state.done)
            if done.all() or int(state.t) >= span:
                break
            live, finished = np.flatnonzero(~done), np.flatnonzero(done & (sentence >= 0))
            emit(state, finished, sentence[finished])
            size = _bucket(len(live))
            keep = np.concatenate([live, np.full(size - len(live), live[0])])
            sentence = np.concatenate([sentence[live], np.full(size - len(live), -1)])
            state, memory = _shrink(state, memory, jnp.asarray(keep), jnp.asarray(sentence < 0), beam_size)
        if done.all():
            break
    emit(state, np.flatnonzero(sentence >= 0), sentence[sentence >= 0])


@partial(jax.jit, static_argnames=("beam_size",))
def _shrink(state, memory, keep, filler, beam_size):
    """The working batch of the sentences keep int[N] (rows of state), fillers bool[N] marked done."""
    return state.select(keep, beam_size)._replace(done=filler), _rows(memory, keep, beam_size)


def _phase(model, body, state, span, min_live):
    """The loop of one call of _decode's run: body from state.t, the decoder's states extended to span, until
    span or until at most min_live sentences are still decoding."""
    state = state._replace(states=model.extend_states(state.states, span))
    return lax.while_loop(lambda s: (s.t < span) & (jnp.sum(~s.done) > min_live), body, state)


def _bucket(count):
    """The smallest working batch size that holds count sentences: MIN_ROWS * SHRINK ** k."""
    size = MIN_ROWS
    while size < count:
        size *= SHRINK
    return size


def _smaller_bucket(rows):
    """The largest working batch size at most half of rows (0 if none): a batch of rows shrinks once at most
    that many of its sentences are live."""
    if rows < 2 * MIN_ROWS:
        return 0
    size = MIN_ROWS
    while size * SHRINK <= rows // 2:
        size *= SHRINK
    return size


@partial(jax.jit, static_argnames=("config", "beam_size", "span"))
def _encode(params, config, src, src_lengths, beam_size, span):
    """The memory and the decoder's initial states, beam_size rows per sentence, with room for span
    positions."""
    memory, states = Seq2Seq(config, params).encode(src, src_lengths, max_len=span)
    repeat = lambda a: jnp.repeat(a, beam_size, axis=0)  # noqa: E731
    return jax.tree.map(repeat, memory), jax.tree.map(repeat, states)


@partial(jax.jit, static_argnames=("config", "span"))
def _greedy_run(params, config, memory, state: GreedyState, span, min_live):
    """Greedy steps from state.t until span, or until at most min_live sentences are still decoding."""
    model = Seq2Seq(config, params)

    def body(s: GreedyState) -> GreedyState:
        log_p, states, alpha = model.step_log_probs(s.previous, s.states, memory)
        token = jnp.where(s.done, config.pad_id, jnp.argmax(log_p, axis=-1)).astype(s.previous.dtype)
        weights = s.weights if alpha is None else s.weights.at[:, s.t].set(jnp.where(s.done[:, None], 0.0, alpha))
        return GreedyState(s.t + 1, s.tokens.at[:, s.t].set(token), weights, token,
                           s.done | (token == config.eos_id) | (s.t + 1 >= s.limits), s.limits, states)

    return _phase(model, body, state, span, min_live)


def greedy_decode(params, config, src, src_lengths, max_len, *, max_len_a=None, max_len_b=None):
    """As seq2seq_ref.decode.greedy_decode: tokens int[B, max_len], attention [B, max_len, S] or None."""
    src, src_lengths = check_decode_inputs(params, config, src, src_lengths, max_len)
    limits = length_limits(src_lengths, max_len, max_len_a, max_len_b).astype(np.int32)
    check_precision(params)
    max_len = int(max_len)
    B, S = src.shape
    dtype = np.dtype(params["output/b"].dtype)
    memory, states = _encode(params, config, src, src_lengths, 1, spans(config, max_len)[0])
    ids = jax.dtypes.canonicalize_dtype(src.dtype)
    state = GreedyState(jnp.int32(0), jnp.full((B, max_len), config.pad_id, ids), jnp.zeros((B, max_len, S), dtype),
                        jnp.full((B,), config.bos_id, ids), jnp.zeros((B,), bool), jnp.asarray(limits), states)
    tokens, weights = np.full((B, max_len), config.pad_id, src.dtype), np.zeros((B, max_len, S), dtype)

    def emit(state, rows, sentences):
        tokens[sentences], weights[sentences] = np.asarray(state.tokens)[rows], np.asarray(state.weights)[rows]

    _decode(partial(_greedy_run, params, config), state, memory, config, max_len, 1, emit)
    return tokens, (weights if CONNECTIONS[config.attention].has_weights else None)


def _ranked(keys, index):
    """Positions sorted by keys (lexicographically, ascending), ties by position: the reference's np.lexsort."""
    return lax.sort((*keys, index), dimension=-1, is_stable=True, num_keys=len(keys) + 1)[-1]


def _best_candidates(candidates, step, count, shortlist):
    """The first `count` flat indices of seq2seq_ref.decode.rank_candidates(candidates, step), each row [B, N].

    Sorting all K * V candidates of a row every step is what made beam search slow; lax.top_k shortlists
    `shortlist` of them by score, and only those are ranked by the three keys.  That is exact whenever the
    shortlist's last score is below the count-th best (every candidate left off then scores below it,
    checked at run time, as seq2seq_ref.decode.best_candidates does); otherwise (ties at that score, or
    fewer finite candidates than the shortlist holds) every candidate is ranked.
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


@partial(jax.jit, static_argnames=("config", "span", "length_penalty", "early_stop"))
def _beam_run(params, config, memory, state: BeamState, span, min_live, length_penalty, early_stop):
    """seq2seq_ref.decode.beam_search's steps from state.t until span, or until at most min_live sentences
    are still searching: a finished set beside the live beam, a stop per sentence."""
    model = Seq2Seq(config, params)
    B, K = state.live_log_p.shape
    V = config.tgt_vocab_size
    dtype = state.live_log_p.dtype
    rows = jnp.arange(B)[:, None]

    def body(s: BeamState) -> BeamState:
        step, states, _ = model.step_log_probs(s.previous, s.states, memory)
        step = step.reshape(B, K * V)
        candidates = (s.live_log_p[..., None] + step.reshape(B, K, V)).reshape(B, K * V)
        top = _best_candidates(candidates, step, 2 * K, SHORTLIST * K)
        top_log_p, beam, token = jnp.take_along_axis(candidates, top, axis=1), top // V, (top % V).astype(s.previous.dtype)
        extended = s.live_tokens[rows, beam].at[:, :, s.t].set(token)
        # finish: an EOS among the first K
        ends = (token[:, :K] == config.eos_id) & jnp.isfinite(top_log_p[:, :K])
        normaliser = length_normaliser((s.t + 1).astype(dtype), length_penalty)
        new_scores = jnp.where(ends, top_log_p[:, :K] / normaliser, -jnp.inf)
        pooled_scores = jnp.concatenate([s.finished_scores, new_scores], axis=1)
        pooled_tokens = jnp.concatenate([s.finished_tokens, extended[:, :K]], axis=1)
        kept = jnp.argsort(-pooled_scores, axis=1, stable=True)[:, :K]
        # continue: the first K that do not end
        live = jnp.argsort((token == config.eos_id).astype(jnp.int8), axis=1, stable=True)[:, :K]
        update = ~s.done[:, None]
        finished_scores = jnp.where(update, jnp.take_along_axis(pooled_scores, kept, axis=1), s.finished_scores)
        live_log_p = jnp.where(update, jnp.take_along_axis(top_log_p, live, axis=1), s.live_log_p)
        live_beam = jnp.take_along_axis(beam, live, axis=1)
        return BeamState(
            t=s.t + 1, live_log_p=live_log_p,
            live_tokens=jnp.where(update[..., None], extended[rows, live], s.live_tokens),
            live_length=jnp.where(s.done, s.live_length, s.t + 1),
            done=(s.done | (live_log_p.max(axis=1) / s.best_bound <= finished_scores[:, 0])    # (N2)
                  | (s.t + 1 >= s.limits)                                                       # (N3)
                  | (early_stop & jnp.isfinite(finished_scores[:, -1]))),                       # (N4)
            finished_scores=finished_scores,
            finished_tokens=jnp.where(update[..., None], pooled_tokens[rows, kept], s.finished_tokens),
            limits=s.limits, best_bound=s.best_bound,
            previous=jnp.take_along_axis(token, live, axis=1).reshape(-1),
            states=jax.tree.map(lambda x: x[(rows * K + live_beam).reshape(-1)], states))

    return _phase(model, body, state, span, min_live)


def beam_search(params, config, src, src_lengths, beam_size, max_len, length_penalty=DEFAULT_LENGTH_PENALTY, *,
                max_len_a=None, max_len_b=None, early_stop=False):
    """As seq2seq_ref.decode.beam_search: tokens int[B, beam, max_len], scores [B, beam], best first."""
    src, src_lengths = check_decode_inputs(params, config, src, src_lengths, max_len, beam_size, length_penalty)
    limits = length_limits(src_lengths, max_len, max_len_a, max_len_b)
    early_stop = check_flag(early_stop, "early_stop")
    check_precision(params)
    B, K, max_len, length_penalty = src.shape[0], int(beam_size), int(max_len), float(length_penalty)
    dtype = np.dtype(params["output/b"].dtype)
    # on the host in float64, then rounded once to the scores' dtype (the parameters')
    best_bound = length_normaliser(limits.astype(np.float64), length_penalty).astype(dtype)
    memory, states = _encode(params, config, src, src_lengths, K, spans(config, max_len)[0])
    ids = jax.dtypes.canonicalize_dtype(src.dtype)
    state = BeamState(jnp.int32(0), jnp.full((B, K), -jnp.inf, dtype).at[:, 0].set(0.0),
                      jnp.full((B, K, max_len), config.pad_id, ids), jnp.zeros((B,), ids), jnp.zeros((B,), bool),
                      jnp.full((B, K), -jnp.inf, dtype), jnp.full((B, K, max_len), config.pad_id, ids),
                      jnp.asarray(limits.astype(np.int32)), jnp.asarray(best_bound),
                      jnp.full((B * K,), config.bos_id, ids), states)
    # the final sets, sentence by sentence as they leave the working batch
    out = {name: np.asarray(getattr(state, name)).copy()
           for name in ("finished_scores", "finished_tokens", "live_log_p", "live_tokens", "live_length")}

    def emit(state, rows, sentences):
        for name, values in out.items():
            values[sentences] = np.asarray(getattr(state, name))[rows]

    _decode(partial(_beam_run, params, config, length_penalty=length_penalty, early_stop=early_stop), state, memory,
            config, max_len, K, emit)
    return ranked_hypotheses(**out, length_penalty=length_penalty)  # the reference's ranking, on the host
