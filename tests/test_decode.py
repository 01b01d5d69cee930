"""Greedy decoding and beam search."""
import inspect
import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import seq2seq_ref
from seq2seq_ref import ModelConfig, init_params
from seq2seq_ref.decode import (
    DEFAULT_LENGTH_PENALTY, beam_search, best_candidates, encode, greedy_decode, length_normaliser, rank_candidates,
    step_log_probs,
)
from tests.helpers import ATTENTIONS, DECODER_NAMES, ENCODER_NAMES, config_with_heads, float64_params, ragged_batch


def test_greedy_stops_at_eos(rng):
    config = ModelConfig(9, 8, 3, 4, attention="bahdanau")
    params = float64_params(config)
    params["output/W"][:] = 0
    params["output/b"][:] = 0
    params["output/b"][5] = 5.0
    batch = ragged_batch(config, rng)
    tokens, _ = greedy_decode(params, config, batch.src, batch.src_lengths, max_len=6)
    assert np.all(tokens == 5)  # never ends: runs to max_len
    params["output/b"][config.eos_id] = 10.0
    tokens, weights = greedy_decode(params, config, batch.src, batch.src_lengths, max_len=6)
    assert np.all(tokens[:, 0] == config.eos_id) and np.all(tokens[:, 1:] == config.pad_id)
    assert np.all(weights[:, 1:] == 0)


@pytest.mark.parametrize("attention", ATTENTIONS)
def test_greedy_picks_the_argmax_and_never_pad_or_bos(attention, rng):
    config = ModelConfig(9, 8, 3, 4, attention=attention, bidirectional=True)
    params = float64_params(config)
    params["output/b"][[config.pad_id, config.bos_id]] = 100.0  # the model would love them
    batch = ragged_batch(config, rng)
    tokens, weights = greedy_decode(params, config, batch.src, batch.src_lengths, max_len=5)
    assert not np.isin(tokens[:, 0], [config.pad_id, config.bos_id]).any()
    assert (weights is None) == (attention == "none")
    if weights is not None:
        src_pad = np.arange(batch.src.shape[1])[None, None, :] >= batch.src_lengths[:, None, None]
        assert np.all(weights[np.broadcast_to(src_pad, weights.shape)] == 0)
    memory, states = encode(params, config, batch.src, batch.src_lengths)
    log_p, _, _ = step_log_probs(params, config, np.full(len(batch.src), config.bos_id), states, memory)
    assert np.array_equal(tokens[:, 0], log_p.argmax(1))


@given(st.sampled_from(ATTENTIONS), st.booleans(), st.integers(0, 10_000), st.sampled_from(ENCODER_NAMES),
       st.sampled_from(DECODER_NAMES))
def test_beam_of_one_equals_greedy(attention, bidirectional, seed, encoder, decoder):
    config = config_with_heads(src_vocab_size=9, tgt_vocab_size=8, embed_dim=3, hidden_dim=4, attention=attention,
                               bidirectional=bidirectional, encoder=encoder, decoder=decoder)
    params = float64_params(config, seed, scale=1.0)
    batch = ragged_batch(config, np.random.default_rng(seed))
    tokens, _ = greedy_decode(params, config, batch.src, batch.src_lengths, max_len=7)
    beams, scores = beam_search(params, config, batch.src, batch.src_lengths, beam_size=1, max_len=7,
                                length_penalty=0.0)  # alpha > 0 may prefer a longer finish than greedy's
    np.testing.assert_array_equal(beams[:, 0], tokens)


def rescore(params, config, src, src_length, hypothesis):
    """log p(hypothesis | src) by teacher forcing it one step at a time, and its length (EOS counted; an
    unfinished hypothesis ends where its padding starts)."""
    ends, pads = np.flatnonzero(hypothesis == config.eos_id), np.flatnonzero(hypothesis == config.pad_id)
    n = ends[0] + 1 if len(ends) else pads[0] if len(pads) else len(hypothesis)
    memory, states = encode(params, config, src[None], np.array([src_length]))
    total, previous = 0.0, config.bos_id
    for token in hypothesis[:n]:
        log_p, states, _ = step_log_probs(params, config, np.array([previous]), states, memory)
        total += log_p[0, token]
        previous = token
    return total, n


def is_finished(config, hypothesis):
    return config.eos_id in hypothesis.tolist()


@pytest.mark.parametrize("length_penalty", [0.0, 0.6])
def test_beam_hypotheses_are_ranked_end_at_eos_and_score_their_tokens(length_penalty, rng):
    config = ModelConfig(9, 8, 3, 4, attention="luong", num_layers=2)
    params = float64_params(config, scale=1.0)
    batch = ragged_batch(config, rng)
    beams, scores = beam_search(params, config, batch.src, batch.src_lengths, 3, 8, length_penalty)
    assert beams.shape == (3, 3, 8) and scores.shape == (3, 3)
    for row in range(3):
        assert len({tuple(h) for h in beams[row]}) == 3  # distinct hypotheses
        finished = [is_finished(config, h) for h in beams[row]]
        assert finished == sorted(finished, reverse=True)  # finished ones first, then those cut off
        for group in (True, False):
            group_scores = [s for s, f in zip(scores[row], finished) if f == group]
            assert group_scores == sorted(group_scores, reverse=True)
        for hyp, score in zip(beams[row], scores[row]):
            total, n = rescore(params, config, batch.src[row], batch.src_lengths[row], hyp)
            assert np.all(hyp[n:] == config.pad_id)
            assert np.isclose(score, total / length_normaliser(n, length_penalty), rtol=1e-10)


def test_a_finished_hypothesis_is_never_lost():
    # The reproduction of issue 9: after step 1 the beam held [EOS] at -2.41; the old search dropped it
    # for [7, 6, 7, 6, 7, 6, 7, 6] at -7.62, which has no EOS at all.
    config = ModelConfig(9, 8, 3, 4, attention="bahdanau")
    params = float64_params(config, 11, scale=1.0)
    batch = ragged_batch(config, np.random.default_rng(11))
    first, first_scores = beam_search(params, config, batch.src, batch.src_lengths, 3, 1, length_penalty=0.0)
    assert first[0, 0].tolist() == [config.eos_id] and np.isclose(first_scores[0, 0], -2.41466092)
    beams, scores = beam_search(params, config, batch.src, batch.src_lengths, 3, 8, length_penalty=0.0)
    assert is_finished(config, beams[0, 0]) and scores[0, 0] >= first_scores[0, 0]


@given(st.sampled_from(ATTENTIONS), st.integers(0, 10_000), st.integers(1, 4),
       st.sampled_from([0.0, 0.6]))
def test_the_best_finished_hypothesis_never_gets_worse_with_max_len(attention, seed, beam_size, length_penalty):
    config = ModelConfig(9, 8, 3, 4, attention=attention)
    params = float64_params(config, seed, scale=1.0)
    batch = ragged_batch(config, np.random.default_rng(seed))
    best = np.full(len(batch.src), -np.inf)
    for max_len in range(1, 8):
        beams, scores = beam_search(params, config, batch.src, batch.src_lengths, beam_size, max_len, length_penalty)
        for row in range(len(batch.src)):
            if is_finished(config, beams[row, 0]):
                assert scores[row, 0] >= best[row] - 1e-12
                best[row] = scores[row, 0]
            else:
                assert best[row] == -np.inf  # once something finished, the answer is finished


@given(st.sampled_from(ATTENTIONS), st.integers(0, 10_000), st.integers(1, 3),
       st.sampled_from([0.0, 0.6]))
def test_exhaustive_search_is_at_least_as_good_as_beam(attention, seed, beam_size, length_penalty):
    config = ModelConfig(9, 5, 3, 4, attention=attention)  # tokens: EOS and two others
    params = float64_params(config, seed, scale=1.0)
    batch = ragged_batch(config, np.random.default_rng(seed), batch_size=2)
    max_len = 4
    beams, scores = beam_search(params, config, batch.src, batch.src_lengths, beam_size, max_len, length_penalty)
    words = [t for t in range(config.tgt_vocab_size) if t not in (config.pad_id, config.bos_id, config.eos_id)]
    for row in range(2):
        best = -np.inf
        for n in range(max_len):  # n words, then EOS
            for prefix in itertools.product(words, repeat=n):
                total, length = rescore(params, config, batch.src[row], batch.src_lengths[row],
                                        np.array([*prefix, config.eos_id]))
                best = max(best, total / length_normaliser(length, length_penalty))
        if is_finished(config, beams[row, 0]):
            assert best >= scores[row, 0] - 1e-12
        if beam_size == 1 and length_penalty == 0.0:
            greedy, _ = greedy_decode(params, config, batch.src[row:row + 1], batch.src_lengths[row:row + 1], max_len)
            np.testing.assert_array_equal(beams[row, 0], greedy[0])


def test_both_libraries_search_with_the_clis_length_penalty_by_default(rng):
    seq2seq_jax = pytest.importorskip("seq2seq_jax")
    assert DEFAULT_LENGTH_PENALTY == 0.6 and seq2seq_ref.DEFAULT_LENGTH_PENALTY == DEFAULT_LENGTH_PENALTY
    assert inspect.signature(seq2seq_jax.beam_search).parameters["length_penalty"].default == DEFAULT_LENGTH_PENALTY
    config = ModelConfig(9, 8, 3, 4, attention="luong")
    params = float64_params(config, scale=1.0)
    batch = ragged_batch(config, rng)
    _, scores = beam_search(params, config, batch.src, batch.src_lengths, 3, 8)
    _, expected = beam_search(params, config, batch.src, batch.src_lengths, 3, 8, DEFAULT_LENGTH_PENALTY)
    _, unpenalised = beam_search(params, config, batch.src, batch.src_lengths, 3, 8, 0.0)
    np.testing.assert_array_equal(scores, expected)
    assert not np.array_equal(scores, unpenalised)


def test_beam_of_one_breaks_float32_ties_as_greedy_does(rng):
    # Adding the prefix's log-probability rounds log p(3) and log p(4) = log p(3) + 6e-8 to one float32 sum;
    # greedy's argmax still sees 4 as better, and so must beam 1.
    config = ModelConfig(9, 8, 3, 4, attention="bahdanau")
    params = init_params(config, 0)
    params["output/W"][:] = 0
    params["output/b"][:] = 0
    params["output/b"][3] = 1.0
    params["output/b"][4] = np.nextafter(np.float32(1.0), np.float32(2.0))
    batch = ragged_batch(config, rng)
    tokens, _ = greedy_decode(params, config, batch.src, batch.src_lengths, 5)
    beams, _ = beam_search(params, config, batch.src, batch.src_lengths, 1, 5, length_penalty=0.0)
    assert np.all(tokens == 4)
    np.testing.assert_array_equal(beams[:, 0], tokens)


def test_decoding_in_float32(rng):
    config = ModelConfig(9, 8, 3, 4)
    params = init_params(config, 0)
    batch = ragged_batch(config, rng)
    _, weights = greedy_decode(params, config, batch.src, batch.src_lengths, 4)
    _, scores = beam_search(params, config, batch.src, batch.src_lengths, 2, 4)
    assert weights.dtype == np.float32 and scores.dtype == np.float32


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 12), st.integers(1, 40), st.sampled_from([0.5, 1.0, 8.0]))
def test_the_shortlist_ranks_every_row_as_the_full_ranking(seed, count, shortlist, spread):
    """best_candidates equals rank_candidates' first places row by row: rows whose ties (coarse rounding) or
    -inf cross the shortlist's cut are ranked in full, the others on the shortlist."""
    rng = np.random.default_rng(seed)
    candidates = np.round(-np.abs(rng.standard_normal((6, 60))) * spread) / spread
    candidates[rng.random((6, 60)) < 0.2] = -np.inf
    step = np.round(rng.standard_normal((6, 60)))
    np.testing.assert_array_equal(best_candidates(candidates, step, count, max(shortlist, count)),
                                  rank_candidates(candidates, step)[:, :count])
