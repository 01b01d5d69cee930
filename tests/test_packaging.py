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
