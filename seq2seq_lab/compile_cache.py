"""JAX's persistent compilation cache for the commands: a fresh process loads the decoding programs an earlier one
compiled instead of compiling them again (seconds per program shape for a Transformer on a CPU).

The folder: JAX_COMPILATION_CACHE_DIR where set (JAX reads it itself), else $XDG_CACHE_HOME/seq2seq-lab/jax, else
~/.cache/seq2seq-lab/jax. JAX_ENABLE_COMPILATION_CACHE=false, like --no-compile-cache, turns it off. A folder that
cannot be made or written costs one warning and the cache, never the command.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
import warnings
from pathlib import Path

# JAX skips programs compiled in under a second by default; the decoding loops of a small model compile in less,
# and loading one is still several times faster than compiling it (docs/cli.md: the compilation cache).
MIN_COMPILE_SECONDS = 0.0

# JAX's own warnings when an entry cannot be read or written (a full disk, a folder made read-only meanwhile)
_JAX_CACHE_ERRORS = ("Error reading persistent compilation cache entry",
                     "Error writing persistent compilation cache entry")


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME", "")
    # the XDG specification: a relative (or empty) value is invalid and must be ignored
    root = Path(base) if os.path.isabs(base) else Path.home() / ".cache"
    return root / "seq2seq-lab" / "jax"


def _writable(folder: Path) -> str | None:
    """None where entries can be written in folder (made if missing); else why not."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        return error.strerror or str(error)
    return None


@contextlib.contextmanager
def compile_cache(enabled: bool = True):
    """JAX's persistent compilation cache, on for the duration (off with enabled False); yields its folder, or None
    where it is off. JAX's settings are restored on exit, so that in-process callers (tests, the Python API) see
    no lasting change."""
    import jax
    from jax.experimental.compilation_cache import compilation_cache as jax_cache

    names = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs",
             "jax_enable_compilation_cache")
    saved = {name: getattr(jax.config, name) for name in names}
    folder = None
    if enabled and saved["jax_enable_compilation_cache"]:
        folder = Path(saved["jax_compilation_cache_dir"] or default_cache_dir()).expanduser()
        problem = _writable(folder)
        if problem is not None:
            warnings.warn(f"compilation cache: cannot write to {folder} ({problem}); compiling without it "
                          "(--no-compile-cache turns it off)", stacklevel=3)
            folder = None
    settings = {"jax_enable_compilation_cache": folder is not None}
    if folder is not None:
        settings["jax_compilation_cache_dir"] = str(folder)
        if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:  # the user's choice stands
            settings["jax_persistent_cache_min_compile_time_secs"] = MIN_COMPILE_SECONDS
    shown = warnings.showwarning
    warned = False

    def show_once(message, category, filename, lineno, file=None, line=None):
        """JAX warns at every entry it fails to write: one such warning is enough."""
        nonlocal warned
        if str(message).startswith(_JAX_CACHE_ERRORS):
            if warned:
                return
            warned = True
            message = f"compilation cache in {folder}: {message} (later cache errors are not shown)"
        shown(message, category, filename, lineno, file, line)

    # JAX decides once per process whether it uses the cache: reset, so that the settings here count
    for name, value in settings.items():
        jax.config.update(name, value)
    jax_cache.reset_cache()
    warnings.showwarning = show_once
    try:
        yield folder
    finally:
        warnings.showwarning = shown
        for name, value in saved.items():
            jax.config.update(name, value)
        jax_cache.reset_cache()
