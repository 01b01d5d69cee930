"""The benchmark harness keeps working (tiny sizes, no timing assertions) and the torch baseline is our model."""
import itertools
import json
import math

import numpy as np
import pytest

from seq2seq_lab.bench.configs import CONFIGS, beam_search_flops, forward_flops, train_step_flops
from seq2seq_lab.bench.harness import add_torch_ratios, interleaved_schedule, measure_isolated
from seq2seq_lab.cli import main
from seq2seq_ref import loss_and_grads
from seq2seq_ref.components import Connection
from seq2seq_ref.registry import CONNECTIONS
from seq2seq_ref.decode import beam_search, greedy_decode
from tests.helpers import (
    ATTENTIONS, DECODER_NAMES, ENCODER_NAMES, assert_close_rel, config_with_heads, float64_params, ragged_batch,
    torch_loss_and_grads,
)

torch = pytest.importorskip("torch")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_flop_count_of_the_seed_config():
    # 2 LSTMs x 100 steps x 2B(E+H)4H, plus 2BTHV, all x3 for forward + backward: 32.7 GFLOP
    assert train_step_flops(CONFIGS["seed"], "none") == 3 * (200 * 2 * 64 * 384 * 1024 + 2 * 64 * 100 * 256 * 256)
    assert round(train_step_flops(CONFIGS["seed"], "none") / 1e9, 1) == 32.7
    assert forward_flops(CONFIGS["seed"], "bahdanau") > forward_flops(CONFIGS["seed"], "none")


def test_flop_count_of_gru_and_multihead():
    seed = CONFIGS["seed"]  # B 64, E 128, H 256, V 256, S = T = 100
    # the GRU's 3 gate blocks: 2 GRUs x 100 steps x 2B(E+H)3H, plus the same output layer
    assert train_step_flops(seed, "none", "gru") == 3 * (200 * 2 * 64 * 384 * 768 + 2 * 64 * 100 * 256 * 256)
    # GRU = 3/4 of the LSTM's recurrent GEMMs: one gate block [., H] less per step, encoder (S) and decoder (T)
    for attention, decoder_input in (("none", 128), ("bahdanau", 128 + 256)):
        one_block = 3 * 100 * (2 * 64 * (128 + 256) * 256 + 2 * 64 * (decoder_input + 256) * 256)
        assert train_step_flops(seed, attention, "lstm") - train_step_flops(seed, attention, "gru") == one_block
    # multi-head (M0): keys W_k, keys W_v once; per step (M1) W_q, (M2) scores, (M4) context, (M5) W_o, (M6) W_c
    B, H, S, T = 64, 256, 100, 100
    attend = 2 * 2 * B * S * H * H + T * (2 * B * H * H + 2 * 2 * B * S * H + 2 * B * H * H + 2 * B * 2 * H * H)
    assert forward_flops(seed, "multihead") - forward_flops(seed, "none") == attend
    wide = seed.replace(bidirectional=True)  # K = 2H: only the K and V projections read the keys
    assert forward_flops(wide, "multihead") - forward_flops(wide, "none") == attend + 2 * 2 * B * S * H * H



def test_the_lstm_recipe_config_is_the_lstm_recipes_step():
    """`--config lstm-recipe` times the step of recipes/de-en-lstm.toml: its widths, joint vocabulary and batch."""
    import tomllib
    from pathlib import Path
    recipe = tomllib.loads((Path(__file__).parents[1] / "recipes/de-en-lstm.toml").read_text())
    config = CONFIGS["lstm-recipe"].model(recipe["model"]["attention"], recipe["model"]["encoder"])
    assert (config.embed_dim, config.hidden_dim, config.bidirectional, config.num_layers) == (
        recipe["model"]["embed-dim"], recipe["model"]["hidden-dim"], recipe["model"]["bidirectional"], 1)
    assert config.src_vocab_size == config.tgt_vocab_size == recipe["data"]["vocab-size"]
    assert CONFIGS["lstm-recipe"].batch == recipe["training"]["batch-size"]
    assert recipe["model"]["decoder"] == recipe["model"]["encoder"]


def test_a_connection_without_a_flop_count_is_refused(monkeypatch):
    # never timed at 0 FLOPs
    monkeypatch.setitem(CONNECTIONS, "additive", type("Additive", (Connection,), {"name": "additive"}))
    with pytest.raises(ValueError, match="no FLOP count for 'additive'"):
        forward_flops(CONFIGS["seed"], "additive")

def test_flop_count_of_the_transformer():
    """benchmarks/README.md's Transformer count, term by term, at the seed config (d = 256, FFN 1024, 1 + 1 blocks)."""
    seed = CONFIGS["seed"]
    B, d, F, V, S, T = 64, 256, 1024, 256, 100, 100
    projections = 2 * B * d * d  # one of Q, K, V, O per position
    encoder = 4 * S * projections + 2 * (2 * B * S * S * d) + 2 * (2 * B * S * d * F)
    self_attention = 4 * T * projections + 2 * (2 * B * T * T * d)
    cross_attention = 2 * T * projections + 2 * S * projections + 2 * (2 * B * T * S * d)
    decoder = self_attention + cross_attention + 2 * (2 * B * T * d * F)
    assert forward_flops(seed, "multihead", cell="transformer") == encoder + decoder + 2 * B * T * d * V
    assert train_step_flops(seed, "multihead", "transformer") == 3 * (encoder + decoder + 2 * B * T * d * V)
    # attention is quadratic in length: doubling both lengths more than doubles the count
    long = seed.replace(src_len=200, tgt_len=200)
    assert forward_flops(long, "multihead", cell="transformer") > 2 * forward_flops(seed, "multihead",
                                                                                   cell="transformer")
    # cached decoding: position t attends to t keys, T(T+1)/2 pairs instead of T^2
    cached = forward_flops(seed, "multihead", decode_steps=T, cell="transformer")
    assert forward_flops(seed, "multihead", cell="transformer") - cached == 2 * 2 * B * d * (T * T - T * (T + 1) // 2)
    model = seed.model("multihead", "transformer")
    assert (model.embed_dim, model.hidden_dim, model.inner_dim, model.num_heads, model.bidirectional) == \
        (256, 256, 1024, 4, False)
    with pytest.raises(ValueError, match="attention: expected 'multihead' with cell 'transformer'"):
        seed.model("bahdanau", "transformer")


def test_interleaved_schedule():
    assert interleaved_schedule(["numpy", "jax", "torch"], 2) == [
        (0, "numpy"), (0, "jax"), (0, "torch"), (1, "numpy"), (1, "jax"), (1, "torch")]


def test_torch_ratios_match_cell_attention_and_task():
    def record(backend, cell, attention, times):
        return {"backend": backend, "cell": cell, "attention": attention, "task": "train", "ms_times": times,
                "ms_median": float(np.median(times))}

    records = add_torch_ratios([
        record("torch", "lstm", "none", [1.0, 2.0, 4.0]), record("torch", "gru", "none", [10.0, 10.0, 10.0]),
        record("torch", "lstm", "luong", [5.0, 5.0, 5.0]), record("jax", "lstm", "none", [2.0, 2.0, 2.0]),
        record("jax", "gru", "none", [5.0, 10.0, 40.0]), record("jax", "lstm", "luong", [5.0, 10.0, 5.0]),
        record("numpy", "gru", "luong", [1.0, 1.0, 1.0])])
    by_point = {(r["backend"], r["cell"], r["attention"]): r for r in records}
    jax = by_point["jax", "lstm", "none"]
    assert jax["time_vs_torch"] == 1.0  # 2 / median(1, 2, 4)
    assert jax["time_vs_torch_paired"] == 1.0 and jax["time_vs_torch_paired_iqr"] == 0.75  # ratios 2, 1, 0.5
    gru = by_point["jax", "gru", "none"]  # ratios 0.5, 1, 4: IQR 2.5 - 0.75
    assert gru["time_vs_torch"] == gru["time_vs_torch_paired"] == 1.0 and gru["time_vs_torch_paired_iqr"] == 1.75
    assert by_point["jax", "lstm", "luong"]["time_vs_torch"] == 1.0
    assert by_point["torch", "gru", "none"]["time_vs_torch_paired"] == 1.0
    assert by_point["numpy", "gru", "luong"]["time_vs_torch"] is None  # no torch record at this point


def test_bench_command_smoke(tmp_path, capsys, monkeypatch):
    """Every task at one point, each backend in its one warm worker; beam search with its options."""
    monkeypatch.setenv("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")  # the workers' tiny programs (conftest.py)
    out = tmp_path / "bench.json"
    code = main(["bench", "--config", "tiny", "--backends", "numpy,jax,torch", "--cells", "transformer",
                 "--attention", "multihead", "--tasks", "train,decode,beam", "--beam", "3", "--length-penalty", "1.4",
                 "--warmup", "0", "--repeats", "2", "--json", str(out)])
    assert code == 0 and "vs torch" in capsys.readouterr().out
    report = json.loads(out.read_text())
    assert report["config"]["name"] == "tiny" and report["versions"]["numpy"] and report["device"]["cpu_cores"]
    assert report["matmul_peak"]["gflops"] > 0 and report["round_order"] == ["numpy", "jax", "torch"]
    records = report["records"]
    points = {("transformer", "multihead", t) for t in ("train", "decode", "beam")}
    assert {(r["backend"], r["cell"], r["attention"], r["task"]) for r in records} == {
        (b, *p) for b in ("numpy", "jax", "torch") for p in points}
    for r in records:
        assert r["ms_median"] > 0 and r["ms_min"] <= r["ms_median"] <= r["ms_max"] and r["repeats"] == 2
        assert r["gflops_achieved"] > 0 and r["percent_of_peak"] > 0 and r["peak_rss_bytes"] > 0
        assert r["heads"] == 4 and len(r["ms_times"]) == 2
        baseline = next(t for t in records if t["backend"] == "torch" and t["cell"] == r["cell"]
                        and t["attention"] == r["attention"] and t["task"] == r["task"])
        assert r["time_vs_torch"] == pytest.approx(r["ms_median"] / baseline["ms_median"])
        ratios = np.array(r["ms_times"]) / np.array(baseline["ms_times"])
        assert r["time_vs_torch_paired"] == pytest.approx(np.median(ratios))
        assert math.isfinite(r["time_vs_torch_paired_iqr"]) and r["time_vs_torch_paired_iqr"] >= 0
        if r["task"] == "beam":
            assert r["options"]["beam"] == 3 and r["options"]["length_penalty"] == 1.4
            assert r["gflop"] == beam_search_flops(CONFIGS["tiny"], "multihead", 3, r["cell"]) / 1e9
    # interleaved: at every point the timed calls ran numpy, jax, torch, numpy, jax, torch, ...
    for point in points:
        calls = sorted((i, r["backend"]) for r in records if (r["cell"], r["attention"], r["task"]) == point
                       for i in r["order"])
        assert [backend for _, backend in calls] == ["numpy", "jax", "torch"] * 2
    # one warm worker per backend: the same process at every point, a different one for each backend
    pids = {b: {r["worker_pid"] for r in records if r["backend"] == b} for b in ("numpy", "jax", "torch")}
    assert all(len(p) == 1 for p in pids.values()) and len(set.union(*pids.values())) == 3


def test_measure_isolated_still_measures_one_backend():
    record = measure_isolated(CONFIGS["tiny"], "numpy", "none", "train", 1, 2, cell="gru")
    assert record["backend"] == "numpy" and record["cell"] == "gru" and record["repeats"] == 2
    assert record["time_vs_torch"] is None and record["order"] == [0, 1]


def test_bench_rejects_bad_arguments(capsys):
    with pytest.raises(SystemExit):
        main(["bench", "--backends", "numpy,tensorflow"])
    assert "expected a comma-separated list" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["bench", "--cells", "lstm,rnn"])
    assert "expected a comma-separated list" in capsys.readouterr().err
    assert main(["bench", "--config", "tiny", "--repeats", "0"]) == 2
    assert "repeats: expected a positive int, got 0" in capsys.readouterr().err
    assert main(["bench", "--config", "tiny", "--attention", "multihead", "--heads", "3"]) == 2
    assert "num_heads: expected a divisor of hidden_dim (8), got 3" in capsys.readouterr().err
    assert main(["bench", "--config", "tiny", "--cells", "transformer", "--attention", "none"]) == 2
    assert "attention: expected 'multihead' with cell 'transformer'" in capsys.readouterr().err


def grid_config(encoder, decoder, attention, layers, bidirectional):
    return config_with_heads(src_vocab_size=9, tgt_vocab_size=8, embed_dim=5, hidden_dim=6, num_layers=layers,
                             bidirectional=bidirectional, attention=attention, encoder=encoder, decoder=decoder)


@pytest.mark.parametrize("layers,bidirectional", [(1, False), (2, True)])
def test_torch_baseline_is_the_same_model(layers, bidirectional):
    """Every (encoder, decoder, attention): loss, every gradient and the greedy tokens, on a ragged batch."""
    from seq2seq_lab.bench.torch_model import TorchSeq2Seq

    for encoder, decoder, attention in itertools.product(ENCODER_NAMES, DECODER_NAMES, ATTENTIONS):
        config = grid_config(encoder, decoder, attention, layers, bidirectional)
        params = float64_params(config, scale=0.5)
        batch = ragged_batch(config, np.random.default_rng(0), batch_size=4, src_len=7, tgt_len=5)
        model = TorchSeq2Seq(config).double().load_flat(params)
        loss, torch_grads = torch_loss_and_grads(model, batch)
        reference, grads = loss_and_grads(params, config, batch)
        assert abs(loss - reference) <= 1e-12 * reference, config
        assert set(torch_grads) == set(grads)
        for name, grad in grads.items():
            assert_close_rel(torch_grads[name], grad, 1e-10, tiny=1e-2)
        tokens, _ = greedy_decode(params, config, batch.src, batch.src_lengths, 6)
        src = torch.as_tensor(batch.src)
        np.testing.assert_array_equal(model.greedy(src, 6, batch.src_lengths).numpy()[tokens != config.pad_id],
                                      tokens[tokens != config.pad_id], err_msg=str(config))


@pytest.mark.parametrize("encoder,decoder,attention", [
    ("transformer", "transformer", "multihead"), ("lstm", "transformer", "multihead"), ("lstm", "lstm", "bahdanau"),
    ("gru", "gru", "multihead"), ("gru", "lstm", "luong")])
def test_torch_beam_search_and_greedy_agree_with_the_reference(encoder, decoder, attention):
    """float64: the same tokens and scores as seq2seq_ref's, on drawn ragged batches, beam sizes, penalties; the
    batch shrinks as sentences finish, so the sentences' stops differ."""
    from seq2seq_lab.bench.torch_model import TorchSeq2Seq

    config = config_with_heads(src_vocab_size=9, tgt_vocab_size=7, embed_dim=8, hidden_dim=8, num_layers=2,
                               bidirectional=encoder != "transformer", attention=attention, encoder=encoder,
                               decoder=decoder)
    rng = np.random.default_rng(3)
    for draw in range(3):
        params = float64_params(config, seed=draw, scale=1.0)
        model = TorchSeq2Seq(config).double().load_flat(params)
        batch = ragged_batch(config, rng, batch_size=5, src_len=6)
        src, lengths = torch.as_tensor(batch.src), torch.as_tensor(batch.src_lengths)
        greedy, _ = greedy_decode(params, config, batch.src, batch.src_lengths, 7)
        np.testing.assert_array_equal(model.greedy(src, 7, lengths).numpy(), greedy)
        beam, max_len, alpha = (2, 3, 4)[draw], (6, 9, 5)[draw], (0.0, 0.6, 1.4)[draw]
        tokens, scores = beam_search(params, config, batch.src, batch.src_lengths, beam, max_len, alpha)
        torch_tokens, torch_scores = model.beam_search(src, lengths, beam, max_len, alpha)
        np.testing.assert_array_equal(torch_tokens, tokens, err_msg=f"{config}, draw {draw}")
        np.testing.assert_allclose(torch_scores, scores, rtol=1e-12)


def test_torch_ranking_breaks_ties_as_the_reference():
    """Equal scores: the step's own log-probability decides, then the lower index; a shortlist too short for
    the ties falls back to ordering the whole row."""
    from seq2seq_lab.bench.torch_model import best_candidates
    from seq2seq_ref.decode import rank_candidates

    rng = np.random.default_rng(0)
    candidates = rng.choice([-1.0, -2.0, -np.inf], size=(4, 60))
    step = rng.choice([-0.5, -1.0], size=(4, 60))
    for count in (2, 6):
        np.testing.assert_array_equal(best_candidates(torch.as_tensor(candidates), torch.as_tensor(step), count),
                                      rank_candidates(candidates, step)[:, :count])


def test_bench_beam_options_are_checked(capsys):
    assert main(["bench", "--config", "tiny", "--tasks", "beam", "--beam", "0"]) == 2
    assert "beam: expected a positive int, got 0" in capsys.readouterr().err
    assert main(["bench", "--config", "tiny", "--tasks", "beam", "--length-penalty", "-1"]) == 2
    assert "length_penalty: expected a finite float >= 0, got -1.0" in capsys.readouterr().err


def test_beam_search_flops_count_the_source_once():
    """The encoder (and the keys' projections) once per sentence, every decoder step for beam * batch rows."""
    seed = CONFIGS["seed"]
    for cell, attention in (("lstm", "bahdanau"), ("transformer", "multihead")):
        assert beam_search_flops(seed, attention, 1, cell) == forward_flops(seed, attention, cell=cell)
        encoder = forward_flops(seed.replace(tgt_len=0), attention, cell=cell)
        decoder = forward_flops(seed, attention, cell=cell) - encoder
        assert beam_search_flops(seed, attention, 5, cell) == encoder + 5 * decoder
