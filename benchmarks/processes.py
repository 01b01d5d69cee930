"""The same training step under one process and under N processes of this machine (JAX's distributed runtime,
gloo all-reduce over loopback), side by side: the cost of running data parallel over processes.

    python benchmarks/processes.py --processes 2 --steps 60 --json benchmarks/results/processes_cpu.json \
        -- --task dates --hidden-dim 128 --batch-size 64

Runs, one after the other, `seq2seq train` with the same arguments (those after --) and the same global batch:
one process on all the cores listed in --cores, then --processes processes each pinned to its share of them
(taskset), launched as docs/distributed.md launches them.  Each run's steady target tokens/s: the median (and
spread) of its logged intervals after the first (which holds the compilation).  On one machine N processes share
the same cores, so this measures the overhead of the processes and their all-reduce, not a speed-up: on a cluster
each process brings its own cores or accelerator.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(out: Path, train_args: list[str], steps: int, cores: list[int], processes: int) -> dict:
    """One job of `processes` processes over `cores` (split evenly); its steady throughput from metrics.jsonl."""
    port, shares = free_port(), np.array_split(np.array(cores), processes)
    common = ["train", *train_args, "--steps", str(steps), "--log-every", "5", "--eval-every", str(steps),
              "--eval-examples", "16", "--no-progress", "--out", str(out), "--fresh"]
    started, jobs = time.perf_counter(), []
    for index, share in enumerate(shares):
        several = [] if processes == 1 else ["--num-processes", str(processes), "--process-id", str(index),
                                             "--coordinator", f"127.0.0.1:{port}"]
        env = {**os.environ, "JAX_NUM_CPU_DEVICES": "1", "JAX_PLATFORMS": "cpu"}
        command = ["taskset", "-c", ",".join(map(str, share)), sys.executable, "-m", "seq2seq_lab.cli",
                   *common, *several]
        jobs.append(subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True))
    for job in jobs:
        _, err = job.communicate()
        if job.returncode:
            raise SystemExit(f"a process of the {processes}-process run failed:\n{err[-2000:]}")
    wall = time.perf_counter() - started
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    rates = [r["tokens_per_s"] for r in records if "tokens_per_s" in r][1:]  # the first holds the compilation
    return {"processes": processes, "cores_each": len(shares[0]), "steps": steps, "wall_seconds": round(wall, 1),
            "tokens_per_s_median": round(float(np.median(rates)), 1),
            "tokens_per_s_iqr": [round(float(q), 1) for q in np.percentile(rates, [25, 75])],
            "intervals": len(rates)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--cores", default=None, help="cores to use, e.g. 0,1 (default: all of this machine's)")
    parser.add_argument("--json", default=None, help="write the results here")
    parser.add_argument("train_args", nargs=argparse.REMAINDER, help="-- then `seq2seq train` arguments")
    args = parser.parse_args()
    train_args = args.train_args[1:] if args.train_args[:1] == ["--"] else args.train_args
    cores = [int(c) for c in args.cores.split(",")] if args.cores else sorted(os.sched_getaffinity(0))
    if len(cores) % args.processes:
        raise SystemExit(f"--cores: expected a multiple of --processes {args.processes} cores, got {len(cores)}")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for processes in (1, args.processes):
            result = run(Path(tmp) / f"p{processes}", train_args, args.steps, cores, processes)
            results.append(result)
            print(f"{processes} process(es) x {result['cores_each']} core(s): {result['tokens_per_s_median']:.0f} "
                  f"target tokens/s (IQR {result['tokens_per_s_iqr'][0]:.0f}-{result['tokens_per_s_iqr'][1]:.0f}), "
                  f"{result['wall_seconds']:.0f} s in all", flush=True)
    ratio = results[1]["tokens_per_s_median"] / results[0]["tokens_per_s_median"]
    print(f"{args.processes} processes / 1 process: {ratio:.2f}x the target tokens/s on the same {len(cores)} cores")
    if args.json:
        Path(args.json).write_text(json.dumps({"train_args": train_args, "cores": cores, "runs": results,
                                               "ratio": round(ratio, 3),
                                               "date": time.strftime("%Y-%m-%d")}, indent=1) + "\n")


if __name__ == "__main__":
    main()
