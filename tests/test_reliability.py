"""Nothing lost, nothing silently wrong in a training run: model selection that a tied score cannot freeze,
Ctrl-C, checks before work (and before a previous run is moved aside), and OS errors as one line."""
import errno
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from seq2seq_lab import checkpoint as checkpoint_module
from seq2seq_lab.checkpoint import list_checkpoints, load_checkpoint
from seq2seq_lab.cli import main
from seq2seq_lab.data import DataSettings
from seq2seq_lab.training import ModelOptions, RunSettings, _eta, is_better, train

WORDS = ["cat", "dog", "red", "big", "sun", "moon", "tree", "sky", "car", "house", "book", "pen"]
SMALL = ["--backend", "numpy", "--hidden-dim", "16", "--embed-dim", "8", "--batch-size", "8", "--no-progress"]


def one_word_targets(path, n=300, seed=0):
    """Three-word sources, one-word targets: BLEU has no 4-gram to match, so it is 0 at every validation."""
    rng = np.random.default_rng(seed)
    lines = [f"the {a} {b}\t{a[::-1]}x" for a, b in rng.choice(WORDS, size=(n, 2))]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def records(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def run_command(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "seq2seq_lab.cli", *args], capture_output=True, text=True,
                          **kwargs)


# 1. a score that cannot separate checkpoints does not freeze the choice of best.npz
def test_bleu_ties_on_one_word_targets_go_to_the_lower_validation_loss(tmp_path):
    data = DataSettings(task=None, data=str(one_word_targets(tmp_path / "onetok.tsv")), tokenizer="word")
    run = RunSettings(steps=120, batch_size=8, eval_every=20, eval_examples=50, patience=2, select_by="bleu")
    summary = train(tmp_path / "r", ModelOptions(embed_dim=8, hidden_dim=16), data, run, backend="numpy",
                    progress=False, evaluate_test=False)
    valid = [r for r in records(tmp_path / "r") if "valid_bleu" in r]
    assert {r["valid_bleu"] for r in valid} == {0.0}  # the score cannot tell the checkpoints apart
    lowest = min(valid, key=lambda r: r["valid_loss"])
    assert summary["steps"] == 120  # --patience 2 did not stop a run whose loss kept falling
    assert summary["best"]["step"] == lowest["step"] == 120
    assert load_checkpoint(tmp_path / "r" / "best.npz").step == lowest["step"]


def test_is_better_breaks_only_ties_by_loss():
    best = {"metric": "exact", "value": 0.5, "step": 10, "loss": 1.0}
    record = lambda exact, loss: {"valid_exact_match": exact, "valid_loss": loss}  # noqa: E731
    assert is_better("exact", record(0.6, 9.0), best)       # a better score wins whatever its loss
    assert not is_better("exact", record(0.4, 0.1), best)   # a worse score loses whatever its loss
    assert is_better("exact", record(0.5, 0.9), best) and not is_better("exact", record(0.5, 1.0), best)
    assert is_better("exact", record(0.5, 5.0), {"metric": "exact", "value": 0.5, "step": 10})  # older best.npz


# 3. Ctrl-C saves the step reached, says so in one line, exits 130, and the rerun resumes from it exactly
def test_ctrl_c_saves_the_current_step_and_the_rerun_resumes_from_it(tmp_path):
    data = one_word_targets(tmp_path / "c.tsv")
    # no validation before Ctrl-C, however late this busy machine lets the test see the log
    args = ["train", "--data", str(data), "--tokenizer", "word", "--steps", "100000", "--eval-every", "99999",
            "--log-every", "1", *SMALL]
    # SIGINT as a terminal delivers it, whatever this process inherited (a shell's `cmd &` ignores it)
    process = subprocess.Popen([sys.executable, "-m", "seq2seq_lab.cli", *args, "--out", str(tmp_path / "r")],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        metrics = tmp_path / "r" / "metrics.jsonl"
        deadline = time.monotonic() + 120
        while not (metrics.exists() and len(metrics.read_text().splitlines()) >= 30):
            assert process.poll() is None and time.monotonic() < deadline, process.communicate()
            time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    finally:
        process.kill()  # never left training 100,000 steps beside the suite
    assert process.returncode == 130, err
    assert "Traceback" not in err
    saved = list_checkpoints(tmp_path / "r")
    assert len(saved) == 1 and not (tmp_path / "r" / "best.npz").exists()  # no validation was due yet
    step = load_checkpoint(saved[0]).step
    assert 30 <= step < 99999
    assert f"interrupted: saved step {step} as {saved[0]}; run the same command again" in err.splitlines()[-1]

    # the resumed run equals one that was never interrupted, step for step
    resumed = run_command(*[a if a != "100000" else str(step + 5) for a in args], "--out", str(tmp_path / "r"))
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming from {saved[0].name} (step {step} of {step + 5})" in resumed.stderr
    whole = run_command(*[a if a != "100000" else str(step + 5) for a in args], "--out", str(tmp_path / "w"))
    assert whole.returncode == 0, whole.stderr
    assert [r["loss"] for r in records(tmp_path / "r") if "loss" in r] == \
        [r["loss"] for r in records(tmp_path / "w") if "loss" in r]
    a, b = load_checkpoint(list_checkpoints(tmp_path / "r")[-1]), load_checkpoint(list_checkpoints(tmp_path / "w")[-1])
    assert a.step == b.step == step + 5
    for name in a.params:
        np.testing.assert_array_equal(a.params[name], b.params[name])


# 9, 10. checks before work: nothing is moved aside, no empty run folder is left, each option is named
def test_a_bad_option_with_fresh_leaves_the_previous_run_where_it_was(tmp_path, capsys):
    data = one_word_targets(tmp_path / "c.tsv")
    base = ["train", "--data", str(data), "--steps", "4", "--eval-every", "4", "--out", str(tmp_path / "r"), *SMALL]
    assert main(base + ["--tokenizer", "word"]) == 0
    before = sorted(p.name for p in (tmp_path / "r").iterdir())
    capsys.readouterr()
    assert main(base + ["--tokenizer", "bpe", "--vocab-size", "9", "--fresh"]) == 2
    assert capsys.readouterr().err.splitlines()[-1].startswith("error: vocab_size: expected at least")
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == before  # nothing moved to previous-*
    transformer = [a if a != "8" else "16" for a in base]  # a Transformer's embedding width is its model width
    assert main(transformer + ["--tokenizer", "word", "--max-positions", "2", "--encoder", "transformer",
                               "--decoder", "transformer", "--heads", "2", "--fresh"]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        "error: max_positions: expected at least the longest source kept by --max-len 64 (3 tokens), got "
        "--max-positions 2; raise --max-positions or lower --max-len")
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == before


def test_a_run_that_fails_before_writing_leaves_no_run_folder(tmp_path, capsys):
    data = one_word_targets(tmp_path / "c.tsv")
    assert main(["train", "--data", str(data), "--tokenizer", "bpe", "--vocab-size", "9", "--steps", "4",
                 "--out", str(tmp_path / "new" / "r"), *SMALL]) == 2
    assert capsys.readouterr().err.splitlines()[-1].startswith("error: vocab_size: expected at least")
    assert not (tmp_path / "new" / "r").exists()


@pytest.mark.parametrize("option, value, expected", [
    ("--epochs", "inf", "error: epochs: expected a finite number > 0, got inf"),
    ("--seed", "-1", "error: seed: expected an int in [0, 2^32), got -1"),
])
def test_bad_run_numbers_name_their_option(tmp_path, capsys, option, value, expected):
    data = one_word_targets(tmp_path / "c.tsv")
    args = ["train", "--data", str(data), "--out", str(tmp_path / "r"), option, value, *SMALL]
    assert main(args if option == "--epochs" else args + ["--steps", "2"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == expected


def test_resuming_with_another_max_len_names_the_mismatch(tmp_path, capsys):
    data = one_word_targets(tmp_path / "c.tsv")
    base = ["train", "--data", str(data), "--tokenizer", "word", "--eval-every", "4", "--out", str(tmp_path / "r"),
            *SMALL]
    assert main(base + ["--steps", "4"]) == 0
    capsys.readouterr()
    assert main(base + ["--steps", "8", "--max-len", "3"]) == 2
    err = capsys.readouterr().err
    assert "was written with other data settings" in err and "'max_len': (64, 3)" in err and "raise" not in err


# 9. OS errors: one line naming what was being written and where, the last good checkpoint intact
def test_a_full_disk_while_checkpointing_is_one_line_and_keeps_the_last_checkpoint(tmp_path, capsys, monkeypatch):
    data = one_word_targets(tmp_path / "c.tsv")
    base = ["train", "--data", str(data), "--tokenizer", "word", "--eval-every", "4", "--out", str(tmp_path / "r"),
            *SMALL]
    assert main(base + ["--steps", "4"]) == 0
    capsys.readouterr()
    savez = np.savez

    def full(handle, **arrays):  # fault injection: the disk fills up half-way through the archive
        handle.write(b"PK partial")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(checkpoint_module.np, "savez", full)
    assert main(base + ["--steps", "8"]) == 74  # EX_IOERR
    err = capsys.readouterr().err.strip().splitlines()
    assert len([line for line in err if line.startswith("error:")]) == 1 and "Traceback" not in "".join(err)
    assert err[-1].startswith("error: No space left on device (writing best.npz in ") or \
        err[-1].startswith("error: No space left on device (writing the checkpoint of step 8 in ")
    assert err[-1].endswith("the last good checkpoint is " + str(tmp_path / "r" / "checkpoint-00000004.npz") + ")")
    monkeypatch.setattr(checkpoint_module.np, "savez", savez)
    assert [p.name for p in list_checkpoints(tmp_path / "r")] == ["checkpoint-00000004.npz"]
    assert load_checkpoint(tmp_path / "r" / "checkpoint-00000004.npz").step == 4
    assert not [p for p in (tmp_path / "r").iterdir() if p.name.endswith(".tmp")]


def test_a_lock_that_cannot_be_opened_is_one_error_line(tmp_path, capsys):
    (tmp_path / "r" / ".lock").mkdir(parents=True)
    data = one_word_targets(tmp_path / "c.tsv")
    assert main(["train", "--data", str(data), "--steps", "2", "--out", str(tmp_path / "r"), *SMALL]) == 2
    assert capsys.readouterr().err.splitlines()[-1].startswith(f"error: out: cannot open the run folder's lock file "
                                              f"{tmp_path / 'r' / '.lock'} for writing: Is a directory")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny")
    data = one_word_targets(folder / "c.tsv")
    assert main(["train", "--data", str(data), "--tokenizer", "word", "--steps", "4", "--eval-every", "4",
                 "--out", str(folder / "r"), *SMALL]) == 0
    return folder / "r"


def test_output_to_a_full_device_or_a_closed_stdout_is_an_error(tiny_run):
    with open("/dev/full", "w") as device:
        full = subprocess.run([sys.executable, "-m", "seq2seq_lab.cli", "translate", "--run", str(tiny_run),
                               "--backend", "numpy", "the cat dog"], stdout=device, stderr=subprocess.PIPE, text=True)
    assert full.returncode == 74 and full.stderr.strip().splitlines() == \
        ["error: No space left on device (writing standard output)"]
    closed = subprocess.run(f"{sys.executable} -m seq2seq_lab.cli translate --run {tiny_run} --backend numpy "
                            f"'the cat dog' >&-", shell=True, capture_output=True, text=True)
    assert closed.returncode == 2
    assert closed.stderr.strip() == "error: standard output is closed; redirect it to a file or /dev/null"


# 11. the progress bar's time left leaves out the first (compiling) interval
def test_eta_is_paced_after_the_first_logged_interval():
    assert _eta(None, 100.0, 25, 1000) == "?"
    assert _eta((100.0, 25), 100.0, 25, 1000) == "?"
    assert _eta((100.0, 25), 110.0, 50, 1000) == "06:20"  # 10 s per 25 steps, 950 steps left


# 6. a run's checkpoints carry one identity, kept on resume, new with --fresh (`average` refuses to mix runs)
def test_a_run_keeps_its_identity_across_resumes_and_a_fresh_run_gets_another(tmp_path):
    settings = lambda steps: RunSettings(steps=steps, batch_size=8, eval_every=4, eval_examples=8, keep=5)  # noqa
    data, model = DataSettings(task="reverse", train_size=64), ModelOptions(embed_dim=8, hidden_dim=16)
    train(tmp_path / "r", model, data, settings(4), backend="numpy", progress=False, evaluate_test=False)
    train(tmp_path / "r", model, data, settings(8), backend="numpy", progress=False, evaluate_test=False)
    first, second = (load_checkpoint(path).meta["run_id"] for path in list_checkpoints(tmp_path / "r"))
    assert first == second and len(first) == 32
    train(tmp_path / "r", model, data, settings(4), backend="numpy", resume=False, progress=False,
          evaluate_test=False)
    assert load_checkpoint(list_checkpoints(tmp_path / "r")[-1]).meta["run_id"] != first
