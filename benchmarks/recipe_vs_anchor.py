"""The Multi30k recipes against the torch anchor for a full training budget, one run after the other on this
machine: each run's steps, target tokens/s, its time split, and validation BLEU greedy and with beam 5; a plot
of validation BLEU against minutes of training.

    python benchmarks/recipe_vs_anchor.py --work runs/vs-anchor --minutes 30 \
        --run transformer-packed:recipes/de-en-transformer.toml:--pack=64,--steps=2000 \
        --run anchor --run lstm:recipes/de-en-lstm.toml \
        --json benchmarks/results/recipe_vs_anchor_cpu.json --plot docs/recipe_vs_anchor.png

Each `--run` is `anchor`, or `NAME:RECIPE[:OPTIONS]` (OPTIONS: `seq2seq train` flags, comma-separated,
`--flag=value`), run in the order given; a run whose folder under --work already holds its results is not run
again, only reported (so a long comparison can be taken up where it stopped, and `--report` reports what is
there without running anything).

- Ours: `seq2seq train --recipe RECIPE OPTIONS --max-minutes MINUTES` on the unzipped corpus, then
  `seq2seq evaluate --split valid --checkpoint last` greedy and with the recipe's beam and length penalty;
  each run from a cold compilation cache of its own.
  `--max-minutes` is wall time: start-up, compilation and validation count against the budget.
- The anchor: `torch_transformer_mt.py --budget 60*MINUTES --warmup 400 --max_tokens 3000` (its README's
  command), with its own final greedy and beam-5 evaluations. Its budget counts training steps only: its
  start-up and its validations (every 5 minutes of training) come on top.

Steady target tokens/s: ours, the median of the logged intervals after the first --settle minutes; the anchor,
what it reports over all its steps.

`--earlier FILE` (repeatable) adds the runs of an earlier `--json` report, another day's runs side by side, to the
plot and to the spread: for each setting (the anchor, or a recipe with its options) its runs' steady target
tokens/s, each as a ratio to the anchor of its own day, and its validation BLEU greedy and with beam 5.
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def unzip(data_dir: Path, out: Path) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    files = {}
    for split in ("train", "val"):
        for lang in ("de", "en"):
            path = files[f"{split}.{lang}"] = out / f"{split}.{lang}"
            if not path.exists():
                with gzip.open(data_dir / f"{split}.{lang}.gz", "rt", encoding="utf-8") as f:
                    path.write_text(f.read(), encoding="utf-8")
    return files


def parse_run(text: str) -> dict:
    """`anchor` or `NAME:RECIPE[:--flag=value,...]`."""
    if text == "anchor" or text.startswith("anchor:"):
        return {"name": text.replace(":", "-"), "kind": "anchor"}
    parts = text.split(":")
    if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
        raise argparse.ArgumentTypeError(f"expected anchor or NAME:RECIPE[:OPTIONS], got {text!r}")
    options = [piece for flag in (parts[2].split(",") if len(parts) == 3 and parts[2] else [])
               for piece in flag.split("=", 1)]
    return {"name": parts[0], "kind": "ours", "recipe": parts[1], "options": options}


def train_command(recipe: str, files: dict, minutes: float, run_dir: Path, *options: str) -> list[str]:
    """`seq2seq train` of a recipe on the unzipped corpus for --max-minutes, into a fresh run folder."""
    return [sys.executable, "-m", "seq2seq_lab.cli", "train", "--recipe", str(ROOT / recipe),
            "--data", str(files["train.de"]), "--data-target", str(files["train.en"]),
            "--valid-data", str(files["val.de"]), "--valid-target", str(files["val.en"]),
            "--max-minutes", f"{minutes:g}", "--out", str(run_dir), "--fresh", "--no-progress", *options]


def cold_cache(run_dir: Path) -> dict:
    """The environment of a cold start: a compilation cache of the run's own, empty at first (docs/cli.md: the
    compilation cache)."""
    return {**os.environ, "JAX_COMPILATION_CACHE_DIR": f"{run_dir}-jax-cache"}


def anchor_command(anchor: Path, minutes: float, *options: str) -> list[str]:
    """The anchor's README command for MINUTES of training steps."""
    return [sys.executable, str(anchor), "--budget", f"{60 * minutes:g}", "--warmup", "400", "--max_tokens", "3000",
            *options]


def time_split(run_dir: Path, settle: float) -> dict:
    """A run's time as its summary.json splits it, with the compilation taken out of the steps' time (a step on a
    new batch shape ran once besides compiling: its compilation is what exceeds a step), and its target tokens/s:
    over the run, and steady (the logged intervals after the first SETTLE minutes)."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    logged = [r for r in records if "tokens_per_s" in r]
    steady = [r["tokens_per_s"] for r in logged if r["elapsed_s"] > 60 * settle]
    summary = json.loads((run_dir / "summary.json").read_text())
    shapes = summary["batch_shapes"]
    step_s = (summary["train_seconds"] - summary["new_shape_step_seconds"]) / max(1, summary["steps"] - shapes)
    compile_s = summary["new_shape_step_seconds"] - shapes * step_s
    return {"steps": summary["steps"], "epochs": logged[-1]["epoch"] if logged else None,
            "startup_s": summary["startup_seconds"], "batch_shapes": shapes, "compile_s": compile_s,
            "train_steps_s": summary["train_seconds"] - compile_s, "validation_s": summary["validation_seconds"],
            "test_decode_s": summary.get("test_seconds"), "total_s": summary["total_seconds"],
            "overall_tgt_tokens_per_s": summary["tokens_per_s"],
            "steady_tgt_tokens_per_s": float(np.median(steady)) if steady else None,
            "steady_spread": [float(np.percentile(steady, 25)), float(np.percentile(steady, 75))] if steady else None,
            "curve": [{"minutes": r["elapsed_s"] / 60, "step": r["step"], "valid_bleu_greedy": r["valid_bleu"]}
                      for r in records if "valid_bleu" in r]}


def run_ours(run: dict, files: dict, minutes: float, work: Path) -> None:
    run_dir = work / run["name"]
    env = cold_cache(run_dir)  # which its evaluations then use, as a user's would
    if not (run_dir / "summary.json").exists():  # else trained already: only its evaluations are missing
        with open(work / f"{run['name']}.train.log", "w") as log:
            subprocess.run(train_command(run["recipe"], files, minutes, run_dir, *run["options"]), cwd=ROOT,
                           check=True, stdout=log, stderr=subprocess.STDOUT, env=env)
    scores = {}
    for decoding, flags in (("greedy", ["--beam", "1"]), ("beam", [])):
        started = time.perf_counter()
        out = subprocess.run([sys.executable, "-m", "seq2seq_lab.cli", "evaluate", "--run", str(run_dir),
                              "--split", "valid", "--checkpoint", "last", "--json", "--no-progress", *flags],
                             cwd=ROOT, check=True, capture_output=True, text=True, env=env).stdout
        scores[decoding] = {**json.loads(out), "seconds": time.perf_counter() - started}
    (work / f"{run['name']}.eval.json").write_text(json.dumps(scores, indent=1))


def run_anchor(run: dict, anchor: Path, minutes: float, work: Path) -> None:
    with open(work / f"{run['name']}.log", "w") as log:
        subprocess.run(anchor_command(anchor, minutes), cwd=work, check=True, stdout=log, stderr=subprocess.STDOUT)


def finished(run: dict, work: Path) -> bool:
    if run["kind"] == "anchor":
        log = work / f"{run['name']}.log"
        return log.exists() and "sacrebleu signatures" in log.read_text()
    return (work / f"{run['name']}.eval.json").exists()


def report_ours(run: dict, work: Path, settle: float) -> dict:
    scores = json.loads((work / f"{run['name']}.eval.json").read_text())
    return {"run": run["name"], "recipe": run.get("recipe"), "options": run.get("options"),
            **time_split(work / run["name"], settle),
            "valid": {decoding: {"bleu": s["bleu"], "chrf": s.get("chrf"), "seconds": s["seconds"]}
                      for decoding, s in scores.items()}}


def report_anchor(run: dict, work: Path) -> dict:
    text = (work / f"{run['name']}.log").read_text()
    done = re.search(r"training done: (\d+)s training time, (\d+) steps, ([\d.]+) epochs, (\d+) src\+tgt tokens/s "
                     r"\((\d+) target tokens/s\)", text)
    if done is None:
        raise SystemExit(f"{work / (run['name'] + '.log')}: the anchor did not finish training")
    rows = re.findall(r"^(\d+), (\d+), (\d+), (\d+), [\d.]+, [\d.]+, ([\d.]+), [\d.]+\s+\(eval took (\d+)s", text, re.M)
    results = {f"{m[0]} {m[1]}": {"bleu": float(m[2]), "chrf": float(m[3]), "seconds": float(m[4])} for m in
               re.findall(r"RESULT model=(\w+)\(step \d+\) split=val decode=(\w+): BLEU ([\d.]+) chrF ([\d.]+).*\((\d+)s\)",
                          text)}
    return {"run": run["name"], "steps": int(done.group(2)), "epochs": float(done.group(3)),
            "train_steps_s": float(done.group(1)), "validation_s": float(sum(int(r[5]) for r in rows)),
            "steady_tgt_tokens_per_s": float(done.group(5)), "overall_tgt_tokens_per_s": float(done.group(5)),
            "curve": [{"minutes": float(r[0]) / 60, "step": int(r[1]), "valid_bleu_greedy": float(r[4])} for r in rows],
            "valid": {"greedy": results.get("final greedy"), "beam": results.get("final beam5")},
            "valid_best_by_validation": {k.split()[1]: v for k, v in results.items() if k.startswith("best_val")}}


def setting(report: dict) -> str:
    """What a run trained: `anchor`, or its recipe and options; runs of one setting are repeats, whatever their
    --seed (another seed is another repeat)."""
    if report.get("recipe") is None:
        return "anchor"
    options = report["options"]
    kept = [o for i, o in enumerate(options) if o != "--seed" and (i == 0 or options[i - 1] != "--seed")]
    return " ".join([report["recipe"], *kept])


def spread(days: list[list[dict]]) -> list[dict]:
    """Per setting, over every day's runs (DAYS: each a list of the reports run side by side that day): its
    steady target tokens/s, each as a ratio to its own day's anchor (None on a day without one), and its
    validation BLEU greedy and with beam 5, each as a list in the order of the days."""
    rows: dict[str, dict] = {}
    for day in days:
        anchors = [r["steady_tgt_tokens_per_s"] for r in day if setting(r) == "anchor"]
        for report in day:
            row = rows.setdefault(setting(report), {"setting": setting(report), "runs": [], "steady_tgt_tokens_per_s": [],
                                                    "vs_anchor": [], "greedy": [], "beam": []})
            row["runs"].append(report["run"])
            row["steady_tgt_tokens_per_s"].append(report["steady_tgt_tokens_per_s"])
            row["vs_anchor"].append(report["steady_tgt_tokens_per_s"] / anchors[0] if len(anchors) == 1 else None)
            for decoding in ("greedy", "beam"):
                row[decoding].append((report["valid"].get(decoding) or {}).get("bleu"))
    return list(rows.values())


def print_spread(rows: list[dict]) -> None:
    def figures(values, form):
        return ", ".join("-" if v is None else format(v, form) for v in values)
    for row in rows:
        print(f"{row['setting']}: {len(row['runs'])} run(s); steady target tokens/s {figures(row['steady_tgt_tokens_per_s'], ',.0f')}"
              f" (vs its day's anchor {figures(row['vs_anchor'], '.2f')}); greedy BLEU {figures(row['greedy'], '.2f')};"
              f" beam BLEU {figures(row['beam'], '.2f')}")


def plot(reports: list[dict], path: Path, minutes: float) -> None:
    """Validation BLEU against minutes, a colour per setting (its repeats share it), a marker per run."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    colours = {}
    for report in reports:
        curve = report["curve"]
        anchor = report["run"].startswith("anchor")
        colour = colours.setdefault(setting(report), f"C{len(colours)}")
        marker = "osD^v"[sum(setting(r) == setting(report) for r in reports[:reports.index(report)]) % 5]
        ax.plot([p["minutes"] for p in curve], [p["valid_bleu_greedy"] for p in curve], marker + ("--" if anchor else "-"),
                color=colour, ms=4,
                label=report["run"] + (" (torch; minutes of training steps)" if anchor else " (ours; wall minutes)"))
        if report["valid"].get("beam"):
            ax.plot([curve[-1]["minutes"]], [report["valid"]["beam"]["bleu"]], "*", ms=11, color=colour)
    ax.set_xlabel("minutes")
    ax.set_ylabel("Multi30k validation BLEU (greedy; star: beam 5)")
    ax.set_xlim(0, minutes * 1.05)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", dest="runs", type=parse_run, action="append", required=True,
                        help="anchor, or NAME:RECIPE[:OPTIONS]; repeat, in the order to run")
    parser.add_argument("--work", type=Path, required=True, help="folder of the runs (kept)")
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared/data/multi30k")
    parser.add_argument("--anchor", type=Path, default=ROOT.parent / "shared/anchors/torch_transformer_mt.py")
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--settle", type=float, default=3.0, help="minutes left out of our steady state")
    parser.add_argument("--report", action="store_true", help="report the runs already in --work; run nothing")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--plot", type=Path, default=None)
    parser.add_argument("--earlier", type=Path, action="append", default=[],
                        help="an earlier --json report (another day's runs): its runs join the plot and the spread")
    args = parser.parse_args(argv)
    earlier = []
    for path in args.earlier:
        try:
            earlier.append(json.loads(path.read_text())["results"])
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise SystemExit(f"--earlier: expected a report this script wrote with --json, got {path} ({error})")
    args.work.mkdir(parents=True, exist_ok=True)
    reports = []
    for run in args.runs:
        anchor = run["kind"] == "anchor"
        done = finished(run, args.work)
        if not done and args.report:
            raise SystemExit(f"--report: {run['name']} has no results in {args.work}")
        if not done:
            if anchor:
                if not args.anchor.exists():
                    raise SystemExit(f"--anchor: expected the torch anchor script, got {args.anchor}, which is missing")
                run_anchor(run, args.anchor, args.minutes, args.work)
            else:
                run_ours(run, unzip(args.data_dir, args.work / "data"), args.minutes, args.work)
        reports.append(report_anchor(run, args.work) if anchor else report_ours(run, args.work, args.settle))
        print(json.dumps({k: v for k, v in reports[-1].items() if k != "curve"}), flush=True)
    rows = spread([*earlier, reports])
    print_spread(rows)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "minutes": args.minutes,
                                         "command": " ".join(["python", "benchmarks/recipe_vs_anchor.py",
                                                              *(argv if argv is not None else sys.argv[1:])]),
                                         "results": reports, "spread": rows}, indent=1))
    if args.plot is not None:
        plot([*(r for day in earlier for r in day), *reports], args.plot, args.minutes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
