"""Re-create benchmarks/results/: the seed and small configs, the length and batch sweeps, plots, RESULTS.md.

    python benchmarks/run_all.py [--device cpu|gpu] [--repeats 5]

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
    parser.add_argument("--no-sweeps", action="store_true")
    parser.add_argument("--sweeps-only", action="store_true")
    args = parser.parse_args()
    RESULTS.mkdir(exist_ok=True)
    if not args.sweeps_only:
        reports = {name: bench(RESULTS / f"{name}_{args.device}.json", "--config", name, repeats=args.repeats)
                   for name in args.configs.split(",")}
        (RESULTS / f"RESULTS_{args.device}.md").write_text(markdown(reports, args.device) + "\n")
    if not args.no_sweeps:
        fixed = ["--config", "seed", "--attention", "none", "--tasks", "train"]
        lengths = sweep("sweep_length", "--length", [25, 50, 100, 200], fixed, args.device, args.repeats)
        batches = sweep("sweep_batch", "--batch", [16, 32, 64, 128], [*fixed, "--length", "50"], args.device,
                        args.repeats)
        plot_sweeps(lengths, batches, args.device)


if __name__ == "__main__":
    main()
