"""Compiled greedy decoding and beam search: one XLA program each, a lax.while_loop over positions.

The same algorithm as seq2seq_ref.decode, tie-breaking included: argmax takes
the lowest token id; lax.top_k, like the reference's stable sort, puts the
lower flat index beam * V + token first among equal scores.
"""
from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from jax import lax

from seq2seq_ref.decode import length_normaliser
from seq2seq_ref.validation import check_decode_inputs

from .models import Seq2Seq
from .params import check_precision


def _unfinished(carry, max_len):
    """while_loop condition: both decoders keep the step in carry[0] and the finished flags in carry[4]."""
    return (carry[0] < max_len) & ~jnp.all(carry[4])


@partial(jax.jit, static_argnames=("config", "max_len"))
def _greedy(params, config, src, src_lengths, max_len):
    model = Seq2Seq(config, params)
    memory, states = model.encode(src, src_lengths)
    B, S = src.shape
    dtype = memory.keys.dtype

    def body(carry):
        t, tokens, weights, previous, finished, states = carry
        log_p, states, alpha = model.step_log_probs(previous, states, memory)
        token = jnp.where(finished, config.pad_id, jnp.argmax(log_p, axis=-1))
        tokens = tokens.at[:, t].set(token)
        if alpha is not None:
            weights = weights.at[:, t].set(jnp.where(finished[:, None], 0.0, alpha))
        return t + 1, tokens, weights, token, finished | (token == config.eos_id), states

    carry = (0, jnp.full((B, max_len), config.pad_id, src.dtype), jnp.zeros((B, max_len, S), dtype),
             jnp.full((B,), config.bos_id, src.dtype), jnp.zeros((B,), bool), states)
    _, tokens, weights, *_ = lax.while_loop(partial(_unfinished, max_len=max_len), body, carry)
    return tokens, weights


def greedy_decode(params, config, src, src_lengths, max_len):
    """As seq2seq_ref.decode.greedy_decode: tokens int[B, max_len], attention [B, max_len, S] or None."""
    src, src_lengths = check_decode_inputs(params, config, src, src_lengths, max_len)
    check_precision(params)
    tokens, weights = _greedy(params, config, src, src_lengths, int(max_len))
    return tokens, (None if config.attention == "none" else weights)


@partial(jax.jit, static_argnames=("config", "beam_size", "max_len", "length_penalty"))
def _beam_search(params, config, src, src_lengths, beam_size, max_len, length_penalty):
    model = Seq2Seq(config, params)
    memory, states = model.encode(src, src_lengths)
    B, K, V = src.shape[0], beam_size, config.tgt_vocab_size
    memory = jax.tree.map(lambda m: jnp.repeat(m, K, axis=0), memory)
    states = jax.tree.map(lambda s: jnp.repeat(s, K, axis=0), states)
    dtype = memory.keys.dtype
    extend_finished = jnp.full((V,), -jnp.inf, dtype).at[config.pad_id].set(0.0)
    rows = jnp.arange(B)[:, None]

    def body(carry):
        t, log_probs, tokens, lengths, finished, states, previous = carry
        step, states, _ = model.step_log_probs(previous, states, memory)
        step = jnp.where(finished[..., None], extend_finished, step.reshape(B, K, V))
        candidates = (log_probs[..., None] + step).reshape(B, K * V)
        log_probs, best = lax.top_k(candidates, K)
        beam, token = best // V, (best % V).astype(tokens.dtype)
        tokens = tokens[rows, beam].at[:, :, t].set(token)
        was_finished = finished[rows, beam]
        lengths = lengths[rows, beam] + (~was_finished).astype(lengths.dtype)
        source_rows = (rows * K + beam).reshape(-1)
        states = jax.tree.map(lambda s: s[source_rows], states)
        return t + 1, log_probs, tokens, lengths, was_finished | (token == config.eos_id), states, token.reshape(-1)

    carry = (0, jnp.full((B, K), -jnp.inf, dtype).at[:, 0].set(0.0),
             jnp.full((B, K, max_len), config.pad_id, src.dtype), jnp.zeros((B, K), src.dtype),
             jnp.zeros((B, K), bool), states, jnp.full((B * K,), config.bos_id, src.dtype))
    _, log_probs, tokens, lengths, *_ = lax.while_loop(partial(_unfinished, max_len=max_len), body, carry)
    scores = (log_probs / length_normaliser(lengths.astype(dtype), length_penalty)).astype(dtype)
    order = jnp.argsort(-scores, axis=1, stable=True)
    return tokens[rows, order], jnp.take_along_axis(scores, order, axis=1)


def beam_search(params, config, src, src_lengths, beam_size, max_len, length_penalty=0.0):
    """As seq2seq_ref.decode.beam_search: tokens int[B, beam, max_len], scores [B, beam], best first."""
    src, src_lengths = check_decode_inputs(params, config, src, src_lengths, max_len, beam_size, length_penalty)
    check_precision(params)
    return _beam_search(params, config, src, src_lengths, int(beam_size), int(max_len), float(length_penalty))
