"""`seq2seq bench`: time a training step, greedy decoding and beam search on numpy, jax and torch, side by side."""
from __future__ import annotations

import argparse
import importlib.util
import json
import math
from dataclasses import asdict

from seq2seq_ref import ATTENTION_TYPES
from seq2seq_ref.decode import DEFAULT_LENGTH_PENALTY
from seq2seq_ref.registry import DECODERS, ENCODERS

from .bench.configs import CONFIGS
from .bench.harness import describe_device, matmul_peak_gflops, measure_interleaved, versions
from .bench.runners import BENCH_BACKENDS, DEFAULT_TASKS, TASKS
from .plots import check_output_file


def _names(kind, choices):
    def parse(text: str) -> list[str]:
        names = [n.strip() for n in text.split(",") if n.strip()]
        unknown = [n for n in names if n not in choices]
        if not names or unknown:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list of {choices}, got {text!r}")
        return names
    parse.__name__ = kind
    return parse


# the benchmark's cells run on both sides: the names that are an encoder stack and a decoder stack
BENCH_CELLS = tuple(name for name in ENCODERS if name in DECODERS)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # list defaults as strings: argparse parses them like typed ones, and --help shows them as they are typed
    parser.add_argument("--config", choices=sorted(CONFIGS), default="seed",
                        help="sizes to time (batch, widths, lengths; benchmarks/README.md lists them): large is "
                             "for accelerators, tiny runs in seconds")
    parser.add_argument("--backends", type=_names("backends", BENCH_BACKENDS), default=",".join(BENCH_BACKENDS),
                        help="comma-separated backends to time, each in its own warm worker process")
    parser.add_argument("--cells", type=_names("cells", BENCH_CELLS), default="lstm",
                        help="stacks to time; each is used by both the encoder and the decoder (a "
                             "transformer at width d = hidden, FFN 4d, with --attention multihead)")
    parser.add_argument("--attention", type=_names("attention", ATTENTION_TYPES), default="none,bahdanau",
                        help="comma-separated connections to time")
    parser.add_argument("--heads", type=int, help="heads of multihead attention (default: 4, or the largest "
                        "divisor of the hidden size below 4)")
    parser.add_argument("--tasks", type=_names("tasks", TASKS), default=",".join(DEFAULT_TASKS),
                        help="comma-separated: train (one training step), decode (greedy decoding), beam (beam "
                             "search; each for the config's target length at most)")
    parser.add_argument("--beam", type=int, default=5, help="beam size of the beam task")
    parser.add_argument("--length-penalty", type=float, default=DEFAULT_LENGTH_PENALTY,
                        help="alpha of the beam task's length normalisation ((5 + |y|) / 6) ** alpha")
    parser.add_argument("--batch", type=int, help="override the config's batch size")
    parser.add_argument("--length", type=int, help="override the config's source and target length")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls first (compilation happens here)")
    parser.add_argument("--repeats", type=int, default=7,
                        help="timed calls per backend, interleaved round by round across the backends")
    parser.add_argument("--compute-dtype", choices=("float32", "bfloat16"), default="float32",
                        help="jax and torch compute dtype (params stay float32)")
    parser.add_argument("--unroll", type=int, default=1, help="lax.scan unroll of the jax backend")
    parser.add_argument("--json", metavar="FILE", help="also write the records here (checked before timing)")


def run(args) -> int:
    missing = [b for b in args.backends if importlib.util.find_spec(b) is None]
    if missing:
        raise ValueError(f"backends: {missing} not installed; torch comes with pip install -e '.[bench]' "
                         "(torch==2.13.0, a CPU build)")
    for name in ("warmup", "repeats", "batch", "length", "unroll", "heads", "beam"):
        value = getattr(args, name)
        if value is not None and value < (0 if name == "warmup" else 1):
            raise ValueError(f"{name}: expected a positive int, got {value}")
    if not math.isfinite(args.length_penalty) or args.length_penalty < 0:
        raise ValueError(f"length_penalty: expected a finite float >= 0, got {args.length_penalty}")
    if args.json:
        check_output_file(args.json, "json")
    config = CONFIGS[args.config]
    if args.batch:
        config = config.replace(batch=args.batch)
    if args.length:
        config = config.replace(src_len=args.length, tgt_len=args.length)
    if args.heads:
        config = config.replace(heads=args.heads)
    for cell in args.cells:
        for attention in args.attention:
            config.model(attention, cell)  # an impossible combination (heads not dividing hidden) fails here
    options = {"compute_dtype": None if args.compute_dtype == "float32" else args.compute_dtype}
    if "beam" in args.tasks:
        options.update(beam=args.beam, length_penalty=args.length_penalty)
    backend_options = {b: {**options, "unroll": args.unroll} if b == "jax" else dict(options) for b in args.backends}
    peak = matmul_peak_gflops()
    points = [(cell, attention, task) for cell in args.cells for attention in args.attention for task in args.tasks]
    records = measure_interleaved(config, args.backends, points, args.warmup, args.repeats, backend_options)
    for record in records:
        record["percent_of_peak"] = 100 * record["gflops_achieved"] / peak["gflops"]
    report = {"config": asdict(config), "device": describe_device(), "versions": versions(), "matmul_peak": peak,
              "round_order": list(args.backends), "records": records}
    print_table(report)
    if args.json:
        text = json.dumps(report, indent=1)
        try:
            with open(args.json, "w") as handle:
                handle.write(text)
        except OSError as error:
            print(text)  # the measurements took minutes: they reach the user even when the file cannot
            error.add_note("writing the --json records; they are printed above on standard output")
            raise
        print(f"records written to {args.json}")
    return 0


def print_table(report) -> None:
    """vs torch: ratio of the medians; paired: median of the per-round ratios, and their IQR."""
    c, peak = report["config"], report["matmul_peak"]
    print(f"config {c['name']}: batch {c['batch']}, embed {c['embed']}, hidden {c['hidden']}, vocab {c['vocab']}, "
          f"length {c['src_len']}/{c['tgt_len']}, layers {c['layers']}; device {report['device']['cpu_model']} "
          f"({report['device']['cpu_cores']} cores), {report['device'].get('jax_device', '')}; "
          f"matmul peak {peak['gflops']:.0f} GFLOP/s ({peak['library']}, {peak['n']}^3 float32); "
          f"timed calls interleaved {', '.join(report.get('round_order', []))}, ...")
    print(f"{'cell':<11} {'attention':<9} {'task':<6} {'backend':<6} {'ms (median)':>11} {'IQR':>7} {'tokens/s':>9} "
          f"{'GFLOP/s':>8} {'% peak':>7} {'peak mem':>9} {'vs torch':>8} {'paired (IQR)':>14}")
    for r in report["records"]:
        memory = r["device_peak_bytes"] or r["peak_rss_bytes"]
        ratio = f"{r['time_vs_torch']:.2f}x" if r["time_vs_torch"] is not None else "-"
        paired = (f"{r['time_vs_torch_paired']:.2f}x ({r['time_vs_torch_paired_iqr']:.2f})"
                  if r.get("time_vs_torch_paired") is not None else "-")
        print(f"{r['cell']:<11} {r['attention']:<9} {r['task']:<6} {r['backend']:<6} {r['ms_median']:>11.1f} "
              f"{r['ms_iqr']:>7.1f} {r['target_tokens_per_s']:>9.0f} {r['gflops_achieved']:>8.1f} "
              f"{r['percent_of_peak']:>6.1f}% {memory / 2**20:>7.0f}Mi {ratio:>8} {paired:>14}")
