"""The benchmark harness keeps working (tiny sizes, no timing assertions) and the torch baseline is our model."""
import json

import numpy as np
import pytest

from seq2seq_lab.bench.configs import CONFIGS, forward_flops, train_step_flops
from seq2seq_lab.cli import main
from seq2seq_ref import ModelConfig, loss_and_grads, make_batch
from seq2seq_ref.decode import greedy_decode
from tests.helpers import float64_params

torch = pytest.importorskip("torch")


def test_flop_count_of_the_seed_config():
    # 2 LSTMs x 100 steps x 2B(E+H)4H, plus 2BTHV, all x3 for forward + backward: 32.7 GFLOP
    assert train_step_flops(CONFIGS["seed"], "none") == 3 * (200 * 2 * 64 * 384 * 1024 + 2 * 64 * 100 * 256 * 256)
    assert round(train_step_flops(CONFIGS["seed"], "none") / 1e9, 1) == 32.7
    assert forward_flops(CONFIGS["seed"], "bahdanau") > forward_flops(CONFIGS["seed"], "none")


def test_bench_command_smoke(tmp_path, capsys):
    out = tmp_path / "bench.json"
    code = main(["bench", "--config", "tiny", "--backends", "numpy,jax,torch", "--attention", "none,bahdanau",
                 "--warmup", "1", "--repeats", "2", "--json", str(out)])
    assert code == 0 and "vs torch" in capsys.readouterr().out
    report = json.loads(out.read_text())
    assert report["config"]["name"] == "tiny" and report["versions"]["numpy"] and report["device"]["cpu_cores"]
    assert report["matmul_peak"]["gflops"] > 0
    records = report["records"]
    assert {(r["backend"], r["attention"], r["task"]) for r in records} == {
        (b, a, t) for b in ("numpy", "jax", "torch") for a in ("none", "bahdanau") for t in ("train", "decode")}
    for r in records:
        assert r["ms_median"] > 0 and r["ms_min"] <= r["ms_median"] <= r["ms_max"] and r["repeats"] == 2
        assert r["gflops_achieved"] > 0 and r["percent_of_peak"] > 0 and r["peak_rss_bytes"] > 0
        assert r["time_vs_torch"] == pytest.approx(
            r["ms_median"] / next(t["ms_median"] for t in records if t["backend"] == "torch"
                                  and t["attention"] == r["attention"] and t["task"] == r["task"]))


def test_bench_rejects_bad_arguments(capsys):
    with pytest.raises(SystemExit):
        main(["bench", "--backends", "numpy,tensorflow"])
    assert "expected a comma-separated list" in capsys.readouterr().err
    assert main(["bench", "--config", "tiny", "--repeats", "0"]) == 2
    assert "repeats: expected a positive int, got 0" in capsys.readouterr().err


@pytest.mark.parametrize("attention", ["none", "bahdanau", "luong"])
@pytest.mark.parametrize("layers,bidirectional", [(1, False), (2, True)])
def test_torch_baseline_is_the_same_model(attention, layers, bidirectional):
    from seq2seq_lab.bench.torch_model import TorchSeq2Seq

    config = ModelConfig(9, 8, 5, 6, layers, bidirectional, attention)
    params = float64_params(config, scale=0.5)
    rng = np.random.default_rng(0)
    batch = make_batch(rng.integers(3, 9, (3, 7)).tolist(), rng.integers(3, 8, (3, 5)).tolist(), config)
    model = TorchSeq2Seq(config).double().load_flat(params)
    tensors = [torch.as_tensor(a) for a in (batch.src, batch.tgt_in, batch.tgt_out)]
    loss = model.loss(*tensors, torch.ones(batch.tgt_out.shape, dtype=torch.float64))
    reference, grads = loss_and_grads(params, config, batch)
    assert abs(loss.item() - reference) <= 1e-12 * reference
    loss.backward()
    np.testing.assert_allclose(model.output.weight.grad.numpy().T, grads["output/W"], rtol=1e-9, atol=1e-14)
    tokens, _ = greedy_decode(params, config, batch.src, batch.src_lengths, 6)
    np.testing.assert_array_equal(model.greedy(tensors[0], 6).numpy()[tokens != config.pad_id],
                                  tokens[tokens != config.pad_id])
