"""The documentation names what exists: every dotted name and file it cites imports or is there, and every
equation label the code cites is one MATH.md defines."""
import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "MATH.md", ROOT / "README.md", ROOT / "benchmarks" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PACKAGES = ("seq2seq_ref", "seq2seq_jax", "seq2seq_lab")
FULL_NAME = re.compile(r"\b(?:seq2seq_ref|seq2seq_jax|seq2seq_lab)(?:\.[A-Za-z_]\w*)+")
# MATH.md cites the reference's (or the twin's) functions by module: `decode.beam_search`, `lstm.py`
SHORT_NAME = re.compile(r"`([a-z_]+)\.([A-Za-z_]\w*)`")
LABEL = re.compile(r"\(([A-Z]?\d+'?)\)")


def resolves(dotted: str) -> bool:
    """Whether a.b.c imports as a module or as an attribute of the longest module prefix."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            value = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        try:
            for name in parts[cut:]:
                value = getattr(value, name)
        except AttributeError:
            return False
        return True
    return False


def cited(pattern, paths=DOCS):
    return sorted({(path.name, match) for path in paths for match in pattern.findall(path.read_text("utf-8"))})


@pytest.mark.parametrize("doc,name", cited(FULL_NAME))
def test_every_full_name_the_docs_cite_exists(doc, name):
    assert resolves(name), f"{doc} cites {name}, which does not import"


def test_every_module_name_math_md_cites_exists_in_a_library():
    missing = []
    for _, (module, name) in cited(SHORT_NAME, [ROOT / "MATH.md"]):
        if module in ("np", "jax", "lax", "optax", "torch", "nnx"):
            continue
        if name == "py":
            found = any((ROOT / package / f"{module}.py").exists() for package in PACKAGES[:2])
        else:
            found = any(resolves(f"{package}.{module}.{name}") for package in PACKAGES[:2])
        if not found:
            missing.append(f"{module}.{name}")
    assert not missing, f"MATH.md cites names no library has: {missing}"


def test_every_equation_label_the_code_cites_is_in_math_md():
    math = set(LABEL.findall((ROOT / "MATH.md").read_text("utf-8")))
    unknown = {}
    for package in PACKAGES[:2]:
        for path in (ROOT / package).rglob("*.py"):
            for line in path.read_text("utf-8").splitlines():
                if "#" in line:
                    for label in LABEL.findall(line.split("#", 1)[1]):
                        if label not in math:
                            unknown.setdefault(str(path.relative_to(ROOT)), set()).add(label)
    assert not unknown, f"labels cited in code comments but not defined in MATH.md: {unknown}"


def test_docs_cli_names_every_option_of_every_command():
    from seq2seq_lab.cli import build_parser

    text = (ROOT / "docs" / "cli.md").read_text("utf-8")
    missing = []
    for name, command in build_parser().commands.items():
        assert f"seq2seq {name}" in text, f"docs/cli.md does not describe `seq2seq {name}`"
        for action in command._actions:
            longs = [option for option in action.option_strings if option.startswith("--") and option != "--help"]
            names = longs + [f"--[no-]{option[2:]}" for option in longs]
            if longs and not any(re.search(re.escape(option) + r"(?![\w-])", text) for option in names):
                missing.append(f"{name} {longs[0]}")
    assert not missing, f"options docs/cli.md does not name: {missing}"
