"""`seq2seq train` under several processes on JAX's distributed runtime, with real processes on this machine's
CPU (gloo collectives), launched as docs/distributed.md launches them: the same computation as one process,
one writer, one early-stopping decision, and a killed process that neither hangs the other nor costs the last
checkpoint."""
from __future__ import annotations

import json
import os
import re
import shutil
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


def environment() -> dict:
    """Each process one CPU device; XLA's optimisation passes off (conftest.py: what these tests check is how the
    processes share a run, and both sides of every comparison compile alike)."""
    return {**os.environ, "JAX_NUM_CPU_DEVICES": "1", "JAX_PLATFORMS": "cpu", "JAX_DISABLE_MOST_OPTIMIZATIONS": "1"}


# A tiny model of the dates task whose validation BLEU falls at step 15, so that --patience 1 stops it there.
# The task's pairs as files with a given validation split: no test split, so no test decoding at the end.
# Every batch padded to one width (--pad-multiple 64; sentences are under 30 characters): one compiled step.
TRAIN = ["train", "--tokenizer", "char", "--hidden-dim", "16", "--embed-dim", "8",
         "--encoder", "gru", "--decoder", "gru", "--attention", "luong",
         "--batch-size", "32", "--steps", "40", "--eval-every", "5", "--log-every", "5", "--eval-examples", "32",
         "--select-by", "bleu", "--patience", "1", "--pad-multiple", "64", "--no-progress"]
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
    several = [] if processes == 1 else ["--num-processes", str(processes), "--coordinator", f"127.0.0.1:{port}",
                                         "--heartbeat-timeout", "20", "--connect-timeout", "60"]
    return [subprocess.Popen([sys.executable, "-m", "seq2seq_lab.cli", *TRAIN, *data, "--out", str(out), *several,
                              *(["--process-id", str(i)] if processes > 1 else [])],
                             cwd=ROOT, env=environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
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
    """(c) a killed process stops the other with one error and costs no checkpoint; restarted by two processes
    (the same N) and, from a copy of the same folder, by one (another N: the global batch is the same), each ends
    where an uninterrupted run ends: (a) the two-process run is the same computation as one process, (b) process
    0 alone wrote it, (d) --patience stops both processes at the same step.  One test: the jobs share their
    compiled programs (the compilation cache)."""
    one, two, other = tmp_path / "one", tmp_path / "two", tmp_path / "other"
    (status, _, err), = finish(launch(one, dates))  # first: the pair's process 0 finds its validation compiled
    assert status == 0, err

    # (c) kill -9 one process once the first checkpoint is written
    survivor, victim = launch(two, dates, 2, free_port())
    first = two / "checkpoint-00000005.npz"
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
    saved = latest_checkpoint(two)  # intact: written atomically
    assert saved is not None and saved.step in (5, 10) and saved.step < STOP_STEP
    shutil.copytree(two, other)

    # the same N resumes it; both processes stop at the same step, by --patience (d)
    pair = finish(launch(two, dates, 2, free_port()))
    for status, out, err in pair:
        assert status == 0, err
        assert f"resuming from checkpoint-{saved.step:08d}.npz" in err and f"stopped at step {STOP_STEP}" in err
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

    # another N resumes the copy and ends where the uninterrupted run does
    (status, _, err), = finish(launch(other, dates))
    assert status == 0, err
    assert f"resuming from checkpoint-{saved.step:08d}.npz" in err and f"stopped at step {STOP_STEP}" in err
    end = latest_checkpoint(other)
    assert end.step == STOP_STEP
    for name in end.params:
        np.testing.assert_allclose(end.params[name], a.params[name], rtol=1e-4, atol=1e-6)
    resumed = records(other)
    assert [r["step"] for r in resumed] == [r["step"] for r in single]
    assert resumed[-1]["valid_bleu"] == single[-1]["valid_bleu"]


# Each process of a two-process job runs this: 20 Adam steps of a float64 model on the global batches a single
# process would train on, each process feeding its own rows of each; process 0 then runs the same steps on its
# device alone (one device, no collective: what one process computes) and prints both runs' losses and params.
FLOAT64_STEPS = """
import json, sys
import jax
jax.config.update("jax_enable_x64", True)
import numpy as np
from seq2seq_lab.distributed import DistributedSettings, initialize
initialize(DistributedSettings(sys.argv[2], 2, int(sys.argv[1]), connect_timeout=60, heartbeat_timeout=20))
import seq2seq_jax
from seq2seq_ref import ModelConfig
from tests.helpers import float64_params, ragged_batch
config = ModelConfig(13, 11, 8, 16, encoder="gru", decoder="gru", attention="luong")
optimiser = seq2seq_jax.make_optimizer("adam", 1e-2)

def train(devices):
    mesh = seq2seq_jax.data_mesh(devices)
    params = seq2seq_jax.replicate(float64_params(config, 0), mesh)
    opt_state = seq2seq_jax.init_opt_state(optimiser, params, mesh)
    step = seq2seq_jax.make_train_step(config, optimiser, mesh=mesh)
    rng, losses = np.random.default_rng(0), []
    for _ in range(20):
        batch = ragged_batch(config, rng, batch_size=8, src_len=6, tgt_len=5, src_width=6, tgt_width=5)
        params, opt_state, metrics = step(params, opt_state, batch)
        losses.append(float(metrics["loss"]))
    return {"devices": mesh.size, "losses": losses,
            "params": {name: np.asarray(value.addressable_data(0)).tolist() for name, value in params.items()}}

two = train(jax.devices())
if jax.process_index() == 0:
    print(json.dumps({"two": two, "one": train(jax.local_devices())}))
"""


def test_float64_steps_of_two_processes_equal_one_process():
    """(a) in float64: the losses of 20 steps of two processes (a gloo all-reduce of the gradients) equal one
    device's to 1e-12, and so do the params they end with."""
    port = free_port()
    jobs = [subprocess.Popen([sys.executable, "-c", FLOAT64_STEPS, str(i), f"127.0.0.1:{port}"], cwd=ROOT, env=environment(),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    results = finish(jobs, timeout=180)
    for status, _, err in results:
        assert status == 0, err
    runs = json.loads(results[0][1].splitlines()[-1])  # after gloo's own lines
    one, two = runs["one"], runs["two"]
    assert two["devices"] == 2 and one["devices"] == 1
    losses_one, losses_two = np.array(one["losses"]), np.array(two["losses"])
    assert losses_one[-1] < losses_one[0]  # it trains
    np.testing.assert_allclose(losses_two, losses_one, rtol=1e-12, atol=0)
    for name, value in one["params"].items():
        np.testing.assert_allclose(two["params"][name], value, rtol=1e-12, atol=1e-14, err_msg=name)


def test_a_coordinator_that_cannot_be_reached_is_one_error_in_bounded_time(tmp_path, dates):
    port = free_port()  # nothing listens there
    started = time.monotonic()
    process = subprocess.run([sys.executable, "-m", "seq2seq_lab.cli", *TRAIN, *dates, "--out", str(tmp_path / "run"),
                              "--num-processes", "2", "--process-id", "1", "--coordinator", f"127.0.0.1:{port}",
                              "--connect-timeout", "3"], cwd=ROOT, capture_output=True, text=True, timeout=120,
                             env=environment())
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
