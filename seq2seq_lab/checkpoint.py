"""Checkpoints both backends read: one .npz holding flat params, optimiser state and JSON metadata.

Written atomically (a temporary file in the same folder, fsync, then rename),
so a crash mid-write never replaces the last good checkpoint; the newest
`keep` are kept.  Reading checks the archive (zip CRCs catch corruption and
truncation), the format version, and the params against the stored config.
"""
from __future__ import annotations

import json
import os
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from seq2seq_ref import ModelConfig
from seq2seq_ref.validation import check_params

from .atomic import replacing

FORMAT_VERSION = 1
_NAME = re.compile(r"^checkpoint-(\d{8})\.npz$")
_ZIP_MAGIC = b"PK\x03\x04"  # every .npz archive starts so
RUN_ID = "run_id"  # meta key: a uuid chosen at a run's first step and kept in each of its checkpoints
# What makes checkpoints without a RUN_ID one run's: the same data, seed and optimiser settings.
RUN_SETTINGS = ("data", "data_files", "seed", "optimizer", "batch_size")
BEST = "best.npz"  # the checkpoint selected on validation (--select-by), params only
AVERAGED = "averaged.npz"  # the mean of the run's newest checkpoints (`seq2seq average`), params only


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: corrupt, truncated, or not of this model."""


@dataclass
class Checkpoint:
    path: Path
    step: int
    params: dict[str, np.ndarray]
    opt_state: dict[str, np.ndarray]
    meta: dict

    @property
    def config(self) -> ModelConfig:
        return ModelConfig(**self.meta["config"])


def checkpoint_path(directory: Path, step: int) -> Path:
    return Path(directory) / f"checkpoint-{step:08d}.npz"


def checkpoint_step(path: Path) -> int:
    return int(_NAME.match(Path(path).name).group(1))


def list_checkpoints(directory: str | Path) -> list[Path]:
    """Checkpoints in directory, oldest first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if _NAME.match(p.name))


def save_checkpoint(directory: str | Path, step: int, params, opt_state, meta: dict, keep: int = 3) -> Path:
    """Write checkpoint-<step>.npz atomically and prune all but the newest `keep`."""
    if keep < 1:
        raise ValueError(f"keep: expected an int >= 1, got {keep}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    final = _write(checkpoint_path(directory, step), step, params, opt_state, meta)
    # Only checkpoints older than this one: a later step in the folder is not ours to prune.
    older = [path for path in list_checkpoints(directory) if checkpoint_step(path) < step]
    for old in older[: max(0, len(older) - (keep - 1))]:
        old.unlink(missing_ok=True)
    return final


def save_best(directory: str | Path, step: int, params, meta: dict) -> Path:
    """Write best.npz (the params of step, no optimiser state) atomically, replacing the previous best."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    return _write(directory / BEST, step, params, {}, meta)


def save_averaged(directory: str | Path, last: int) -> Checkpoint:
    """Write averaged.npz, the element-wise mean of the params of the run's newest `last` checkpoints; return it.

    Averaging the final checkpoints of one run (Vaswani et al. 2017, section 6.1) smooths the noise of the
    last updates; each mean is taken in float64 and stored in the params' own dtype.
    """
    if isinstance(last, bool) or not isinstance(last, int) or last < 2:
        raise ValueError(f"last: expected an int >= 2 (checkpoints to average), got {last!r}")
    if Path(directory).is_dir() and not os.access(directory, os.W_OK | os.X_OK):
        raise ValueError(f"run: expected a writable folder to write {AVERAGED} into, got {directory} "
                         "(permission denied)")
    paths = list_checkpoints(directory)
    if len(paths) < last:
        raise ValueError(f"last: expected at least {last} checkpoints in {directory}, found {len(paths)} (train "
                         f"with --keep {last} or more to keep that many)")
    checkpoints = [load_checkpoint(path) for path in paths[-last:]]
    newest = checkpoints[-1]
    for checkpoint in checkpoints[:-1]:
        for key in ("config", "src_vocab", "tgt_vocab"):
            if checkpoint.meta.get(key) != newest.meta.get(key):
                raise CheckpointError(f"checkpoint: {checkpoint.path} has another {key} than {newest.path}; "
                                      "only checkpoints of one run can be averaged")
        if (key := other_run(checkpoint.meta, newest.meta)) is not None:
            raise CheckpointError(f"checkpoint: {checkpoint.path} is of another run than {newest.path} (its {key} "
                                  "differs); only checkpoints of one run can be averaged")
    params = {name: np.mean([c.params[name].astype(np.float64) for c in checkpoints], axis=0).astype(value.dtype)
              for name, value in newest.params.items()}
    meta = {**newest.meta, "averaged_steps": [c.step for c in checkpoints]}
    path = _write(Path(directory) / AVERAGED, newest.step, params, {}, meta)
    return Checkpoint(path, newest.step, params, {}, meta)


def other_run(meta: dict, other: dict) -> str | None:
    """None where two checkpoints' metadata are of one run; else the key that tells them apart: RUN_ID, or
    for a checkpoint written before runs had one, the first of RUN_SETTINGS that differs."""
    if RUN_ID in meta and RUN_ID in other:
        return None if meta[RUN_ID] == other[RUN_ID] else RUN_ID
    return next((key for key in RUN_SETTINGS if meta.get(key) != other.get(key)), None)


def _write(final: Path, step: int, params, opt_state, meta: dict) -> Path:
    """A temporary file in the same folder, fsync, rename: a crash never leaves a torn `final`."""
    meta = {**meta, "format": FORMAT_VERSION, "step": int(step)}
    arrays = {f"params/{k}": np.asarray(v) for k, v in params.items()}
    arrays.update({f"opt/{k}": np.asarray(v) for k, v in opt_state.items()})
    arrays["meta.json"] = np.frombuffer(json.dumps(meta, sort_keys=True).encode(), dtype=np.uint8)
    with replacing(final) as handle:
        np.savez(handle, **arrays)
    return final


def load_checkpoint(path: str | Path) -> Checkpoint:
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            head = handle.read(len(_ZIP_MAGIC))
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint: {path} does not exist") from None
    except OSError as error:
        raise CheckpointError(f"checkpoint: cannot read {path}: {error.strerror or error}") from None
    if not _ZIP_MAGIC.startswith(head):  # a cut-off start is a truncated checkpoint, anything else none at all
        raise CheckpointError(f"checkpoint: {path} is not a seq2seq-lab checkpoint (expected an .npz archive, "
                              f"got a file that starts with {head!r})")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except ValueError as error:
        if "allow_pickle" not in str(error):
            raise CheckpointError(f"checkpoint: {path} is corrupt or truncated ({error}); earlier checkpoints "
                                  "in its folder are untouched") from None
        raise CheckpointError(f"checkpoint: {path} is not a seq2seq-lab checkpoint: it holds pickled Python "
                              "objects, which checkpoints never do, and is not read") from None
    except (zipfile.BadZipFile, EOFError, OSError, KeyError) as error:
        raise CheckpointError(f"checkpoint: {path} is corrupt or truncated ({type(error).__name__}: {error}); "
                              "earlier checkpoints in its folder are untouched") from None
    if "meta.json" not in arrays:
        raise CheckpointError(f"checkpoint: {path} has no meta.json; not a seq2seq-lab checkpoint")
    try:
        meta = json.loads(arrays.pop("meta.json").tobytes().decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"checkpoint: {path} has unreadable metadata ({error})") from None
    if meta.get("format") != FORMAT_VERSION:
        raise CheckpointError(f"checkpoint: expected format {FORMAT_VERSION}, got {meta.get('format')!r} in {path}")
    params = {k[len("params/"):]: v for k, v in arrays.items() if k.startswith("params/")}
    opt_state = {k[len("opt/"):]: v for k, v in arrays.items() if k.startswith("opt/")}
    checkpoint = Checkpoint(path, int(meta["step"]), params, opt_state, meta)
    try:
        check_params(params, checkpoint.config)
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"checkpoint: {path} does not match its own config: {error}") from None
    return checkpoint


def latest_checkpoint(directory: str | Path) -> Checkpoint | None:
    paths = list_checkpoints(directory)
    return load_checkpoint(paths[-1]) if paths else None


def averaged_checkpoint(directory: str | Path) -> Checkpoint | None:
    """averaged.npz of the run (`seq2seq average`), or None where none was written."""
    path = Path(directory) / AVERAGED
    return load_checkpoint(path) if path.exists() else None


def best_checkpoint(directory: str | Path) -> Checkpoint | None:
    """best.npz of the run, or None where no evaluation has selected one yet."""
    path = Path(directory) / BEST
    return load_checkpoint(path) if path.exists() else None
