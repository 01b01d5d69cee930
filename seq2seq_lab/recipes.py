"""Recipes: a run's training options and its decoding settings in one TOML file (recipes/*.toml).

A recipe's tables ([data], [model], [training], ...) hold `seq2seq train`
options by their long name (`vocab-size` or `vocab_size`), read as the command
line reads them (types, choices); a flag on the command line overrides the
recipe. Its [decoding] table holds the settings `translate` and `evaluate`
use with the trained run unless given on their command line: they are stored
in every checkpoint of the run.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import numbers
import tomllib
from dataclasses import dataclass
from pathlib import Path

from seq2seq_ref.decode import DEFAULT_LENGTH_PENALTY, check_length_limit
from seq2seq_ref.validation import check_flag

NOT_IN_RECIPES = {"help", "recipe"}


@dataclass(frozen=True)
class DecodingSettings:
    """How a run translates by default (MATH.md section 7): greedy (beam 1) unless its recipe says more."""

    beam: int = 1
    length_penalty: float = DEFAULT_LENGTH_PENALTY
    max_len_a: float | None = None
    max_len_b: int | None = None
    early_stop: bool = False

    def __post_init__(self):
        if isinstance(self.beam, bool) or not isinstance(self.beam, int) or self.beam < 1:
            raise ValueError(f"beam: expected an int >= 1, got {self.beam!r}")
        if (isinstance(self.length_penalty, bool) or not isinstance(self.length_penalty, numbers.Real)
                or not 0 <= self.length_penalty < math.inf):
            raise ValueError(f"length_penalty: expected a finite number >= 0, got {self.length_penalty!r}")
        check_length_limit(self.max_len_a, self.max_len_b)
        check_flag(self.early_stop, "early_stop")

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, values: dict | None) -> DecodingSettings:
        """A checkpoint's settings; one written before runs stored them gets the defaults."""
        return cls(**(values or {}))


def read_recipe(path: str | Path, parser: argparse.ArgumentParser) -> tuple[dict, DecodingSettings]:
    """The recipe at path: its training options as parser's defaults ({dest: value}, each read by the option's
    own type and choices) and its decoding settings. An unknown key, or a value the option refuses, is an error
    naming the key and the file."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            recipe = tomllib.load(handle)
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"recipe: expected a TOML file, got {path} ({error})") from None
    except OSError as error:
        error.add_note(f"reading --recipe {path}")
        raise
    decoding = recipe.pop("decoding", {})
    if not isinstance(decoding, dict):
        raise ValueError(f"recipe: expected [decoding] to be a table in {path}, got {decoding!r}")
    fields = {field.name for field in dataclasses.fields(DecodingSettings)}
    for key in decoding:
        if key.replace("-", "_") not in fields:
            raise ValueError(f"recipe: unknown key {key!r} in [decoding] of {path}; expected one of {sorted(fields)}")
    try:
        settings = DecodingSettings(**{key.replace("-", "_"): value for key, value in decoding.items()})
    except ValueError as error:
        raise ValueError(f"recipe: {error} (in [decoding] of {path})") from None
    actions = {action.dest: action for action in parser._actions if action.dest not in NOT_IN_RECIPES}
    defaults = {}
    for table, key, value in _entries(recipe, path):
        dest = key.replace("-", "_")
        if dest not in actions:
            raise ValueError(f"recipe: unknown key {key!r}{f' in [{table}]' if table else ''} of {path}; expected "
                             f"a `seq2seq train` option or a [decoding] setting")
        defaults[dest] = _read(actions[dest], key, value, path)
    return defaults, settings


def _entries(recipe: dict, path: Path):
    """(table, key, value) of every option: top-level keys, and those of each table (one level)."""
    for key, value in recipe.items():
        if isinstance(value, dict):
            for inner, item in value.items():
                if isinstance(item, dict):
                    raise ValueError(f"recipe: expected options in [{key}] of {path}, got a table [{key}.{inner}]")
                yield key, inner, item
        else:
            yield None, key, value


def _read(action: argparse.Action, key: str, value, path: Path):
    """value as the command line would give it for this option (its type, its choices)."""
    if action.nargs == 0:  # a flag (store_true, --[no-]...): true or false
        if not isinstance(value, bool):
            raise ValueError(f"recipe: {key}: expected true or false, got {value!r} in {path}")
        return value
    if isinstance(value, (dict, list, bool)):
        raise ValueError(f"recipe: {key}: expected a number or a string, got {value!r} in {path}")
    try:
        converted = action.type(str(value)) if action.type is not None else str(value)
    except argparse.ArgumentTypeError as error:  # the option's own message: "expected an int >= 1, got 0"
        raise ValueError(f"recipe: {key}: {error} in {path}") from None
    except (ValueError, TypeError):
        kind = {int: "an int", float: "a number"}.get(action.type, "another value")
        raise ValueError(f"recipe: {key}: expected {kind}, got {value!r} in {path}") from None
    if action.choices is not None and converted not in action.choices:
        raise ValueError(f"recipe: {key}: expected one of {tuple(action.choices)}, got {value!r} in {path}")
    return converted
