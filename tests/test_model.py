"""The whole reference model: gradients, padding, loss values, dtypes, learning."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from seq2seq_ref import Batch, ModelConfig, init_params, loss_and_grads, make_batch, param_shapes
from seq2seq_ref.gradcheck import gradcheck_model
from seq2seq_ref.optim import adam, apply_updates
from seq2seq_lab.gradcheck_cli import paper_variant
from seq2seq_ref.registry import DECODERS, ENCODERS
from tests.helpers import ATTENTIONS, DECODER_NAMES, config_with_heads, grid, float64_params, ragged_batch

# Every (encoder, decoder, connection) of the registries, at (1 layer, unidirectional) and (2, bidirectional).
SIZES = dict(src_vocab_size=7, tgt_vocab_size=8, embed_dim=4, hidden_dim=6, ffn_dim=8)  # ffn 8: MATH.md (C3)
VARIANTS = grid(**SIZES)


@pytest.mark.parametrize("encoder,decoder,attention,layers,bidirectional", VARIANTS)
def test_model_gradients_match_finite_differences(encoder, decoder, attention, layers, bidirectional):
    config = config_with_heads(**SIZES, num_layers=layers, bidirectional=bidirectional, attention=attention,
                               encoder=encoder, decoder=decoder)
    checks = gradcheck_model(config, seed=3, max_entries=3)  # every tensor, 3 entries each: 56 models
    assert {c.name for c in checks} == set(param_shapes(config))
    worst = max(checks, key=lambda c: c.max_rel_error)
    assert worst.max_rel_error <= 1e-7, worst


@pytest.mark.parametrize("attention", ATTENTIONS)
@pytest.mark.parametrize("encoder,decoder,layers,bidirectional", [("lstm", "gru", 1, False), ("gru", "lstm", 2, True)])
def test_paper_options_gradients_match_finite_differences(attention, encoder, decoder, layers, bidirectional):
    """Bahdanau's deep output (A6) where the context feeds the input; input feeding (F1) elsewhere."""
    config = paper_variant(config_with_heads(src_vocab_size=7, tgt_vocab_size=8, embed_dim=4, hidden_dim=6,
                                             num_layers=layers, bidirectional=bidirectional, attention=attention,
                                             encoder=encoder, decoder=decoder))
    assert config.input_feeding or config.deep_output
    checks = gradcheck_model(config, seed=5, max_entries=4)
    assert {c.name for c in checks} == set(param_shapes(config))
    assert max(c.max_rel_error for c in checks) <= 1e-7


def test_label_smoothing_gradients():
    config = ModelConfig(7, 8, 4, 5, attention="luong", label_smoothing=0.1)
    assert max(c.max_rel_error for c in gradcheck_model(config, seed=1, max_entries=10)) <= 1e-7


def test_parameter_names_and_shapes_are_the_documented_contract():
    config = ModelConfig(11, 13, 4, 5, num_layers=2, bidirectional=True, attention="bahdanau")
    shapes = param_shapes(config)
    assert shapes["src_embed/W"] == (11, 4) and shapes["tgt_embed/W"] == (13, 4)
    assert shapes["encoder/l0/fwd/W_x"] == (4, 20) and shapes["encoder/l1/bwd/W_x"] == (10, 20)
    assert shapes["decoder/l0/W_x"] == (4 + 10, 20) and shapes["decoder/l1/W_h"] == (5, 20)
    assert shapes["attention/W_k"] == (10, 5) and shapes["output/W"] == (5, 13)
    params = init_params(config, 0)
    assert all(params[n].dtype == np.float32 for n in params)
    b = params["encoder/l0/fwd/b"]
    assert np.all(b[5:10] == 1) and np.all(b[:5] == 0) and np.all(b[10:] == 0)


def _pad(batch: Batch, extra_src: int, extra_tgt: int, pad_id: int) -> Batch:
    def widen(a, extra):
        return np.pad(a, ((0, 0), (0, extra)), constant_values=pad_id)
    return Batch(widen(batch.src, extra_src), batch.src_lengths, widen(batch.tgt_in, extra_tgt),
                 widen(batch.tgt_out, extra_tgt), batch.tgt_lengths)


@given(st.sampled_from(VARIANTS), st.integers(0, 3), st.integers(0, 3), st.integers(0, 2**31))
def test_padding_changes_neither_loss_nor_gradients(variant, extra_src, extra_tgt, seed):
    encoder, decoder, attention, layers, bidirectional = variant
    config = config_with_heads(src_vocab_size=9, tgt_vocab_size=8, embed_dim=3, hidden_dim=4, num_layers=layers,
                               bidirectional=bidirectional, attention=attention, encoder=encoder, decoder=decoder)
    params = float64_params(config, seed % 1000)
    batch = ragged_batch(config, np.random.default_rng(seed))
    loss, grads = loss_and_grads(params, config, batch)
    padded_loss, padded_grads = loss_and_grads(params, config, _pad(batch, extra_src, extra_tgt, config.pad_id))
    assert np.isclose(loss, padded_loss, rtol=1e-13, atol=0)
    for name in grads:
        np.testing.assert_allclose(padded_grads[name], grads[name], rtol=1e-11, atol=1e-14, err_msg=name)


def test_padding_value_is_irrelevant(rng):
    config = ModelConfig(9, 8, 3, 4, attention="bahdanau", bidirectional=True)
    params = float64_params(config)
    batch = ragged_batch(config, rng, src_width=6, tgt_width=5)
    src_pad = np.arange(6)[None, :] >= batch.src_lengths[:, None]
    tgt_pad = np.arange(5)[None, :] >= batch.tgt_lengths[:, None]
    noisy = Batch(np.where(src_pad, 5, batch.src), batch.src_lengths, np.where(tgt_pad, 4, batch.tgt_in),
                  np.where(tgt_pad, 6, batch.tgt_out), batch.tgt_lengths)
    loss, grads = loss_and_grads(params, config, batch)
    noisy_loss, noisy_grads = loss_and_grads(params, config, noisy)
    assert loss == noisy_loss
    for name in grads:
        np.testing.assert_array_equal(grads[name], noisy_grads[name], err_msg=name)


@pytest.mark.parametrize("attention", ATTENTIONS)
def test_uniform_logits_give_log_vocabulary(attention, rng):
    config = ModelConfig(9, 11, 3, 4, attention=attention)
    params = float64_params(config)
    params["output/W"][:] = 0.0
    params["output/b"][:] = 0.7
    loss, _ = loss_and_grads(params, config, ragged_batch(config, rng))
    assert np.isclose(loss, np.log(11), rtol=1e-14)


@pytest.mark.parametrize("decoder", DECODER_NAMES)
@pytest.mark.parametrize("attention", ATTENTIONS)
def test_step_path_equals_parallel_path(attention, decoder, rng):
    config = config_with_heads(src_vocab_size=9, tgt_vocab_size=8, embed_dim=3, hidden_dim=4, num_layers=2,
                               bidirectional=True, attention=attention, decoder=decoder)
    params = float64_params(config)
    B, S, T = 3, 5, 4
    keys = rng.standard_normal((B, S, config.key_dim))
    src_mask = np.arange(S)[None, :] < np.array([5, 2, 3])[:, None]
    y = rng.standard_normal((B, T, config.embed_dim))
    tgt_lengths = np.array([4, 1, 2])
    encoder, stack = ENCODERS[config.encoder], DECODERS[config.decoder]
    encoder_states = [tuple(rng.standard_normal((B, config.hidden_dim)) for _ in encoder.state_names)
                      for _ in range(2)]
    # random recurrent states; an empty cache for a Transformer
    states = stack.initial_states(encoder_states, encoder.state_names, config)
    features, alpha, _ = stack.forward(y, tgt_lengths, states, keys, src_mask, params, config, {})
    memory = stack.memory(keys, src_mask, params, config)
    for t in range(T):
        feature, states, alpha_t = stack.step(y[:, t], states, memory, params, config, t < tgt_lengths)
        np.testing.assert_allclose(features[:, t], feature, rtol=1e-12, atol=1e-14)
        if alpha is not None:
            np.testing.assert_allclose(alpha[:, t], alpha_t, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_follows_the_parameters(dtype, rng):
    config = ModelConfig(9, 8, 3, 4, attention="luong", num_layers=2)
    params = init_params(config, 0, dtype)
    loss, grads = loss_and_grads(params, config, ragged_batch(config, rng))
    assert loss.dtype == dtype and all(g.dtype == dtype for g in grads.values())


def test_float32_agrees_with_float64(rng):
    config = ModelConfig(9, 8, 6, 8, attention="bahdanau", bidirectional=True)
    params = init_params(config, 0, np.float64)
    batch = ragged_batch(config, rng)
    loss64, grads64 = loss_and_grads(params, config, batch)
    loss32, grads32 = loss_and_grads({k: v.astype(np.float32) for k, v in params.items()}, config, batch)
    assert np.isclose(loss32, loss64, rtol=1e-6)
    for name in grads64:
        np.testing.assert_allclose(grads32[name], grads64[name], rtol=1e-3, atol=1e-6, err_msg=name)


def test_dropout_needs_a_seed_and_repeats_with_it(rng):
    config = ModelConfig(9, 8, 3, 4, num_layers=2, attention="luong", dropout=0.3)
    params = float64_params(config)
    batch = ragged_batch(config, rng)
    with pytest.raises(ValueError, match="dropout_rng"):
        loss_and_grads(params, config, batch)
    first, second, other = (loss_and_grads(params, config, batch, dropout_rng=s)[0] for s in (5, 5, 6))
    assert first == second and first != other


def test_dropout_gradients_match_finite_differences(rng):
    from seq2seq_ref.gradcheck import check_tensors
    from seq2seq_ref.model import forward

    config = ModelConfig(7, 8, 4, 5, num_layers=2, bidirectional=True, attention="bahdanau", dropout=0.25)
    params = float64_params(config)
    batch = ragged_batch(config, rng)
    _, grads = loss_and_grads(params, config, batch, dropout_rng=3)
    checks = check_tensors(lambda: forward(params, config, batch, dropout_rng=3)[0], params, grads, max_entries=8)
    assert max(c.max_rel_error for c in checks) <= 1e-7


def test_tiny_model_memorises_eight_pairs():
    config = ModelConfig(10, 10, 16, 32, attention="bahdanau")
    rng = np.random.default_rng(0)
    src = [rng.integers(3, 10, size=rng.integers(2, 6)).tolist() for _ in range(8)]
    batch = make_batch(src, [s[::-1] for s in src], config)
    params = init_params(config, 0)
    optimiser = adam(1e-2)
    state = optimiser.init(params)
    for _ in range(300):
        loss, grads = loss_and_grads(params, config, batch)
        updates, state = optimiser.update(grads, state)
        params = apply_updates(params, updates)
    assert loss < 0.05
