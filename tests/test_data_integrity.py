"""Data files read once and fingerprinted by what was parsed; data, vocabulary and task sizes checked up front."""
import datetime as dt
import hashlib
import os
import re
import threading
import warnings

import pytest

from seq2seq_lab import data as data_module, tasks
from seq2seq_lab.backends import OptimiserSettings
from seq2seq_lab.checkpoint import latest_checkpoint
from seq2seq_lab.cli import main
from seq2seq_lab.data import FILE_FIELDS, DataSettings, build_vocabs, load_data
from seq2seq_lab.subword import MAX_SENTENCE_BYTES, SubwordVocab
from seq2seq_lab.tasks import TASKS, distinct_sources, generate_task
from seq2seq_lab.training import ModelOptions, RunSettings, train

WORDS = ["the", "cat", "dog", "sees", "a", "bird", "runs", "home", "red", "small"]
TSV = "".join(f"{WORDS[i % 10]} {WORDS[(3 * i) % 10]} {i}\t{i} {WORDS[(3 * i) % 10]} {WORDS[i % 10]}\n"
              for i in range(40)).encode()
OTHER = "".join(f"{WORDS[i % 10]} {i}\t{i} {WORDS[i % 10]}\n" for i in range(40, 50)).encode()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write(path, content: bytes) -> str:
    path.write_bytes(content)
    return str(path)


def serve_once(path, content: bytes) -> threading.Thread:
    """A writer that gives a FIFO's reader content once, as a shell's <(...) does."""
    def writer():
        with open(path, "wb") as handle:
            handle.write(content)

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    return thread


def finishes(function, seconds=20):
    """function() run in a thread: (True, its result) if it returned within seconds."""
    out = {}
    thread = threading.Thread(target=lambda: out.update(result=function()), daemon=True)
    thread.start()
    thread.join(seconds)
    return not thread.is_alive(), out.get("result")


def release_reader(fifo) -> None:
    """Unblock a reader left waiting on fifo (a second open): a writer that opens and closes gives it EOF."""
    try:
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    except OSError:
        pass  # no reader waiting


def test_a_fifo_given_split_is_read_once_and_fingerprinted(tmp_path):
    train_path, fifo = write(tmp_path / "train.tsv", TSV), str(tmp_path / "valid.fifo")
    os.mkfifo(fifo)
    settings = DataSettings(task=None, data=train_path, valid_data=fifo, tokenizer="word")
    serve_once(fifo, OTHER)
    done, loaded = finishes(lambda: load_data(settings, seed=0))
    release_reader(fifo)
    assert done, "a second open of the FIFO waited for a writer that never comes"
    assert len(loaded.splits["valid"]) == 10
    assert loaded.files["valid_data"] == {"path": fifo, "size": len(OTHER), "sha256": sha(OTHER)}


def test_training_with_a_fifo_given_split_completes_and_stores_its_hash(tmp_path):
    train_path, fifo = write(tmp_path / "train.tsv", TSV), str(tmp_path / "valid.fifo")
    os.mkfifo(fifo)
    settings = DataSettings(task=None, data=train_path, valid_data=fifo, tokenizer="word")
    serve_once(fifo, OTHER)
    run = RunSettings(steps=2, batch_size=8, log_every=1, eval_every=2, eval_examples=10)
    done, _ = finishes(lambda: train(tmp_path / "run", ModelOptions(embed_dim=8, hidden_dim=8, bidirectional=False),
                                     settings, run, OptimiserSettings(), "numpy", progress=False,
                                     evaluate_test=False, notify=lambda message: None))
    release_reader(fifo)
    assert done, "training opened the FIFO twice"
    stored = latest_checkpoint(tmp_path / "run").meta["data_files"]
    assert stored["valid_data"]["sha256"] == sha(OTHER) and stored["data"]["sha256"] == sha(TSV)


def test_a_pipe_stores_the_hash_of_its_content_not_of_an_empty_file(tmp_path):
    read_end, write_end = os.pipe()
    os.write(write_end, TSV)  # smaller than a pipe's buffer
    os.close(write_end)
    try:
        loaded = load_data(DataSettings(task=None, data=f"/dev/fd/{read_end}", tokenizer="word"), seed=0)
    finally:
        os.close(read_end)
    assert loaded.files["data"]["size"] == len(TSV) and loaded.files["data"]["sha256"] == sha(TSV)
    assert sum(map(len, loaded.splits.values())) == 40


def test_the_stored_hash_is_of_the_bytes_parsed_even_if_the_file_changes_after_the_read(tmp_path, monkeypatch):
    path = write(tmp_path / "train.tsv", TSV)
    real_read = data_module.read_file

    def read_then_change(file_path, argument):
        raw = real_read(file_path, argument)
        (tmp_path / "train.tsv").write_bytes(OTHER)  # another process rewrites the file just after our read
        return raw

    monkeypatch.setattr(data_module, "read_file", read_then_change)
    settings = DataSettings(task=None, data=path, tokenizer="word")
    loaded = load_data(settings, seed=0)
    assert loaded.files["data"]["sha256"] == sha(TSV)
    assert sum(map(len, loaded.splits.values())) == 40  # TSV's pairs, not OTHER's 10
    monkeypatch.undo()
    # the change is caught at resume, against the bytes then read
    with pytest.raises(ValueError, match=r"data: .*train.tsv changed since the run in run-folder was trained"):
        load_data(settings, 0, loaded.files, "run-folder")
    (tmp_path / "train.tsv").write_bytes(TSV)
    assert load_data(settings, 0, loaded.files, "run-folder").splits == loaded.splits


def test_resuming_with_another_data_path_says_so(tmp_path, capsys):
    first, second = write(tmp_path / "first.tsv", TSV), write(tmp_path / "second.tsv", TSV)
    run = str(tmp_path / "run")
    flags = ["--tokenizer", "word", "--steps", "2", "--batch-size", "8", "--hidden-dim", "8", "--embed-dim", "8",
             "--backend", "numpy", "--no-progress", "--out", run]
    assert main(["train", "--data", first, *flags]) == 0
    capsys.readouterr()
    assert main(["train", "--data", second, *flags]) == 2
    error = capsys.readouterr().err
    assert f"data: --data names {second}, but the run in {run} was trained on {first}" in error
    assert "--fresh" in error and "changed since" not in error


@pytest.mark.parametrize("name", FILE_FIELDS)
@pytest.mark.parametrize("path", ["", "  "])
def test_an_empty_file_path_is_refused(name, path):
    given = {"task": None, "data": "train.tsv", "valid_data": "valid.tsv", "test_data": "test.tsv", name: path}
    with pytest.raises(ValueError, match=rf"^{name}: expected a file path, got {path!r}$"):
        DataSettings(**given)


def test_an_empty_data_path_is_not_taken_for_no_data(tmp_path, capsys):
    assert main(["train", "--data", "", "--out", str(tmp_path / "run")]) == 2
    assert capsys.readouterr().err.strip() == "error: data: expected a file path, got ''"


def test_a_vocabulary_of_the_specials_alone_is_refused(tmp_path):
    settings = DataSettings(task=None, data=write(tmp_path / "c.tsv", TSV), tokenizer="word", min_freq=100_000)
    pairs = load_data(settings, 0).splits["train"]
    distinct = len({word for source, _ in pairs for word in source.split()})
    with pytest.raises(ValueError, match=rf"min_freq: expected a source vocabulary beyond the 4 specials, got none "
                                         rf"of the {distinct} distinct source tokens .* kept by --min-freq 100000"):
        build_vocabs(settings, pairs)
    with pytest.raises(ValueError, match=r"max_vocab: expected an int > 4 \(the 4 specials and at least one token\), "
                                         r"got 4"):
        DataSettings(task=None, data="c.tsv", max_vocab=4)
    with pytest.raises(ValueError, match=r"min_freq: expected an int >= 1, got 0"):
        DataSettings(task="copy", min_freq=0)


def test_many_unknown_target_tokens_warn_and_a_full_vocabulary_does_not(tmp_path):
    settings = DataSettings(task=None, data=write(tmp_path / "c.tsv", TSV), tokenizer="word")
    pairs = load_data(settings, 0).splits["train"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        build_vocabs(settings, pairs)
    # the numbers 0..39 occur once each on both sides: a third of the tokens
    with pytest.warns(UserWarning) as caught:
        build_vocabs(DataSettings(task=None, data=settings.data, tokenizer="word", min_freq=2), pairs)
    messages = [str(warning.message) for warning in caught]
    assert len(messages) == 2
    for side, message in zip(("source", "target"), messages):
        assert re.fullmatch(rf"{side} vocabulary: \d+ of the \d+ {side} tokens of the training split \(3\d%\) "
                            rf"become <unk> with --min-freq 2: 10 of \d+ distinct tokens kept", message), message


def test_given_splits_that_repeat_training_pairs_warn(tmp_path):
    train_path = write(tmp_path / "train.tsv", TSV)
    copy = write(tmp_path / "copy.tsv", TSV[: TSV.index(b"\n", 200) + 1] + OTHER)  # some of TSV's lines, then OTHER
    shared = TSV[: TSV.index(b"\n", 200) + 1].count(b"\n")
    with pytest.warns(UserWarning, match=r"valid_data: 40 of its 40 pairs also appear in the training split "
                                         r"\(--data\); scores on it are not held-out"):
        load_data(DataSettings(task=None, data=train_path, valid_data=train_path), 0)
    with pytest.warns(UserWarning, match=rf"test_data: {shared} of its {shared + 10} pairs also appear"):
        load_data(DataSettings(task=None, data=train_path, valid_data=write(tmp_path / "v.tsv", OTHER),
                               test_data=copy), 0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_data(DataSettings(task=None, data=train_path, valid_data=str(tmp_path / "v.tsv")), 0)


@pytest.mark.parametrize("task", TASKS)
def test_a_task_refuses_more_pairs_than_it_has_sources(task):
    most = distinct_sources(task) - 3_000  # the default validation and test sizes
    assert DataSettings(task=task, train_size=most).train_size == most
    with pytest.raises(ValueError, match=rf"train_size: expected at most {most} for task '{task}' \(it has "
                                         rf"{distinct_sources(task)} distinct sources"):
        DataSettings(task=task, train_size=most + 1)
    with pytest.raises(ValueError, match=r"sizes: expected at most"):
        generate_task(task, sizes={"train": most + 1})


def test_distinct_sources_counts_every_source_a_task_can_generate(monkeypatch):
    assert distinct_sources("addition") == 1000 * 1000
    assert distinct_sources("copy", max_len=2) == 20 + 20 ** 2
    splits = generate_task("copy", sizes={"train": 418, "valid": 1, "test": 1}, max_len=2)  # every source
    assert sum(map(len, splits.values())) == 420
    # dates by brute force over two years (a leap year, and May's "May" that is its own short name)
    monkeypatch.setattr(tasks, "FIRST_DAY", dt.date(2015, 1, 1))
    monkeypatch.setattr(tasks, "LAST_DAY", dt.date(2016, 12, 31))
    distinct_sources.cache_clear()
    try:
        days = [dt.date(2015, 1, 1) + dt.timedelta(days=n) for n in range(731)]
        every = {case(text) for day in days for text in tasks._formats(day) for case in tasks._CASES}
        assert distinct_sources("dates") == len(every)
    finally:
        distinct_sources.cache_clear()


def test_subword_sentences_all_too_long_are_one_error():
    texts = [("word " * 1000) + str(i) for i in range(5)]
    with pytest.raises(ValueError, match=rf"data: expected training sentences of at most {MAX_SENTENCE_BYTES} "
                                         rf"UTF-8 bytes .*got 5 sentences all longer \(5001 to 5001 bytes\)"):
        SubwordVocab.train(texts, "bpe", 300)


def test_subword_encode_refuses_text_that_is_not_utf8():
    vocab = SubwordVocab.train([f"hello world number {i}" for i in range(40)], "bpe", 290)
    with pytest.raises(ValueError, match=r"text: expected valid UTF-8 text, got '\\udce9' at position 3"):
        vocab.encode("caf\udce9")  # "café" in Latin-1, as argv decodes it with surrogateescape
    with pytest.raises(ValueError, match=r"text: expected valid UTF-8 text"):
        vocab.pieces("caf\udce9")
    assert vocab.decode(vocab.encode("café")) == "café"
