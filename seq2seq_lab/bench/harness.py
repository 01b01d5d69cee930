"""Timing, the matrix-multiply peak, peak memory and the machine's description.

Every measurement runs in a fresh subprocess (`python -m seq2seq_lab.bench.harness`),
so the backends do not share threads or allocators and each one's peak memory
is its own.  Timings: `warmup` untimed calls (compilation happens there),
then `repeats` timed calls; median and spread (min, max, IQR) are reported.
"""
from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import time
from dataclasses import asdict
from importlib import metadata

import numpy as np

from .configs import BenchConfig, forward_flops, train_step_flops
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


def measure(config: BenchConfig, backend: str, attention: str, task: str, warmup: int, repeats: int,
            options: dict | None = None) -> dict:
    """Time one (backend, attention, task) in this process."""
    options = options or {}
    run, device_peak = RUNNERS[backend](config, attention, task, options)
    compile_start = time.perf_counter()
    for _ in range(warmup):
        run()
    warmup_s = time.perf_counter() - compile_start
    times = np.array([_timed(run) for _ in range(repeats)])
    median = float(np.median(times))
    flops = train_step_flops(config, attention) if task == "train" else forward_flops(config, attention)
    tokens = config.batch * config.tgt_len
    q1, q3 = np.percentile(times, [25, 75])
    return {"backend": backend, "attention": attention, "task": task, "options": options,
            "ms_median": median * 1e3, "ms_min": float(times.min()) * 1e3, "ms_max": float(times.max()) * 1e3,
            "ms_iqr": float(q3 - q1) * 1e3, "repeats": repeats, "warmup": warmup, "warmup_s": warmup_s,
            "target_tokens_per_s": tokens / median, "gflop": flops / 1e9, "gflops_achieved": flops / median / 1e9,
            "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "device_peak_bytes": device_peak()}


def measure_isolated(config: BenchConfig, backend: str, attention: str, task: str, warmup: int, repeats: int,
                     options: dict | None = None) -> dict:
    request = json.dumps({"config": asdict(config), "backend": backend, "attention": attention, "task": task,
                          "warmup": warmup, "repeats": repeats, "options": options or {}})
    result = subprocess.run([sys.executable, "-m", "seq2seq_lab.bench.harness", request], capture_output=True,
                            text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{backend} {attention} {task} failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def versions() -> dict:
    out = {"python": platform.python_version()}
    for name in ("numpy", "jax", "jaxlib", "flax", "optax", "torch"):
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
    request = json.loads(sys.argv[1])
    record = measure(BenchConfig(**request["config"]), request["backend"], request["attention"], request["task"],
                     request["warmup"], request["repeats"], request["options"])
    print(json.dumps(record))
