"""Greedy decoding and beam search."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from seq2seq_ref import ModelConfig, init_params
from seq2seq_ref.decode import beam_search, greedy_decode, length_normaliser, step_log_probs, encode
from tests.helpers import float64_params, ragged_batch


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


@pytest.mark.parametrize("attention", ["none", "bahdanau", "luong"])
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


@given(st.sampled_from(["none", "bahdanau", "luong"]), st.booleans(), st.integers(0, 10_000))
def test_beam_of_one_equals_greedy(attention, bidirectional, seed):
    config = ModelConfig(9, 8, 3, 4, attention=attention, bidirectional=bidirectional)
    params = float64_params(config, seed, scale=1.0)
    batch = ragged_batch(config, np.random.default_rng(seed))
    tokens, _ = greedy_decode(params, config, batch.src, batch.src_lengths, max_len=7)
    beams, scores = beam_search(params, config, batch.src, batch.src_lengths, beam_size=1, max_len=7)
    np.testing.assert_array_equal(beams[:, 0], tokens)


@pytest.mark.parametrize("length_penalty", [0.0, 0.6])
def test_beam_hypotheses_are_sorted_end_at_eos_and_score_their_tokens(length_penalty, rng):
    config = ModelConfig(9, 8, 3, 4, attention="luong", num_layers=2)
    params = float64_params(config, scale=1.0)
    batch = ragged_batch(config, rng)
    beams, scores = beam_search(params, config, batch.src, batch.src_lengths, 3, 8, length_penalty)
    assert beams.shape == (3, 3, 8) and scores.shape == (3, 3)
    assert np.all(np.diff(scores, axis=1) <= 0)
    for row in range(3):
        assert len({tuple(h) for h in beams[row]}) == 3  # distinct hypotheses
        for hyp, score in zip(beams[row], scores[row]):
            ends = np.flatnonzero(hyp == config.eos_id)
            n = ends[0] + 1 if len(ends) else len(hyp)
            assert np.all(hyp[n:] == config.pad_id)
            # rescore the hypothesis by teacher forcing it one step at a time
            memory, states = encode(params, config, batch.src[row:row + 1], batch.src_lengths[row:row + 1])
            total, previous = 0.0, config.bos_id
            for token in hyp[:n]:
                log_p, states, _ = step_log_probs(params, config, np.array([previous]), states, memory)
                total += log_p[0, token]
                previous = token
            assert np.isclose(score, total / length_normaliser(n, length_penalty), rtol=1e-10)


def test_wider_beam_finds_at_least_as_likely_a_hypothesis(rng):
    config = ModelConfig(9, 8, 3, 4, attention="bahdanau")
    params = float64_params(config, scale=1.0)
    batch = ragged_batch(config, rng)
    _, narrow = beam_search(params, config, batch.src, batch.src_lengths, 1, 6)
    _, wide = beam_search(params, config, batch.src, batch.src_lengths, 4, 6)
    assert np.all(wide[:, 0] >= narrow[:, 0] - 1e-12)


def test_decoding_in_float32(rng):
    config = ModelConfig(9, 8, 3, 4)
    params = init_params(config, 0)
    batch = ragged_batch(config, rng)
    _, weights = greedy_decode(params, config, batch.src, batch.src_lengths, 4)
    _, scores = beam_search(params, config, batch.src, batch.src_lengths, 2, 4)
    assert weights.dtype == np.float32 and scores.dtype == np.float32
