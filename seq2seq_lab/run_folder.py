"""A run folder that never loses or mixes up a model.

One training at a time holds it (an exclusive `flock` on `.lock`, released by
the OS when the process dies); `--fresh` moves the previous run aside into
`previous-<timestamp>/` instead of deleting or mixing with it; temporary files
left by a process killed mid-checkpoint are removed; and `metrics.jsonl`
survives a crash that tore its last line.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import time
import warnings
from pathlib import Path

from .atomic import replacing
from .checkpoint import list_checkpoints

LOCK_NAME = ".lock"
RUN_FILES = ("metrics.jsonl", "summary.json", "loss_curve.png", "best.npz", "averaged.npz")
_TEMPORARY = re.compile(r"^\.(?:checkpoint-\d{8}\.npz|best\.npz|averaged\.npz|metrics\.jsonl)\.(\d+)\.tmp$")


def make_run_folder(out_dir: Path) -> None:
    """Create out_dir, or say clearly why it cannot be one (an existing file, no permission)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"out: expected a folder for the run, got the existing file {out_dir}")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ValueError(f"out: cannot create the run folder {out_dir}: {error.strerror or error}") from None
    if not os.access(out_dir, os.W_OK | os.X_OK):
        raise ValueError(f"out: expected a writable folder, got {out_dir} (permission denied)")


@contextlib.contextmanager
def exclusive(out_dir: Path):
    """Hold the run folder for one training; a second gets a ValueError naming the holder's pid.

    A folder this call created is removed again if the training fails before writing anything into it.
    """
    created = not out_dir.exists()
    make_run_folder(out_dir)
    lock = out_dir / LOCK_NAME
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as error:
        raise ValueError(f"out: cannot open the run folder's lock file {lock} for writing: "
                         f"{error.strerror or error}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno not in (errno.EWOULDBLOCK, errno.EACCES):
                raise
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise ValueError(f"out: {out_dir} is in use by another training (pid {holder}); wait for it to "
                             "finish or choose another --out") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield
        except BaseException:
            if created and {path.name for path in out_dir.iterdir()} == {LOCK_NAME}:
                lock.unlink()  # nothing of the run was written: leave no empty run folder behind
                out_dir.rmdir()
            raise
    finally:
        os.close(fd)  # releases the lock


def move_previous_run(out_dir: Path) -> Path | None:
    """Move an earlier run's checkpoints and logs into out_dir/previous-<timestamp>/; return that folder."""
    items = [*list_checkpoints(out_dir), *(out_dir / name for name in RUN_FILES if (out_dir / name).exists())]
    if not items:
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    aside, n = out_dir / f"previous-{stamp}", 1
    while aside.exists():
        n += 1
        aside = out_dir / f"previous-{stamp}-{n}"
    aside.mkdir()
    for item in items:
        os.replace(item, aside / item.name)
    return aside


def remove_stale_temporaries(out_dir: Path) -> list[Path]:
    """Delete the `.<file>.<pid>.tmp` files (checkpoints, best, averaged, metrics) whose writer is no longer alive."""
    removed = []
    for path in out_dir.iterdir():
        match = _TEMPORARY.match(path.name)
        if match and not _alive(int(match.group(1))):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # a leftover of an earlier process that had our pid; we write none outside save_checkpoint
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_metrics(path: Path) -> list[dict]:
    """The records of a metrics.jsonl; a torn last line (a crash mid-write) is dropped with a warning."""
    text = Path(path).read_text(encoding="utf-8")
    lines = text.split("\n")
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as error:
            if number == len(lines):  # no newline after it: the write was cut short
                warnings.warn(f"{path}: dropped a torn last line ({line[:40]!r}), left by a crash mid-write")
                break
            raise ValueError(f"metrics: {path}:{number}: expected a JSON record, got {line[:40]!r} ({error})") \
                from None
        if not isinstance(records[-1], dict) or "step" not in records[-1]:
            raise ValueError(f"metrics: {path}:{number}: expected a record with a 'step', got {line[:40]!r}")
    return records


def truncate_metrics(path: Path, step: int) -> None:
    """Keep the records up to `step` (those past it came after the checkpoint a resumed run starts from)."""
    if not path.exists():
        return
    kept = [record for record in read_metrics(path) if record["step"] <= step]
    with replacing(path, "w", "utf-8") as handle:
        handle.write("".join(json.dumps(record) + "\n" for record in kept))
