"""benchmarks/recipe_vs_anchor.py reads what the runs wrote: the anchor's log as its script prints it, and our run
folder's metrics.jsonl, summary.json and evaluations."""
import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("recipe_vs_anchor", ROOT / "benchmarks" / "recipe_vs_anchor.py")
recipe_vs_anchor = importlib.util.module_from_spec(spec)
spec.loader.exec_module(recipe_vs_anchor)

# the lines torch_transformer_mt.py prints (its print formats), figures made up
ANCHOR_LOG = """\
sentencepiece: vocab 8000, trained+encoded in 9.1s, model in /tmp/spm_m30k_x
train_s, step, tokens/s(src+tgt), tgt_tokens/s, train_loss(LS), val_loss(NLL), val_bleu_greedy, epochs
300, 812, 4410, 2150, 4.120, 3.021, 7.50, 1.45   (eval took 21s, lr 1.10e-03)
600, 1630, 4432, 2161, 3.010, 2.100, 26.01, 2.91   (eval took 19s, lr 7.80e-04)

training done: 600s training time, 1630 steps, 2.91 epochs, 4432 src+tgt tokens/s (2161 target tokens/s), params 7,578,624
saved final and best-by-val weights to /tmp/spm_m30k_x/model.pt
RESULT model=final(step 1630) split=val decode=greedy: BLEU 26.01 chrF 51.20  [BLEU = 26.01 60.0/33.1/20.2/12.9 (BP = 0.962 ratio = 0.963 hyp_len = 12 ref_len = 13)]  (31s)
RESULT model=final(step 1630) split=val decode=beam5: BLEU 27.10 chrF 52.00  [BLEU = 27.10 61.0/34.0/21.0/13.5 (BP = 0.931 ratio = 0.933 hyp_len = 12 ref_len = 13)]  (140s)
sacrebleu signatures: BLEU nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.4.3 | chrF nrefs:1|case:mixed|eff:yes|nc:6|nw:0|space:no|version:2.4.3
"""


def write_ours(work: Path, name: str) -> None:
    run_dir = work / name
    run_dir.mkdir(parents=True)
    records = [{"step": 25 * i, "epoch": 0.1 * i, "loss": 5.0, "lr": 1e-3, "tokens_per_s": 1000.0 + i,
                "elapsed_s": 60.0 * i} for i in range(1, 9)]
    records.insert(4, {"step": 100, "valid_bleu": 20.5, "valid_exact_match": 0.0, "elapsed_s": 250.0})
    records.append({"step": 200, "valid_bleu": 30.25, "valid_exact_match": 0.0, "elapsed_s": 500.0})
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (run_dir / "summary.json").write_text(json.dumps({
        "steps": 200, "startup_seconds": 4.0, "batch_shapes": 1, "new_shape_step_seconds": 12.0,
        "train_seconds": 410.0, "validation_seconds": 40.0, "total_seconds": 470.0, "tokens_per_s": 990.0}))
    (work / f"{name}.eval.json").write_text(json.dumps({"greedy": {"bleu": 30.25, "chrf": 55.0, "seconds": 20.0},
                                                        "beam": {"bleu": 31.5, "chrf": 56.0, "seconds": 90.0}}))


def test_the_report_reads_the_anchor_log_and_our_run_folder(tmp_path):
    (tmp_path / "anchor.log").write_text(ANCHOR_LOG)
    write_ours(tmp_path, "packed")
    out = tmp_path / "report.json"
    assert recipe_vs_anchor.main(["--run", "anchor", "--run", "packed:recipes/de-en-transformer.toml:--pack=64",
                                  "--work", str(tmp_path), "--report", "--settle", "3", "--json", str(out),
                                  "--plot", str(tmp_path / "curve.png")]) == 0
    anchor, ours = json.loads(out.read_text())["results"]
    assert anchor["steps"] == 1630 and anchor["steady_tgt_tokens_per_s"] == 2161
    assert anchor["validation_s"] == 40 and anchor["epochs"] == 2.91
    assert [p["valid_bleu_greedy"] for p in anchor["curve"]] == [7.5, 26.01]
    assert [p["minutes"] for p in anchor["curve"]] == [5, 10]
    assert anchor["valid"] == {"greedy": {"bleu": 26.01, "chrf": 51.2, "seconds": 31},
                               "beam": {"bleu": 27.1, "chrf": 52.0, "seconds": 140}}
    assert ours["options"] == ["--pack", "64"] and ours["steps"] == 200
    assert ours["steady_tgt_tokens_per_s"] == 1006  # the median of the intervals logged after 3 minutes (1004 ... 1008)
    assert ours["compile_s"] == pytest.approx(12 - (410 - 12) / 199)  # the first step less one step's time
    assert [(p["step"], p["valid_bleu_greedy"]) for p in ours["curve"]] == [(100, 20.5), (200, 30.25)]
    assert ours["valid"]["beam"]["bleu"] == 31.5
    assert (tmp_path / "curve.png").stat().st_size > 0


def test_report_refuses_a_run_with_no_results_and_a_malformed_run(tmp_path):
    with pytest.raises(SystemExit, match="--report: anchor has no results"):
        recipe_vs_anchor.main(["--run", "anchor", "--work", str(tmp_path), "--report"])
    (tmp_path / "anchor.log").write_text(ANCHOR_LOG.split("training done")[0])  # stopped while training
    with pytest.raises(SystemExit, match="--report: anchor has no results"):
        recipe_vs_anchor.main(["--run", "anchor", "--work", str(tmp_path), "--report"])
    with pytest.raises(SystemExit):
        recipe_vs_anchor.main(["--run", "packed", "--work", str(tmp_path), "--report"])


def test_earlier_days_join_the_spread_each_run_against_its_own_days_anchor(tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    for work in (first, second):
        work.mkdir()
        write_ours(work, "packed")
    (first / "anchor.log").write_text(ANCHOR_LOG)
    (second / "anchor.log").write_text(ANCHOR_LOG.replace("(2161 target tokens/s)", "(1006 target tokens/s)"))
    runs = ["--run", "anchor", "--report"]
    assert recipe_vs_anchor.main([*runs, "--run", "packed:recipes/de-en-transformer.toml:--pack=64", "--work",
                                  str(first), "--json", str(first / "report.json")]) == 0
    (second / "packed").rename(second / "seeded")  # another seed is a repeat of the same setting
    (second / "packed.eval.json").rename(second / "seeded.eval.json")
    assert recipe_vs_anchor.main([*runs, "--run", "seeded:recipes/de-en-transformer.toml:--seed=1,--pack=64",
                                  "--work", str(second), "--json", str(second / "report.json"),
                                  "--earlier", str(first / "report.json"), "--plot", str(tmp_path / "both.png")]) == 0
    report = json.loads((second / "report.json").read_text())
    assert len(report["results"]) == 2  # this day's runs only; the spread holds both days
    anchor, packed = report["spread"]
    assert anchor["setting"] == "anchor" and anchor["steady_tgt_tokens_per_s"] == [2161, 1006]
    assert anchor["vs_anchor"] == [1, 1] and anchor["beam"] == [27.1, 27.1]
    assert packed["setting"] == "recipes/de-en-transformer.toml --pack 64" and packed["runs"] == ["packed", "seeded"]
    assert packed["vs_anchor"] == pytest.approx([1006 / 2161, 1.0])  # each day against its own anchor
    assert packed["greedy"] == [30.25, 30.25] and packed["beam"] == [31.5, 31.5]
    assert (tmp_path / "both.png").stat().st_size > 0


def test_earlier_must_be_a_report_of_this_script(tmp_path):
    (tmp_path / "notes.json").write_text('{"runs": []}')
    with pytest.raises(SystemExit, match="--earlier: expected a report this script wrote with --json"):
        recipe_vs_anchor.main(["--run", "anchor", "--work", str(tmp_path), "--report",
                               "--earlier", str(tmp_path / "notes.json")])
