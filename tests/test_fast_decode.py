"""The per-sentence length limit (MATH.md (N3)) and its stopping bound (N2), on both backends."""
import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from hypothesis import example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import seq2seq_jax  # noqa: E402
from seq2seq_ref.decode import beam_search, greedy_decode, length_limits  # noqa: E402
from tests.helpers import ATTENTIONS, DECODER_NAMES, config_with_heads, float64_params, ragged_batch  # noqa: E402

MAX_LEN = 9


def problem(seed, attention, decoder):
    config = config_with_heads(src_vocab_size=9, tgt_vocab_size=8, embed_dim=4, hidden_dim=4, attention=attention,
                               decoder=decoder)
    params = float64_params(config, seed, scale=1.0)
    return config, params, ragged_batch(config, np.random.default_rng(seed), batch_size=4, src_len=6)


def test_length_limits_follow_fairseq_and_stay_within_max_len():
    lengths = np.array([1, 4, 10])
    np.testing.assert_array_equal(length_limits(lengths, 12), [12, 12, 12])  # off: the global cap
    np.testing.assert_array_equal(length_limits(lengths, 12, 1.5, 2), [3, 8, 12])  # floor(1.5 |x| + 2), capped
    np.testing.assert_array_equal(length_limits(lengths, 12, 0.5), [1, 2, 5])  # b unset counts as 0; at least 1
    np.testing.assert_array_equal(length_limits(lengths, 12, max_len_b=10**30), [12, 12, 12])


@pytest.mark.parametrize("name,value", [("max_len_a", -1.0), ("max_len_a", float("nan")), ("max_len_a", True),
                                        ("max_len_a", "2"), ("max_len_b", -1), ("max_len_b", 2.5)])
def test_bad_length_limits_are_refused_before_decoding(name, value):
    config, params, batch = problem(0, "bahdanau", "lstm")
    for decode in (greedy_decode, seq2seq_jax.greedy_decode):
        with pytest.raises(ValueError, match=f"^{name}: expected"):
            decode(params, config, batch.src, batch.src_lengths, MAX_LEN, **{name: value})
    with pytest.raises(ValueError, match=f"^{name}: expected"):
        beam_search(params, config, batch.src, batch.src_lengths, 2, MAX_LEN, **{name: value})


@settings(max_examples=5, deadline=None)
@given(st.integers(0, 10_000), st.sampled_from(ATTENTIONS), st.sampled_from(DECODER_NAMES),
       st.floats(0.0, 1.5), st.integers(0, 4), st.sampled_from([0.0, 0.6, 1.4]))
def test_a_length_limit_is_decoding_the_sentence_alone_with_that_cap(seed, attention, decoder, a, b, alpha):
    """Row s under the limit n_s equals row s decoded alone with max_len = n_s: the limit bounds the length
    and tightens the stop (N2) to lp(n_s), and neither depends on the batch; the JAX twin agrees."""
    config, params, batch = problem(seed, attention, decoder)
    limits = length_limits(batch.src_lengths, MAX_LEN, a, b)
    tokens, _ = greedy_decode(params, config, batch.src, batch.src_lengths, MAX_LEN, max_len_a=a, max_len_b=b)
    hyps, scores = beam_search(params, config, batch.src, batch.src_lengths, 3, MAX_LEN, alpha,
                               max_len_a=a, max_len_b=b)
    for row, n in enumerate(limits):
        src, length = batch.src[row:row + 1], batch.src_lengths[row:row + 1]
        alone, _ = greedy_decode(params, config, src, length, int(n))
        np.testing.assert_array_equal(tokens[row, :n], alone[0])
        assert np.all(tokens[row, n:] == config.pad_id)
        alone_hyps, alone_scores = beam_search(params, config, src, length, 3, int(n), alpha)
        np.testing.assert_array_equal(hyps[row, :, :n], alone_hyps[0])
        assert np.all(hyps[row, :, n:] == config.pad_id)
        np.testing.assert_allclose(scores[row], alone_scores[0], rtol=1e-12)
    jax_tokens, _ = seq2seq_jax.greedy_decode(params, config, batch.src, batch.src_lengths, MAX_LEN,
                                              max_len_a=a, max_len_b=b)
    np.testing.assert_array_equal(np.asarray(jax_tokens), tokens)
    jax_hyps, jax_scores = seq2seq_jax.beam_search(params, config, batch.src, batch.src_lengths, 3, MAX_LEN, alpha,
                                                   max_len_a=a, max_len_b=b)
    np.testing.assert_array_equal(np.asarray(jax_hyps), hyps)
    np.testing.assert_allclose(np.asarray(jax_scores), scores, rtol=1e-12, atol=1e-13)


def test_the_limit_off_is_the_global_cap():
    """Unset (the default) and a = 0, b = max_len give max_len to every sentence: today's decoding."""
    config, params, batch = problem(3, "multihead", "transformer")
    default = beam_search(params, config, batch.src, batch.src_lengths, 3, MAX_LEN, 1.4)
    explicit = beam_search(params, config, batch.src, batch.src_lengths, 3, MAX_LEN, 1.4, max_len_a=0.0,
                           max_len_b=MAX_LEN)
    for got, want in zip(explicit, default):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("decoder,attention", [("transformer", "multihead"), ("lstm", "bahdanau")])
def test_jax_shrinks_the_batch_as_sentences_finish_and_changes_no_result(decoder, attention, monkeypatch):
    """40 sentences of many lengths: the compiled loop hands the finished ones out and goes on with the live
    ones in smaller batches (seen happening), and every sentence's tokens, weights and scores are the
    reference's, which shrinks its own way (by any done quarter)."""
    import seq2seq_jax.decode as jax_decode

    shrinks = []
    real_shrink = jax_decode._shrink
    monkeypatch.setattr(jax_decode, "_shrink", lambda state, memory, keep, *rest: (
        shrinks.append((len(state.done), len(keep))), real_shrink(state, memory, keep, *rest))[1])
    config = config_with_heads(src_vocab_size=12, tgt_vocab_size=7, embed_dim=4, hidden_dim=4, attention=attention,
                               decoder=decoder)
    params = float64_params(config, 5, scale=1.0)
    params["output/b"][config.eos_id] += 1.5  # most sentences end within the 20 steps, at many lengths
    batch = ragged_batch(config, np.random.default_rng(5), batch_size=40, src_len=8)
    tokens, weights = greedy_decode(params, config, batch.src, batch.src_lengths, 20)
    jax_tokens, jax_weights = seq2seq_jax.greedy_decode(params, config, batch.src, batch.src_lengths, 20)
    np.testing.assert_array_equal(jax_tokens, tokens)
    if weights is not None:
        np.testing.assert_allclose(jax_weights, weights, rtol=1e-10, atol=1e-13)
    for early_stop in (False, True):
        hyps, scores = beam_search(params, config, batch.src, batch.src_lengths, 3, 20, 1.4, early_stop=early_stop)
        jax_hyps, jax_scores = seq2seq_jax.beam_search(params, config, batch.src, batch.src_lengths, 3, 20, 1.4,
                                                       early_stop=early_stop)
        np.testing.assert_array_equal(jax_hyps, hyps)
        np.testing.assert_allclose(jax_scores, scores, rtol=1e-12)
    assert shrinks and all(new < old for old, new in shrinks), shrinks


@settings(max_examples=4, deadline=None)
@given(st.integers(0, 10_000), st.sampled_from(ATTENTIONS), st.sampled_from(DECODER_NAMES), st.sampled_from([0.0, 1.4]))
@example(52, "none", "lstm", 1.4)
def test_early_stop_ends_a_search_once_its_finished_set_is_full(seed, attention, decoder, alpha):
    """(N4): the same search, cut where beam_size hypotheses have finished; the exact stop (N2) only runs it on,
    so its best score is never below the early one's; the two backends agree."""
    config, params, batch = problem(seed, attention, decoder)
    exact, exact_scores = beam_search(params, config, batch.src, batch.src_lengths, 2, MAX_LEN, alpha)
    early, early_scores = beam_search(params, config, batch.src, batch.src_lengths, 2, MAX_LEN, alpha,
                                      early_stop=True)
    assert np.all(exact_scores[:, 0] >= early_scores[:, 0])
    for row, hyps in enumerate(early.tolist()):
        if all(config.eos_id in hyp for hyp in hyps):  # a full finished set, complete at the longest one's EOS
            stop = max(hyp.index(config.eos_id) for hyp in hyps) + 1
            cut, cut_scores = beam_search(params, config, batch.src[row:row + 1], batch.src_lengths[row:row + 1], 2,
                                          stop, alpha)
            # the best hypothesis only: with max_len = stop the exact stop (N2) may end the cut search before
            # stop, its best proven, where its runners-up are still unfinished (seed 52: [6], not [4, EOS])
            np.testing.assert_array_equal(cut[0, 0], early[row, 0, :stop])
            np.testing.assert_allclose(cut_scores[0, 0], early_scores[row, 0], rtol=1e-12)
    jax_early, jax_scores = seq2seq_jax.beam_search(params, config, batch.src, batch.src_lengths, 2, MAX_LEN, alpha,
                                                    early_stop=True)
    np.testing.assert_array_equal(np.asarray(jax_early), early)
    np.testing.assert_allclose(np.asarray(jax_scores), early_scores, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("value", [1, "yes", None])
def test_early_stop_takes_a_bool_only(value):
    config, params, batch = problem(0, "luong", "gru")
    for search in (beam_search, seq2seq_jax.beam_search):
        with pytest.raises(ValueError, match="^early_stop: expected True or False"):
            search(params, config, batch.src, batch.src_lengths, 2, MAX_LEN, early_stop=value)
