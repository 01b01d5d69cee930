"""Translating files: batches sorted by length and filled by tokens, --input/--output, --n-best, and JAX's
persistent compilation cache."""
import errno
import os
import random

import numpy as np
import pytest

import seq2seq_lab
from seq2seq_lab import run_cli
from seq2seq_lab.cli import main
from seq2seq_lab.compile_cache import compile_cache
from seq2seq_lab.data import DataSettings
from seq2seq_lab.evaluate import decode_ids, decode_plan
from seq2seq_lab.vocab import EOS_ID
from tests.test_api import cli, tiny_run, with_stdin
from tests.test_translation import WORDS, write_aligned


@pytest.fixture(scope="module")
def word_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("files")
    train_src, train_tgt = write_aligned(folder, "train", 40, 0)
    data = DataSettings(task=None, data=train_src, data_target=train_tgt, tokenizer="word")
    return tiny_run(folder / "run", data, steps=4)


def mixed_sentences(count: int, seed: int) -> list[str]:
    """Sentences of 1 to 30 words, so that they span several batch widths, with blank lines among them."""
    rng = random.Random(seed)
    return ["" if i % 9 == 4 else " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 30)))
            for i in range(count)]


# 1. batches sorted by length, filled by tokens; the outputs are those of decoding each sentence alone
def test_the_plan_sorts_by_length_fills_the_token_budget_and_compiles_few_shapes():
    lengths = [int(n) for n in np.random.default_rng(0).integers(1, 120, size=3000)]
    plan = decode_plan(lengths, batch_tokens=2048)
    assert sorted(i for indices, _, _ in plan for i in indices) == list(range(3000))
    for indices, rows, width in plan:
        assert max(lengths[i] for i in indices) <= width < 2 * max(lengths[i] for i in indices) + 8
        assert len(indices) <= rows and (rows * width <= 2048 or rows == 1)
    assert all(rows == len(indices) for indices, rows, _ in plan[:-1])  # only the last batch is padded with rows
    widths = {width for _, _, width in plan}
    assert len({(rows, width) for _, rows, width in plan}) <= len(widths) + 1 <= 16
    # a file in another order gives the same shapes
    shuffled = random.Random(1).sample(lengths, len(lengths))
    assert [(r, w) for _, r, w in decode_plan(shuffled, 2048)] == [(r, w) for _, r, w in plan]
    for indices, _, width in decode_plan(lengths, 2048, max_width=100):  # a Transformer's max_positions
        assert width <= max(100, *(lengths[i] for i in indices))


def same_hypotheses(results, others) -> None:
    """The same outputs; the scores and weights to rounding (a matrix product sums in an order of its shape)."""
    assert [[h.tokens for h in r.hypotheses] for r in results] == [[h.tokens for h in r.hypotheses] for r in others]
    for one, other in zip(results, others):
        assert [h.score for h in one.hypotheses] == pytest.approx([h.score for h in other.hypotheses], rel=1e-5)
        assert (one.attention is None) == (other.attention is None)
        if one.attention is not None:
            np.testing.assert_allclose(one.attention, other.attention, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("backend", ["numpy", "jax"])
def test_a_shuffled_file_gives_the_same_outputs(word_run, backend):
    translator = seq2seq_lab.load(word_run, backend=backend)
    # jax compiles a program per batch shape (seconds each): there, sentences of one width and full batches
    texts = mixed_sentences(40, 3) if backend == "numpy" else \
        ["a", "the red cat sees a small bird", "", "dog runs", "home home red home", "the bird", "", "small",
         "a cat sees the dog runs home", "red"]
    budget = 256 if backend == "numpy" else 8 * 4  # width 8, 4 rows: 8 sentences make two full batches
    order = random.Random(4).sample(range(len(texts)), len(texts))
    for beam, n_best in ((1, 1), (3, 2)):
        batched = translator.decode(texts, beam=beam, n_best=n_best, batch_tokens=budget)
        shuffled = translator.decode([texts[i] for i in order], beam=beam, n_best=n_best, batch_tokens=budget)
        same_hypotheses([shuffled[order.index(i)] for i in range(len(texts))], batched)
        assert [r.text for r in batched if not r.source] == [""] * texts.count("")
        if backend == "numpy":  # one sentence a batch: the outputs of decoding each alone
            same_hypotheses(translator.decode(texts, beam=beam, n_best=n_best, batch_tokens=1), batched)


def test_decoding_puts_each_result_back_in_input_order():
    class Echo:  # the "translation" of a source is its first token and its length
        def greedy(self, params, src, lengths, max_len, **limit):
            tokens = np.stack([src[:, 0], np.asarray(lengths) + 10, np.full(len(src), EOS_ID)], axis=1)
            return tokens, None

    sources = [[5 + i] * (1 + (i * 7) % 23) for i in range(50)]
    found, _ = decode_ids(Echo(), None, sources, max_len=3, batch_tokens=64)
    assert [hypotheses[0][0] for hypotheses in found] == [[s[0], len(s) + 10, EOS_ID] for s in sources]


def test_batch_tokens_must_be_a_positive_int(word_run, capsys):
    translator = seq2seq_lab.load(word_run, backend="numpy")
    with pytest.raises(ValueError, match="batch_tokens: expected an int >= 1, got 0"):
        translator.translate("the cat", batch_tokens=0)
    with pytest.raises(SystemExit) as stopped:
        main(["translate", "--run", str(word_run), "--batch-tokens", "0", "the cat"])
    assert stopped.value.code == 2 and "--batch-tokens: expected an int >= 1" in capsys.readouterr().err


# 2. --input and --output
def test_input_and_output_files_keep_every_line_in_order(word_run, tmp_path, capsys):
    texts = mixed_sentences(25, 5)
    source = tmp_path / "in.txt"
    source.write_text("".join(f"{t}\n" for t in texts), encoding="utf-8")
    code, out, _ = cli(capsys, "translate", "--run", str(word_run), "--backend", "numpy", "--input", str(source),
                       "--output", str(tmp_path / "out.txt"), "--batch-tokens", "64")
    assert code == 0 and out == ""
    expected = seq2seq_lab.load(word_run, backend="numpy").translate(texts)
    assert (tmp_path / "out.txt").read_text(encoding="utf-8").split("\n") == [*expected, ""]
    assert all(line == "" for line, text in zip(expected, texts) if not text)
    assert sorted(os.listdir(tmp_path)) == ["in.txt", "out.txt"]  # no temporary file left
    # a device cannot be replaced by a renamed file: it is written directly
    code, out, _ = cli(capsys, "translate", "--run", str(word_run), "--backend", "numpy", "-i", str(source), "-o",
                       os.devnull)
    assert code == 0 and out == "" and os.path.exists(os.devnull) and not os.path.isfile(os.devnull)


def test_a_failed_translation_leaves_the_earlier_output_whole(word_run, tmp_path, capsys, monkeypatch):
    (tmp_path / "in.txt").write_text("the cat\na dog\n", encoding="utf-8")
    output = tmp_path / "out.txt"
    output.write_text("earlier\n", encoding="utf-8")

    def write_then_fail(handle_path, *args, **kwargs):  # the disk fills up halfway through the file
        handle = real_open(handle_path, *args, **kwargs)
        if str(handle_path).endswith(".tmp"):
            handle.write = lambda text: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space left on device"))
        return handle

    real_open = open
    monkeypatch.setattr("builtins.open", write_then_fail)
    code, _, err = cli(capsys, "translate", "--run", str(word_run), "--backend", "numpy", "-i",
                       str(tmp_path / "in.txt"), "-o", str(output))
    monkeypatch.undo()
    assert code == 74 and "No space left on device" in err and f"writing --output {output}" in err
    assert output.read_text(encoding="utf-8") == "earlier\n" and sorted(os.listdir(tmp_path)) == ["in.txt",
                                                                                                   "out.txt"]


@pytest.mark.parametrize("argv, message", [
    (["--output", "{tmp}/missing/out.txt"], "output: expected a file in a writable folder"),
    (["--output", "{tmp}"], "output: expected a file, got the folder"),
    (["--input", "{tmp}/nothing.txt"], "input: cannot read"),
    (["--input", "{tmp}/in.txt", "a sentence"], "input: expected sentences as arguments or --input, got both"),
    (["--beam", "2", "--n-best", "3"], "n_best: expected at most --beam hypotheses"),
    (["--beam", "1", "--n-best", "1"], "n_best: expected at most --beam hypotheses from beam search (--beam 2 or "
                                       "more)"),
])
def test_bad_input_output_or_n_best_is_refused_before_reading_or_loading(word_run, tmp_path, capsys, monkeypatch,
                                                                         argv, message):
    (tmp_path / "in.txt").write_text("the cat\n", encoding="utf-8")
    monkeypatch.setattr(run_cli, "load_run", lambda *a: pytest.fail("loaded the model before checking"))
    if "--input" not in argv:
        monkeypatch.setattr("sys.stdin", None)  # reading it would fail
    code, out, err = cli(capsys, "translate", "--run", str(word_run), *[a.format(tmp=tmp_path) for a in argv])
    assert code == 2 and out == "" and err.startswith(f"error: {message}")


def test_invalid_utf8_in_an_input_file_names_the_file_and_line(word_run, tmp_path, capsys):
    (tmp_path / "in.txt").write_bytes(b"the cat\nbig \xff dog\n")
    code, _, err = cli(capsys, "translate", "--run", str(word_run), "--input", str(tmp_path / "in.txt"))
    assert code == 2
    assert err == f"error: input: expected UTF-8 text in {tmp_path / 'in.txt'}, got the invalid byte 0xff on line 2\n"


# 3. --n-best: 'line<TAB>score<TAB>text', best first
def test_n_best_writes_numbered_scored_hypotheses_best_first(word_run, capsys, monkeypatch):
    texts = ["the cat sees", "", "a dog runs home", "bird"]
    with_stdin(monkeypatch, "".join(f"{t}\n" for t in texts).encode())
    code, out, _ = cli(capsys, "translate", "--run", str(word_run), "--backend", "numpy", "--beam", "3",
                       "--n-best", "2")
    assert code == 0
    rows = [line.split("\t", 2) for line in out.splitlines()]
    numbers = [int(number) for number, _, _ in rows]
    assert set(numbers) == {1, 3, 4} and numbers == sorted(numbers) and all(numbers.count(n) <= 2 for n in numbers)
    expected = seq2seq_lab.load(word_run, backend="numpy").translate(texts, beam=3, n_best=2)
    assert [(int(n), float(score), text) for n, score, text in rows] == [
        (line, pytest.approx(h.score, abs=1e-6), h.text) for line, found in enumerate(expected, start=1)
        for h in found]
    scores = [float(score) for _, score, _ in rows]
    assert all(scores[i] >= scores[i + 1] for i in range(len(rows) - 1) if numbers[i] == numbers[i + 1])


# 4. JAX's persistent compilation cache
def cache_entries(folder):
    return sorted(p.name for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


# Each test decodes with its own --max-len, a static argument of the compiled programs: programs compiled by no
# earlier test, so that the cache is written (and fails to be) here.
def test_the_compilation_cache_is_written_unless_turned_off_and_jax_settings_are_restored(word_run, tmp_path,
                                                                                         capsys, monkeypatch):
    import jax

    before = jax.config.jax_compilation_cache_dir
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    argv = ["translate", "--run", str(word_run), "--backend", "jax", "the cat", "a bird"]
    code, out, err = cli(capsys, *argv, "--max-len", "9", "--no-compile-cache")
    assert code == 0 and len(out.splitlines()) == 2 and cache_entries(tmp_path) == []
    code, out, err = cli(capsys, *argv, "--max-len", "10")
    assert code == 0 and len(out.splitlines()) == 2 and "warning" not in err
    assert cache_entries(tmp_path / "seq2seq-lab" / "jax")
    assert jax.config.jax_compilation_cache_dir == before


def test_a_cache_folder_that_cannot_be_made_is_one_warning_and_translation_goes_on(word_run, tmp_path, capsys,
                                                                                  monkeypatch):
    (tmp_path / "seq2seq-lab").write_text("a file where the folder should be")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    texts = ["the cat", "", "a red bird runs"]
    code, out, err = cli(capsys, "translate", "--run", str(word_run), "--backend", "jax", "--max-len", "11", *texts)
    expected = seq2seq_lab.load(word_run, backend="jax").translate(texts, max_len=11)
    assert code == 0 and out.split("\n") == [*expected, ""] and expected[1] == ""
    assert err.count("warning") == 1 and f"compilation cache: cannot write to {tmp_path / 'seq2seq-lab' / 'jax'}" \
        in err


def test_a_full_cache_folder_is_one_warning_and_translation_goes_on(word_run, tmp_path, monkeypatch, recwarn):
    from jax._src import lru_cache

    def full(self, key, value):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(lru_cache.LRUCache, "put", full)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    translator, texts = seq2seq_lab.load(word_run, backend="jax"), ["the cat", "", "a red bird runs"]
    with compile_cache() as folder:
        outputs = translator.translate(texts, max_len=12)
    assert folder == tmp_path / "seq2seq-lab" / "jax" and outputs == translator.translate(texts, max_len=12)
    cache_warnings = [str(w.message) for w in recwarn if "cache" in str(w.message)]
    assert len(cache_warnings) == 1 and "No space left on device" in cache_warnings[0]
