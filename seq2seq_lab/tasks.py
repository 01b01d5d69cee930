"""Built-in tasks, generated locally from a seed, with train/valid/test splits that share no source.

copy, reverse, sort: strings of digits and lower-case letters.
addition: "123+45" -> "168".
dates: a date in one of many human formats -> ISO 8601 ("Tuesday, March 3rd 2016" -> "2016-03-03").
"""
from __future__ import annotations

import datetime as dt
import functools
import string

import numpy as np

TASKS = ("copy", "reverse", "sort", "addition", "dates")
SPLITS = ("train", "valid", "test")
DEFAULT_SIZES = {"train": 20_000, "valid": 1_000, "test": 2_000}

_ALPHABET = string.digits + string.ascii_lowercase[:10]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]
WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
FIRST_DAY, LAST_DAY = dt.date(1950, 1, 1), dt.date(2049, 12, 31)  # two-digit years stay unambiguous
ADDEND_DIGITS = 3  # addition's operands are below 10 ** ADDEND_DIGITS
_CASES = (str.lower, str.upper, lambda s: s)


def ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _formats(d: dt.date) -> list[str]:
    month, mon, weekday = MONTHS[d.month - 1], MONTHS[d.month - 1][:3], WEEKDAYS[d.weekday()]
    yy = f"{d.year % 100:02d}"
    return [
        f"{weekday}, {month} {ordinal(d.day)} {d.year}",
        f"{weekday}, {month} {d.day}, {d.year}",
        f"{month} {ordinal(d.day)}, {d.year}",
        f"{month} {d.day}, {d.year}",
        f"{mon} {d.day}, {d.year}",
        f"{d.day} {month} {d.year}",
        f"{d.day:02d} {mon} {d.year}",
        f"{ordinal(d.day)} of {month} {d.year}",
        f"{d.month}/{d.day}/{yy}",
        f"{d.month:02d}/{d.day:02d}/{d.year}",
        f"{d.day:02d}.{d.month:02d}.{d.year}",
        f"{d.year}/{d.month:02d}/{d.day:02d}",
        f"{mon} {d.day} {yy}",
        f"{weekday[:3]} {d.day} {mon} {d.year}",
    ]


def _case(text: str, rng: np.random.Generator) -> str:
    return _CASES[rng.integers(len(_CASES))](text)


def _sample(task: str, rng: np.random.Generator, max_len: int) -> tuple[str, str]:
    if task in ("copy", "reverse", "sort"):
        source = "".join(rng.choice(list(_ALPHABET), size=rng.integers(1, max_len + 1)))
        target = {"copy": source, "reverse": source[::-1], "sort": "".join(sorted(source))}[task]
        return source, target
    if task == "addition":
        a, b = (int(rng.integers(0, 10 ** rng.integers(1, ADDEND_DIGITS + 1))) for _ in range(2))
        return f"{a}+{b}", str(a + b)
    day = FIRST_DAY + dt.timedelta(days=int(rng.integers((LAST_DAY - FIRST_DAY).days + 1)))
    formats = _formats(day)
    return _case(formats[rng.integers(len(formats))], rng), day.isoformat()


@functools.cache
def distinct_sources(task: str, max_len: int = 12) -> int:
    """How many distinct sources the task can generate: no task has more pairs to give."""
    if task not in TASKS:
        raise ValueError(f"task: expected one of {TASKS}, got {task!r}")
    if task in ("copy", "reverse", "sort"):
        return sum(len(_ALPHABET) ** length for length in range(1, max_len + 1))
    if task == "addition":
        return (10 ** ADDEND_DIGITS) ** 2
    # Two days never share a source (each format spells year, month and day in its own fixed order), and which
    # of one day's spellings coincide ("May 5, 2016" is both the full and the short month) depends on the month
    # and the day only, so one representative date per (month, day) tells its count.
    days_of: dict[tuple[int, int], list[dt.date]] = {}
    for number in range(FIRST_DAY.toordinal(), LAST_DAY.toordinal() + 1):
        day = dt.date.fromordinal(number)
        days_of.setdefault((day.month, day.day), []).append(day)
    return sum(len(days) * len({case(text) for text in _formats(days[0]) for case in _CASES})
               for days in days_of.values())


def generate_task(task: str, seed: int = 0, sizes: dict[str, int] | None = None,
                  max_len: int = 12) -> dict[str, list[tuple[str, str]]]:
    """{split: [(source, target), ...]}; no source appears in two splits (or twice in one)."""
    if task not in TASKS:
        raise ValueError(f"task: expected one of {TASKS}, got {task!r}")
    sizes = {**DEFAULT_SIZES, **(sizes or {})}
    for split, n in sizes.items():
        if split not in SPLITS or not isinstance(n, int) or n < 1:
            raise ValueError(f"sizes: expected positive ints for {SPLITS}, got {split}={n!r}")
    needed = sum(sizes.values())
    if needed > distinct_sources(task, max_len):
        raise ValueError(f"sizes: expected at most {distinct_sources(task, max_len)} pairs in all (the distinct "
                         f"sources of task {task!r} at max_len={max_len}), got {needed} "
                         f"({', '.join(f'{split} {n}' for split, n in sizes.items())})")
    rng = np.random.default_rng([seed, TASKS.index(task)])
    pairs: dict[str, str] = {}
    attempts = 0
    while len(pairs) < needed:
        source, target = _sample(task, rng, max_len)
        pairs.setdefault(source, target)
        attempts += 1
        if attempts > 50 * needed:
            raise ValueError(f"sizes: task {task!r} has fewer than {needed} distinct sources at max_len={max_len}")
    items = list(pairs.items())
    splits, start = {}, 0
    for split in SPLITS:
        splits[split] = items[start:start + sizes[split]]
        start += sizes[split]
    return splits
