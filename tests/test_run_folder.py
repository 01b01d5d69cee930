"""Run folders that never lose or mix up a model, and input hygiene (issue 8): one test per defect."""
import io
import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

from seq2seq_lab import evaluate as evaluate_module
from seq2seq_lab import run_cli
from seq2seq_lab.checkpoint import latest_checkpoint, list_checkpoints, save_checkpoint
from seq2seq_lab.cli import main
from seq2seq_lab.corpus import read_parallel, read_tsv
from seq2seq_lab.run_folder import exclusive, read_metrics

WORDS = ["go", "run", "stop", "eat", "sleep", "walk", "sit", "talk"]
T = ["--hidden-dim", "16", "--embed-dim", "8", "--backend", "numpy", "--no-progress", "--batch-size", "8",
     "--log-every", "5"]


def write_corpus(path, n=300, seed=0, extra=()):
    rng = np.random.default_rng(seed)
    lines = [f"{a} {b}\t{b} {a}" for a, b in rng.choice(WORDS, size=(n, 2))] + list(extra)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def train(tmp_path, out="r", steps=30, eval_every=10, *extra, data=None):
    data = data or write_corpus(tmp_path / "good.tsv")
    return main(["train", "--data", str(data), "--out", str(tmp_path / out), "--steps", str(steps),
                 "--eval-every", str(eval_every), *T, *extra])


# 1. --fresh never mixes two runs, and pruning never deletes a newer checkpoint
def test_fresh_moves_the_previous_run_aside_and_the_new_run_is_the_one_used(tmp_path, capsys):
    assert train(tmp_path) == 0
    assert [p.name for p in list_checkpoints(tmp_path / "r")] == [f"checkpoint-000000{s}.npz" for s in (10, 20, 30)]
    assert main(["average", "--run", str(tmp_path / "r"), "--last", "2"]) == 0
    code = main(["train", "--data", str(tmp_path / "good.tsv"), "--hidden-dim", "32", "--embed-dim", "8",
                 "--backend", "numpy", "--batch-size", "8", "--eval-every", "4", "--steps", "8",
                 "--stop-at-accuracy", "0", "--fresh", "--out", str(tmp_path / "r"), "--no-progress"])
    captured = capsys.readouterr()
    assert code == 0 and "checkpoint-00000008.npz" in captured.out and "moved the previous run" in captured.err
    assert [p.name for p in list_checkpoints(tmp_path / "r")] == ["checkpoint-00000004.npz", "checkpoint-00000008.npz"]
    (aside,) = tmp_path.joinpath("r").glob("previous-*")
    assert [p.name for p in list_checkpoints(aside)] == [f"checkpoint-000000{s}.npz" for s in (10, 20, 30)]
    assert (aside / "metrics.jsonl").exists() and latest_checkpoint(tmp_path / "r").config.hidden_dim == 32
    assert (aside / "averaged.npz").exists() and not (tmp_path / "r" / "averaged.npz").exists()
    assert max(r["step"] for r in read_metrics(tmp_path / "r" / "metrics.jsonl")) == 8


def test_pruning_never_touches_a_later_checkpoint(tmp_path):
    params, opt = {"w": np.ones(2)}, {"count": np.array(1)}
    save_checkpoint(tmp_path, 30, params, opt, {}, keep=1)
    for step in (4, 8):
        save_checkpoint(tmp_path, step, params, opt, {}, keep=1)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-00000008.npz", "checkpoint-00000030.npz"]


# 2. the length filter holds on every split, and decoding is bounded
def test_long_pairs_are_dropped_from_every_split_and_decoding_is_bounded(tmp_path, capsys, monkeypatch):
    long_lines = [f"{'go ' * 3000}\t{'run ' * 3000}" for _ in range(30)]
    data = write_corpus(tmp_path / "long.tsv", extra=long_lines)
    decoded_lengths = []
    real = evaluate_module.decode_ids

    def recording(backend, params, sources, max_len, *args, **kwargs):
        decoded_lengths.append((max_len, max(map(len, sources))))
        return real(backend, params, sources, max_len, *args, **kwargs)

    monkeypatch.setattr(evaluate_module, "decode_ids", recording)
    assert train(tmp_path, "r", 8, 4, "--tokenizer", "word", "--max-len", "12", data=data) == 0
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert sum(summary["dropped_for_length"].values()) == 30 and set(summary["dropped_for_length"]) == \
        {"train", "valid", "test"}
    assert "dropped pairs with a side longer than --max-len 12" in capsys.readouterr().err
    assert decoded_lengths and all(limit <= 12 and longest <= 12 for limit, longest in decoded_lengths)


def test_every_pair_too_long_names_max_len(tmp_path, capsys):
    assert train(tmp_path, "r", 8, 4, "--tokenizer", "word", "--max-len", "2") == 2
    err = capsys.readouterr().err
    assert "--max-len 2" in err and "batch_size" not in err


def test_decoding_long_sources_uses_fewer_rows_per_batch(monkeypatch):
    shapes = []

    class Recorder:
        def greedy(self, params, src, lengths, max_len, **limit):
            shapes.append(src.shape)
            return np.full((src.shape[0], max_len), 2), None

    monkeypatch.setattr(evaluate_module, "DECODE_BUDGET", 10_000)
    evaluate_module.decode_ids(Recorder(), None, [[5] * 100] * 10, max_len=20, batch_size=256)
    assert all(rows * width * 20 <= 10_000 for rows, width in shapes) and sum(r for r, _ in shapes) >= 10


# 3. lines split at "\n" only
def test_unicode_line_separators_do_not_misalign_parallel_files(tmp_path):
    odd = ["a\u2028b", "c\u0085d", "e\u2029f", "g\x0bh", "i\x0cj", "k\x1cl", "m\x1dn", "o\x1ep"]
    sources = [f"source {i} {odd[i % len(odd)]}" for i in range(40)]
    targets = [f"target {i}" for i in range(40)]
    (tmp_path / "src.txt").write_text("\n".join(sources) + "\n", encoding="utf-8", newline="")
    (tmp_path / "tgt.txt").write_text("\r\n".join(targets) + "\r\n", encoding="utf-8", newline="")
    pairs = read_parallel(tmp_path / "src.txt", tmp_path / "tgt.txt").pairs
    assert len(pairs) == 40 and all(s.split()[1] == t.split()[1] for s, t in pairs)
    (tmp_path / "bad.tsv").write_text("a\u2028b\tc\nno tab\n", encoding="utf-8", newline="")
    with pytest.raises(ValueError, match=r"bad.tsv:2: expected 'source<TAB>target'"):
        read_tsv(tmp_path / "bad.tsv")


# 4. a changed corpus is refused, and a relative --data works from anywhere
def test_a_changed_corpus_is_refused_on_evaluate_and_resume(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_corpus(tmp_path / "corpus.tsv")
    assert main(["train", "--data", "corpus.tsv", "--out", "r", "--steps", "8", "--eval-every", "4", *T]) == 0
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert main(["evaluate", "--run", "../r", "--backend", "numpy", "--json"]) == 0
    capsys.readouterr()
    with open(tmp_path / "corpus.tsv", "a") as handle:
        handle.write("".join(f"new{i} x\tx new{i}\n" for i in range(30)))
    assert main(["evaluate", "--run", "../r", "--backend", "numpy"]) == 2
    assert "changed since the run" in capsys.readouterr().err
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--data", "corpus.tsv", "--out", "r", "--steps", "12", "--eval-every", "4", *T]) == 2
    assert "corpus.tsv changed since the run" in capsys.readouterr().err


# 5. one training per run folder
def test_a_second_training_on_a_held_folder_is_refused(tmp_path, capsys):
    with exclusive(tmp_path / "r"):
        assert train(tmp_path, "r", 8, 4) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'r'} is in use by another training (pid {os.getpid()})" in err
    assert train(tmp_path, "r", 8, 4) == 0  # released


def test_the_lock_dies_with_its_process(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from pathlib import Path; "
                               "from seq2seq_lab.run_folder import exclusive\n"
                               f"with exclusive(Path({str(tmp_path / 'r')!r})):\n"
                               "    print('held', flush=True); time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(ValueError, match=rf"pid {holder.pid}"):
        with exclusive(tmp_path / "r"):
            pass
    holder.kill()
    holder.wait()
    with exclusive(tmp_path / "r"):
        pass


# 6. a torn metrics.jsonl
def test_a_torn_metrics_line_is_dropped_and_other_damage_names_the_file(tmp_path, capsys):
    assert train(tmp_path, "r", 8, 4) == 0
    metrics = tmp_path / "r" / "metrics.jsonl"
    with open(metrics, "a") as handle:
        handle.write('{"step": 25, "lo')
    assert train(tmp_path, "r", 12, 4) == 0
    assert "dropped a torn last line" in capsys.readouterr().err
    assert max(r["step"] for r in read_metrics(metrics)) == 12
    metrics.write_text('{"step": 1}\nnot json\n{"step": 2}\n')
    assert train(tmp_path, "r", 16, 4) == 2
    assert f"{metrics}:2: expected a JSON record" in capsys.readouterr().err


# 7. temporaries of dead writers are removed
def test_stale_temporary_checkpoints_are_removed(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / "r").mkdir()
    stale = [tmp_path / "r" / f".{name}.{dead.pid}.tmp"
             for name in ("checkpoint-00000004.npz", "best.npz", "averaged.npz", "metrics.jsonl")]
    live = tmp_path / "r" / f".checkpoint-00000004.npz.{os.getppid()}.tmp"
    for path in stale:
        path.write_bytes(b"x" * 100)
    live.write_bytes(b"x")
    assert train(tmp_path, "r", 4, 4) == 0
    assert not any(path.exists() for path in stale) and live.exists()


# 8. input hygiene
def test_bom_crlf_and_bad_option_values(tmp_path, capsys, monkeypatch):
    (tmp_path / "bom.tsv").write_bytes("\ufeffgo\tvas\r\nrun\tcours\r\n".encode())
    assert read_tsv(tmp_path / "bom.tsv").pairs == [("go", "vas"), ("run", "cours")]
    assert main(["train", "--task", "copy", "--train-size", "200", "--steps", "4", "--eval-every", "4",
                 "--out", str(tmp_path / "r"), *T]) == 0
    capsys.readouterr()
    monkeypatch.setattr("sys.stdin", io.StringIO("abc\r\n12\r\n"))
    assert main(["translate", "--run", str(tmp_path / "r"), "--backend", "numpy"]) == 0
    crlf = capsys.readouterr()
    assert main(["translate", "--run", str(tmp_path / "r"), "--backend", "numpy", "abc", "12"]) == 0
    assert crlf.out == capsys.readouterr().out and "<unk>" not in crlf.err
    for argv in (["translate", "--beam", "0", "x"], ["translate", "--beam", "-3", "x"],
                 ["evaluate", "--beam", "0"], ["train", "--stop-at-accuracy", "1.5"],
                 ["train", "--stop-at-accuracy", "-0.1"]):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith("error: argument --") and err.count("\n") == 1, err  # one line, no usage block
    with pytest.raises(SystemExit):
        main(["evaluate", "--beam", "0"])
    assert capsys.readouterr().err == ("error: argument --beam: expected an int >= 1, got 0 "
                                       "(see `seq2seq evaluate --help`)\n")


# 9. one error line instead of a traceback
def test_broken_pipe_exits_quietly():
    result = subprocess.run(f"{sys.executable} -m seq2seq_lab.cli gradcheck --json --attention none --layers 1 "
                            "--unidirectional --max-entries 2 | head -c 100", shell=True, capture_output=True,
                            text=True, timeout=300)
    assert len(result.stdout) == 100 and "Traceback" not in result.stderr and result.stderr == ""


def test_bad_run_folders_and_plot_paths_are_one_error_line(tmp_path, capsys, monkeypatch):
    (tmp_path / "file").write_text("x")
    assert train(tmp_path, "file", 4, 4) == 2
    assert "expected a folder for the run, got the existing file" in capsys.readouterr().err
    assert train(tmp_path, "file/sub", 4, 4) == 2
    assert "cannot create the run folder" in capsys.readouterr().err
    monkeypatch.setattr(run_cli, "load_run", lambda *a: pytest.fail("translated before checking the plot path"))
    assert main(["translate", "--run", str(tmp_path), "--attention-plot", "/missing/dir/a.png", "x"]) == 2
    assert capsys.readouterr().err.startswith("error: attention_plot: expected a file in a writable folder")


def test_out_of_memory_is_one_error_line(tmp_path, capsys, monkeypatch):
    def exhausted(*args, **kwargs):
        np.ones((1 << 44,), dtype=np.float64)  # 128 TiB: numpy's own MemoryError

    monkeypatch.setattr(run_cli, "train", exhausted)
    assert train(tmp_path, "r", 4, 4) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1].startswith("error: out of memory") and "Traceback" not in err


# 10. honest throughput and step counts
def test_throughput_excludes_validation_and_counts_this_invocation(tmp_path, capsys, monkeypatch):
    import time

    from seq2seq_lab import training

    real = training.validation_record

    def slow(*args, **kwargs):
        time.sleep(0.5)
        return real(*args, **kwargs)

    monkeypatch.setattr(training, "validation_record", slow)
    assert train(tmp_path, "r", 20, 10, "--log-every", "1", "--stop-at-accuracy", "0") == 0
    records = [r for r in read_metrics(tmp_path / "r" / "metrics.jsonl") if "tokens_per_s" in r]
    after_validation = next(r for r in records if r["step"] == 11)["tokens_per_s"]
    assert after_validation > 0.2 * np.median([r["tokens_per_s"] for r in records])
    assert train(tmp_path, "r", 30, 10, "--stop-at-accuracy", "0") == 0
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["steps_trained"] == 10 and summary["resumed_from"] == 20 and summary["steps"] == 30
    assert summary["train_seconds"] < summary["total_seconds"] - 0.5
    assert "trained 10 steps this time (step 20 -> 30)" in capsys.readouterr().out
    assert train(tmp_path, "r", 12, 10, "--stop-at-accuracy", "0") == 0
    captured = capsys.readouterr()
    assert "re-scoring the checkpoint" in captured.err and "trained no steps" in captured.out


# 11. CLI polish
def test_version_help_defaults_and_one_line_warnings(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.startswith("seq2seq 0.")
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "(default: 64)" in help_text and "(default: 0.995)" in help_text and "(default: adam)" in help_text
    data = write_corpus(tmp_path / "pairs.tsv", extra=["broken line"])
    assert train(tmp_path, "r", 4, 4, "--skip-malformed", data=data) == 0
    err = capsys.readouterr().err
    assert "warning: " in err and "skipped 1 malformed line(s)" in err and "UserWarning" not in err


def test_attention_plot_with_cjk_text_prints_no_glyph_warnings(tmp_path):
    from seq2seq_lab.plots import plot_attention

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plot_attention([(list("日本語です"), list("こんにちは"), np.full((5, 5), 0.2))], tmp_path / "a.png")
    assert (tmp_path / "a.png").stat().st_size > 1000
