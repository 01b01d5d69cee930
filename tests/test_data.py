"""Built-in tasks, vocabularies, corpus loaders and batching."""
import datetime as dt
import re

import numpy as np
import pytest

from seq2seq_lab.batching import encode_pairs, epoch_batches, make_padded_batch, round_width
from seq2seq_lab.corpus import read_parallel, read_tsv, split_corpus
from seq2seq_lab.tasks import TASKS, generate_task, ordinal
from seq2seq_lab.vocab import EOS_ID, SPECIALS, UNK_ID, Vocab, tokenize
from seq2seq_ref import ModelConfig

SIZES = {"train": 300, "valid": 50, "test": 50}


@pytest.mark.parametrize("task", TASKS)
def test_task_splits_never_overlap_and_repeat_by_seed(task):
    splits = generate_task(task, seed=3, sizes=SIZES)
    sources = [{s for s, _ in splits[name]} for name in ("train", "valid", "test")]
    assert [len(s) for s in sources] == [300, 50, 50]
    assert not (sources[0] & sources[1] or sources[0] & sources[2] or sources[1] & sources[2])
    assert generate_task(task, seed=3, sizes=SIZES) == splits
    assert generate_task(task, seed=4, sizes=SIZES) != splits


def test_task_targets_are_right():
    for source, target in generate_task("addition", 0, SIZES)["train"]:
        a, b = source.split("+")
        assert int(target) == int(a) + int(b)
    for task, rule in [("copy", lambda s: s), ("reverse", lambda s: s[::-1]), ("sort", lambda s: "".join(sorted(s)))]:
        assert all(t == rule(s) for s, t in generate_task(task, 0, SIZES)["train"])


def test_dates_have_many_formats_and_iso_targets():
    pairs = generate_task("dates", 0, {"train": 2000, "valid": 10, "test": 10})["train"]
    for source, target in pairs:
        day = dt.date.fromisoformat(target)
        assert str(day.year) in source or f"{day.year % 100:02d}" in source
    shapes = {re.sub(r"[a-z]+", "a", re.sub(r"\d+", "9", s.lower())) for s, _ in pairs}
    assert len(shapes) >= 10  # 14 formats; 'March' and 'Mar' share a shape here
    assert any(s.lower().startswith(("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"))
               for s, _ in pairs)
    assert [ordinal(n) for n in (1, 2, 3, 4, 11, 12, 13, 21, 22, 23, 31)] == \
        ["1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd", "23rd", "31st"]


def test_task_errors():
    with pytest.raises(ValueError, match=r"task: expected one of"):
        generate_task("dates2")
    with pytest.raises(ValueError, match=r"sizes: expected positive ints"):
        generate_task("copy", sizes={"train": 0})
    with pytest.raises(ValueError, match=r"sizes: expected at most 420 pairs in all \(the distinct sources of task "
                                         r"'copy' at max_len=2\), got 5002 \(train 5000, valid 1, test 1\)"):
        generate_task("copy", sizes={"train": 5000, "valid": 1, "test": 1}, max_len=2)


def test_vocab_build_encode_decode():
    vocab = Vocab.build(["abca", "ab", "zz"], "char", min_freq=2)
    assert vocab.tokens[:4] == list(SPECIALS) and vocab.tokens[4:] == ["a", "b", "z"]
    assert Vocab.build(["abca", "ab"], "char", max_size=5).tokens[4:] == ["a"]
    with pytest.warns(UserWarning, match=r"unseen in training mapped to <unk>: \['q'\]"):
        ids = vocab.encode("aq", warn=True)
    assert ids == [4, UNK_ID]
    assert vocab.decode([4, 5, EOS_ID, 6]) == "ab"
    words = Vocab.build(["Hello, world!"], "word")
    assert tokenize("Hello, world!", "word") == ["Hello", ",", "world", "!"]
    assert words.decode(words.encode("world Hello")) == "world Hello"
    assert Vocab.from_json(vocab.to_json()).tokens == vocab.tokens
    with pytest.raises(ValueError, match=r"tokenizer: expected one of \('char', 'word'\), got 'bpe'"):
        tokenize("x", "bpe")
    with pytest.raises(ValueError, match=r"min_freq: expected an int >= 1"):
        Vocab.build(["a"], min_freq=0)


def test_read_tsv(tmp_path):
    path = tmp_path / "pairs.tsv"
    path.write_text("Hi.\tSalut.\tCC-BY 2.0 attribution\n\nRun!\tCours !\n", encoding="utf-8")
    assert read_tsv(path).pairs == [("Hi.", "Salut."), ("Run!", "Cours !")]


def test_malformed_lines_fail_with_line_number_or_skip_with_count(tmp_path):
    path = tmp_path / "pairs.tsv"
    path.write_text("a\tb\nno tab here\nc\t\nd\te\n")
    with pytest.raises(ValueError, match=r"pairs.tsv:2: expected 'source<TAB>target', got no tab"):
        read_tsv(path)
    with pytest.warns(UserWarning, match=r"skipped 2 malformed line\(s\), first at line 2"):
        corpus = read_tsv(path, on_error="skip")
    assert corpus.pairs == [("a", "b"), ("d", "e")] and [n for n, _ in corpus.skipped] == [2, 3]


@pytest.mark.parametrize("content,match", [
    (b"", r"expected sentence pairs in .*, got an empty file"),
    (b"\n  \n", r"got an empty file"),
    (b"caf\xe9\tx\n", r"expected UTF-8 text in .*, got an invalid byte at offset 3"),
    (b"only one column\n", r":1: expected 'source<TAB>target'"),
])
def test_bad_data_files(tmp_path, content, match):
    path = tmp_path / "bad.tsv"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=match):
        read_tsv(path)


def test_unreadable_data_file(tmp_path):
    with pytest.raises(ValueError, match=r"data: cannot read .*missing.tsv"):
        read_tsv(tmp_path / "missing.tsv")
    with pytest.raises(ValueError, match=r"data: cannot read"):
        read_tsv(tmp_path)  # a directory


def test_two_aligned_files(tmp_path):
    (tmp_path / "src.txt").write_text("one\ntwo\nthree\n")
    (tmp_path / "tgt.txt").write_text("un\ndeux\ntrois\n")
    assert read_parallel(tmp_path / "src.txt", tmp_path / "tgt.txt").pairs[1] == ("two", "deux")
    (tmp_path / "short.txt").write_text("un\n")
    with pytest.raises(ValueError, match=r"data_target: expected as many lines as .* \(3\), got 1"):
        read_parallel(tmp_path / "src.txt", tmp_path / "short.txt")


def test_split_corpus_keeps_each_source_in_one_split():
    pairs = [(f"s{i % 40}", f"t{i}") for i in range(200)]
    splits = split_corpus(pairs, seed=1)
    seen = {name: {s for s, _ in split} for name, split in splits.items()}
    assert not (seen["train"] & seen["valid"] or seen["train"] & seen["test"] or seen["valid"] & seen["test"])
    assert sum(map(len, splits.values())) == 200


def test_length_filter_and_bucketing():
    src_vocab, tgt_vocab = Vocab.build(["abcdef"]), Vocab.build(["abcdef"])
    rng = np.random.default_rng(0)
    pairs = [("".join(rng.choice(list("abcdef"), size=n)), "ab" * (n % 3 + 1)) for n in rng.integers(1, 30, 400)]
    data, dropped = encode_pairs(pairs, src_vocab, tgt_vocab, max_len=20)
    assert dropped == sum(len(s) > 20 for s, _ in pairs) and max(map(len, data.src)) <= 20
    config = ModelConfig(len(src_vocab), len(tgt_vocab), 4, 4)
    batches = epoch_batches(data, 16, seed=0, epoch=0)
    assert all(len(b) == 16 for b in batches)
    assert [b.tolist() for b in batches] == [b.tolist() for b in epoch_batches(data, 16, seed=0, epoch=0)]
    assert [b.tolist() for b in batches] != [b.tolist() for b in epoch_batches(data, 16, seed=0, epoch=1)]
    padded = [make_padded_batch(data, b, config, pad_multiple=4) for b in batches]
    def efficiency(batches):
        return sum(int(b.src_lengths.sum()) for b in batches) / sum(b.src.size for b in batches)

    unsorted = [make_padded_batch(data, np.arange(i, i + 16), config, pad_multiple=4) for i in range(0, 256, 16)]
    assert efficiency(padded) > 0.8 and efficiency(unsorted) < 0.6  # 0.84 vs 0.55 here; rounding to 4 costs the rest
    assert all(b.src.shape[1] % 4 == 0 or b.src.shape[1] == data.max_src_len for b in padded)
    assert round_width(11, 8, 11) == 11 and round_width(9, 8, 30) == 16


def test_long_batches_round_to_coarser_widths_with_padding_under_a_quarter():
    """Multi30k's rare long batches (44 to 54 subwords) took 11 of the 17 shapes of a 30-minute run with
    --pad-multiple 4, each a compilation; coarser widths past 8 * pad_multiple leave 3."""
    assert [round_width(n, 4, 54) for n in (12, 28, 31, 32, 33, 44, 48, 50, 52, 54)] == \
        [12, 28, 32, 32, 40, 48, 48, 54, 54, 54]
    for pad_multiple in (1, 3, 4, 8):
        for longest in range(1, 300):
            width = round_width(longest, pad_multiple, 10_000)
            assert width % pad_multiple == 0 and longest <= width
            assert width - longest < max(pad_multiple, longest / 4), (pad_multiple, longest, width)
        assert round_width(299, pad_multiple, 200) == 299 and round_width(190, pad_multiple, 191) == 191


def test_buckets_keep_both_sides_full_when_the_target_is_longer():
    """Sorting by the longer side pads the target little too (sorting by the source left Multi30k's target a
    third padding): targets here are the source plus 0 to 9 tokens."""
    vocab = Vocab.build(["abcdef"])
    rng = np.random.default_rng(1)
    pairs = [("a" * n, "b" * (n + extra)) for n, extra in zip(rng.integers(1, 20, 2000), rng.integers(0, 10, 2000))]
    data, _ = encode_pairs(pairs, vocab, vocab, max_len=40)
    config = ModelConfig(len(vocab), len(vocab), 4, 4)
    batches = [make_padded_batch(data, b, config, pad_multiple=1) for b in epoch_batches(data, 32, seed=0, epoch=0)]
    source_fill = sum(int(b.src_lengths.sum()) for b in batches) / sum(b.src.size for b in batches)
    target_fill = sum(int(b.tgt_lengths.sum()) for b in batches) / sum(b.tgt_in.size for b in batches)
    assert target_fill > 0.9 and source_fill > 0.7, (source_fill, target_fill)
