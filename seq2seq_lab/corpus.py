"""Parallel text from disk: tab-separated (Tatoeba/Anki export) or two aligned files.

Malformed lines are reported with their line numbers; on_error="fail" stops at
the first, "skip" drops them and reports how many.
"""
from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ON_ERROR = ("fail", "skip")


@dataclass
class Corpus:
    pairs: list[tuple[str, str]]
    skipped: list[tuple[int, str]] = field(default_factory=list)  # (line number, why)


def split_lines(text: str) -> list[str]:
    """Lines split at "\n" only, one trailing "\r" stripped from each.

    Not str.splitlines(): it also breaks at U+0085, U+2028, U+2029 and other
    separators that may sit inside a sentence, which would misalign two
    parallel files.
    """
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


@dataclass(frozen=True)
class RawFile:
    """A data file's bytes, read once: what is parsed is exactly what is fingerprinted, and a pipe or FIFO
    (`--data <(...)`), which yields its bytes only once, is read like any file."""

    path: str
    argument: str  # the option that named it, for errors
    data: bytes

    def fingerprint(self) -> dict:
        return {"path": self.path, "size": len(self.data), "sha256": hashlib.sha256(self.data).hexdigest()}


def read_file(path: str | Path, argument: str) -> RawFile:
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as error:
        raise ValueError(f"{argument}: cannot read {path}: {error.strerror or error}") from None
    return RawFile(str(path), argument, data)


def _lines(file: RawFile) -> list[str]:
    try:
        text = file.data.decode("utf-8-sig")  # a byte-order mark is not part of the first sentence
    except UnicodeDecodeError as error:
        raise ValueError(f"{file.argument}: expected UTF-8 text in {file.path}, got an invalid byte at offset "
                         f"{error.start}") from None
    lines = split_lines(text)
    if not any(line.strip() for line in lines):
        raise ValueError(f"{file.argument}: expected sentence pairs in {file.path}, got an empty file")
    return lines


def _check_on_error(on_error: str) -> None:
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error: expected one of {ON_ERROR}, got {on_error!r}")


def _finish(corpus: Corpus, path, argument: str, on_error: str) -> Corpus:
    if corpus.skipped and on_error == "fail":
        line, why = corpus.skipped[0]
        raise ValueError(f"{argument}: {path}:{line}: {why} (pass --skip-malformed to drop such lines)")
    if not corpus.pairs:
        raise ValueError(f"{argument}: expected at least one well-formed sentence pair in {path}, got none "
                         f"({len(corpus.skipped)} malformed lines)")
    if corpus.skipped:
        warnings.warn(f"{path}: skipped {len(corpus.skipped)} malformed line(s), first at line "
                      f"{corpus.skipped[0][0]}: {corpus.skipped[0][1]}", stacklevel=3)
    return corpus


def parse_tsv(file: RawFile, on_error: str = "fail") -> Corpus:
    """Lines 'source<TAB>target[<TAB>anything]'; blank lines are ignored."""
    _check_on_error(on_error)
    corpus = Corpus([])
    for number, line in enumerate(_lines(file), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 2:
            corpus.skipped.append((number, "expected 'source<TAB>target', got no tab"))
        elif not fields[0].strip() or not fields[1].strip():
            corpus.skipped.append((number, "expected a non-empty source and target"))
        else:
            corpus.pairs.append((fields[0].strip(), fields[1].strip()))
    return _finish(corpus, file.path, file.argument, on_error)


def parse_parallel(source: RawFile, target: RawFile, on_error: str = "fail") -> Corpus:
    """Line i of source translates to line i of target."""
    _check_on_error(on_error)
    sources, targets = _lines(source), _lines(target)
    if len(sources) != len(targets):
        raise ValueError(f"{target.argument}: expected as many lines as {source.path} ({len(sources)}), "
                         f"got {len(targets)} in {target.path}")
    corpus = Corpus([])
    for number, (source_line, target_line) in enumerate(zip(sources, targets), start=1):
        if not source_line.strip() and not target_line.strip():
            continue
        if not source_line.strip() or not target_line.strip():
            corpus.skipped.append((number, "expected a non-empty line in both files"))
        else:
            corpus.pairs.append((source_line.strip(), target_line.strip()))
    return _finish(corpus, source.path, source.argument, on_error)


def parse_corpus(source: RawFile, target: RawFile | None = None, on_error: str = "fail") -> Corpus:
    """A TSV file, or with target two aligned files."""
    return parse_tsv(source, on_error) if target is None else parse_parallel(source, target, on_error)


def target_argument(argument: str) -> str:
    """The option naming the target side of two aligned files whose source side `argument` names."""
    return "data_target" if argument == "data" else argument.replace("_data", "_target")


def read_tsv(path: str | Path, on_error: str = "fail", argument: str = "data") -> Corpus:
    """parse_tsv of the file at path; argument names the option in errors."""
    return parse_tsv(read_file(path, argument), on_error)


def read_parallel(source_path: str | Path, target_path: str | Path, on_error: str = "fail",
                  arguments: tuple[str, str] = ("data", "data_target")) -> Corpus:
    """parse_parallel of the files at the two paths; arguments name the two options in errors."""
    return parse_parallel(read_file(source_path, arguments[0]), read_file(target_path, arguments[1]), on_error)


def read_corpus(source_path: str | Path, target_path: str | Path | None = None, on_error: str = "fail",
                argument: str = "data") -> Corpus:
    """A TSV file, or with target_path two aligned files; argument is the option's name ("data", "valid_data")."""
    source = read_file(source_path, argument)
    target = None if target_path is None else read_file(target_path, target_argument(argument))
    return parse_corpus(source, target, on_error)


def split_corpus(pairs: list[tuple[str, str]], seed: int = 0, valid_fraction: float = 0.05,
                 test_fraction: float = 0.05) -> dict[str, list[tuple[str, str]]]:
    """Shuffle distinct sources into train/valid/test; every translation of one source lands in one split."""
    if not 0 < valid_fraction < 1 or not 0 < test_fraction < 1 or valid_fraction + test_fraction >= 1:
        raise ValueError(f"valid_fraction, test_fraction: expected two fractions in (0, 1) summing below 1, "
                         f"got {valid_fraction}, {test_fraction}")
    sources = sorted({source for source, _ in pairs})
    if len(sources) < 3:
        raise ValueError(f"data: expected at least 3 distinct sources to make three splits, got {len(sources)}")
    order = np.random.default_rng(seed).permutation(len(sources))
    n_valid = max(1, round(valid_fraction * len(sources)))
    n_test = max(1, round(test_fraction * len(sources)))
    split_of = {}
    for rank, index in enumerate(order):
        split_of[sources[index]] = "valid" if rank < n_valid else "test" if rank < n_valid + n_test else "train"
    splits = {"train": [], "valid": [], "test": []}
    for source, target in pairs:
        splits[split_of[source]].append((source, target))
    return splits
