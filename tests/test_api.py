"""The Python API (seq2seq_lab.load -> Translator) and the commands over it: translate, evaluate, average."""
import io
import json
import os
import pickle
import re
import shutil
import sys

import numpy as np
import pytest

import seq2seq_lab
from seq2seq_lab import checkpoint as checkpoint_module
from seq2seq_lab import run_cli
from seq2seq_lab.backends import OptimiserSettings
from seq2seq_lab.checkpoint import CheckpointError, list_checkpoints, load_checkpoint, save_averaged, save_checkpoint
from seq2seq_lab.cli import main
from seq2seq_lab.data import DataSettings
from seq2seq_lab.evaluate import evaluate
from seq2seq_lab.training import RunSettings, train
from seq2seq_lab.translator import Hypothesis
from seq2seq_lab.vocab import EOS_ID, Vocab
from seq2seq_ref.decode import DEFAULT_LENGTH_PENALTY, beam_search
from tests.test_translation import TINY, write_aligned


def tiny_run(out, data: DataSettings, steps=4, keep=3):
    settings = RunSettings(steps=steps, batch_size=8, log_every=2, eval_every=2, eval_examples=8, keep=keep)
    train(out, TINY, data, settings, OptimiserSettings(), "numpy", progress=False, evaluate_test=False,
          notify=lambda m: None)
    return out


@pytest.fixture(scope="module")
def word_run(tmp_path_factory):
    """A word-level run with given train and valid files; four checkpoints kept."""
    folder = tmp_path_factory.mktemp("word")
    train_src, train_tgt = write_aligned(folder, "train", 40, 0)
    valid_src, valid_tgt = write_aligned(folder, "valid", 8, 1)
    data = DataSettings(task=None, data=train_src, data_target=train_tgt, valid_data=valid_src,
                        valid_target=valid_tgt, tokenizer="word")
    return tiny_run(folder / "run", data, steps=8, keep=4)


@pytest.fixture(scope="module")
def char_run(tmp_path_factory):
    return tiny_run(tmp_path_factory.mktemp("char") / "run", DataSettings(task="copy", train_size=64), steps=2)


@pytest.fixture(scope="module")
def translator(word_run):
    return seq2seq_lab.load(word_run, backend="numpy")


def cli(capsys, *argv):
    capsys.readouterr()
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def with_stdin(monkeypatch, data: bytes):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data), encoding="utf-8"))


# 1. the API: load, translate (str -> str, list -> list, n-best), score; the commands go through it
def test_translate_takes_a_str_or_a_list_and_agrees_with_the_command(translator, word_run, capsys):
    one = translator.translate("the cat sees")
    many = translator.translate(["the cat sees", "a dog runs home"])
    assert isinstance(one, str) and isinstance(many, list) and many[0] == one
    code, out, _ = cli(capsys, "translate", "--run", str(word_run), "--backend", "numpy", "the cat sees",
                       "a dog runs home")
    assert code == 0 and out.splitlines() == many
    assert translator.translate(("a", "bird"), beam=2) == translator.translate(iter(["a", "bird"]), beam=2)


def test_search_options_reach_the_search_and_the_command(translator, word_run, capsys):
    """max_len_a/max_len_b (N3) and early_stop (N4) give what the library's beam search gives with them, from
    the API and from translate/evaluate; bad values are refused before any decoding, naming the option."""
    src = np.array([translator.src_vocab.encode("the cat sees")])
    params = load_checkpoint(translator.checkpoint_path).params
    options = dict(max_len_a=0.5, max_len_b=1, early_stop=True)
    tokens, scores = beam_search(params, translator.config, src, np.array([3]), 3, translator.max_len, 0.6, **options)
    hypotheses = translator.translate("the cat sees", beam=3, n_best=3, **options)
    assert [h.score for h in hypotheses] == pytest.approx(scores[0].tolist(), rel=1e-6)
    assert all(len(h.tokens) <= 2 for h in hypotheses)  # floor(0.5 * 3 + 1) = 2 tokens, EOS included
    assert cli(capsys, "translate", "--run", str(word_run), "--beam", "3", "--max-len-a", "0.5", "--max-len-b", "1",
               "--early-stop", "--backend", "numpy", "the cat sees")[1] == hypotheses[0].text + "\n"
    limited = translator.score([("the cat sees", "a cat")], max_len_b=1, with_perplexity=False)
    assert limited["bleu_length_ratio"] <= 0.5  # one token allowed: at most one of the reference's two words
    for bad, message in [(dict(max_len_a=-1.0), "max_len_a: expected"), (dict(max_len_b=2.5), "max_len_b: expected"),
                         (dict(early_stop="yes"), "early_stop: expected True or False")]:
        for call in (translator.translate, translator.score):
            with pytest.raises(ValueError, match=f"^{message}"):
                call([("the cat sees", "a cat")] if call == translator.score else "the cat sees", **bad)


def test_the_translator_says_what_it_loaded_and_is_read_only(translator, word_run):
    best = load_checkpoint(word_run / "best.npz")
    assert translator.checkpoint_path == word_run / "best.npz" and translator.step == best.step
    assert translator.run_dir == word_run and translator.backend == "numpy"
    assert translator.config == best.config and translator.max_len == DataSettings().max_len
    assert translator.src_vocab.tokenizer == translator.tgt_vocab.tokenizer == "word"
    assert translator.data.tokenizer == "word" and translator.data.valid_data.endswith("valid.src")
    with pytest.raises(AttributeError):
        translator.step = 3
    assert seq2seq_lab.load(word_run, "last", "numpy").step == 8
    assert seq2seq_lab.load(None, word_run / "checkpoint-00000004.npz", "numpy").step == 4


def test_n_best_gives_beam_searchs_hypotheses_best_first(translator):
    hypotheses = translator.translate("the cat sees", beam=np.int64(3), n_best=3, length_penalty=np.float32(0.6))
    assert len(hypotheses) == 3 and all(isinstance(h, Hypothesis) for h in hypotheses)
    src = np.array([translator.src_vocab.encode("the cat sees")])
    params = load_checkpoint(translator.checkpoint_path).params
    tokens, scores = beam_search(params, translator.config, src, np.array([3]), 3, translator.max_len,
                                 DEFAULT_LENGTH_PENALTY)
    assert [h.score for h in hypotheses] == pytest.approx(scores[0].tolist(), rel=1e-6)
    assert [h.text for h in hypotheses] == [translator.tgt_vocab.decode(t) for t in tokens[0]]
    assert hypotheses[0].text == translator.translate("the cat sees", beam=3)
    for hypothesis, ids in zip(hypotheses, tokens[0]):
        ids = ids.tolist()
        assert list(hypothesis.tokens) == [translator.tgt_vocab.tokens[i] for i in ids[: ids.index(EOS_ID) + 1]]
    assert translator.translate(["a", ""], beam=2, n_best=2)[1] == []  # a blank input has no hypotheses


@pytest.mark.parametrize("arguments, message", [
    ({"beam": 0}, "beam: expected an int >= 1, got 0"),
    ({"beam": True}, "beam: expected an int >= 1, got True"),
    ({"beam": 2.0}, "beam: expected an int >= 1, got 2.0"),
    ({"beam": 2, "n_best": 3}, "n_best: expected at most beam = 2 hypotheses, got 3"),
    ({"n_best": 0}, "n_best: expected an int >= 1, got 0"),
    ({"length_penalty": -0.5}, "length_penalty: expected a finite float >= 0, got -0.5"),
    ({"length_penalty": float("nan")}, "length_penalty: expected a finite float >= 0, got nan"),
    ({"length_penalty": "0.6"}, "length_penalty: expected a finite float >= 0, got '0.6'"),
    ({"max_len": 0}, "max_len: expected an int in [1, 65536], got 0"),
    ({"max_len": 10**12}, "max_len: expected an int in [1, 65536]"),
    ({"unseen": "skip"}, "unseen: expected one of ('drop', 'unk') or None, got 'skip'"),
    ({"unseen": "drop"}, "unseen: expected 'unk' with a word vocabulary"),
    ({"texts": b"the cat"}, "texts: expected a str or a list of str, got bytes"),
    ({"texts": ["the cat", None]}, "texts[1]: expected a str, got NoneType None"),
    ({"texts": ["caf\udce9"]}, "texts[0]: expected text, got the lone surrogate '\\udce9' at character 3"),
])
def test_bad_translate_arguments_name_the_argument_before_any_decoding(translator, monkeypatch, arguments,
                                                                       message):
    monkeypatch.setattr("seq2seq_lab.translator.decode_ids", lambda *a, **k: pytest.fail("decoded"))
    arguments = {"texts": "the cat", **arguments}
    with pytest.raises(ValueError) as error:
        translator.translate(**arguments)
    assert str(error.value).startswith(message)


def test_score_is_the_evaluate_commands_dict(translator, word_run, capsys):
    code, out, _ = cli(capsys, "evaluate", "--run", str(word_run), "--split", "valid", "--backend", "numpy",
                       "--json")
    assert code == 0 and json.loads(out) == translator.score("valid")
    pairs = [("the cat", "cat the"), ("a red bird", "bird red a")]
    scores = translator.score(pairs, beam=2, with_perplexity=False)
    assert scores["examples"] == 2 and "perplexity" not in scores and scores["checkpoint"].endswith("best.npz")
    for data, message in [("dev", "data: expected (source, reference) pairs or a split name"),
                          ([], "data: expected at least one (source, reference) pair, got none"),
                          ([("a", "b", "c")], "data[0]: expected a (source, reference) pair of str"),
                          ([("a\udcff", "b")], "data[0][0]: expected text, got the lone surrogate")]:
        with pytest.raises(ValueError, match=re.escape(message)):
            translator.score(data)
    with pytest.warns(UserWarning, match="dropped 1 of 2 pairs with a side longer than the run's --max-len"):
        assert translator.score([("the cat", "cat the"), ("the " * 70, "cat")])["dropped"] == 1


def test_the_commands_translate_and_score_through_the_translator(word_run, capsys, monkeypatch):
    calls = []
    for name in ("decode", "score"):
        real = getattr(seq2seq_lab.Translator, name)
        monkeypatch.setattr(seq2seq_lab.Translator, name,
                            lambda self, *a, _real=real, _name=name, **k: calls.append(_name) or _real(self, *a, **k))
    assert cli(capsys, "translate", "--run", str(word_run), "--backend", "numpy", "the cat")[0] == 0
    assert cli(capsys, "evaluate", "--run", str(word_run), "--split", "valid", "--backend", "numpy")[0] == 0
    assert calls == ["decode", "score"]


# 2. one output line per input line
def test_blank_lines_give_blank_lines(translator, word_run, capsys, monkeypatch):
    with_stdin(monkeypatch, b"the cat\n\nbig dog\n \nred\n")
    code, out, _ = cli(capsys, "translate", "--run", str(word_run), "--backend", "numpy")
    lines = out.split("\n")[:-1]
    assert code == 0 and len(lines) == 5 and lines[1] == lines[3] == ""
    assert [lines[0], lines[2], lines[4]] == translator.translate(["the cat", "big dog", "red"])
    assert translator.translate(["", "  ", "the cat"]) == ["", "", lines[0]]
    assert translator.translate("") == ""


def test_an_input_with_nothing_left_once_unseen_characters_are_dropped_gives_an_empty_line(char_run, capsys,
                                                                                          monkeypatch):
    translator = seq2seq_lab.load(char_run, backend="numpy")
    with pytest.warns(UserWarning, match="'☃☃': nothing left to translate"):
        outputs = translator.translate(["☃☃", "abc"])
    assert outputs[0] == "" and outputs[1] == translator.translate("abc")
    with_stdin(monkeypatch, "abc\n☃☃\nab\n".encode())
    code, out, err = cli(capsys, "translate", "--run", str(char_run), "--backend", "numpy")
    assert code == 0 and out.split("\n")[:-1] == [outputs[1], "", translator.translate("ab")]
    assert "warning: '☃☃': nothing left to translate" in err


# 3. translate's errors come before the work
def test_invalid_utf8_on_stdin_or_in_an_argument_is_one_error_naming_where(word_run, capsys, monkeypatch):
    with_stdin(monkeypatch, b"the cat\nbig \xff dog\n")
    code, out, err = cli(capsys, "translate", "--run", str(word_run), "--backend", "numpy")
    assert code == 2 and out == ""
    assert err == "error: text: expected UTF-8 text on stdin, got the invalid byte 0xff on line 2\n"
    with_stdin(monkeypatch, "\ufeffthe cat\n".encode())  # a byte-order mark is not text
    assert cli(capsys, "translate", "--run", str(word_run), "--backend", "numpy")[0] == 0
    code, out, err = cli(capsys, "translate", "--run", str(word_run), "--backend", "numpy", "the cat",
                         os.fsdecode(b"caf\xe9"))
    assert code == 2 and err.startswith("error: text: expected UTF-8 text, got argument 2 with bytes that are not")


@pytest.mark.parametrize("plot, message", [
    ("{tmp}/folder.png", "attention_plot: expected a file, got the folder"),
    ("{tmp}/heat.xyz", "attention_plot: expected a file name ending in one of"),
    ("{tmp}/missing/heat.png", "attention_plot: expected a file in a writable folder"),
])
def test_a_bad_attention_plot_path_is_refused_before_the_model_is_loaded(word_run, tmp_path, capsys, monkeypatch,
                                                                         plot, message):
    (tmp_path / "folder.png").mkdir()
    monkeypatch.setattr(run_cli, "load_run", lambda *a: pytest.fail("loaded the model before checking the path"))
    code, out, err = cli(capsys, "translate", "--run", str(word_run), "--attention-plot", plot.format(tmp=tmp_path),
                         "the cat")
    assert code == 2 and out == "" and err.startswith(f"error: {message}")


def test_an_attention_plot_without_extension_is_reported_with_the_png_it_writes(word_run, tmp_path, capsys):
    code, out, err = cli(capsys, "translate", "--run", str(word_run), "--backend", "numpy", "--attention-plot",
                         str(tmp_path / "noext"), "the cat", "", "a dog")
    assert code == 0 and len(out.splitlines()) == 3
    assert (tmp_path / "noext.png").stat().st_size > 1000 and not (tmp_path / "noext").exists()
    assert f"attention heatmap: {tmp_path / 'noext.png'}" in err


def test_a_huge_max_len_is_refused_before_the_model_is_loaded(word_run, capsys, monkeypatch):
    monkeypatch.setattr(run_cli, "load_run", lambda *a: pytest.fail("loaded the model before checking --max-len"))
    code, _, err = cli(capsys, "translate", "--run", str(word_run), "--backend", "jax", "--max-len",
                       "1000000000000", "the cat")
    assert code == 2 and err.startswith("error: max_len: expected an int in [1, 65536]")


def test_a_checkpoint_file_of_another_run_is_refused_with_an_explicit_run(word_run, char_run, capsys):
    other = str(char_run / "best.npz")
    code, _, err = cli(capsys, "evaluate", "--run", str(word_run), "--checkpoint", other, "--backend", "numpy")
    assert code == 2 and err.startswith(f"error: checkpoint: expected a file of the run in {word_run}, got {other}")
    code, out, _ = cli(capsys, "evaluate", "--checkpoint", other, "--split", "valid", "--backend", "numpy", "--json")
    assert code == 0 and json.loads(out)["checkpoint"] == other  # the file names its run
    own = str(word_run / "checkpoint-00000006.npz")
    code, out, _ = cli(capsys, "evaluate", "--run", str(word_run), "--checkpoint", own, "--split", "valid",
                       "--backend", "numpy", "--json")
    assert code == 0 and json.loads(out)["checkpoint"] == own
    with pytest.raises(ValueError, match="checkpoint: expected a file of the run in"):
        seq2seq_lab.load(word_run, other, "numpy")


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_evaluate_and_translate_show_progress_on_a_terminal_unless_asked_not_to(translator, word_run, monkeypatch):
    def stderr_of(action):
        monkeypatch.setattr(sys, "stderr", Terminal())
        action()
        return sys.stderr.getvalue()

    assert "decoding" in stderr_of(lambda: translator.score("valid", progress=True))
    assert "decoding" not in stderr_of(lambda: translator.score("valid"))
    assert "decoding" in stderr_of(lambda: translator.translate(["the cat"] * 3, progress=True))
    run = ["--run", str(word_run), "--split", "valid", "--backend", "numpy"]
    assert "decoding" in stderr_of(lambda: main(["evaluate", *run]))
    assert "decoding" not in stderr_of(lambda: main(["evaluate", *run, "--no-progress"]))
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # not a terminal: no bar
    main(["evaluate", *run])
    assert "decoding" not in sys.stderr.getvalue()


# 4. BLEU of char-level targets
def test_bleu_of_char_targets_is_100_for_exact_output_and_says_tok_char():
    vocab = Vocab.build(["0123456789-"], "char")
    pairs = [("2016-01-02", "2016-01-02"), ("1999-12-31", "1999-12-31"), ("2001-07-04", "2001-07-04")]
    from seq2seq_lab.batching import encode_pairs

    data, _ = encode_pairs(pairs, vocab, vocab)

    class Copy:  # greedy output: the source, then EOS
        def greedy(self, params, src, lengths, max_len, **limit):
            out = np.zeros((len(src), max_len), dtype=np.int64)
            for row, (ids, n) in enumerate(zip(src, lengths)):
                out[row, :n + 1] = [*ids[:n], EOS_ID]
            return out, None

    scores = evaluate(Copy(), None, None, data, vocab, with_perplexity=False)
    assert scores["exact_match"] == 1.0 and scores["bleu"] == pytest.approx(100.0)
    assert "tok:char" in scores["bleu_signature"]


# 5. average: a read-only folder, checkpoints of another run, files that are not checkpoints
def test_average_on_a_read_only_folder_names_it_before_loading(word_run, monkeypatch):
    real = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: False if str(path) == str(word_run) else real(path, mode))
    monkeypatch.setattr(checkpoint_module, "load_checkpoint", lambda path: pytest.fail("loaded a checkpoint"))
    with pytest.raises(ValueError, match=f"run: expected a writable folder to write averaged.npz into, got "
                                         f"{word_run}"):
        save_averaged(word_run, 2)


def copy_run(source, folder):
    shutil.copytree(source, folder, ignore=shutil.ignore_patterns(".lock", "*.png"))
    return folder


NONE = object()  # the key absent, as in a checkpoint written before it existed


def rewrite(path, **meta):
    checkpoint = load_checkpoint(path)
    kept = {k: v for k, v in checkpoint.meta.items() if k not in ("format", "step")}
    save_checkpoint(path.parent, checkpoint.step, checkpoint.params, checkpoint.opt_state,
                    {k: v for k, v in {**kept, **meta}.items() if v is not NONE}, keep=10)


@pytest.mark.parametrize("meta, refused", [
    ({"run_id": ["a", "a", "a"]}, None),
    ({"run_id": ["a", "b", "a"]}, "its run_id differs"),
    ({"run_id": [NONE] * 3, "seed": [0, 1, 0]}, "its seed differs"),  # from before run_id: the settings tell
    ({"run_id": ["a", NONE, "a"], "seed": [0, 1, 0]}, "its seed differs"),
])
def test_average_refuses_checkpoints_of_another_run_with_the_same_model(word_run, tmp_path, meta, refused):
    run = copy_run(word_run, tmp_path / "run")
    for index, path in enumerate(list_checkpoints(run)[-3:]):
        rewrite(path, **{key: values[index] for key, values in meta.items()})
    if refused is None:
        assert save_averaged(run, 3).meta["averaged_steps"] == [4, 6, 8]
        return
    with pytest.raises(CheckpointError, match=f"checkpoint-00000006.npz is of another run than .*checkpoint-"
                                              f"00000008.npz \\({refused}\\)"):
        save_averaged(run, 3)
    assert not (run / "averaged.npz").exists()


def test_a_file_that_is_no_checkpoint_is_called_so_and_never_loaded_unsafely(word_run, tmp_path, capsys):
    (tmp_path / "pickled.npz").write_bytes(pickle.dumps({"params": [1, 2]}))
    np.savez(tmp_path / "objects.npz", params=np.array([{"W": 1}], dtype=object))
    (tmp_path / "notes.npz").write_text("not an archive\n")
    truncated = (word_run / "best.npz").read_bytes()
    (tmp_path / "truncated.npz").write_bytes(truncated[: len(truncated) // 2])
    for name in ("pickled", "objects", "notes"):
        with pytest.raises(CheckpointError) as error:
            load_checkpoint(tmp_path / f"{name}.npz")
        message = str(error.value)
        assert "is not a seq2seq-lab checkpoint" in message and "unsafe" not in message
        assert "allow_pickle" not in message and "corrupt" not in message
    with pytest.raises(CheckpointError, match="truncated.npz is corrupt or truncated"):
        load_checkpoint(tmp_path / "truncated.npz")
    code, _, err = cli(capsys, "evaluate", "--checkpoint", str(tmp_path / "objects.npz"), "--backend", "numpy")
    assert code == 2 and err.count("\n") == 1 and "pickled Python objects" in err
