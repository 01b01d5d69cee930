"""Training throughput of the Multi30k Transformer recipe against the torch anchor, one after the other on this
machine: each run's time split into start-up, compilation and training steps, its steady-state target tokens/s,
the fraction of real (non-pad) tokens in its batches, and the host time that building one batch takes.

    python benchmarks/training_throughput.py --data-dir ../shared/data/multi30k --minutes 4 \
        --anchor ../shared/anchors/torch_transformer_mt.py --json benchmarks/results/training_throughput_cpu.json

Runs, in order: the anchor (stopped once its --minutes of training are done, before its final evaluations; its
target tokens/s are over all its steps), our recipe with
one sentence per row (length-bucketed batches), and our recipe packed (`--pack WIDTH`), each for --minutes of
training.  Each of our runs' time is split as its summary.json splits it: start-up (data, vocabulary, model),
compilation (the steps on a batch shape not seen before, less one step's time each), training steps, validation
and test decoding.  Steady state: the median of the logged intervals after the first --settle minutes (compilation of
new batch shapes included where it still happens).  Validation is cut to a few sentences: this measures
training, not decoding.
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

# benchmarks/, this script's folder
from recipe_vs_anchor import anchor_command, cold_cache, time_split, train_command, unzip

ROOT = Path(__file__).resolve().parents[1]


def run_anchor(anchor: Path, minutes: float, out: Path) -> dict:
    """The anchor for --minutes of training (its own clock: steps only), stopped once it says training is done
    (before its final greedy and beam evaluations, which this does not measure)."""
    started = time.perf_counter()
    process = subprocess.Popen(anchor_command(anchor, minutes, "--eval_every", f"{10 * 60 * minutes:g}"), cwd=out,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    startup = validation = None
    lines = []
    for line in process.stdout:
        lines.append(line)
        if line.startswith("train_s, step"):
            startup = time.perf_counter() - started
        elif "(eval took" in line:
            validation = float(re.search(r"eval took (\d+)s", line).group(1))
        elif line.startswith("training done:"):
            break
    wall = time.perf_counter() - started
    process.kill()
    process.wait()
    done = lines[-1] if lines and lines[-1].startswith("training done:") else None
    if done is None:
        raise RuntimeError("the anchor did not finish training:\n" + "".join(lines[-40:]))
    train_s = float(re.search(r"([\d.]+)s training time", done).group(1))
    return {"run": "torch anchor", "wall_s": wall, "steps": int(re.search(r"(\d+) steps", done).group(1)),
            "startup_s": startup, "compile_s": 0.0, "train_steps_s": train_s, "validation_s": validation,
            "overall_tgt_tokens_per_s": float(re.search(r"\((\d+) target tokens/s\)", done).group(1)),
            "steady_tgt_tokens_per_s": float(re.search(r"\((\d+) target tokens/s\)", done).group(1)),
            "line": done.strip()}


def run_ours(name: str, files: dict, minutes: float, settle: float, out: Path, extra: list[str]) -> dict:
    run_dir = out / name.replace(" ", "-")
    command = train_command("recipes/de-en-transformer.toml", files, minutes, run_dir, "--eval-examples", "8",
                            "--log-every", "10", *extra)
    started = time.perf_counter()
    subprocess.run(command, cwd=ROOT, check=True, capture_output=True, text=True, env=cold_cache(run_dir))
    split = {k: v for k, v in time_split(run_dir, settle).items() if k != "curve"}
    return {"run": name, "wall_s": time.perf_counter() - started, **split, "options": extra}


def real_token_fractions(files: dict, pack: int, batch_size: int = 128, pad_multiple: int = 4) -> dict:
    """The fraction of real tokens in an epoch's training batches, bucketed and packed, from the recipe's own
    vocabulary and batching (its BPE model trained here as the runs train it)."""
    from seq2seq_lab.batching import BatchPlan, encode_pairs
    from seq2seq_lab.data import DataSettings, build_vocabs, load_data
    from seq2seq_ref import ModelConfig

    settings = DataSettings(task=None, data=str(files["train.de"]), data_target=str(files["train.en"]),
                            valid_data=str(files["val.de"]), valid_target=str(files["val.en"]), tokenizer="bpe",
                            vocab_size=6000, shared_vocab=True)
    loaded = load_data(settings, seed=0)
    src_vocab, tgt_vocab = build_vocabs(settings, loaded.splits["train"])
    data, _ = encode_pairs(loaded.splits["train"], src_vocab, tgt_vocab)
    config = ModelConfig(len(src_vocab), len(tgt_vocab), 256, 256, encoder="transformer", decoder="transformer",
                         attention="multihead", num_heads=4)
    out = {}
    for name, packing in (("bucketed", None), ("packed", pack)):
        plan = BatchPlan(data, config, batch_size, 0, pad_multiple, packing)
        real = {"src": 0, "tgt": 0}
        total = {"src": 0, "tgt": 0}
        sentences, host_seconds, shapes = 0, [], set()
        for step in range(plan.batches_per_epoch):
            started = time.perf_counter()
            batch = plan.batch(step)  # what the training loop does on the host between dispatching two steps
            host_seconds.append(time.perf_counter() - started)
            shapes.add((batch.src.shape, batch.tgt_in.shape))
            real["src"] += int(batch.src_lengths.sum() if packing is None else (batch.src_segments > 0).sum())
            real["tgt"] += int(batch.tgt_lengths.sum())
            total["src"] += batch.src.size
            total["tgt"] += batch.tgt_in.size
            sentences += len(batch.src) if packing is None else int(batch.src_segments.max(axis=1).sum())
        out[name] = {"real_src": real["src"] / total["src"], "real_tgt": real["tgt"] / total["tgt"],
                     "batches_per_epoch": plan.batches_per_epoch, "sentences_per_batch": sentences / plan.batches_per_epoch,
                     "shapes": len(shapes), "host_ms_per_batch": 1000 * float(np.median(host_seconds)),
                     "host_ms_per_batch_p90": 1000 * float(np.percentile(host_seconds, 90))}
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared/data/multi30k")
    parser.add_argument("--anchor", type=Path, default=ROOT.parent / "shared/anchors/torch_transformer_mt.py")
    parser.add_argument("--runs", default="anchor,bucketed,packed", help="which runs, in this order ('none': only the batches' real-token fractions and host times)")
    parser.add_argument("--minutes", type=float, default=4.0, help="training minutes of each of our runs")
    parser.add_argument("--settle", type=float, default=1.5, help="minutes left out of the steady state")
    parser.add_argument("--pack", type=int, default=64, help="row width of the packed run")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        files = unzip(args.data_dir, out)
        fractions = real_token_fractions(files, args.pack)
        print(json.dumps(fractions), flush=True)
        runs = args.runs.split(",")
        if "anchor" in runs:
            if not args.anchor.exists():
                raise SystemExit(f"--anchor: expected the torch anchor script, got {args.anchor}, which is missing")
            results.append(run_anchor(args.anchor, args.minutes, out))
            print(json.dumps(results[-1]), flush=True)
        for name, extra in (("bucketed", []), ("packed", ["--pack", str(args.pack)])):
            if name in runs:
                results.append(run_ours(f"ours, {name}", files, args.minutes, args.settle, out, extra))
                print(json.dumps(results[-1]), flush=True)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "real_tokens": fractions,
                                         "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
