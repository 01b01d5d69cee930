"""Timing, the matrix-multiply peak, peak memory and the machine's description.

Each backend runs in its own worker process (`python -m seq2seq_lab.bench.harness --worker BACKEND`,
speaking JSON lines over stdin/stdout), started once per bench run, so the backends share no threads
or allocators.  For each point (cell, attention, task) every worker builds its runner and makes
`warmup` untimed calls (compilation happens there), one worker after the other; then the timed calls
are interleaved round by round, in the order the backends were given: numpy, jax, torch, numpy, jax,
torch, ...  A drift of the machine (clock, other load) then reaches every backend alike, and a round's
time over the torch time of the same round is a paired ratio: besides each backend's median and
spread (min, max, IQR), the median and IQR of those per-round ratios are reported.

Peak memory is per point: the worker resets the process's RSS high-water mark (Linux) and torch's
CUDA peak before building a runner; jax's device peak cannot be reset, so it is the worker's peak so
far.
"""
from __future__ import annotations

import contextlib
import gc
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import asdict
from importlib import metadata

import numpy as np

from .configs import BenchConfig, beam_search_flops, forward_flops, train_step_flops
from .runners import RUNNERS


def matmul_peak_gflops(n: int | None = None, repeats: int = 5) -> dict:
    """float32 GEMM throughput of the device jax sees (numpy's BLAS on a CPU-only machine), best of repeats."""
    try:
        import jax
        import jax.numpy as jnp

        on_gpu = jax.devices()[0].platform != "cpu"
    except ImportError:
        on_gpu = False
    n = n or (8192 if on_gpu else 2048)
    if on_gpu:
        a = jnp.ones((n, n), jnp.float32)
        matmul = jax.jit(lambda x: x @ x)
        matmul(a).block_until_ready()
        run = lambda: matmul(a).block_until_ready()  # noqa: E731
        library = "jax"
    else:
        a = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32)
        a @ a
        run = lambda: a @ a  # noqa: E731
        library = "numpy"
    best = min(_timed(run) for _ in range(repeats))
    return {"gflops": 2 * n**3 / best / 1e9, "n": n, "dtype": "float32", "library": library}


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def interleaved_schedule(backends, repeats: int) -> list[tuple[int, str]]:
    """The timed calls of one point, in order: (round, backend), every backend once per round."""
    return [(round_, backend) for round_ in range(repeats) for backend in backends]


def make_record(config: BenchConfig, backend: str, cell: str, attention: str, task: str, options: dict,
                warmup: int, warmup_s: float, times_s, order, peak_rss_bytes: int, device_peak_bytes,
                pid: int | None = None) -> dict:
    """One (backend, point)'s record from its timed calls (times_s, in round order)."""
    times = np.asarray(times_s, dtype=float)
    median = float(np.median(times))
    if task == "train":
        flops = train_step_flops(config, attention, cell)
    elif task == "beam":
        flops = beam_search_flops(config, attention, options["beam"], cell)
    else:
        flops = forward_flops(config, attention, cell=cell)
    tokens = config.batch * config.tgt_len
    q1, q3 = np.percentile(times, [25, 75])
    return {"backend": backend, "cell": cell, "attention": attention, "task": task,
            "heads": config.model(attention, cell).num_heads, "options": options,
            "ms_median": median * 1e3, "ms_min": float(times.min()) * 1e3, "ms_max": float(times.max()) * 1e3,
            "ms_iqr": float(q3 - q1) * 1e3, "ms_times": [t * 1e3 for t in times.tolist()], "order": list(order),
            "repeats": len(times), "warmup": warmup, "warmup_s": warmup_s,
            "target_tokens_per_s": tokens / median, "gflop": flops / 1e9, "gflops_achieved": flops / median / 1e9,
            "peak_rss_bytes": peak_rss_bytes, "device_peak_bytes": device_peak_bytes, "worker_pid": pid}


def add_torch_ratios(records: list[dict]) -> list[dict]:
    """Time relative to the torch record of the same (cell, attention, task), in place.

    time_vs_torch: ratio of the medians.  time_vs_torch_paired, time_vs_torch_paired_iqr: median and IQR
    of the per-round ratios ms_times[i] / torch's ms_times[i] (None without a torch record).
    """
    point = lambda r: (r["cell"], r["attention"], r["task"])  # noqa: E731
    torch_records = {point(r): r for r in records if r["backend"] == "torch"}
    for record in records:
        baseline = torch_records.get(point(record))
        if baseline is None:
            record.update(time_vs_torch=None, time_vs_torch_paired=None, time_vs_torch_paired_iqr=None)
            continue
        ratios = np.asarray(record["ms_times"]) / np.asarray(baseline["ms_times"])
        q1, q3 = np.percentile(ratios, [25, 75])
        record.update(time_vs_torch=record["ms_median"] / baseline["ms_median"],
                      time_vs_torch_paired=float(np.median(ratios)), time_vs_torch_paired_iqr=float(q3 - q1))
    return records


class Worker:
    """One backend's process; call(op, ...) sends a request line and returns the reply."""

    def __init__(self, backend: str):
        self.backend = backend
        self._stderr = tempfile.TemporaryFile(mode="w+")
        self._process = subprocess.Popen([sys.executable, "-m", "seq2seq_lab.bench.harness", "--worker", backend],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr,
                                         text=True)

    def call(self, op: str, **fields) -> dict:
        try:
            self._process.stdin.write(json.dumps({"op": op, **fields}) + "\n")
            self._process.stdin.flush()
            line = self._process.stdout.readline()
        except BrokenPipeError:
            line = ""
        reply = json.loads(line) if line else {"error": f"the worker exited (code {self._process.poll()})"}
        if "error" in reply:
            self._stderr.seek(0)
            raise RuntimeError(f"{self.backend} worker, {op} {fields}: {reply['error']}\n"
                               f"{self._stderr.read()[-2000:]}")
        return reply

    def close(self) -> None:
        if self._process.stdin:
            with contextlib.suppress(BrokenPipeError):
                self._process.stdin.close()
        try:
            self._process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._stderr.close()

    def __enter__(self) -> "Worker":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def measure_point(workers: dict[str, Worker], config: BenchConfig, cell: str, attention: str, task: str,
                  warmup: int, repeats: int, options: dict[str, dict] | None = None) -> list[dict]:
    """One point on every worker: warm-ups one worker after the other, then the interleaved timed calls.

    Returns one record per backend (in the workers' order), with its torch ratios when torch is among them.
    """
    options = options or {}
    warmup_s = {backend: worker.call("prepare", config=asdict(config), cell=cell, attention=attention, task=task,
                                     warmup=warmup, options=options.get(backend, {}))["warmup_s"]
                for backend, worker in workers.items()}
    times, order = {b: [] for b in workers}, {b: [] for b in workers}
    for index, (_, backend) in enumerate(interleaved_schedule(list(workers), repeats)):
        times[backend].append(workers[backend].call("time")["seconds"])
        order[backend].append(index)
    records = [make_record(config, backend, cell, attention, task, options.get(backend, {}), warmup,
                           warmup_s[backend], times[backend], order[backend], **worker.call("memory"))
               for backend, worker in workers.items()]
    return add_torch_ratios(records)


def measure_interleaved(config: BenchConfig, backends, points, warmup: int, repeats: int,
                        options: dict[str, dict] | None = None) -> list[dict]:
    """Every point (cell, attention, task) on one warm worker per backend; records in point order."""
    with contextlib.ExitStack() as stack:
        workers = {backend: stack.enter_context(Worker(backend)) for backend in backends}
        return [record for cell, attention, task in points
                for record in measure_point(workers, config, cell, attention, task, warmup, repeats, options)]


def measure_isolated(config: BenchConfig, backend: str, attention: str, task: str, warmup: int, repeats: int,
                     options: dict | None = None, cell: str = "lstm") -> dict:
    """One backend alone at one point, in a worker of its own (the harness before interleaving)."""
    with Worker(backend) as worker:
        return measure_point({backend: worker}, config, cell, attention, task, warmup, repeats,
                             {backend: options or {}})[0]


def measure(config: BenchConfig, backend: str, attention: str, task: str, warmup: int, repeats: int,
            options: dict | None = None, cell: str = "lstm") -> dict:
    """One backend at one point in this process (no isolation: for debugging and profiling)."""
    session = _Session(backend)
    warmup_s = session.prepare(asdict(config), cell, attention, task, warmup, options or {})["warmup_s"]
    times = [session.time()["seconds"] for _ in range(repeats)]
    return add_torch_ratios([make_record(config, backend, cell, attention, task, options or {}, warmup, warmup_s,
                                         times, range(repeats), **session.memory())])[0]


class _Session:
    """A worker's state: the runner of the current point."""

    def __init__(self, backend: str):
        self.backend = backend
        self.run = self.device_peak = None

    def prepare(self, config: dict, cell: str, attention: str, task: str, warmup: int, options: dict) -> dict:
        self.run = self.device_peak = None  # the previous point's arrays go before this point's peak is taken
        gc.collect()
        _reset_peak_rss()
        self.run, self.device_peak = RUNNERS[self.backend](BenchConfig(**config), cell, attention, task, options)
        start = time.perf_counter()
        for _ in range(warmup):
            self.run()
        return {"warmup_s": time.perf_counter() - start}

    def time(self) -> dict:
        return {"seconds": _timed(self.run)}

    def memory(self) -> dict:
        return {"peak_rss_bytes": _peak_rss_bytes(), "device_peak_bytes": self.device_peak(), "pid": os.getpid()}


def _reset_peak_rss() -> None:
    """Linux: writing 5 to clear_refs resets the RSS high-water mark (VmHWM); elsewhere the peak stays the process's."""
    with contextlib.suppress(OSError), open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")


def _peak_rss_bytes() -> int:
    with contextlib.suppress(OSError), open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def serve(backend: str) -> None:
    """The worker's loop: one JSON request per stdin line, one JSON reply per stdout line."""
    protocol = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # what the libraries print must not enter the protocol
    session = _Session(backend)
    handlers = {"prepare": session.prepare, "time": session.time, "memory": session.memory}
    for line in sys.stdin:
        request = json.loads(line)
        try:
            reply = handlers[request.pop("op")](**request)
        except Exception:  # noqa: BLE001 - reported to the parent, which raises it
            reply = {"error": traceback.format_exc()}
        protocol.write(json.dumps(reply) + "\n")
        protocol.flush()


def versions() -> dict:
    out = {"python": platform.python_version()}
    for name in ("numpy", "jax", "jaxlib", "flax", "optax", "torch", "ctranslate2", "sacrebleu"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def describe_device() -> dict:
    device = {"platform": platform.platform(), "machine": platform.machine(), "cpu_cores": os.cpu_count(),
              "cpu_model": _cpu_model()}
    try:
        import jax

        first = jax.devices()[0]
        device.update({"jax_platform": first.platform, "jax_device": first.device_kind,
                       "jax_device_count": jax.device_count()})
    except ImportError:
        pass
    try:
        import torch

        if torch.cuda.is_available():
            device["torch_device"] = torch.cuda.get_device_name(0)
            device["torch_cudnn"] = torch.backends.cudnn.version()
    except ImportError:
        pass
    return device


def _cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


if __name__ == "__main__":
    if sys.argv[1:2] != ["--worker"] or len(sys.argv) != 3:
        sys.exit("usage: python -m seq2seq_lab.bench.harness --worker BACKEND (started by the bench harness)")
    serve(sys.argv[2])
