"""Where training data comes from: a built-in task or files, split and given vocabularies."""
from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path

from .corpus import read_corpus, split_corpus
from .tasks import DEFAULT_SIZES, TASKS, generate_task
from .subword import SUBWORD_TOKENIZERS, SubwordVocab
from .vocab import TOKENIZERS as WORD_TOKENIZERS, Vocab

TOKENIZERS = WORD_TOKENIZERS + SUBWORD_TOKENIZERS


FILE_FIELDS = ("data", "data_target", "valid_data", "valid_target", "test_data", "test_target")


@dataclass(frozen=True)
class DataSettings:
    task: str | None = "dates"          # a built-in task, or None with `data`
    data: str | None = None             # TSV file, or the source side of two aligned files (made absolute)
    data_target: str | None = None      # the target side of two aligned files (made absolute)
    tokenizer: str = "char"            # char, word, or a sentencepiece model: bpe, unigram
    vocab_size: int = 8000              # pieces of a bpe/unigram model (specials and 256 byte pieces included)
    shared_vocab: bool = False          # one bpe/unigram model for both sides
    min_freq: int = 1
    max_vocab: int | None = None
    max_len: int = 64                   # longer pairs are dropped (tokens, EOS included)
    on_error: str = "fail"              # malformed lines: "fail" or "skip"
    lowercase: bool = False             # lowercase both sides of every split (and translate's input)
    train_size: int = DEFAULT_SIZES["train"]
    valid_data: str | None = None       # given splits: nothing is re-split (TSV, or source side; made absolute)
    valid_target: str | None = None
    test_data: str | None = None
    test_target: str | None = None

    def __post_init__(self):
        if (self.task is None) == (self.data is None):
            raise ValueError(f"task, data: expected exactly one of a built-in task or --data PATH, "
                             f"got task={self.task!r}, data={self.data!r}")
        if self.task is not None and self.task not in TASKS:
            raise ValueError(f"task: expected one of {TASKS}, got {self.task!r}")
        if self.data_target is not None and self.data is None:
            raise ValueError("data_target: expected --data with it (the source side)")
        for split in ("valid", "test"):
            source, target = getattr(self, f"{split}_data"), getattr(self, f"{split}_target")
            if source is not None and self.data is None:
                raise ValueError(f"{split}_data: expected --data with it (the training pairs), got a built-in task")
            if target is not None and source is None:
                raise ValueError(f"{split}_target: expected --{split}-data with it (the source side)")
        if self.test_data is not None and self.valid_data is None:
            raise ValueError("test_data: expected --valid-data with it: given splits are given whole (train from "
                             "--data, valid, and optionally test); nothing is re-split")
        if self.tokenizer not in TOKENIZERS:
            raise ValueError(f"tokenizer: expected one of {TOKENIZERS}, got {self.tokenizer!r}")
        if isinstance(self.vocab_size, bool) or not isinstance(self.vocab_size, int) or self.vocab_size < 8:
            raise ValueError(f"vocab_size: expected an int >= 8, got {self.vocab_size!r}")
        if self.shared_vocab and self.tokenizer not in SUBWORD_TOKENIZERS:
            raise ValueError(f"shared_vocab: expected --tokenizer bpe or unigram with it, got {self.tokenizer!r}")
        if self.max_len < 2:
            raise ValueError(f"max_len: expected an int >= 2, got {self.max_len}")
        # Absolute, so `evaluate --run` finds the files from any directory.
        for name in FILE_FIELDS:
            if getattr(self, name) is not None:
                object.__setattr__(self, name, str(Path(getattr(self, name)).expanduser().absolute()))

    def files(self) -> dict[str, str]:
        """The data files, by argument name."""
        return {name: getattr(self, name) for name in FILE_FIELDS if getattr(self, name) is not None}

    def prepare(self, pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """The pairs as the model sees them: lowercased with --lowercase."""
        return [(s.lower(), t.lower()) for s, t in pairs] if self.lowercase else pairs

    @property
    def given_splits(self) -> bool:
        return self.valid_data is not None

    def to_json(self) -> dict:
        return asdict(self)


def load_splits(settings: DataSettings, seed: int) -> dict[str, list[tuple[str, str]]]:
    """train/valid/test pairs: a task's, the given files' (valid and test given: used as they are, test may be
    empty), or --data split 90/5/5 by distinct source."""
    if settings.task is not None:
        return generate_task(settings.task, seed, {"train": settings.train_size})
    pairs = settings.prepare(read_corpus(settings.data, settings.data_target, settings.on_error).pairs)
    if not settings.given_splits:
        return split_corpus(pairs, seed)
    splits = {"train": pairs}
    for split in ("valid", "test"):
        source = getattr(settings, f"{split}_data")
        splits[split] = [] if source is None else settings.prepare(read_corpus(
            source, getattr(settings, f"{split}_target"), settings.on_error, f"{split}_data").pairs)
    return splits


def build_vocabs(settings: DataSettings, train_pairs) -> tuple[Vocab | SubwordVocab, Vocab | SubwordVocab]:
    """Source and target vocabularies (or sentencepiece models) from the training split only."""
    tokenizer = "char" if settings.task is not None else settings.tokenizer
    sources, targets = [s for s, _ in train_pairs], [t for _, t in train_pairs]
    if tokenizer in SUBWORD_TOKENIZERS:
        if settings.shared_vocab:
            shared = SubwordVocab.train(sources + targets, tokenizer, settings.vocab_size)
            return shared, shared
        return (SubwordVocab.train(sources, tokenizer, settings.vocab_size),
                SubwordVocab.train(targets, tokenizer, settings.vocab_size))
    build = lambda texts: Vocab.build(texts, tokenizer, settings.min_freq, settings.max_vocab)  # noqa: E731
    return build(sources), build(targets)


def vocab_from_json(data: dict) -> Vocab | SubwordVocab:
    """A vocabulary as a checkpoint stores it: a token list, or a sentencepiece model."""
    if not isinstance(data, dict) or "tokenizer" not in data:
        raise ValueError("tokenizer: expected the run's vocabulary in the checkpoint, got none")
    return SubwordVocab.from_json(data) if data["tokenizer"] in SUBWORD_TOKENIZERS else Vocab.from_json(data)


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
