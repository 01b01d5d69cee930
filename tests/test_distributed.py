"""`seq2seq train` under several processes on JAX's distributed runtime, with real processes on this machine's
CPU (gloo collectives), launched as docs/distributed.md launches them: the same computation as one process,
one writer, one early-stopping decision, and a killed process that neither hangs the other nor costs the last
checkpoint."""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from seq2seq_lab.checkpoint import latest_checkpoint
from seq2seq_lab.distributed import DistributedSettings
from seq2seq_lab.tasks import generate_task

pytest.importorskip("jax")

ROOT = Path(__file__).resolve().parents[1]
# A tiny model of the dates task whose validation BLEU falls at step 15, so that --patience 1 stops it there.
# The task's pairs as files with a given validation split: no test split, so no test decoding at the end.
TRAIN = ["train", "--tokenizer", "char", "--hidden-dim", "16", "--embed-dim", "8",
         "--encoder", "gru", "--decoder", "gru", "--attention", "luong",
         "--batch-size", "32", "--steps", "40", "--eval-every", "5", "--log-every", "5", "--eval-examples", "32",
         "--select-by", "bleu", "--patience", "1", "--no-progress"]
STOP_STEP = 15


@pytest.fixture(scope="module")
def dates(tmp_path_factory) -> list[str]:
    """--data and --valid-data arguments: 512 training and 32 validation pairs of the dates task."""
    folder = tmp_path_factory.mktemp("dates")
    splits = generate_task("dates", seed=0, sizes={"train": 512, "valid": 32, "test": 1})
    for split in ("train", "valid"):
        (folder / f"{split}.tsv").write_text("".join(f"{s}\t{t}\n" for s, t in splits[split]), encoding="utf-8")
    return ["--data", str(folder / "train.tsv"), "--valid-data", str(folder / "valid.tsv")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(out: Path, data: list[str], processes: int = 1, port: int | None = None) -> list[subprocess.Popen]:
    """`seq2seq train` as every process of the job runs it (one CPU device each)."""
    env = {**os.environ, "JAX_NUM_CPU_DEVICES": "1", "JAX_PLATFORMS": "cpu"}
    several = [] if processes == 1 else ["--num-processes", str(processes), "--coordinator", f"127.0.0.1:{port}",
                                         "--heartbeat-timeout", "20", "--connect-timeout", "60"]
    return [subprocess.Popen([sys.executable, "-m", "seq2seq_lab.cli", *TRAIN, *data, "--out", str(out), *several,
                              *(["--process-id", str(i)] if processes > 1 else [])],
                             cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for i in range(processes)]


def finish(processes: list[subprocess.Popen], timeout: float = 300) -> list[tuple[int, str, str]]:
    """(status, stdout, stderr) of each; all killed, with what they printed, where one outlives timeout."""
    results, deadline = [], time.monotonic() + timeout
    try:
        for process in processes:
            out, err = process.communicate(timeout=max(1.0, deadline - time.monotonic()))
            results.append((process.returncode, out, err))
    except subprocess.TimeoutExpired:
        for process in processes:
            process.kill()
        printed = [process.communicate()[1][-3000:] for process in processes]
        raise AssertionError(f"still running after {timeout} s:\n" + "\n---\n".join(printed)) from None
    return results


def records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_two_processes_train_as_one_with_one_writer_and_survive_a_kill(tmp_path, dates):
    """(a) the same computation as one process, (b) process 0 alone writes, (d) --patience stops both at the
    same step, (c) a killed process stops the other with one error, and a restart (by one process) resumes to
    the same end.  One test: the jobs share their compiled programs (the compilation cache)."""
    one, two = tmp_path / "one", tmp_path / "two"
    (status, _, err), = finish(launch(one, dates))  # first: the pair's process 0 finds its validation compiled
    pair = finish(launch(two, dates, 2, free_port()))
    assert status == 0, err
    for status, out, err in pair:
        assert status == 0, err
        assert f"stopped at step {STOP_STEP}" in err  # (d) both stop at the same step, by --patience
    assert f"process 1 of 2: trained to step {STOP_STEP}" in pair[1][1]

    single, double = records(one), records(two)
    assert [r["step"] for r in single] == [r["step"] for r in double] and single[-1]["step"] == STOP_STEP
    # (a) float32, the gradients summed over two devices in another order: 20x float32's epsilon at most
    for a, b in zip(single, double):
        for key in ("loss", "valid_loss"):
            if key in a:
                assert abs(a[key] - b[key]) <= 2.4e-6 * abs(a[key]), (a, b)
        for key in ("valid_bleu", "valid_exact_match", "valid_chrf"):
            if key in a:
                assert a[key] == b[key], (a, b)  # greedy decoding of nearly equal params: the same outputs
    a, b = latest_checkpoint(one), latest_checkpoint(two)
    assert a.step == b.step == STOP_STEP
    for name in a.params:
        np.testing.assert_allclose(b.params[name], a.params[name], rtol=1e-4, atol=1e-6)

    # (b) what one process writes, once
    assert sorted(p.name for p in two.iterdir()) == sorted(p.name for p in one.iterdir())
    lines = (two / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == len(set(lines)) == len(single)
    summary = json.loads((two / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["steps"] == STOP_STEP

    # (c) kill -9 one process once the first checkpoint is written
    out = tmp_path / "killed"
    survivor, victim = launch(out, dates, 2, free_port())
    first = out / "checkpoint-00000005.npz"
    deadline = time.monotonic() + 240
    while not first.exists() and time.monotonic() < deadline and victim.poll() is None:
        time.sleep(0.02)
    assert first.exists(), victim.communicate()[1]
    victim.send_signal(signal.SIGSTOP)  # at once, before it can train to the end
    victim.kill()
    victim.wait()
    killed_at = time.monotonic()
    status, _, err = finish([survivor], timeout=120)[0]
    assert time.monotonic() - killed_at < 60
    assert status == 1, err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: process 0 of 2: another process stopped"), err
    saved = latest_checkpoint(out)  # intact: written atomically
    assert saved is not None and saved.step in (5, 10) and saved.step < STOP_STEP

    # resumed by one process (another N: the global batch is the same), it ends where the uninterrupted run does
    (status, _, err), = finish(launch(out, dates))
    assert status == 0, err
    assert f"resuming from checkpoint-{saved.step:08d}.npz" in err and f"stopped at step {STOP_STEP}" in err
    end = latest_checkpoint(out)
    assert end.step == STOP_STEP
    for name in end.params:
        np.testing.assert_allclose(end.params[name], b.params[name], rtol=1e-4, atol=1e-6)
    resumed = records(out)
    assert [r["step"] for r in resumed] == [r["step"] for r in double]
    assert resumed[-1]["valid_bleu"] == double[-1]["valid_bleu"]


def test_a_coordinator_that_cannot_be_reached_is_one_error_in_bounded_time(tmp_path, dates):
    port = free_port()  # nothing listens there
    started = time.monotonic()
    process = subprocess.run([sys.executable, "-m", "seq2seq_lab.cli", *TRAIN, *dates, "--out", str(tmp_path / "run"),
                              "--num-processes", "2", "--process-id", "1", "--coordinator", f"127.0.0.1:{port}",
                              "--connect-timeout", "3"], cwd=ROOT, capture_output=True, text=True, timeout=120,
                             env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert process.returncode == 2 and time.monotonic() - started < 60
    errors = [line for line in process.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"could not join 2 processes at 127.0.0.1:{port} as process 1 within 3 s" \
        in errors[0], process.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("arguments, environ, message", [
    (dict(num_processes=2, process_id=0), {}, re.escape("coordinator: expected --coordinator (or "
                                                        "$JAX_COORDINATOR_ADDRESS) with --num-processes")),
    (dict(process_id=1), {}, re.escape("num_processes: expected --num-processes (or $JAX_NUM_PROCESSES) with "
                                       "--process-id")),
    (dict(num_processes=2, process_id=2, coordinator="h:1"), {}, r"process_id: expected an integer in \[0, 2\)"),
    (dict(num_processes=2, process_id=0, coordinator="h"), {}, "coordinator: expected HOST:PORT"),
    (dict(), {"JAX_NUM_PROCESSES": "two"}, r"num_processes: expected an integer in \$JAX_NUM_PROCESSES"),
])
def test_bad_settings_are_named(arguments, environ, message):
    with pytest.raises(ValueError, match=message):
        DistributedSettings.from_arguments(**arguments, environ=environ)


def test_settings_come_from_jax_environment_variables():
    environ = {"JAX_COORDINATOR_ADDRESS": "node-0:1234", "JAX_NUM_PROCESSES": "4", "JAX_PROCESS_ID": "3"}
    assert DistributedSettings.from_arguments(environ=environ) == DistributedSettings("node-0:1234", 4, 3)
    assert DistributedSettings.from_arguments(process_id=2, environ=environ).process_id == 2  # a flag wins
    assert DistributedSettings.from_arguments(environ={}) is None  # one process
