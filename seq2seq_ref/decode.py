"""Greedy decoding and beam search (MATH.md, "Decoding").

Both feed back their own predictions one step at a time through
decoder_step_forward.  pad and bos are never generated.  Ties go to the lower
token id (greedy) and to the lower flat index beam * V + token (beam search);
the JAX twin breaks them the same way.
"""
from __future__ import annotations

import numpy as np

from .batch import length_mask
from .decoder import Memory, decoder_step_forward, make_memory
from .encoder import encoder_forward
from .layers import log_softmax
from .validation import check_decode_inputs


def encode(params, config, src, src_lengths):
    """Returns the decoder's Memory and its initial states (L pairs (h, c))."""
    x = params["src_embed/W"][src]
    keys, states, _ = encoder_forward(x, src_lengths, params, config, {})
    return make_memory(keys, length_mask(src_lengths, src.shape[1]), params, config), states


def step_log_probs(params, config, tokens, states, memory: Memory):
    """log p(next token | prefix) [N, V] for N prefixes ending in tokens int[N]; new states; alpha."""
    y = params["tgt_embed/W"][tokens]
    feature, states, alpha, _ = decoder_step_forward(
        y, states, memory, np.ones(len(tokens), dtype=bool), params, config
    )
    log_p = log_softmax(feature @ params["output/W"] + params["output/b"])
    log_p[:, [config.pad_id, config.bos_id]] = -np.inf
    return log_p, states, alpha


def greedy_decode(params, config, src, src_lengths, max_len):
    """Pick the most likely token at every step until EOS or max_len.

    src: int[B, S], src_lengths: int[B], max_len: int >= 1
    Returns tokens int[B, max_len] (EOS included, pad after it) and the
    attention weights [B, max_len, S] (0 after EOS), or None without attention.
    """
    src, src_lengths = check_decode_inputs(params, config, src, src_lengths, max_len)
    memory, states = encode(params, config, src, src_lengths)
    B, S = src.shape
    tokens = np.full((B, max_len), config.pad_id, dtype=np.int64)
    weights = None if config.attention == "none" else np.zeros((B, max_len, S), dtype=memory.keys.dtype)
    previous = np.full(B, config.bos_id)
    finished = np.zeros(B, dtype=bool)
    for t in range(max_len):
        log_p, states, alpha = step_log_probs(params, config, previous, states, memory)
        previous = np.where(finished, config.pad_id, log_p.argmax(axis=1))
        tokens[:, t] = previous
        if weights is not None:
            weights[:, t] = np.where(finished[:, None], 0.0, alpha)
        finished |= previous == config.eos_id
        if finished.all():
            break
    return tokens, weights


def length_normaliser(lengths, length_penalty):
    """GNMT's lp(Y) = ((5 + |Y|) / 6) ** alpha (Wu et al. 2016); alpha = 0 leaves scores as log-probabilities."""
    return ((5.0 + lengths) / 6.0) ** length_penalty


def beam_search(params, config, src, src_lengths, beam_size, max_len, length_penalty=0.0):
    """Keep the beam_size most likely prefixes per sentence until all end in EOS or max_len.

    A finished hypothesis keeps its slot and its log-probability (it extends
    with pad at no cost), so it competes with the live ones until the end.
    Final score = log p(Y) / lp(|Y|), |Y| counting EOS.
    Returns tokens int[B, beam_size, max_len] and scores [B, beam_size],
    best first.
    """
    src, src_lengths = check_decode_inputs(params, config, src, src_lengths, max_len, beam_size, length_penalty)
    memory, states = encode(params, config, src, src_lengths)
    B, K, V = src.shape[0], beam_size, config.tgt_vocab_size
    memory = Memory(*(None if m is None else np.repeat(m, K, axis=0) for m in memory))
    states = [(np.repeat(h, K, axis=0), np.repeat(c, K, axis=0)) for h, c in states]

    dtype = memory.keys.dtype
    log_probs = np.full((B, K), -np.inf, dtype=dtype)
    log_probs[:, 0] = 0.0  # one live start per sentence, so the first step's K picks differ
    tokens = np.full((B, K, max_len), config.pad_id, dtype=np.int64)
    lengths = np.zeros((B, K), dtype=np.int64)
    finished = np.zeros((B, K), dtype=bool)
    extend_finished = np.full(V, -np.inf, dtype=dtype)
    extend_finished[config.pad_id] = 0.0
    previous = np.full(B * K, config.bos_id)
    rows = np.arange(B)[:, None]
    for t in range(max_len):
        step, states, _ = step_log_probs(params, config, previous, states, memory)
        step = np.where(finished[..., None], extend_finished, step.reshape(B, K, V))
        candidates = (log_probs[..., None] + step).reshape(B, K * V)
        best = np.argsort(-candidates, axis=1, kind="stable")[:, :K]  # ties: lower flat index first
        beam, token = best // V, best % V
        log_probs = np.take_along_axis(candidates, best, axis=1)
        tokens = tokens[rows, beam]
        tokens[:, :, t] = token
        was_finished = finished[rows, beam]
        lengths = lengths[rows, beam] + ~was_finished
        finished = was_finished | (token == config.eos_id)
        source_rows = (rows * K + beam).reshape(-1)
        states = [(h[source_rows], c[source_rows]) for h, c in states]
        previous = token.reshape(-1)
        if finished.all():
            break
    scores = (log_probs / length_normaliser(lengths, length_penalty)).astype(dtype)
    order = np.argsort(-scores, axis=1, kind="stable")
    return tokens[rows, order], np.take_along_axis(scores, order, axis=1)
