"""Training runs: checkpoints, exact resumption, divergence, and the train/evaluate/translate commands."""
import json

import numpy as np
import pytest

from seq2seq_lab import checkpoint as ckpt
from seq2seq_lab.backends import OptimiserSettings
from seq2seq_lab.checkpoint import CheckpointError, list_checkpoints, load_checkpoint, save_checkpoint
from seq2seq_lab.cli import main
from seq2seq_lab.data import DataSettings
from seq2seq_lab.training import ModelOptions, RunSettings, TrainingDiverged, fit_decay_steps, train
from seq2seq_lab.vocab import Vocab

TINY = ModelOptions(embed_dim=8, hidden_dim=16, bidirectional=True, attention="bahdanau")
DATA = DataSettings(task="reverse", train_size=200)


def tiny_run(out, steps, backend="numpy", model=TINY, optimiser=OptimiserSettings(), **run):
    settings = RunSettings(steps=steps, batch_size=16, log_every=1, eval_every=4, eval_examples=20, **run)
    return train(out, model, DATA, settings, optimiser, backend, progress=False, evaluate_test=False)


def logged(run_dir, key):
    """Every value of key in the run's metrics.jsonl, in order."""
    return [r[key] for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if key in r]


def losses(run_dir):
    return logged(run_dir, "loss")


@pytest.mark.parametrize("backend", ["numpy", "jax"])
def test_resumed_run_equals_uninterrupted_run(tmp_path, backend):
    model = ModelOptions(embed_dim=8, hidden_dim=16, num_layers=2, attention="luong", dropout=0.2)
    one_shape = {"pad_multiple": 64}  # every batch one width: jax compiles the step once, not per width
    tiny_run(tmp_path / "whole", 8, backend, model, **one_shape)
    tiny_run(tmp_path / "split", 4, backend, model, **one_shape)
    tiny_run(tmp_path / "split", 8, backend, model, **one_shape)  # resumes from step 4
    assert losses(tmp_path / "whole") == losses(tmp_path / "split") and len(losses(tmp_path / "whole")) == 8
    whole, split = load_checkpoint(list_checkpoints(tmp_path / "whole")[-1]), \
        load_checkpoint(list_checkpoints(tmp_path / "split")[-1])
    assert whole.step == split.step == 8
    for name, value in whole.params.items():
        np.testing.assert_array_equal(split.params[name], value)
    for name, value in whole.opt_state.items():
        np.testing.assert_array_equal(split.opt_state[name], value)


def test_checkpoint_written_by_one_backend_resumes_in_the_other(tmp_path):
    """Under the noam schedule, so that the schedule's count crosses too (at step 4 the rate has passed its peak)."""
    optimiser = OptimiserSettings("sgd", 0.1, momentum=0.9, schedule="noam", warmup=3)
    one_shape = {"pad_multiple": 64}  # every batch one width: jax compiles the step once, not per width
    tiny_run(tmp_path / "run", 4, "numpy", optimiser=optimiser, **one_shape)
    assert load_checkpoint(list_checkpoints(tmp_path / "run")[-1]).opt_state["count"] == 4
    tiny_run(tmp_path / "run", 8, "jax", optimiser=optimiser, **one_shape)
    tiny_run(tmp_path / "ref", 8, "numpy", optimiser=optimiser, **one_shape)
    np.testing.assert_allclose(losses(tmp_path / "run"), losses(tmp_path / "ref"), rtol=1e-4)
    rates = logged(tmp_path / "run", "lr")
    np.testing.assert_allclose(rates, [0.1 * min(s / 3, (3 / s) ** 0.5) for s in range(1, 9)], rtol=1e-15)


def test_a_run_that_stopped_early_is_not_trained_further(tmp_path):
    tiny_run(tmp_path, 12, stop_at_accuracy=0.0)  # any accuracy stops it at the first evaluation
    log = (tmp_path / "metrics.jsonl").read_text()
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-00000004.npz"]
    summary = tiny_run(tmp_path, 12, stop_at_accuracy=0.0)
    assert summary["steps"] == 4 and (tmp_path / "metrics.jsonl").read_text() == log
    assert len(list_checkpoints(tmp_path)) == 1


def test_checkpoints_keep_the_newest(tmp_path):
    tiny_run(tmp_path, 12, keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-00000008.npz", "checkpoint-00000012.npz"]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["steps"] == 12 and (tmp_path / "loss_curve.png").stat().st_size > 1000


def test_a_failed_write_leaves_the_last_good_checkpoint(tmp_path, monkeypatch):
    params, opt = {"w": np.ones(3)}, {"count": np.array(1)}
    good = save_checkpoint(tmp_path, 1, params, opt, {"config": {}})
    before = good.read_bytes()

    def explode(handle, **arrays):
        handle.write(b"PK\x03\x04 partial")
        raise OSError("disk full")

    monkeypatch.setattr(ckpt.np, "savez", explode)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tmp_path, 2, params, opt, {"config": {}})
    assert [p.name for p in tmp_path.iterdir()] == [good.name] and good.read_bytes() == before


def _corrupt(path, how):
    data = bytearray(path.read_bytes())
    if how == "truncated":
        path.write_bytes(bytes(data[: len(data) // 2]))
    else:
        middle = len(data) // 2
        data[middle:middle + 16] = bytes(16)
        path.write_bytes(bytes(data))


@pytest.mark.parametrize("how", ["truncated", "flipped"])
def test_corrupt_checkpoint_gives_a_clear_error_and_keeps_the_older_one(tmp_path, how):
    tiny_run(tmp_path, 8)
    older, newest = list_checkpoints(tmp_path)
    older_bytes = older.read_bytes()
    _corrupt(newest, how)
    with pytest.raises(CheckpointError, match=r"checkpoint-00000008.npz is corrupt or truncated"):
        load_checkpoint(newest)
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        tiny_run(tmp_path, 12)
    assert older.read_bytes() == older_bytes and load_checkpoint(older).step == 4


def test_mismatched_checkpoints_are_refused(tmp_path):
    tiny_run(tmp_path, 4)
    with pytest.raises(CheckpointError, match=r"other config settings .*'hidden_dim': \(16, 32\)"):
        tiny_run(tmp_path, 8, model=ModelOptions(embed_dim=8, hidden_dim=32, attention="bahdanau"))
    path = list_checkpoints(tmp_path)[-1]
    checkpoint = load_checkpoint(path)
    checkpoint.params["output/W"] = checkpoint.params["output/W"][:, :3]
    save_checkpoint(tmp_path / "bad", 1, checkpoint.params, checkpoint.opt_state, checkpoint.meta)
    with pytest.raises(CheckpointError, match=r"does not match its own config: params\['output/W'\]: expected shape"):
        load_checkpoint(list_checkpoints(tmp_path / "bad")[-1])


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    from seq2seq_lab.backends import NumpyBackend

    real_step = NumpyBackend.train_step

    def step_that_fails_at_six(self, params, opt_state, batch, seed, step, update_scale=1.0):
        params, opt_state, loss = real_step(self, params, opt_state, batch, seed, step, update_scale)
        return params, opt_state, (float("nan") if step == 5 else loss)

    monkeypatch.setattr(NumpyBackend, "train_step", step_that_fails_at_six)
    with pytest.raises(TrainingDiverged, match=r"loss became nan at step 6; stopped without saving \(the last good "
                                               r"checkpoint is .*checkpoint-00000004.npz\)"):
        tiny_run(tmp_path, 12)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-00000004.npz"]


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning",
                            "ignore:invalid value encountered:RuntimeWarning")
def test_a_real_blow_up_never_reaches_a_checkpoint(tmp_path):
    with pytest.raises(TrainingDiverged, match=r"(loss became (nan|inf)|parameters became non-finite) at step"):
        tiny_run(tmp_path, 12, optimiser=OptimiserSettings("sgd", 1e38, momentum=0.0, clip_norm=None))
    for path in list_checkpoints(tmp_path):
        assert all(np.isfinite(v).all() for v in load_checkpoint(path).params.values())


def test_train_evaluate_translate_commands(tmp_path, capsys, monkeypatch):
    run = str(tmp_path / "run")
    code = main(["train", "--task", "copy", "--train-size", "300", "--steps", "30", "--batch-size", "16",
                 "--embed-dim", "8", "--hidden-dim", "16", "--backend", "numpy", "--out", run, "--no-progress",
                 "--eval-every", "15"])
    out = capsys.readouterr().out
    assert code == 0 and "test exact match" in out and "checkpoint-00000030.npz" in out
    assert main(["evaluate", "--run", run, "--backend", "numpy", "--json"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert set(scores) >= {"exact_match", "token_accuracy", "perplexity", "bleu", "chrf"}
    assert 0 <= scores["exact_match"] <= 1 and scores["perplexity"] >= 1
    pairs = tmp_path / "held_out.tsv"
    pairs.write_text("abc\tabc\n12\t12\n")
    assert main(["evaluate", "--run", run, "--backend", "numpy", "--data", str(pairs), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["examples"] == 2
    monkeypatch.setattr("sys.stdin", __import__("io").StringIO("abc\n\n12\n"))
    plot = tmp_path / "attention.png"
    assert main(["translate", "--run", run, "--backend", "numpy", "--attention-plot", str(plot)]) == 0
    captured = capsys.readouterr()
    assert captured.out.split("\n")[1] == "" and len(captured.out.splitlines()) == 3  # a blank line for a blank line
    assert plot.stat().st_size > 1000
    assert main(["translate", "--run", run, "--backend", "numpy", "--unseen", "unk", "ab~"]) == 0
    assert "unseen in training mapped to <unk>: ['~']" in capsys.readouterr().err
    # by default a char model drops what it never saw, and translates stripped text as it was trained on
    assert main(["translate", "--run", run, "--backend", "numpy", "ab"]) == 0
    clean = capsys.readouterr().out
    for variant in ("ab~", "~ab", "a~b", "  ab ~ ", "\u2603ab"):
        assert main(["translate", "--run", run, "--backend", "numpy", variant]) == 0
        captured = capsys.readouterr()
        assert captured.out == clean, variant
        assert ("~" in variant or "\u2603" in variant) == ("unseen in training dropped" in captured.err), variant
    assert main(["translate", "--run", run, "--backend", "numpy", "~", "ab"]) == 0  # nothing left: an empty line
    captured = capsys.readouterr()
    assert captured.out == "\n" + clean and "'~': nothing left to translate" in captured.err


@pytest.mark.parametrize("content,flag,expected", [
    ("a\tb\nbroken\n", [], "pairs.tsv:2: expected 'source<TAB>target', got no tab"),
    ("", [], "got an empty file"),
])
def test_train_command_reports_bad_data(tmp_path, capsys, content, flag, expected):
    path = tmp_path / "pairs.tsv"
    path.write_text(content)
    code = main(["train", "--data", str(path), "--out", str(tmp_path / "run"), "--backend", "numpy", *flag])
    assert code == 2 and expected in capsys.readouterr().err


def test_train_on_a_tsv_corpus_with_skipped_lines(tmp_path, capsys):
    path = tmp_path / "pairs.tsv"
    rng = np.random.default_rng(0)
    words = ["go", "run", "stop", "eat", "sleep", "walk"]
    lines = [f"{a} {b}\t{b} {a}\tattribution" for a, b in rng.choice(words, size=(200, 2))] + ["broken line"]
    path.write_text("\n".join(lines) + "\n")
    code = main(["train", "--data", str(path), "--tokenizer", "word", "--skip-malformed", "--steps", "6",
                 "--batch-size", "8", "--embed-dim", "4", "--hidden-dim", "8", "--backend", "numpy",
                 "--out", str(tmp_path / "run"), "--no-progress", "--eval-every", "3"])
    captured = capsys.readouterr()
    assert code == 0 and "test exact match" in captured.out
    assert "warning: " in captured.err and "skipped 1 malformed line(s), first at line 201" in captured.err
    checkpoint = load_checkpoint(list_checkpoints(tmp_path / "run")[-1])
    assert checkpoint.meta["src_vocab"]["tokenizer"] == "word" and "sleep" in checkpoint.meta["src_vocab"]["tokens"]


def test_missing_run_folder_is_a_clear_error(tmp_path, capsys):
    assert main(["translate", "--run", str(tmp_path / "nothing"), "hello"]) == 2
    assert "expected a checkpoint in" in capsys.readouterr().err


def test_a_checkpoint_from_before_the_cell_and_schedule_fields_loads_and_resumes_as_before(tmp_path):
    tiny_run(tmp_path, 4)
    path = list_checkpoints(tmp_path)[-1]
    checkpoint = load_checkpoint(path)
    for field in ("encoder", "decoder", "num_heads", "tie_embeddings"):
        del checkpoint.meta["config"][field]
    for field in ("schedule", "warmup", "beta2"):
        del checkpoint.meta["optimizer"][field]
    path.unlink()
    save_checkpoint(tmp_path, 4, checkpoint.params, checkpoint.opt_state,
                    {k: v for k, v in checkpoint.meta.items() if k not in ("format", "step")})
    old = load_checkpoint(list_checkpoints(tmp_path)[-1])
    assert "encoder" not in old.meta["config"]
    assert (old.config.encoder, old.config.decoder, old.config.num_heads) == ("lstm", "lstm", 1)
    assert old.config.tie_embeddings == "none"
    assert tiny_run(tmp_path, 8)["steps"] == 8  # resumes


def test_train_command_with_gru_cells_and_multihead_attention(tmp_path, capsys):
    run = str(tmp_path / "run")
    assert main(["train", "--task", "reverse", "--train-size", "200", "--steps", "8", "--batch-size", "16",
                 "--embed-dim", "8", "--hidden-dim", "8", "--encoder", "gru", "--decoder", "lstm",
                 "--attention", "multihead", "--heads", "4", "--backend", "numpy", "--out", run, "--no-progress",
                 "--eval-every", "4", "--log-every", "4", "--schedule", "noam", "--warmup", "4",
                 "--beta2", "0.98"]) == 0
    config = load_checkpoint(list_checkpoints(run)[-1]).config
    assert load_checkpoint(list_checkpoints(run)[-1]).meta["optimizer"]["beta2"] == 0.98
    assert (config.encoder, config.decoder, config.attention, config.num_heads) == ("gru", "lstm", "multihead", 4)
    rates = logged(tmp_path / "run", "lr")
    assert rates == pytest.approx([3e-3, 3e-3 * 0.5 ** 0.5])  # the peak at step 4, decayed by sqrt(4/8) at 8
    capsys.readouterr()
    assert main(["translate", "--run", run, "--backend", "jax", "abc"]) == 0
    assert main(["train", "--task", "reverse", "--hidden-dim", "6", "--attention", "multihead", "--heads", "4",
                 "--out", str(tmp_path / "bad"), "--backend", "numpy"]) == 2
    assert "num_heads: expected a divisor of hidden_dim (6), got 4" in capsys.readouterr().err


def test_train_command_with_the_linear_schedule(tmp_path, capsys):
    """--schedule linear decays to zero at --decay-steps (default --steps), stored with the run; a resumed run
    keeps it; without either it is refused before anything is written."""
    flags = ["train", "--task", "reverse", "--train-size", "200", "--batch-size", "16", "--embed-dim", "8",
             "--hidden-dim", "8", "--backend", "numpy", "--no-progress", "--eval-every", "4", "--log-every", "2",
             "--schedule", "linear", "--warmup", "2", "--lr", "1e-2"]
    run = tmp_path / "run"
    assert main([*flags, "--steps", "8", "--out", str(run)]) == 0
    assert load_checkpoint(list_checkpoints(run)[-1]).meta["optimizer"]["decay_steps"] == 8
    rates = logged(run, "lr")
    assert rates == pytest.approx([1e-2, 1e-2 * 5 / 7, 1e-2 * 3 / 7, 1e-2 / 7])  # steps 2, 4, 6, 8 of (S5)
    assert main([*flags, "--steps", "12", "--decay-steps", "8", "--out", str(tmp_path / "long")]) == 0
    rates = logged(tmp_path / "long", "lr")
    assert rates[-2:] == [0.0, 0.0]  # past decay_steps the run holds still
    capsys.readouterr()
    assert main([*flags, "--epochs", "1", "--out", str(tmp_path / "bad")]) == 2
    assert "decay_steps: --schedule linear decays to zero at --decay-steps, expected it (or --steps)" \
        in capsys.readouterr().err
    assert main([*flags[:-6], "--schedule", "noam", "--decay-steps", "8", "--steps", "8",
                 "--out", str(tmp_path / "bad")]) == 2
    assert "decay_steps: only schedule 'linear' takes it, got 8 with 'noam'" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_decay_steps_fit_ends_the_linear_schedule_where_the_time_does(tmp_path, capsys):
    """--decay-steps fit: once warm-up is over the run fits N to the time left, logs (S5)'s rate with that N, ends
    at N at the latest, and keeps N when resumed (never refitted); without --max-minutes it is refused."""
    flags = ["train", "--task", "reverse", "--train-size", "200", "--batch-size", "16", "--embed-dim", "8",
             "--hidden-dim", "8", "--backend", "numpy", "--no-progress", "--eval-every", "100000", "--log-every",
             "2", "--schedule", "linear", "--warmup", "2", "--lr", "1e-2", "--decay-steps", "fit", "--steps", "100000"]
    run = tmp_path / "run"
    assert main([*flags, "--max-minutes", "0.03", "--out", str(run)]) == 0
    fitted = json.loads((run / "summary.json").read_text())["fitted_decay_steps"]
    assert 2 <= fitted < 100000 and f"the learning rate reaches zero after step {fitted}" in capsys.readouterr().err
    checkpoint = load_checkpoint(list_checkpoints(run)[-1])
    assert checkpoint.meta["fitted_decay_steps"] == fitted and checkpoint.step <= fitted
    records = [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "lr" in r]
    for record in records:  # update `step` moved at (S5)'s rate with N = the fitted end
        step = record["step"]
        assert record["lr"] == pytest.approx(1e-2 * min(step / 2, max(0, (fitted + 1 - step) / (fitted - 1))),
                                             rel=1e-12, abs=1e-18)
    assert main([*flags, "--max-minutes", "5", "--out", str(run)]) == 0  # resumed: the same end, not refitted
    summary = json.loads((run / "summary.json").read_text())
    assert summary["fitted_decay_steps"] == fitted and summary["steps"] == fitted
    assert "--decay-steps fit:" not in capsys.readouterr().err

    assert main([*flags, "--out", str(tmp_path / "bad")]) == 2
    assert ("decay_steps: 'fit' ends the linear schedule when --max-minutes runs out, expected --max-minutes "
            "with it, got none") in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
    with pytest.raises(SystemExit):
        main([*flags[:-4], "--decay-steps", "fits", "--max-minutes", "1", "--out", str(tmp_path / "bad")])
    assert "--decay-steps: expected an int >= 1 or 'fit', got 'fits'" in capsys.readouterr().err


def test_fit_decay_steps_counts_the_time_left_and_the_validations_on_the_way():
    # 60 s left at 0.5 s a step: 120 steps; a validation of 5 s every 50 steps on the way costs 10 steps each
    assert fit_decay_steps(100, 60.0, 0.5, 100000, 0.0, 10**6) == 220
    # validations every 50 steps, 5 s each: to step 200, one on the way (150) and 55 s in all; any later end
    # takes the one at 200 too, and 201 steps' time plus two validations is over 60 s
    assert fit_decay_steps(100, 60.0, 0.5, 50, 5.0, 10**6) == 200
    assert fit_decay_steps(100, 60.0, 0.5, 50, 0.0, 10**6) == 220
    assert fit_decay_steps(100, 60.0, 0.5, 100000, 0.0, 150) == 150  # --steps caps it
    assert fit_decay_steps(100, -3.0, 0.5, 100000, 0.0, 10**6) == 100  # no time left: the rate is zero from here


def test_the_numpy_backend_keeps_freed_memory(monkeypatch):
    """allocator.keep_freed_memory (glibc keeps large freed blocks for reuse) takes effect on glibc and is what
    the numpy backend asks for when it starts."""
    import platform

    from seq2seq_lab import allocator
    from seq2seq_lab.backends import make_backend

    assert allocator.keep_freed_memory() is (platform.libc_ver()[0] == "glibc")
    calls = []
    monkeypatch.setattr(allocator, "keep_freed_memory", lambda: calls.append(1) or True)
    make_backend("numpy", TINY.config(*[Vocab.build(["abc"])] * 2), OptimiserSettings())
    assert calls == [1]
