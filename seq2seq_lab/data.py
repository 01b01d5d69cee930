"""Where training data comes from: a built-in task or files, split and given vocabularies."""
from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

from .corpus import RawFile, parse_corpus, read_file, split_corpus, target_argument
from .tasks import DEFAULT_SIZES, TASKS, distinct_sources, generate_task
from .subword import SUBWORD_TOKENIZERS, SubwordVocab
from .vocab import SPECIALS, TOKENIZERS as WORD_TOKENIZERS, Vocab, count_tokens

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
        for name in FILE_FIELDS:  # first: an empty --data would otherwise read as no --data
            path = getattr(self, name)
            if path is not None and not str(path).strip():
                raise ValueError(f"{name}: expected a file path, got {path!r}")
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
        if isinstance(self.min_freq, bool) or not isinstance(self.min_freq, int) or self.min_freq < 1:
            raise ValueError(f"min_freq: expected an int >= 1, got {self.min_freq!r}")
        if self.max_vocab is not None and (isinstance(self.max_vocab, bool) or not isinstance(self.max_vocab, int)
                                           or self.max_vocab <= len(SPECIALS)):
            raise ValueError(f"max_vocab: expected an int > {len(SPECIALS)} (the {len(SPECIALS)} specials and at "
                             f"least one token), got {self.max_vocab!r}")
        if self.task is not None:
            if isinstance(self.train_size, bool) or not isinstance(self.train_size, int) or self.train_size < 1:
                raise ValueError(f"train_size: expected an int >= 1, got {self.train_size!r}")
            held_out = DEFAULT_SIZES["valid"] + DEFAULT_SIZES["test"]
            if self.train_size + held_out > distinct_sources(self.task):
                raise ValueError(f"train_size: expected at most {distinct_sources(self.task) - held_out} for task "
                                 f"{self.task!r} (it has {distinct_sources(self.task)} distinct sources, {held_out} "
                                 f"of them held out for validation and test), got {self.train_size}")
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


@dataclass(frozen=True)
class LoadedData:
    """The splits, and the fingerprint (path, size, SHA-256) of each data file's bytes they were parsed from."""

    splits: dict[str, list[tuple[str, str]]]
    files: dict[str, dict]  # by argument name; none for a built-in task


def load_data(settings: DataSettings, seed: int, trained: dict | None = None, run: str = "") -> LoadedData:
    """train/valid/test pairs: a task's, the given files' (valid and test given: used as they are, test may be
    empty), or --data split 90/5/5 by distinct source.

    Each file is read once.  trained holds the fingerprints the run in the folder `run` stored (its meta's
    "data_files"); a file that is not the one the run split is refused before it is parsed.
    """
    if settings.task is not None:
        return LoadedData(generate_task(settings.task, seed, {"train": settings.train_size}), {})
    trained = trained or {}
    for name, path in settings.files().items():
        if name in trained and trained[name]["path"] != path:
            option = "--" + name.replace("_", "-")
            raise ValueError(f"{name}: {option} names {path}, but the run in {run} was trained on "
                             f"{trained[name]['path']}; give that file, or train a new run (another --out, or "
                             "--fresh)")
    raw: dict[str, RawFile] = {}
    for name, path in settings.files().items():
        raw[name] = read_file(path, name)
        if name in trained:
            _check_unchanged(trained[name], raw[name].fingerprint(), name, run)

    def pairs(source: str) -> list[tuple[str, str]]:
        if source not in raw:
            return []
        return settings.prepare(parse_corpus(raw[source], raw.get(target_argument(source)), settings.on_error).pairs)

    files = {name: file.fingerprint() for name, file in raw.items()}
    if not settings.given_splits:
        return LoadedData(split_corpus(pairs("data"), seed), files)
    splits = {"train": pairs("data"), "valid": pairs("valid_data"), "test": pairs("test_data")}
    training = set(splits["train"])
    for split in ("valid", "test"):
        if shared := sum(pair in training for pair in splits[split]):
            warnings.warn(f"{split}_data: {shared} of its {len(splits[split])} pairs also appear in the training "
                          f"split (--data); scores on it are not held-out", stacklevel=2)
    return LoadedData(splits, files)


def _check_unchanged(then: dict, now: dict, name: str, run: str) -> None:
    """Refuse a data file whose bytes changed since the run split them: the test split could now hold training
    pairs."""
    if (then["size"], then["sha256"]) != (now["size"], now["sha256"]):
        raise ValueError(
            f"{name}: {now['path']} changed since the run in {run} was trained (size {then['size']} -> "
            f"{now['size']} bytes, sha256 {then['sha256'][:12]}... -> {now['sha256'][:12]}...); re-splitting it "
            "would mix held-out pairs into training. Restore the file, or train a new run (another --out, "
            "or --fresh)")


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
    return (_word_vocab(sources, "source", tokenizer, settings),
            _word_vocab(targets, "target", tokenizer, settings))


UNK_WARNING_FRACTION = 0.2


def _word_vocab(texts: list[str], side: str, tokenizer: str, settings: DataSettings) -> Vocab:
    """Vocab.build, refusing a vocabulary of the specials alone and warning where many tokens become <unk>:
    an <unk> predicted for an <unk> counts as right, so token accuracy would look good while nothing is learnt."""
    counts = count_tokens(texts, tokenizer)
    vocab = Vocab.from_counts(counts, tokenizer, settings.min_freq, settings.max_vocab)
    limits = f"--min-freq {settings.min_freq}" + (f", --max-vocab {settings.max_vocab}" if settings.max_vocab else "")
    if len(vocab) == len(SPECIALS):
        most = max(counts.values(), default=0)
        raise ValueError(f"min_freq: expected a {side} vocabulary beyond the {len(SPECIALS)} specials, got none of "
                         f"the {len(counts)} distinct {side} tokens of the training split kept by {limits} (the "
                         f"most frequent occurs {most} times): every {side} token would be <unk>")
    total = sum(counts.values())
    unknown = sum(n for token, n in counts.items() if token not in vocab.index)
    if unknown > UNK_WARNING_FRACTION * total:
        warnings.warn(f"{side} vocabulary: {unknown} of the {total} {side} tokens of the training split "
                      f"({unknown / total:.0%}) become <unk> with {limits}: {len(vocab) - len(SPECIALS)} of "
                      f"{len(counts)} distinct tokens kept", stacklevel=3)
    return vocab


def vocab_from_json(data: dict) -> Vocab | SubwordVocab:
    """A vocabulary as a checkpoint stores it: a token list, or a sentencepiece model."""
    if not isinstance(data, dict) or "tokenizer" not in data:
        raise ValueError("tokenizer: expected the run's vocabulary in the checkpoint, got none")
    return SubwordVocab.from_json(data) if data["tokenizer"] in SUBWORD_TOKENIZERS else Vocab.from_json(data)
