"""seq2seq_ref is pure NumPy; the command line works."""
import json
import subprocess
import sys
from pathlib import Path

from seq2seq_lab.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_reference_imports_and_runs_without_jax():
    code = (
        "import sys\n"
        "for name in ('jax', 'jaxlib', 'flax', 'optax'): sys.modules[name] = None  # any import now fails\n"
        "import numpy as np, seq2seq_ref\n"
        "from seq2seq_ref import ModelConfig, init_params, loss_and_grads, make_batch\n"
        "from seq2seq_ref.decode import beam_search, greedy_decode\n"
        "from seq2seq_ref import gradcheck, optim\n"
        "c = ModelConfig(6, 6, 3, 4)\n"
        "b = make_batch([[3, 4]], [[5]], c)\n"
        "p = init_params(c, 0)\n"
        "loss, g = loss_and_grads(p, c, b)\n"
        "greedy_decode(p, c, b.src, b.src_lengths, 3); beam_search(p, c, b.src, b.src_lengths, 2, 3)\n"
        "assert not any(m.split('.')[0] in ('jax', 'flax', 'optax') for m in sys.modules if sys.modules[m])\n"
        "print('ok', float(loss))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok")


def test_no_jax_import_in_reference_source():
    for path in (ROOT / "seq2seq_ref").rglob("*.py"):
        for line in path.read_text().splitlines():
            words = line.split()
            assert not (words[:1] in (["import"], ["from"]) and words[1].split(".")[0] in ("jax", "flax", "optax")), (
                f"{path.name}: {line}")


def test_gradcheck_cli_json(capsys):
    code = main(["gradcheck", "--attention", "luong", "--layers", "1", "--unidirectional", "--max-entries", "4",
                 "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["passed"] is True
    assert report["settings"]["dtype"] == "float64"
    names = {r["name"] for r in report["records"]}
    assert {"attention/W_a", "attention/W_c", "encoder/l0/fwd/W_h", "output/b"} <= names
    for record in report["records"]:
        assert record["max_rel_error"] <= 1e-7 and record["entries_checked"] >= 1


def test_gradcheck_cli_fails_above_threshold(capsys):
    code = main(["gradcheck", "--attention", "none", "--layers", "1", "--unidirectional", "--max-entries", "2",
                 "--threshold", "1e-300"])
    out = capsys.readouterr().out
    assert code == 1 and "FAIL" in out and "FAILED" in out


def test_console_script_is_installed():
    result = subprocess.run([sys.executable, "-m", "seq2seq_lab.cli", "--help"], capture_output=True, text=True,
                            cwd=ROOT)
    assert result.returncode == 0 and "gradcheck" in result.stdout


def _internal_imports(path: Path, package: Path) -> set[str]:
    """Modules of the package that path imports, at any depth of the file (function-level imports too)."""
    import ast

    module = ".".join(path.relative_to(package.parent).with_suffix("").parts)
    if module.endswith(".__init__"):
        module = module[: -len(".__init__")]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = module.split(".")[: -node.level + (1 if path.name == "__init__.py" else 0) or None]
            target = ".".join([*base, node.module] if node.module else base)
            candidates = [target] + [f"{target}.{alias.name}" for alias in node.names]
            found.update(c for c in candidates if (package.parent / Path(*c.split("."))).with_suffix(".py").exists()
                         or (package.parent / Path(*c.split(".")) / "__init__.py").exists())
    return found - {module}


def test_the_reference_has_no_import_cycles():
    package = ROOT / "seq2seq_ref"
    graph = {}
    for path in package.rglob("*.py"):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        graph[name] = {m for m in _internal_imports(path, package) if m != "seq2seq_ref"}
    state = {}

    def visit(node, trail):
        if state.get(node) == "done":
            return
        assert state.get(node) != "open", f"import cycle: {' -> '.join(trail + [node])}"
        state[node] = "open"
        for child in sorted(graph.get(node, ())):
            visit(child, trail + [node])
        state[node] = "done"

    for node in sorted(graph):
        visit(node, [])
    assert "seq2seq_ref.validation" in graph and "seq2seq_ref.batch" in graph["seq2seq_ref.validation"]


def test_both_backends_export_the_shared_names():
    import seq2seq_jax
    import seq2seq_ref

    shared = {"ATTENTION_TYPES", "CELL_TYPES", "Batch", "ModelConfig", "beam_search", "greedy_decode", "init_params",
              "loss_and_grads", "make_batch", "param_shapes"}
    assert shared <= set(seq2seq_ref.__all__) and shared <= set(seq2seq_jax.__all__)
    for name in shared - {"init_params", "loss_and_grads", "beam_search", "greedy_decode"}:
        assert getattr(seq2seq_jax, name) is getattr(seq2seq_ref, name), name
