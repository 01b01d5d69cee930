"""What users see: --help, bench and gradcheck statuses and output files, the plots (inspected as Figures)."""
import argparse
import json
import os
from pathlib import Path

import numpy as np
import pytest

from seq2seq_lab import bench_cli, gradcheck_cli, plots
from seq2seq_lab.cli import build_parser, main

TINY_BENCH = ["bench", "--config", "tiny", "--backends", "numpy", "--attention", "none", "--tasks", "train",
              "--warmup", "0", "--repeats", "1"]
SMALL_GRADCHECK = ["gradcheck", "--encoder", "lstm", "--decoder", "lstm", "--attention", "none", "--layers", "1",
                   "--unidirectional", "--max-entries", "2"]


def subcommands() -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def option_help(command: str) -> dict[str, str]:
    """Each option's help as --help prints it (defaults filled in), by its longest spelling."""
    parser = subcommands()[command]
    formatter = parser._get_formatter()
    return {max(a.option_strings, key=len): formatter._expand_help(a) if a.help else ""
            for a in parser._actions if a.option_strings}


def test_help_shows_defaults_of_zero_but_none_for_flags():
    train = option_help("train")
    assert train["--seed"].endswith("(default: 0)")
    assert train["--dropout"].endswith("(default: 0.0)") and train["--label-smoothing"].endswith("(default: 0.0)")
    assert "(default: 64)" in train["--batch-size"]
    for flag in ("--fresh", "--lowercase", "--no-progress"):
        assert "(default" not in train[flag], train[flag]
    assert option_help("gradcheck")["--seed"].endswith("(default: 0)")
    assert "(default" not in option_help("gradcheck")["--json"]
    # list options show their default as it is typed
    assert option_help("bench")["--backends"].endswith("(default: numpy,jax,torch)")


def test_every_option_of_every_command_has_help():
    missing = [(name, action.option_strings) for name, parser in subcommands().items() for action in parser._actions
               if action.option_strings and not {"-h", "--help", "--version"} & set(action.option_strings)
               and not (action.help or "").strip()]
    assert missing == []


def test_bench_list_defaults_parse_to_lists():
    args = build_parser().parse_args(["bench"])
    assert args.backends == ["numpy", "jax", "torch"] and args.attention == ["none", "bahdanau"]
    assert args.tasks == ["train", "decode"] and args.cells == ["lstm"]


@pytest.fixture
def no_timing(monkeypatch):
    monkeypatch.setattr(bench_cli, "measure_interleaved", lambda *a: pytest.fail("timed before checking --json"))
    monkeypatch.setattr(bench_cli, "matmul_peak_gflops", lambda: pytest.fail("timed before checking --json"))


def test_bench_checks_the_json_path_before_timing(tmp_path, capsys, no_timing):
    for path, message in [(tmp_path / "missing" / "x.json", "json: expected a file in a writable folder"),
                          (tmp_path, "json: expected a file, got the folder"),
                          (f"{tmp_path}/new/", "json: expected a file, got the folder")]:
        assert main([*TINY_BENCH, "--json", str(path)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {message}") and err.count("\n") == 1, err


def test_bench_checks_for_a_read_only_folder(tmp_path, capsys, no_timing, monkeypatch):
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != tmp_path and real_access(path, mode))
    assert main([*TINY_BENCH, "--json", str(tmp_path / "x.json")]) == 2
    assert capsys.readouterr().err.startswith(f"error: json: expected a file in a writable folder, got "
                                              f"{tmp_path / 'x.json'} ({tmp_path} is not writable)")


def test_bench_prints_the_records_when_the_json_file_cannot_be_written(tmp_path, capsys, monkeypatch):
    out = tmp_path / "bench.json"
    real = bench_cli.measure_interleaved

    def measure_then_lose_the_path(*args):
        records = real(*args)
        out.mkdir()  # the path became a folder while the benchmark ran
        return records

    monkeypatch.setattr(bench_cli, "measure_interleaved", measure_then_lose_the_path)
    monkeypatch.setattr(bench_cli, "matmul_peak_gflops",
                        lambda: {"gflops": 100.0, "n": 8, "dtype": "float32", "library": "numpy"})
    monkeypatch.setattr(bench_cli, "describe_device", lambda: {"cpu_model": "cpu", "cpu_cores": 1})
    assert main([*TINY_BENCH, "--json", str(out)]) == 74  # EX_IOERR: the environment failed, not the input (2)
    captured = capsys.readouterr()
    report = json.loads(captured.out[captured.out.index("\n{") + 1:])
    assert [(r["backend"], r["task"]) for r in report["records"]] == [("numpy", "train")]
    assert report["records"][0]["ms_median"] > 0
    assert captured.err.startswith("error: ") and captured.err.count("\n") == 1, captured.err
    assert str(out) in captured.err and "--json records; they are printed above" in captured.err


@pytest.mark.parametrize("option,value,message", [
    ("--threshold", "nan", "threshold: expected a finite number > 0, got nan"),
    ("--threshold", "inf", "threshold: expected a finite number > 0, got inf"),
    ("--threshold", "0", "threshold: expected a finite number > 0, got 0.0"),
    ("--threshold", "-1e-7", "threshold: expected a finite number > 0, got -1e-07"),
    ("--step", "inf", "step: expected a finite number > 0, got inf"),
    ("--step", "nan", "step: expected a finite number > 0, got nan"),
    ("--step", "0", "step: expected a finite number > 0, got 0.0"),
    ("--max-entries", "0", "max_entries: expected an int >= 1, got 0"),
    ("--heads", "0", "heads: expected an int >= 1, got 0"),
    ("--seed", "-1", "seed: expected an int >= 0, got -1"),
])
def test_gradcheck_bad_numbers_are_status_2_before_any_check(option, value, message, capsys, monkeypatch):
    monkeypatch.setattr(gradcheck_cli, "gradcheck_model", lambda *a: pytest.fail("checked before validating"))
    assert main([*SMALL_GRADCHECK, f"{option}={value}"]) == 2
    assert capsys.readouterr().err == f"error: {message}\n"


def test_gradcheck_status_1_means_only_a_failed_check(capsys):
    assert main(SMALL_GRADCHECK) == 0
    assert "PASSED" in capsys.readouterr().out
    assert main([*SMALL_GRADCHECK, "--threshold", "1e-300"]) == 1  # a valid threshold no gradient meets
    captured = capsys.readouterr()
    assert "FAILED" in captured.out and captured.err == ""


def test_check_plot_path(tmp_path, monkeypatch):
    (tmp_path / "dir.png").mkdir()
    (tmp_path / "a.b").mkdir()
    assert plots.check_plot_path(tmp_path / "noext") == tmp_path / "noext.png"
    assert plots.check_plot_path(str(tmp_path / "a.b" / "heat")) == tmp_path / "a.b" / "heat.png"
    assert plots.check_plot_path(tmp_path / "x.PDF") == tmp_path / "x.PDF"
    assert plots.check_plot_path(tmp_path / "x.svg", "out") == tmp_path / "x.svg"
    for path, message in [
        (tmp_path / "x.docx", "attention_plot: expected a file name ending in one of "),
        (tmp_path / "x.", "attention_plot: expected a file name ending in one of "),
        (tmp_path / "dir.png", f"attention_plot: expected a file, got the folder {tmp_path / 'dir.png'}"),
        (tmp_path / "a.b", f"attention_plot: expected a file, got the folder {tmp_path / 'a.b'}"),
        (tmp_path / "missing" / "a.png", f"attention_plot: expected a file in a writable folder, got "
                                         f"{tmp_path / 'missing' / 'a.png'} ({tmp_path / 'missing'} does not exist)"),
    ]:
        with pytest.raises(ValueError) as error:
            plots.check_plot_path(path)
        assert str(error.value).startswith(message), error.value
    with pytest.raises(ValueError, match=r"^out: expected a file name ending in one of .*\.png.*, got .*x\.docx$"):
        plots.check_plot_path(tmp_path / "x.docx", "out")
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != tmp_path and real_access(path, mode))
    with pytest.raises(ValueError, match=r"^attention_plot: expected a file in a writable folder, .*is not writable"):
        plots.check_plot_path(tmp_path / "a.png")


def font_charmap(families) -> set[int]:
    from matplotlib import font_manager
    from matplotlib.ft2font import FT2Font

    covered = set()
    for family in families:
        path = font_manager.findfont(font_manager.FontProperties(family=family), fallback_to_default=False)
        covered.update(FT2Font(path).get_charmap())
    return covered


def test_attention_plot_labels_are_visible_glyphs_and_it_has_a_colour_scale(tmp_path, monkeypatch):
    made = []
    monkeypatch.setattr(plots, "attention_figure", lambda items, real=plots.attention_figure: made.append(
        real(items)) or made[-1])
    source = ["\u2581the", "\u2581cat", " ", "a b", "\uffedjoined", "\u65e5", "\t", "\xa0", "", "\U0001f600"]
    output = ["\u2581le", " ", "x"]
    written = plots.plot_attention([(source, output, np.full((3, len(source)), 0.1)),
                                    (list("ab c"), list("x y"), np.full((3, 4), 0.25))], tmp_path / "heat")
    assert written == tmp_path / "heat.png" and written.stat().st_size > 1000
    fig = made[0]
    panels = [ax for ax in fig.axes if ax.get_xlabel() == "source"]
    colour_scales = [ax for ax in fig.axes if ax not in panels]
    assert len(panels) == 2 and len(colour_scales) == 1 and colour_scales[0].get_ylabel() == "attention weight"
    labels = [label for ax in panels for label in (*ax.get_xticklabels(), *ax.get_yticklabels())]
    texts = [label.get_text() for label in labels]
    assert len(texts) == len(source) + len(output) + 7
    for label in labels:
        covered = font_charmap(label.get_fontfamily())
        assert label.get_text().strip(), repr(label.get_text())  # no blank label
        missing = [ch for ch in label.get_text() if ord(ch) not in covered]
        assert missing == [], (label.get_text(), missing)
    x_labels = [label.get_text() for label in panels[1].get_xticklabels()]
    assert x_labels[2] == "\u2423"  # the char model's space
    assert texts[2] == "\u2423" and texts[3] == "a\u2423b" and texts[6] == "\\t" and texts[7] == "\\xa0"


def test_loss_curve_has_one_legend_off_the_data_and_a_title_naming_the_run(tmp_path, monkeypatch):
    run = tmp_path / "my-run"
    run.mkdir()
    lines = [{"step": s, "loss": 3.0 / s} for s in range(1, 101)]
    lines += [{"step": s, "valid_exact_match": s / 100} for s in range(10, 101, 10)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    made = []
    monkeypatch.setattr(plots, "loss_curve_figure", lambda *a, real=plots.loss_curve_figure: made.append(
        real(*a)) or made[-1])
    assert plots.plot_loss_curve(run / "metrics.jsonl", run / "loss") == run / "loss.png"
    fig = made[0]
    assert "my-run" in fig.axes[0].get_title()
    assert [ax.get_legend() for ax in fig.axes] == [None, None] and len(fig.legends) == 1
    legend = fig.legends[0]
    assert [t.get_text() for t in legend.get_texts()] == ["training loss", "valid exact match"]
    fig.draw_without_rendering()
    box = legend.get_window_extent()
    assert all(not box.overlaps(ax.get_window_extent()) for ax in fig.axes)
    assert box.x0 >= 0 and box.y0 >= 0 and box.x1 <= fig.bbox.width and box.y1 <= fig.bbox.height  # on the canvas
