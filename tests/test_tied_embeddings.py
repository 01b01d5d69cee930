"""Tied embeddings (MATH.md (W1), (W1')): one matrix serves as embedding and output projection."""
from dataclasses import replace

import numpy as np
import pytest

from seq2seq_lab.backends import OptimiserSettings
from seq2seq_lab.checkpoint import list_checkpoints, load_checkpoint
from seq2seq_lab.cli import main
from seq2seq_lab.training import ModelOptions, RunSettings, train
from seq2seq_ref import ModelConfig, init_params, loss_and_grads
from seq2seq_ref.decode import beam_search, greedy_decode
from seq2seq_ref.gradcheck import gradcheck_model
from seq2seq_ref.params import param_shapes
from tests.helpers import assert_close_rel, config_with_heads, float64_params, ragged_batch, torch_loss_and_grads
from tests.test_translation import given_splits, write_aligned

# One of each connection, recurrent and Transformer sides; embed_dim = hidden_dim = the output width.
FAMILIES = [("lstm", "lstm", "bahdanau"), ("gru", "lstm", "luong"), ("lstm", "gru", "none"),
            ("transformer", "transformer", "multihead"), ("transformer", "gru", "multihead")]


def tied_config(encoder, decoder, attention, tie, **fields):
    return config_with_heads(**{**dict(src_vocab_size=8, tgt_vocab_size=8, embed_dim=6, hidden_dim=6, ffn_dim=8),
                                **fields}, encoder=encoder, decoder=decoder, attention=attention,
                             tie_embeddings=tie)


def untied_twin(params, config):
    """The same model with untied parameters: every shared matrix copied to each place it serves."""
    untied = replace(config, tie_embeddings="none")
    full = dict(params)
    if config.tie_embeddings == "all":
        full["src_embed/W"] = full["tgt_embed/W"] = full.pop("embed/W")
    full["output/W"] = full["tgt_embed/W"].T.copy()
    return full, untied


@pytest.mark.parametrize("tie", ["target", "all"])
@pytest.mark.parametrize("encoder,decoder,attention", FAMILIES)
def test_tied_gradients_match_finite_differences(encoder, decoder, attention, tie):
    config = tied_config(encoder, decoder, attention, tie)
    checks = gradcheck_model(config, seed=3, max_entries=4)
    assert {c.name for c in checks} == set(param_shapes(config))
    worst = max(checks, key=lambda c: c.max_rel_error)
    assert worst.max_rel_error <= 1e-7, worst


@pytest.mark.parametrize("tie", ["target", "all"])
@pytest.mark.parametrize("encoder,decoder,attention", FAMILIES[:1] + FAMILIES[3:4])
def test_a_tied_model_is_the_untied_model_with_shared_copies_and_sums_their_gradients(encoder, decoder,
                                                                                      attention, tie):
    """(W1) same loss and decoding as the untied twin; (W1') the shared gradient is the sum of the copies'."""
    config = tied_config(encoder, decoder, attention, tie, label_smoothing=0.1)
    params = float64_params(config, seed=1)
    batch = ragged_batch(config, np.random.default_rng(2), batch_size=4, src_len=6, tgt_len=5)
    full, untied = untied_twin(params, config)
    loss, grads = loss_and_grads(params, config, batch)
    twin_loss, twin_grads = loss_and_grads(full, untied, batch)
    assert loss == pytest.approx(twin_loss, rel=1e-14)
    shared = twin_grads["tgt_embed/W"] + twin_grads["output/W"].T
    if tie == "all":
        np.testing.assert_allclose(grads["embed/W"], shared + twin_grads["src_embed/W"], rtol=1e-12, atol=1e-15)
        assert set(grads) == set(twin_grads) - {"src_embed/W", "tgt_embed/W", "output/W"} | {"embed/W"}
    else:
        np.testing.assert_allclose(grads["tgt_embed/W"], shared, rtol=1e-12, atol=1e-15)
        np.testing.assert_array_equal(grads["src_embed/W"], twin_grads["src_embed/W"])
        assert set(grads) == set(twin_grads) - {"output/W"}
    np.testing.assert_array_equal(greedy_decode(params, config, batch.src, batch.src_lengths, 6)[0],
                                  greedy_decode(full, untied, batch.src, batch.src_lengths, 6)[0])
    ours, twins = (beam_search(p, c, batch.src, batch.src_lengths, 3, 6) for p, c in ((params, config),
                                                                                      (full, untied)))
    np.testing.assert_array_equal(ours[0], twins[0])


@pytest.mark.parametrize("tie", ["target", "all"])
@pytest.mark.parametrize("encoder,decoder,attention", FAMILIES)
def test_torch_baseline_ties_one_parameter_and_agrees(encoder, decoder, attention, tie, one_torch_thread):
    pytest.importorskip("torch")
    from seq2seq_lab.bench.torch_model import TorchSeq2Seq

    config = tied_config(encoder, decoder, attention, tie)
    params = float64_params(config, scale=0.5)
    batch = ragged_batch(config, np.random.default_rng(0), batch_size=4, src_len=7, tgt_len=5)
    model = TorchSeq2Seq(config).double().load_flat(params)
    assert model.output.weight is model.tgt_embed.weight
    assert (model.src_embed.weight is model.tgt_embed.weight) == (tie == "all")
    loss, torch_grads = torch_loss_and_grads(model, batch)
    reference, grads = loss_and_grads(params, config, batch)
    assert abs(loss - reference) <= 1e-12 * reference
    assert set(torch_grads) == set(grads)
    for name, grad in grads.items():
        assert_close_rel(torch_grads[name], grad, 1e-10, tiny=1e-2)


def test_names_shapes_and_initial_scale():
    config = ModelConfig(11, 11, 16, 16, attention="luong", tie_embeddings="all")
    shapes = param_shapes(config)
    assert shapes["embed/W"] == (11, 16) and shapes["output/b"] == (11,)
    assert not {"src_embed/W", "tgt_embed/W", "output/W"} & set(shapes)
    target = param_shapes(replace(config, tie_embeddings="target"))
    assert target["src_embed/W"] == target["tgt_embed/W"] == (11, 16) and "output/W" not in target
    for tie, name in (("all", "embed/W"), ("target", "tgt_embed/W")):
        W = init_params(replace(config, src_vocab_size=11, tgt_vocab_size=11, embed_dim=64, hidden_dim=64,
                                tie_embeddings=tie), 0)[name]
        assert 0.8 / 8 < W.std() < 1.2 / 8  # N(0, 1/E): the logits f W^T start at unit scale


@pytest.mark.parametrize("fields,message", [
    (dict(tie_embeddings="both"), r"tie_embeddings: expected one of \('none', 'target', 'all'\), got 'both'"),
    (dict(tie_embeddings="target", embed_dim=4), "tie_embeddings: expected 'none' when the output layer reads 6 "
                                                 "features and the embeddings have 4"),
    (dict(tie_embeddings="all", src_vocab_size=9), r"'all' needs one shared vocabulary, got 'all'"),
])
def test_bad_tie_settings(fields, message):
    with pytest.raises(ValueError, match=message):
        ModelConfig(**{**dict(src_vocab_size=8, tgt_vocab_size=8, embed_dim=6, hidden_dim=6), **fields})


def test_tying_all_needs_a_shared_vocabulary_and_writes_nothing(tmp_path, capsys):
    train_src, train_tgt = write_aligned(tmp_path, "train", 40, 0)
    run = tmp_path / "run"
    assert main(["train", "--data", train_src, "--data-target", train_tgt, "--tokenizer", "bpe", "--vocab-size",
                 "280", "--tie-embeddings", "all", "--embed-dim", "8", "--hidden-dim", "8", "--steps", "2",
                 "--backend", "numpy", "--no-progress", "--out", str(run)]) == 2
    assert "tie_embeddings: 'all' makes one matrix the source and the target embedding" in capsys.readouterr().err
    assert not run.exists()
    assert main(["train", "--tie-embeddings", "target", "--steps", "2", "--no-progress", "--out", str(run)]) == 2
    assert "tie_embeddings: expected 'none' when the output layer reads 128 features" in capsys.readouterr().err


@pytest.mark.parametrize("trained_on,translated_on", [("numpy", "jax"), ("jax", "numpy")])
def test_a_tied_run_trains_resumes_and_translates_on_either_backend(tmp_path, capsys, trained_on, translated_on):
    data = replace(given_splits(tmp_path, 60, 8), tokenizer="bpe", vocab_size=280, shared_vocab=True)
    model = ModelOptions(embed_dim=8, hidden_dim=8, bidirectional=False, attention="luong", tie_embeddings="all")
    run = lambda steps: train(tmp_path / "run", model, data,  # noqa: E731
                              RunSettings(steps=steps, batch_size=8, eval_every=2, eval_examples=8, pad_multiple=64),
                              OptimiserSettings(), trained_on, progress=False, notify=lambda m: None)
    run(2)
    summary = run(4)
    assert summary["steps_trained"] == 2
    checkpoint = load_checkpoint(list_checkpoints(tmp_path / "run")[-1])
    assert checkpoint.config.tie_embeddings == "all" and "embed/W" in checkpoint.params
    assert main(["translate", "--run", str(tmp_path / "run"), "--backend", translated_on, "--beam", "2",
                 "the cat runs"]) == 0
    assert "<unk>" not in capsys.readouterr().out


def test_gradcheck_cli_checks_the_tied_matrix(capsys):
    import json

    assert main(["gradcheck", "--tie-embeddings", "all", "--encoder", "gru", "--decoder", "lstm",
                 "--attention", "luong", "--layers", "1", "--unidirectional", "--paper-options", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["passed"] and {r["tie_embeddings"] for r in report["records"]} == {"all"}
    names = {r["name"] for r in report["records"]}
    assert "embed/W" in names and not names & {"src_embed/W", "tgt_embed/W", "output/W"}
    assert {r["input_feeding"] for r in report["records"]} == {False, True}  # input feeding keeps the width


@pytest.mark.parametrize("tie", ["target", "all"])
def test_the_nnx_module_holds_one_param_per_flat_name_and_sums_its_gradients(tie):
    import seq2seq_jax
    from flax import nnx

    config = tied_config("gru", "lstm", "luong", tie)
    params = init_params(config, 0)
    model = seq2seq_jax.from_flat(config, params)
    paths = {"/".join(map(str, p)) for p, _ in nnx.to_flat_state(nnx.state(model, nnx.Param))}
    assert paths == set(param_shapes(config))
    back = seq2seq_jax.to_flat(model)
    for name, value in params.items():
        np.testing.assert_array_equal(np.asarray(back[name]), value)
    batch = ragged_batch(config, np.random.default_rng(0))
    grads = nnx.grad(lambda m: m.loss(batch))(model)
    flat = {"/".join(map(str, p)): np.asarray(g[...]) for p, g in nnx.to_flat_state(grads)}
    _, reference = loss_and_grads(params, config, batch)
    assert set(flat) == set(reference)
    for name, grad in reference.items():
        assert_close_rel(flat[name], grad, 1e-4, tiny=1e-2)  # float32 both


def test_untied_parameters_under_a_tied_config_are_refused():
    config = tied_config("lstm", "lstm", "luong", "target")
    params = init_params(replace(config, tie_embeddings="none"), 0)
    batch = ragged_batch(config, np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"missing \[\], unexpected \['output/W'\]"):
        loss_and_grads(params, config, batch)
    from seq2seq_ref.model import forward

    with pytest.raises(ValueError, match=r"params: expected no 'output/W' with tie_embeddings='target'"):
        forward(params, config, batch)
