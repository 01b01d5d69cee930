"""Parallel text from disk: tab-separated (Tatoeba/Anki export) or two aligned files.

Malformed lines are reported with their line numbers; on_error="fail" stops at
the first, "skip" drops them and reports how many.
"""
from __future__ import annotations

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


def _read_lines(path: str | Path, argument: str) -> list[str]:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")  # a byte-order mark is not part of the first sentence
    except UnicodeDecodeError as error:
        raise ValueError(f"{argument}: expected UTF-8 text in {path}, got an invalid byte at offset {error.start}") from None
    except OSError as error:
        raise ValueError(f"{argument}: cannot read {path}: {error.strerror or error}") from None
    lines = split_lines(text)
    if not any(line.strip() for line in lines):
        raise ValueError(f"{argument}: expected sentence pairs in {path}, got an empty file")
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


def read_tsv(path: str | Path, on_error: str = "fail", argument: str = "data") -> Corpus:
    """Lines 'source<TAB>target[<TAB>anything]'; blank lines are ignored.  argument names the option in errors."""
    _check_on_error(on_error)
    corpus = Corpus([])
    for number, line in enumerate(_read_lines(path, argument), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 2:
            corpus.skipped.append((number, "expected 'source<TAB>target', got no tab"))
        elif not fields[0].strip() or not fields[1].strip():
            corpus.skipped.append((number, "expected a non-empty source and target"))
        else:
            corpus.pairs.append((fields[0].strip(), fields[1].strip()))
    return _finish(corpus, path, argument, on_error)


def read_parallel(source_path: str | Path, target_path: str | Path, on_error: str = "fail",
                  arguments: tuple[str, str] = ("data", "data_target")) -> Corpus:
    """Line i of source_path translates to line i of target_path.  arguments name the two options in errors."""
    _check_on_error(on_error)
    sources, targets = _read_lines(source_path, arguments[0]), _read_lines(target_path, arguments[1])
    if len(sources) != len(targets):
        raise ValueError(f"{arguments[1]}: expected as many lines as {source_path} ({len(sources)}), "
                         f"got {len(targets)} in {target_path}")
    corpus = Corpus([])
    for number, (source, target) in enumerate(zip(sources, targets), start=1):
        if not source.strip() and not target.strip():
            continue
        if not source.strip() or not target.strip():
            corpus.skipped.append((number, "expected a non-empty line in both files"))
        else:
            corpus.pairs.append((source.strip(), target.strip()))
    return _finish(corpus, source_path, arguments[0], on_error)


def read_corpus(source_path: str | Path, target_path: str | Path | None = None, on_error: str = "fail",
                argument: str = "data") -> Corpus:
    """A TSV file, or with target_path two aligned files; argument is the option's name ("data", "valid_data")."""
    if target_path is None:
        return read_tsv(source_path, on_error, argument)
    target_argument = "data_target" if argument == "data" else argument.replace("_data", "_target")
    return read_parallel(source_path, target_path, on_error, (argument, target_argument))


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
