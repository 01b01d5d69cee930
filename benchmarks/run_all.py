"""Re-create benchmarks/results/: the seed and small configs, the length and batch sweeps, plots, RESULTS.md,
and the Transformer's rows with its length sweep against the LSTM (RESULTS_transformer_<device>.md).

    python benchmarks/run_all.py [--device cpu|gpu] [--repeats 5] [--parts configs,sweeps,transformer]

Each point is one `seq2seq bench` measurement (isolated processes, medians).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def bench(out: Path, *args: str, repeats: int) -> dict:
    command = [sys.executable, "-m", "seq2seq_lab.cli", "bench", "--repeats", str(repeats), "--json", str(out), *args]
    print("$", " ".join(command[2:]), flush=True)
    subprocess.run(command, check=True)
    return json.loads(out.read_text())


def sweep(name: str, flag: str, values, fixed: list[str], device: str, repeats: int) -> list[dict]:
    points = []
    for value in values:
        path = RESULTS / f".{name}_{value}.json"
        report = bench(path, *fixed, flag, str(value), repeats=repeats)
        path.unlink()
        points += [{**r, flag.strip("-"): value} for r in report["records"]]
    (RESULTS / f"{name}_{device}.json").write_text(json.dumps({"device": report["device"],
                                                               "versions": report["versions"],
                                                               "config": report["config"], "points": points},
                                                              indent=1))
    return points


def plot_sweeps(length_points, batch_points, device: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for backend in sorted({p["backend"] for p in length_points}):
        xs = [p for p in length_points if p["backend"] == backend]
        left.plot([p["length"] for p in xs], [p["ms_median"] for p in xs], "o-", label=backend)
        ys = [p for p in batch_points if p["backend"] == backend]
        right.plot([p["batch"] for p in ys], [p["target_tokens_per_s"] for p in ys], "o-", label=backend)
    left.set(xlabel="source = target length", ylabel="ms per training step (median)",
             title="cost grows linearly in length (batch 64)")
    right.set(xlabel="batch size", ylabel="target tokens / s", title="throughput against batch (length 50)")
    right.set_xscale("log", base=2)
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(RESULTS / f"sweeps_{device}.png", dpi=110)


TRANSFORMER_LENGTHS = (25, 50, 100, 200, 400)


def plot_cells_sweep(points, device: str) -> None:
    """Training-step time against length, one line per (cell, backend): sequential against parallel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for cell, style in (("lstm", "o-"), ("transformer", "s--")):
        for backend in sorted({p["backend"] for p in points}):
            xs = [p for p in points if p["backend"] == backend and p["cell"] == cell]
            ax.plot([p["length"] for p in xs], [p["ms_median"] for p in xs], style, label=f"{cell}, {backend}")
    ax.set(xlabel="source = target length", ylabel="ms per training step (median)", xscale="log", yscale="log",
           title="LSTM vs Transformer, multi-head attention (seed config, batch 64)")
    ax.minorticks_off()
    ax.set_xticks(TRANSFORMER_LENGTHS, [str(n) for n in TRANSFORMER_LENGTHS])
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(RESULTS / f"sweep_cells_{device}.png", dpi=110)


def transformer_markdown(report: dict, points: list[dict], device: str) -> str:
    c, peak = report["config"], report["matmul_peak"]
    lines = [f"# The Transformer beside the LSTM ({device})", "",
             f"Machine: {report['device']['cpu_model']}, {report['device']['cpu_cores']} cores; measured float32 "
             f"matmul peak {peak['gflops']:.0f} GFLOP/s. Versions: "
             + ", ".join(f"{k} {v}" for k, v in report["versions"].items() if v) + ".", "",
             f"## `seed`, Transformer on both sides: batch {c['batch']}, d = hidden {c['hidden']}, 4 heads, FFN "
             f"{4 * c['hidden']}, 1 block each side, vocab {c['vocab']}, length {c['src_len']}", "",
             "`seq2seq bench --config seed --cells transformer --attention multihead` (interleaved rounds; "
             "`paired` is the median of the per-round ratios to torch, with their IQR).", "",
             "| task | backend | ms (median) | IQR ms | target tokens/s | GFLOP/s | % of peak | peak memory | "
             "vs torch | paired (IQR) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["records"]:
        memory = r["device_peak_bytes"] or r["peak_rss_bytes"]
        lines.append(f"| {r['task']} | {r['backend']} | {r['ms_median']:.1f} | {r['ms_iqr']:.1f} | "
                     f"{r['target_tokens_per_s']:.0f} | {r['gflops_achieved']:.1f} | {r['percent_of_peak']:.1f}% | "
                     f"{memory / 2**20:.0f} MiB | {r['time_vs_torch']:.2f}x | {r['time_vs_torch_paired']:.2f}x "
                     f"({r['time_vs_torch_paired_iqr']:.2f}) |")
    backends = sorted({p["backend"] for p in points})
    lines += ["", "## Training step against length: LSTM (multi-head attention) and Transformer", "",
              f"![sweep](sweep_cells_{device}.png)", "",
              "| length | " + " | ".join(f"lstm {b} ms | transformer {b} ms" for b in backends) + " |",
              "|---" * (1 + 2 * len(backends)) + "|"]
    for length in sorted({p["length"] for p in points}):
        at = {(p["cell"], p["backend"]): p["ms_median"] for p in points if p["length"] == length}
        lines.append(f"| {length} | " + " | ".join(f"{at[('lstm', b)]:.0f} | {at[('transformer', b)]:.0f}"
                                                 for b in backends) + " |")
    return "\n".join(lines) + "\n"


def markdown(reports: dict[str, dict], device: str) -> str:
    first = next(iter(reports.values()))
    d, v, peak = first["device"], first["versions"], first["matmul_peak"]
    lines = [f"# Benchmark results ({device})", "",
             f"Machine: {d['cpu_model']}, {d['cpu_cores']} cores, {d['platform']}; jax device {d.get('jax_device')}"
             f"{', torch device ' + d['torch_device'] if d.get('torch_device') else ''}. "
             f"Measured float32 matmul peak: {peak['gflops']:.0f} GFLOP/s ({peak['library']}, {peak['n']}³).", "",
             "Versions: " + ", ".join(f"{k} {val}" for k, val in v.items() if val), "",
             "Medians of repeated runs after warm-up, each backend in its own process, measured side by side. "
             "`vs torch` is time relative to the PyTorch baseline in the same run (below 1 is faster).", ""]
    for name, report in reports.items():
        c = report["config"]
        lines += [f"## `{name}`: batch {c['batch']}, embed {c['embed']}, hidden {c['hidden']}, vocab {c['vocab']}, "
                  f"length {c['src_len']}, layers {c['layers']}", "",
                  "| attention | task | backend | ms (median) | IQR ms | target tokens/s | GFLOP/s | % of peak | "
                  "peak memory | vs torch |", "|---|---|---|---|---|---|---|---|---|---|"]
        for r in report["records"]:
            memory = r["device_peak_bytes"] or r["peak_rss_bytes"]
            ratio = f"{r['time_vs_torch']:.2f}x" if r["time_vs_torch"] is not None else "-"
            lines.append(f"| {r['attention']} | {r['task']} | {r['backend']} | {r['ms_median']:.1f} | "
                         f"{r['ms_iqr']:.1f} | {r['target_tokens_per_s']:.0f} | {r['gflops_achieved']:.1f} | "
                         f"{r['percent_of_peak']:.1f}% | {memory / 2**20:.0f} MiB | {ratio} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu", help="label for the files (cpu, h100, ...)")
    parser.add_argument("--configs", default="seed,small")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--parts", default="configs,sweeps,transformer",
                        help="configs: the --configs tables; sweeps: LSTM length and batch sweeps; transformer: its "
                             "seed rows and the LSTM-vs-Transformer length sweep")
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    if parts - {"configs", "sweeps", "transformer"}:
        parser.error(f"--parts: expected names from configs, sweeps, transformer, got {args.parts!r}")
    RESULTS.mkdir(exist_ok=True)
    if "configs" in parts:
        reports = {name: bench(RESULTS / f"{name}_{args.device}.json", "--config", name, repeats=args.repeats)
                   for name in args.configs.split(",")}
        (RESULTS / f"RESULTS_{args.device}.md").write_text(markdown(reports, args.device) + "\n")
    if "sweeps" in parts:
        fixed = ["--config", "seed", "--attention", "none", "--tasks", "train"]
        lengths = sweep("sweep_length", "--length", [25, 50, 100, 200], fixed, args.device, args.repeats)
        batches = sweep("sweep_batch", "--batch", [16, 32, 64, 128], [*fixed, "--length", "50"], args.device,
                        args.repeats)
        plot_sweeps(lengths, batches, args.device)
    if "transformer" in parts:
        report = bench(RESULTS / f"seed_transformer_{args.device}.json", "--config", "seed", "--cells",
                       "transformer", "--attention", "multihead", repeats=args.repeats)
        points = sweep("sweep_cells", "--length", TRANSFORMER_LENGTHS,
                       ["--config", "seed", "--cells", "lstm,transformer", "--attention", "multihead", "--tasks",
                        "train"], args.device, args.repeats)
        plot_cells_sweep(points, args.device)
        (RESULTS / f"RESULTS_transformer_{args.device}.md").write_text(transformer_markdown(report, points,
                                                                                          args.device))


if __name__ == "__main__":
    main()
