"""`seq2seq serve` under concurrent clients: sentences/s and latency (p50, p95) with 1, 8 and 32 clients, each
sending one sentence per request, with micro-batching on and off, and one `seq2seq translate` process per
sentence (what a user without the server pays) for comparison.

    python benchmarks/serve_throughput.py --run runs/m30k --sentences val.de --json benchmarks/results/serve_cpu.json

Each server is started (and warmed up) once; each setting sends its --requests requests (at least 4 per client)
twice, spread over its clients: untimed (compiling the batch shapes they meet), then timed (the steady state).
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def start(run: Path, *options: str) -> tuple[subprocess.Popen, str, float]:
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "seq2seq_lab.cli", "serve", "--run", str(run), "--port", "0",
                                *options], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = process.stdout.readline()
    found = re.search(r"on (http://127\.0\.0\.1:\d+/)", line)
    if found is None:
        process.kill()
        raise RuntimeError(f"the server did not start: {line}\n{process.stderr.read()}")
    return process, found.group(1), time.perf_counter() - started


def post(url: str, text: str, beam: int | None = None) -> float:
    started = time.perf_counter()
    body = {"text": text} if beam is None else {"text": text, "beam": beam}
    call = urllib.request.Request(url + "translate", data=json.dumps(body).encode(),
                                  headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(call, timeout=600) as response:
        json.loads(response.read())
    return time.perf_counter() - started


def load(url: str, sentences: list[str], clients: int, requests: int, beam: int | None) -> dict:
    count = max(requests, 4 * clients)
    texts = [sentences[i % len(sentences)] for i in range(count)]
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(lambda text: post(url, text, beam), texts))  # untimed: compiles the shapes it meets
        started = time.perf_counter()
        latencies = list(pool.map(lambda text: post(url, text, beam), texts))
        wall = time.perf_counter() - started
    latencies.sort()
    return {"clients": clients, "requests": count, "sentences_per_s": count / wall,
            "p50_ms": 1000 * statistics.median(latencies), "p95_ms": 1000 * latencies[int(0.95 * (count - 1))]}


def translate_processes(run: Path, sentences: list[str], count: int) -> dict:
    """One `seq2seq translate` process per sentence, one after the other."""
    times = []
    for text in sentences[:count]:
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "seq2seq_lab.cli", "translate", "--run", str(run), text], cwd=ROOT,
                       check=True, capture_output=True, text=True)
        times.append(time.perf_counter() - started)
    return {"clients": 1, "requests": count, "sentences_per_s": count / sum(times),
            "p50_ms": 1000 * statistics.median(times), "p95_ms": 1000 * max(times)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="a trained run folder")
    parser.add_argument("--sentences", type=Path, required=True, help="source sentences, one per line")
    parser.add_argument("--requests", type=int, default=128, help="timed requests per setting")
    parser.add_argument("--clients", default="1,8,32")
    parser.add_argument("--processes", type=int, default=5, help="sentences translated by one process each")
    parser.add_argument("--beams", default="run", help="beam sizes the requests ask for, 'run': the run's default")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    sentences = [line.strip() for line in args.sentences.read_text("utf-8").splitlines() if line.strip()]
    clients = [int(c) for c in args.clients.split(",")]
    beams = [None if beam == "run" else int(beam) for beam in args.beams.split(",")]
    results = {"run": str(args.run), "date": time.strftime("%Y-%m-%d"), "settings": []}
    for batching in (True, False):
        process, url, startup = start(args.run, *([] if batching else ["--no-batching"]))
        try:
            results[f"startup_s_batching_{'on' if batching else 'off'}"] = startup
            for beam in beams:
                for count in clients:
                    row = {"batching": batching, "beam": beam or "run's",
                           **load(url, sentences, count, args.requests, beam)}
                    results["settings"].append(row)
                    print(json.dumps(row), flush=True)
        finally:
            process.terminate()
            process.wait(60)
    if args.processes:
        row = {"batching": "one translate process per sentence",
               **translate_processes(args.run, sentences, args.processes)}
        results["settings"].append(row)
        print(json.dumps(row), flush=True)
    for beam in beams:
        pick = lambda on, count: next(r for r in results["settings"] if r["batching"] is on  # noqa: E731
                                      and r["clients"] == count and r["beam"] == (beam or "run's"))
        ratio = pick(True, max(clients))["sentences_per_s"] / pick(False, 1)["sentences_per_s"]
        results[f"speedup_beam_{beam or 'run'}"] = ratio
        print(f"beam {beam or 'of the run'}: {max(clients)} clients with batching are {ratio:.1f}x the sentences/s "
              "of one client with batching off", flush=True)
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
