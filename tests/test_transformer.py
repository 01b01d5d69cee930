"""The Transformer encoder as a family of the registry: dropout in both backends, the gradient check's kinks, the
command line and old checkpoints.  Gradients against finite differences, JAX and torch run over the whole grid in
test_model, test_jax_agreement and test_bench."""
import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from seq2seq_jax.models import Seq2Seq  # noqa: E402
from seq2seq_lab.checkpoint import list_checkpoints, load_checkpoint  # noqa: E402
from seq2seq_lab.cli import main  # noqa: E402
from seq2seq_ref import ModelConfig, loss_and_grads, param_shapes  # noqa: E402
from seq2seq_ref.gradcheck import check_tensors  # noqa: E402
from seq2seq_ref.model import make_dropout_masks  # noqa: E402
from seq2seq_ref.transformer_layers import relu  # noqa: E402
from tests.helpers import float64_params, ragged_batch, torch_loss_and_grads  # noqa: E402


def test_flat_names_and_shapes():
    config = ModelConfig(src_vocab_size=9, tgt_vocab_size=8, embed_dim=8, hidden_dim=8, num_layers=2,
                         encoder="transformer", decoder="gru", attention="luong", num_heads=2, ffn_dim=5)
    shapes = param_shapes(config)
    assert shapes["encoder/l1/attn/W_q"] == (8, 8) and shapes["encoder/l0/attn/b_v"] == (8,)
    assert shapes["encoder/l0/ffn/W_1"] == (8, 5) and shapes["encoder/l1/ffn/W_2"] == (5, 8)
    assert shapes["encoder/l0/ln_2/gamma"] == (8,) and shapes["encoder/ln_f/beta"] == (8,)
    assert not any("/fwd/" in name for name in shapes)
    assert ModelConfig(**{**config.__dict__, "ffn_dim": None}).inner_dim == 32


@pytest.mark.parametrize("decoder,attention", [("lstm", "luong"), ("gru", "multihead"), ("transformer", "multihead")])
def test_dropout_on_weights_and_residual_branches_agrees_with_jax(decoder, attention):
    """The same keep masks in both backends: the loss and every gradient (JAX by autodiff) agree in float64."""
    config = ModelConfig(src_vocab_size=9, tgt_vocab_size=8, embed_dim=8, hidden_dim=8, num_layers=2,
                         encoder="transformer", decoder=decoder, attention=attention, num_heads=2, dropout=0.3)
    params = float64_params(config, 4)
    batch = ragged_batch(config, np.random.default_rng(4))
    masks = make_dropout_masks(config, batch, np.float64, 7)
    assert masks["encoder/l1/weights"].shape == (3, 2, batch.src.shape[1], batch.src.shape[1])
    assert {"encoder/l0/attn", "encoder/l0/ffn"} <= set(masks)
    if decoder == "transformer":
        assert masks["decoder/l1/cross_weights"].shape == (3, 2, *batch.tgt_in.shape[1:], batch.src.shape[1])
    loss, grads = loss_and_grads(params, config, batch, dropout_rng=7)

    def jax_loss(flat):
        return Seq2Seq(config, flat).loss(batch, {k: jnp.asarray(v) for k, v in masks.items()})

    jax_value, jax_grads = jax.jit(jax.value_and_grad(jax_loss))({k: jnp.asarray(v) for k, v in params.items()})
    assert abs(float(jax_value) - loss) <= 1e-12 * loss
    for name, grad in grads.items():
        np.testing.assert_allclose(np.asarray(jax_grads[name]), grad, rtol=1e-9, atol=1e-12, err_msg=name)


def test_the_gradient_check_narrows_or_skips_a_stencil_that_crosses_a_relu_kink():
    # h = 5e-3: the stencil spans ±3h.  5e-3 crosses 0 at h and h/2 but not at h/5; 1e-6 crosses at all three.
    x = np.array([5e-3, 1e-6, 0.5, -0.7])

    def loss():
        return float(np.sum(relu(x) ** 2))

    check, = check_tensors(loss, {"x": x}, {"x": 2 * np.maximum(x, 0)})
    assert (check.entries_checked, check.entries_at_kinks) == (3, 1)
    assert check.max_rel_error < 1e-9
    wrong, = check_tensors(loss, {"x": x}, {"x": 2 * np.maximum(x, 0) + np.array([1e-3, 0, 0, 0])})
    assert wrong.max_rel_error > 1e-2  # the narrowed entry is compared, not skipped


def test_train_translate_and_resume_with_a_transformer_encoder(tmp_path, capsys):
    run = str(tmp_path / "run")
    args = ["train", "--task", "reverse", "--train-size", "200", "--steps", "8", "--batch-size", "16",
            "--hidden-dim", "8", "--encoder", "transformer", "--heads", "2", "--ffn-dim", "12",
            "--attention", "luong", "--backend", "numpy", "--out", run, "--no-progress", "--eval-every", "4"]
    assert main(args) == 0
    config = load_checkpoint(list_checkpoints(run)[-1]).config
    # embed_dim follows hidden_dim and the encoder is unidirectional unless told otherwise
    assert (config.encoder, config.embed_dim, config.bidirectional, config.num_heads, config.ffn_dim) == \
        ("transformer", 8, False, 2, 12)
    capsys.readouterr()
    assert main(["translate", "--run", run, "--backend", "jax", "abc"]) == 0
    assert main(args[:6] + ["12"] + args[7:]) == 0  # resumes from step 8 in the same run
    assert load_checkpoint(list_checkpoints(run)[-1]).step == 12
    capsys.readouterr()
    bad = ["train", "--task", "reverse", "--encoder", "transformer", "--embed-dim", "4", "--hidden-dim", "8",
           "--out", str(tmp_path / "bad"), "--backend", "numpy"]
    assert main(bad) == 2
    assert "embed_dim: expected hidden_dim (8) with encoder='transformer'" in capsys.readouterr().err


@pytest.mark.parametrize("encoder,layers,bidirectional", [("transformer", 2, False), ("lstm", 1, True)])
def test_the_whole_model_equals_torch_nn_transformer(encoder, layers, bidirectional):
    """Loss and every gradient against torch.nn.TransformerEncoder/Decoder(norm_first=True) loaded with our flat
    parameters, float64, ragged batch with padding masks: <= 1e-12 relative (floor 1e-3: db_k is exactly 0)."""
    pytest.importorskip("torch")
    from seq2seq_lab.bench.torch_model import TorchSeq2Seq

    config = ModelConfig(src_vocab_size=11, tgt_vocab_size=9, embed_dim=8, hidden_dim=8, num_layers=layers,
                         bidirectional=bidirectional, encoder=encoder, decoder="transformer", attention="multihead",
                         num_heads=2, ffn_dim=12)
    params = float64_params(config, 2, scale=0.5)
    batch = ragged_batch(config, np.random.default_rng(5), batch_size=4, src_len=7, tgt_len=6)
    model = TorchSeq2Seq(config).double().load_flat(params)
    loss, torch_grads = torch_loss_and_grads(model, batch)
    reference, grads = loss_and_grads(params, config, batch)
    assert abs(loss - reference) <= 1e-12 * reference
    assert set(torch_grads) == set(grads)
    for name, grad in grads.items():
        np.testing.assert_allclose(torch_grads[name], grad, rtol=1e-12, atol=1e-15, err_msg=name)


def test_cached_decoding_equals_the_teacher_forced_decoder_and_the_reference():
    """JAX's step with the key/value cache gives, position by position, the features of the parallel decoder;
    greedy and beam search give the reference's (recomputing) tokens."""
    import seq2seq_jax
    from seq2seq_ref.decode import beam_search, greedy_decode

    config = ModelConfig(src_vocab_size=11, tgt_vocab_size=9, embed_dim=8, hidden_dim=8, num_layers=2,
                         encoder="gru", decoder="transformer", attention="multihead", num_heads=4)
    params = float64_params(config, 6, scale=0.8)
    batch = ragged_batch(config, np.random.default_rng(6), batch_size=3, src_len=6, tgt_len=5)
    model = Seq2Seq(config, {k: jnp.asarray(v) for k, v in params.items()})
    T = batch.tgt_in.shape[1]
    memory, states = model.encode(batch.src, batch.src_lengths, max_len=T)
    features, alpha = model.features(batch.tgt_in, batch.tgt_lengths, memory, states)
    step = jax.jit(lambda y, s: model.decoder_step(model.tgt_embed(y), s, memory, None, None))  # one program
    for t in range(T):
        feature, states, alpha_t = step(jnp.asarray(batch.tgt_in[:, t]), states)
        np.testing.assert_allclose(np.asarray(feature), np.asarray(features[:, t]), rtol=1e-12, atol=1e-13)
        np.testing.assert_allclose(np.asarray(alpha_t), np.asarray(alpha[:, t]), rtol=1e-12, atol=1e-14)
    tokens, weights = greedy_decode(params, config, batch.src, batch.src_lengths, 7)
    jax_tokens, jax_weights = seq2seq_jax.greedy_decode(params, config, batch.src, batch.src_lengths, 7)
    np.testing.assert_array_equal(np.asarray(jax_tokens), tokens)
    np.testing.assert_allclose(np.asarray(jax_weights), weights, rtol=1e-10, atol=1e-13)
    hyps, scores = beam_search(params, config, batch.src, batch.src_lengths, 4, 7, 0.6)
    jax_hyps, jax_scores = seq2seq_jax.beam_search(params, config, batch.src, batch.src_lengths, 4, 7, 0.6)
    np.testing.assert_array_equal(np.asarray(jax_hyps), hyps)
    np.testing.assert_allclose(np.asarray(jax_scores), scores, rtol=1e-10)


def test_train_and_translate_with_a_transformer_decoder(tmp_path, capsys):
    run = str(tmp_path / "run")
    assert main(["train", "--task", "reverse", "--train-size", "200", "--steps", "6", "--batch-size", "16",
                 "--hidden-dim", "8", "--encoder", "transformer", "--decoder", "transformer", "--heads", "2",
                 "--backend", "numpy", "--out", run, "--no-progress", "--eval-every", "3"]) == 0
    config = load_checkpoint(list_checkpoints(run)[-1]).config
    assert (config.encoder, config.decoder, config.attention) == ("transformer", "transformer", "multihead")
    capsys.readouterr()
    assert main(["translate", "--run", run, "--backend", "jax", "--beam", "2", "abc"]) == 0
    assert main(["train", "--task", "reverse", "--decoder", "transformer", "--attention", "luong", "--out",
                 str(tmp_path / "bad"), "--backend", "numpy"]) == 2
    assert "attention: expected 'multihead' with decoder='transformer'" in capsys.readouterr().err


def test_a_transformer_side_starts_its_embeddings_at_the_scale_of_the_positions():
    from seq2seq_ref import init_params

    config = ModelConfig(src_vocab_size=300, tgt_vocab_size=300, embed_dim=64, hidden_dim=64,
                         encoder="transformer", decoder="lstm", attention="luong", num_heads=4)
    params = init_params(config, 0, np.float64)
    # (T5) scales the source embeddings by √d: from N(0, 1/d) they reach N(0, 1), as the positions (T1)
    assert abs(np.std(np.sqrt(64) * params["src_embed/W"]) - 1.0) < 0.05
    assert abs(np.std(params["tgt_embed/W"]) - 1.0) < 0.05  # the LSTM side reads them as they are
