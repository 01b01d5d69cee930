"""Files replaced whole or not at all: written to a temporary file in the same folder, synced, then renamed.

A crash or a full disk mid-write never leaves a torn file and never loses the
previous one. The temporary file is `.<name>.<pid>.tmp`, so that a run folder
can recognise (and remove) those of a process that died (run_folder.py).
"""
from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path


@contextlib.contextmanager
def replacing(final: Path, mode: str = "wb", encoding: str | None = None):
    """An open temporary file that becomes final once the block ends without error (final's permissions
    kept where it exists); on an error it is removed and final is untouched."""
    final = Path(final)
    temporary = final.with_name(f".{final.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, mode, encoding=encoding) as handle:  # the umask's mode, as any new file
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        if final.exists():
            os.chmod(temporary, stat.S_IMODE(final.stat().st_mode))
        os.replace(temporary, final)
    finally:
        if temporary.exists():
            temporary.unlink()
    _fsync_directory(final.parent)  # the rename itself survives a crash


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
