"""Where training data comes from: a built-in task or files, split and given vocabularies."""
from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path

from .corpus import read_parallel, read_tsv, split_corpus
from .tasks import DEFAULT_SIZES, TASKS, generate_task
from .vocab import TOKENIZERS, Vocab


@dataclass(frozen=True)
class DataSettings:
    task: str | None = "dates"          # a built-in task, or None with `data`
    data: str | None = None             # TSV file, or the source side of two aligned files (made absolute)
    data_target: str | None = None      # the target side of two aligned files (made absolute)
    tokenizer: str = "char"
    min_freq: int = 1
    max_vocab: int | None = None
    max_len: int = 64                   # longer pairs are dropped (tokens, EOS included)
    on_error: str = "fail"              # malformed lines: "fail" or "skip"
    train_size: int = DEFAULT_SIZES["train"]

    def __post_init__(self):
        if (self.task is None) == (self.data is None):
            raise ValueError(f"task, data: expected exactly one of a built-in task or --data PATH, "
                             f"got task={self.task!r}, data={self.data!r}")
        if self.task is not None and self.task not in TASKS:
            raise ValueError(f"task: expected one of {TASKS}, got {self.task!r}")
        if self.data_target is not None and self.data is None:
            raise ValueError("data_target: expected --data with it (the source side)")
        if self.tokenizer not in TOKENIZERS:
            raise ValueError(f"tokenizer: expected one of {TOKENIZERS}, got {self.tokenizer!r}")
        if self.max_len < 2:
            raise ValueError(f"max_len: expected an int >= 2, got {self.max_len}")
        # Absolute, so `evaluate --run` finds the files from any directory.
        for name in ("data", "data_target"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, str(Path(getattr(self, name)).expanduser().absolute()))

    def files(self) -> dict[str, str]:
        """The data files, by argument name."""
        return {name: getattr(self, name) for name in ("data", "data_target") if getattr(self, name) is not None}

    def to_json(self) -> dict:
        return asdict(self)


def load_splits(settings: DataSettings, seed: int) -> dict[str, list[tuple[str, str]]]:
    if settings.task is not None:
        return generate_task(settings.task, seed, {"train": settings.train_size})
    if settings.data_target is not None:
        corpus = read_parallel(settings.data, settings.data_target, settings.on_error)
    else:
        corpus = read_tsv(settings.data, settings.on_error)
    return split_corpus(corpus.pairs, seed)


def build_vocabs(settings: DataSettings, train_pairs) -> tuple[Vocab, Vocab]:
    """Source and target vocabularies from the training split only."""
    tokenizer = "char" if settings.task is not None else settings.tokenizer
    build = lambda texts: Vocab.build(texts, tokenizer, settings.min_freq, settings.max_vocab)  # noqa: E731
    return build(s for s, _ in train_pairs), build(t for _, t in train_pairs)


def fingerprint_files(settings: DataSettings) -> dict[str, dict]:
    """Size and SHA-256 of each data file: the run's splits are a function of exactly these bytes."""
    prints = {}
    for name, path in settings.files().items():
        digest = hashlib.sha256()
        try:
            with open(path, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
        except OSError as error:
            raise ValueError(f"{name}: cannot read {path}: {error.strerror or error}") from None
        prints[name] = {"path": path, "size": Path(path).stat().st_size, "sha256": digest.hexdigest()}
    return prints


def check_fingerprints(settings: DataSettings, stored: dict | None, run: str) -> None:
    """Refuse data files that changed since the run split them: the test split could now hold training pairs."""
    if stored is None:
        return  # a run written before fingerprints were stored
    for name, now in fingerprint_files(settings).items():
        then = stored.get(name)
        if then is not None and (then["size"], then["sha256"]) != (now["size"], now["sha256"]):
            raise ValueError(
                f"{name}: {now['path']} changed since the run in {run} was trained (size {then['size']} -> "
                f"{now['size']} bytes, sha256 {then['sha256'][:12]}... -> {now['sha256'][:12]}...); re-splitting it "
                "would mix held-out pairs into training. Restore the file, or train a new run (another --out, "
                "or --fresh)")
