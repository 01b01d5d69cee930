"""Bad input is refused up front with a ValueError naming the argument, the expectation and the value."""
import re

import numpy as np
import pytest

from seq2seq_ref import ModelConfig, init_params, loss_and_grads, make_batch
from seq2seq_ref.registry import CONNECTIONS, DECODERS, ENCODERS
from seq2seq_ref.decode import beam_search, greedy_decode
from seq2seq_ref.validation import check_decode_args

CONFIG = ModelConfig(9, 8, 3, 4, attention="luong")


@pytest.fixture
def good():
    params = init_params(CONFIG, 0, np.float64)
    batch = make_batch([[3, 4, 5], [6]], [[3, 4], [5, 6, 7]], CONFIG)
    return params, batch


def _batch(batch, **changes):
    return batch._replace(**changes)


@pytest.mark.parametrize("kwargs,match", [
    # the names offered are the registries' (a new cell or connection changes them, not this test)
    (dict(attention="dot"), rf"attention: expected one of {re.escape(str(tuple(CONNECTIONS)))}, got 'dot'"),
    (dict(encoder="rnn"), rf"encoder: expected one of {re.escape(str(tuple(ENCODERS)))}, got 'rnn'"),
    (dict(decoder="rnn"), rf"decoder: expected one of {re.escape(str(tuple(DECODERS)))}, got 'rnn'"),
    (dict(decoder="transformer", embed_dim=4), r"attention: expected 'multihead' with decoder='transformer'"),
    (dict(decoder="transformer", embed_dim=4, attention="multihead", input_feeding=True),
     r"input_feeding: expected False with decoder='transformer'"),
    (dict(encoder="transformer"), r"embed_dim: expected hidden_dim \(4\) with encoder='transformer'.*got 3"),
    (dict(encoder="transformer", embed_dim=4, bidirectional=True), r"bidirectional: expected False with "
                                                                     r"encoder='transformer'"),
    (dict(encoder="transformer", embed_dim=4, num_heads=3), r"num_heads: expected a divisor of hidden_dim \(4\) "
                                                            r"with encoder='transformer', got 3"),
    (dict(encoder="transformer", embed_dim=4, ffn_dim=0), r"ffn_dim: expected an int >= 1, got 0"),
    (dict(max_positions=0), r"max_positions: expected an int >= 1, got 0"),
    (dict(attention="multihead", num_heads=3), r"num_heads: expected a divisor of hidden_dim \(4\), got 3"),
    (dict(attention="luong", num_heads=2), r"num_heads: expected 1 with attention='luong'"),
    (dict(num_heads=0), r"num_heads: expected an int >= 1, got 0"),
    (dict(hidden_dim=0), r"hidden_dim: expected an int >= 1, got 0"),
    (dict(hidden_dim=4.0), r"hidden_dim: expected an int >= 1, got 4.0"),
    (dict(num_layers=True), r"num_layers: expected an int >= 1, got True"),
    (dict(dropout=1.0), r"dropout: expected a float in \[0, 1\), got 1.0"),
    (dict(label_smoothing=-0.1), r"label_smoothing: expected a float in \[0, 1\), got -0.1"),
    (dict(eos_id=9), r"eos_id: expected an id below both vocabulary sizes \(8\), got 9"),
    (dict(eos_id=0), r"three distinct ids"),
    (dict(bidirectional="yes"), r"bidirectional: expected a bool, got 'yes'"),
])
def test_bad_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ModelConfig(**{**dict(src_vocab_size=9, tgt_vocab_size=8, embed_dim=3, hidden_dim=4), **kwargs})


@pytest.mark.parametrize("change,match", [
    (lambda b: _batch(b, src=np.array([[3, 4, 9], [6, 0, 0]])), r"src: expected token ids in \[0, 9\), got 9 at \[0, 2\]"),
    (lambda b: _batch(b, tgt_out=np.where(b.tgt_out == 4, -1, b.tgt_out)), r"tgt_out: expected token ids in \[0, 8\), got -1"),
    (lambda b: _batch(b, tgt_in=b.tgt_in + 7), r"tgt_in: expected token ids in \[0, 8\)"),
    (lambda b: _batch(b, src_lengths=np.array([3, 0])), r"src_lengths: expected lengths in \[1, 3\] \(the padded width\), got 0 at \[1\]"),
    (lambda b: _batch(b, src_lengths=np.array([4, 1])), r"src_lengths: expected lengths in \[1, 3\] \(the padded width\), got 4 at \[0\]"),
    (lambda b: _batch(b, tgt_lengths=np.array([3, 9])), r"tgt_lengths: expected lengths in \[1, 4\]"),
    (lambda b: _batch(b, src_lengths=np.array([3])), r"src_lengths: expected shape \(2,\), got \(1,\)"),
    (lambda b: _batch(b, src=b.src.astype(np.float32)), r"src: expected an integer array, got dtype float32"),
    (lambda b: _batch(b, src=b.src[0]), r"src: expected 2 dimensions, got shape \(3,\)"),
    (lambda b: _batch(b, tgt_out=b.tgt_out[:, :2]), r"tgt_out: expected the shape of tgt_in \(2, 4\), got \(2, 2\)"),
    (lambda b: _batch(b, tgt_in=b.tgt_in[:1]), r"tgt_in: expected shape \(2, T\) with T >= 1, got \(1, 4\)"),
    (lambda b: tuple(b), r"batch: expected a seq2seq_ref.Batch, got tuple"),
])
def test_bad_batch(good, change, match):
    params, batch = good
    with pytest.raises(ValueError, match=match):
        loss_and_grads(params, CONFIG, change(batch))


@pytest.mark.parametrize("change,match", [
    (lambda p: {**p, "output/W": p["output/W"].T}, r"params\['output/W'\]: expected shape \(4, 8\), got \(8, 4\)"),
    (lambda p: {**p, "output/b": p["output/b"].astype(np.float32)}, r"params: expected one floating dtype .* mix of \['float32', 'float64'\]"),
    (lambda p: {k: v for k, v in p.items() if k != "attention/W_a"}, r"missing \['attention/W_a'\]"),
    (lambda p: {**p, "attention/v": np.zeros(4)}, r"unexpected \['attention/v'\]"),
    (lambda p: {**p, "output/b": np.zeros(8, dtype=np.int64)}, r"params\['output/b'\]: expected a floating dtype, got int64"),
])
def test_bad_params(good, change, match):
    params, batch = good
    with pytest.raises(ValueError, match=match):
        loss_and_grads(change(params), CONFIG, batch)


def test_params_of_another_attention_are_refused(good):
    _, batch = good
    other = init_params(ModelConfig(9, 8, 3, 4, attention="bahdanau"), 0)
    with pytest.raises(ValueError, match=r"attention='luong'"):
        loss_and_grads(other, CONFIG, batch)


def test_config_type_is_checked(good):
    params, batch = good
    with pytest.raises(ValueError, match=r"config: expected a seq2seq_ref.ModelConfig, got dict"):
        loss_and_grads(params, {"attention": "luong"}, batch)


@pytest.mark.parametrize("call,match", [
    (lambda p, b: greedy_decode(p, CONFIG, b.src, b.src_lengths, 0),
     r"max_len: expected an int in \[1, 65536\], got 0"),
    (lambda p, b: greedy_decode(p, CONFIG, b.src, b.src_lengths, 10**12),
     r"max_len: expected an int in \[1, 65536\], got 1000000000000"),
    (lambda p, b: beam_search(p, CONFIG, b.src, b.src_lengths, 2, 2**16 + 1),
     r"max_len: expected an int in \[1, 65536\], got 65537"),
    (lambda p, b: beam_search(p, CONFIG, b.src, b.src_lengths, 0, 5), r"beam_size: expected an int >= 1, got 0"),
    (lambda p, b: beam_search(p, CONFIG, b.src, b.src_lengths, 7, 5), r"beam_size: expected at most tgt_vocab_size - 2 = 6 \(pad and bos are never generated\), got 7"),
    (lambda p, b: greedy_decode(p, CONFIG, b.src + 20, b.src_lengths, 3), r"src: expected token ids in \[0, 9\)"),
    (lambda p, b: greedy_decode(p, CONFIG, b.src, np.array([1, 2, 3]), 3), r"src_lengths: expected shape \(2,\)"),
])
def test_bad_decode_arguments(good, call, match):
    params, batch = good
    with pytest.raises(ValueError, match=match):
        call(params, batch)


@pytest.mark.parametrize("length_penalty,match", [
    (-1.0, r"expected a finite float >= 0, got -1.0"),
    (float("nan"), r"expected a finite float >= 0, got nan"),
    (np.inf, r"expected a finite float >= 0, got inf"),
    (True, r"expected a finite float >= 0, got True"),
    (np.True_, r"expected a finite float >= 0, got np.True_"),
    ("0.6", r"expected a finite float >= 0, got '0.6'"),
    (10**400, r"expected at most 1388 with max_len = 5, .* got 1000000000"),
    (1e308, r"expected at most 1388 with max_len = 5, where the length normaliser .* half the largest float64, got 1e\+308"),
])
def test_bad_length_penalty(good, length_penalty, match):
    params, batch = good
    with pytest.raises(ValueError, match="length_penalty: " + match):
        beam_search(params, CONFIG, batch.src, batch.src_lengths, 2, 5, length_penalty)


@pytest.mark.parametrize("length_penalty", [np.float32(0.6), np.float64(0.6), np.int64(1), 1, 0])
def test_any_real_length_penalty_is_accepted(good, length_penalty):
    params, batch = good
    tokens, scores = beam_search(params, CONFIG, batch.src, batch.src_lengths, 2, 5, length_penalty)
    expected_tokens, expected = beam_search(params, CONFIG, batch.src, batch.src_lengths, 2, 5, float(length_penalty))
    np.testing.assert_array_equal(tokens, expected_tokens)
    np.testing.assert_array_equal(scores, expected)


def test_the_length_penalty_bound_is_where_the_normaliser_overflows_the_models_dtype(good):
    params, batch = good
    # ((5 + 5) / 6) ** alpha passes half float32's largest value (3.4e38) at alpha 172.3, float64's at 1388.1
    _, scores = beam_search(params, CONFIG, batch.src, batch.src_lengths, 2, 5, 200.0)
    assert np.all(np.isfinite(scores) | (scores == -np.inf)) and np.isfinite(scores[:, 0]).all()
    single = {name: value.astype(np.float32) for name, value in params.items()}
    with pytest.raises(ValueError, match=r"length_penalty: expected at most 172.3 with max_len = 5, where the length "
                                         r"normaliser \(\(5 \+ max_len\) / 6\) \*\* length_penalty stays below "
                                         r"half the largest float32, got 200.0"):
        beam_search(single, CONFIG, batch.src, batch.src_lengths, 2, 5, 200.0)
    _, scores = beam_search(single, CONFIG, batch.src, batch.src_lengths, 2, 5, 172.3)  # at the bound: finite
    assert scores.dtype == np.float32 and np.isfinite(scores[:, 0]).all()
    with pytest.raises(ValueError, match=r"length_penalty: expected at most 172.3 .* float32"):
        check_decode_args(5, 2, 200.0, CONFIG)  # without the model's dtype: float32, the narrowest it computes in


def test_an_absurd_max_len_is_refused_before_jax_compiles(good):
    seq2seq_jax = pytest.importorskip("seq2seq_jax")
    params, batch = good
    single = {name: value.astype(np.float32) for name, value in params.items()}
    for decode in (lambda: seq2seq_jax.greedy_decode(single, CONFIG, batch.src, batch.src_lengths, 10**12),
                   lambda: seq2seq_jax.beam_search(single, CONFIG, batch.src, batch.src_lengths, 2, 10**12)):
        with pytest.raises(ValueError, match=r"max_len: expected an int in \[1, 65536\], got 1000000000000"):
            decode()


@pytest.mark.parametrize("value,kind", [(lambda a: a.tolist(), "list"), (lambda a: tuple(a.tolist()), "tuple"),
                                        (lambda a: None, "NoneType")])
def test_a_parameter_that_is_not_an_array_is_refused_by_name(good, value, kind):
    params, batch = good
    bad = {**params, "output/W": value(params["output/W"])}
    message = rf"params\['output/W'\]: expected an array \(numpy or jax\), got {kind}"
    with pytest.raises(ValueError, match=message):
        loss_and_grads(bad, CONFIG, batch)
    with pytest.raises(ValueError, match=message):
        greedy_decode(bad, CONFIG, batch.src, batch.src_lengths, 3)


@pytest.mark.parametrize("src,tgt,match", [
    ([[3], []], [[4], [5]], r"src_seqs\[1\]: expected a non-empty sequence, got length 0"),
    ([[3]], [[4], [5]], r"tgt_seqs: expected as many sequences as src_seqs \(1\), got 2"),
    ([[3.5]], [[4]], r"src_seqs\[0\]: expected integer token ids, got 3.5"),
    ([[3, 99]], [[4]], r"src: expected token ids in \[0, 9\), got 99"),
    ([], [], r"src_seqs: expected at least one sequence, got none"),
])
def test_bad_make_batch(src, tgt, match):
    with pytest.raises(ValueError, match=match):
        make_batch(src, tgt, CONFIG)


def test_init_params_rejects_integer_dtype():
    with pytest.raises(ValueError, match=r"dtype: expected a floating dtype, got int32"):
        init_params(CONFIG, 0, np.int32)


def test_a_source_longer_than_max_positions_is_refused():
    config = ModelConfig(src_vocab_size=9, tgt_vocab_size=8, embed_dim=4, hidden_dim=4, encoder="transformer",
                         max_positions=3)
    params = init_params(config, 0, np.float64)
    with pytest.raises(ValueError, match=r"src: expected at most max_positions = 3 positions \(a Transformer side\), "
                                         r"got width 4"):
        make_batch([[3, 4, 5, 6], [3]], [[3], [4]], config)
    with pytest.raises(ValueError, match=r"max_positions = 3"):
        greedy_decode(params, config, np.array([[3, 4, 5, 6]]), np.array([4]), 3)
