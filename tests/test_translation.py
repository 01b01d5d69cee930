"""Real translation data: given splits, subword vocabularies, model selection (issue 12).  Every corpus here is made by the test itself."""
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from seq2seq_lab.backends import NumpyBackend, OptimiserSettings
from seq2seq_lab.checkpoint import CheckpointError, list_checkpoints, load_checkpoint, save_averaged, save_best
from seq2seq_lab.cli import main
from seq2seq_lab.subword import SubwordVocab
from seq2seq_lab.data import DataSettings, load_data
from seq2seq_lab.evaluate import references_by_source
from seq2seq_lab.run_cli import load_run
from seq2seq_lab.training import ModelOptions, RunSettings, train
from seq2seq_lab.vocab import EOS_ID, SPECIALS, UNK_ID, Vocab

TINY = ModelOptions(embed_dim=8, hidden_dim=8, bidirectional=False, attention="luong")
WORDS = ["the", "cat", "dog", "sees", "a", "bird", "runs", "home", "red", "small"]


def sentences(count: int, seed: int) -> list[str]:
    """Deterministic word sentences of 2 to 5 words."""
    out = []
    for i in range(count):
        n = 2 + (i * 7 + seed) % 4
        out.append(" ".join(WORDS[(i * 3 + k * 5 + seed) % len(WORDS)] for k in range(n)))
    return out


def write_aligned(folder, name: str, count: int, seed: int):
    """Two aligned files: the target is the source reversed word by word (a translation to learn)."""
    sources = sentences(count, seed)
    (folder / f"{name}.src").write_text("\n".join(sources) + "\n", encoding="utf-8")
    (folder / f"{name}.tgt").write_text("\n".join(" ".join(s.split()[::-1]) for s in sources) + "\n",
                                        encoding="utf-8")
    return str(folder / f"{name}.src"), str(folder / f"{name}.tgt")


def given_splits(folder, train: int, valid: int, **settings) -> DataSettings:
    """Word-level data with its own aligned training and validation files."""
    train_src, train_tgt = write_aligned(folder, "train", train, 0)
    valid_src, valid_tgt = write_aligned(folder, "valid", valid, 1)
    return DataSettings(task=None, data=train_src, data_target=train_tgt, valid_data=valid_src,
                        valid_target=valid_tgt, tokenizer="word", **settings)


def tiny_train(out, data: DataSettings, steps=4, **run):
    settings = RunSettings(steps=steps, batch_size=8, log_every=2, eval_every=2, eval_examples=20, **run)
    return train(out, TINY, data, settings, OptimiserSettings(), "numpy", progress=False, notify=lambda m: None)


def test_given_splits_are_used_whole_and_never_re_split(tmp_path):
    train_src, train_tgt = write_aligned(tmp_path, "train", 60, 0)
    valid_src, valid_tgt = write_aligned(tmp_path, "valid", 12, 1)
    (tmp_path / "test.tsv").write_text("".join(f"{s}\t{' '.join(s.split()[::-1])}\n" for s in sentences(9, 2)),
                                       encoding="utf-8")
    data = DataSettings(task=None, data=train_src, data_target=train_tgt, valid_data=valid_src,
                        valid_target=valid_tgt, test_data=str(tmp_path / "test.tsv"), tokenizer="word")
    splits = load_data(data, seed=0).splits
    assert [len(splits[name]) for name in ("train", "valid", "test")] == [60, 12, 9]
    assert splits["valid"][0] == (sentences(12, 1)[0], " ".join(sentences(12, 1)[0].split()[::-1]))
    assert load_data(data, seed=5).splits == splits  # the seed shuffles nothing
    summary = tiny_train(tmp_path / "run", data)
    assert summary["train_pairs"] == 60 and summary["test"]["examples"] == 9
    assert set(summary["dropped_for_length"]) == {"train", "valid", "test"}


def test_a_valid_split_without_a_test_split(tmp_path, capsys):
    train_src, train_tgt = write_aligned(tmp_path, "train", 40, 0)
    valid_src, valid_tgt = write_aligned(tmp_path, "valid", 8, 1)
    run = str(tmp_path / "run")
    assert main(["train", "--data", train_src, "--data-target", train_tgt, "--valid-data", valid_src,
                 "--valid-target", valid_tgt, "--tokenizer", "word", "--steps", "2", "--batch-size", "8",
                 "--hidden-dim", "8", "--embed-dim", "8", "--backend", "numpy", "--no-progress", "--out", run]) == 0
    assert "no test split" in capsys.readouterr().out
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["test"] is None
    assert main(["evaluate", "--run", run, "--backend", "numpy"]) == 2
    assert "split: the run in" in capsys.readouterr().err
    assert main(["evaluate", "--run", run, "--split", "valid", "--backend", "numpy", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["examples"] == 8
    # the given files are fingerprinted with --data: an edited validation file is refused
    with open(valid_tgt, "a", encoding="utf-8") as handle:
        handle.write("one more\n")
    assert main(["evaluate", "--run", run, "--split", "valid", "--backend", "numpy"]) == 2
    assert "valid_target:" in capsys.readouterr().err


@pytest.mark.parametrize("flags, message", [
    (["--valid-target", "{valid_tgt}"], "valid_target: expected --valid-data with it"),
    (["--test-data", "{valid_src}", "--test-target", "{valid_tgt}"], "test_data: expected --valid-data with it"),
    (["--valid-data", "{valid_src}", "--valid-target", "{short}"],
     "valid_target: expected as many lines as"),
    (["--valid-data", "{empty}"], "valid_data: expected sentence pairs in"),
])
def test_bad_given_splits_name_the_option_and_write_nothing(tmp_path, capsys, flags, message):
    train_src, train_tgt = write_aligned(tmp_path, "train", 40, 0)
    valid_src, valid_tgt = write_aligned(tmp_path, "valid", 8, 1)
    (tmp_path / "short.tgt").write_text("a b\n", encoding="utf-8")
    (tmp_path / "empty.src").write_text("\n", encoding="utf-8")
    names = {"valid_src": valid_src, "valid_tgt": valid_tgt, "short": str(tmp_path / "short.tgt"),
             "empty": str(tmp_path / "empty.src")}
    run = tmp_path / "run"
    code = main(["train", "--data", train_src, "--data-target", train_tgt, "--tokenizer", "word", "--steps", "2",
                 "--backend", "numpy", "--no-progress", "--out", str(run), *[f.format(**names) for f in flags]])
    assert code == 2 and message in capsys.readouterr().err
    assert not run.exists() or not any(run.glob("checkpoint-*"))


def test_given_splits_with_a_task_are_refused():
    with pytest.raises(ValueError, match="valid_data: expected --data with it"):
        DataSettings(task="dates", valid_data="valid.tsv")


def test_an_empty_given_split_after_the_length_filter_names_max_len(tmp_path):
    train_src, train_tgt = write_aligned(tmp_path, "train", 40, 0)
    (tmp_path / "valid.tsv").write_text("the cat sees a small red bird\tbird red small a sees cat the\n",
                                        encoding="utf-8")
    data = DataSettings(task=None, data=train_src, data_target=train_tgt, valid_data=str(tmp_path / "valid.tsv"),
                        tokenizer="word", max_len=6)
    with pytest.raises(ValueError, match="max_len: expected some valid pairs within --max-len 6"):
        tiny_train(tmp_path / "run", data)
    assert not list((tmp_path / "run").glob("checkpoint-*"))


TEXTS = [f"{s.capitalize()}, isn't it? (No: {i} times.)" for i, s in enumerate(sentences(80, 3))]


@pytest.mark.parametrize("tokenizer", ["bpe", "unigram"])
def test_a_subword_model_spells_any_text_back_exactly_and_never_uses_unk(tokenizer):
    vocab = SubwordVocab.train(TEXTS, tokenizer, 320)
    assert len(vocab) == 320 and vocab.tokens[:4] == list(SPECIALS)
    for text in [TEXTS[0], TEXTS[5], "Two  spaces, a tab\there, and ☃ unseen: ünïcödé 漢字!", "the cat"]:
        ids = vocab.encode(text)
        assert UNK_ID not in ids
        assert vocab.decode([*ids, EOS_ID, 7, 8]) == text  # exact, up to the first EOS
    again = SubwordVocab.from_json(json.loads(json.dumps(vocab.to_json())))
    assert again.model == vocab.model and again.encode(TEXTS[7]) == vocab.encode(TEXTS[7])
    assert SubwordVocab.train(TEXTS, tokenizer, 320).model == vocab.model  # deterministic
    with pytest.raises(ValueError, match=r"vocab_size: expected at least \d+ \(the 4 specials, 256 byte pieces"):
        SubwordVocab.train(TEXTS, tokenizer, 100)


def test_a_subword_vocabulary_larger_than_the_corpus_supports_names_vocab_size(tmp_path, capsys):
    train_src, train_tgt = write_aligned(tmp_path, "train", 40, 0)
    run = tmp_path / "run"
    code = main(["train", "--data", train_src, "--data-target", train_tgt, "--tokenizer", "bpe", "--vocab-size",
                 "50000", "--steps", "2", "--backend", "numpy", "--no-progress", "--out", str(run)])
    err = capsys.readouterr().err
    assert code == 2 and "vocab_size: expected at most" in err and "got 50000" in err
    assert not any(run.glob("checkpoint-*"))
    assert main(["train", "--data", train_src, "--data-target", train_tgt, "--shared-vocab", "--steps", "2",
                 "--backend", "numpy", "--no-progress", "--out", str(run)]) == 2
    assert "shared_vocab: expected --tokenizer bpe or unigram" in capsys.readouterr().err


def test_a_subword_run_translates_from_its_folder_alone_and_refuses_a_corrupt_tokenizer(tmp_path, capsys):
    train_src, train_tgt = write_aligned(tmp_path, "train", 60, 0)
    valid_src, valid_tgt = write_aligned(tmp_path, "valid", 8, 1)
    run = tmp_path / "run"
    assert main(["train", "--data", train_src, "--data-target", train_tgt, "--valid-data", valid_src,
                 "--valid-target", valid_tgt, "--tokenizer", "unigram", "--vocab-size", "285", "--shared-vocab",
                 "--steps", "4", "--batch-size", "8", "--hidden-dim", "8", "--embed-dim", "8", "--backend", "numpy",
                 "--no-progress", "--out", str(run)]) == 0
    checkpoint = load_checkpoint(list_checkpoints(run)[-1])
    assert checkpoint.meta["src_vocab"] == checkpoint.meta["tgt_vocab"]  # shared: one model
    assert checkpoint.config.src_vocab_size == checkpoint.config.tgt_vocab_size == 285
    for path in (train_src, train_tgt, valid_src, valid_tgt):
        Path(path).unlink()  # the run folder is all translate needs
    capsys.readouterr()
    assert main(["translate", "--run", str(run), "--backend", "numpy", "the cat ☃ runs"]) == 0
    out = capsys.readouterr()
    assert "<unk>" not in out.out and "unseen" not in out.err
    assert main(["translate", "--run", str(run), "--backend", "numpy", "--unseen", "drop", "the cat"]) == 2
    assert "unseen: expected 'unk' with a unigram vocabulary" in capsys.readouterr().err
    meta = {k: v for k, v in checkpoint.meta.items() if k not in ("format", "step")}
    meta["src_vocab"] = {"tokenizer": "unigram", "model": "bm90IGEgbW9kZWw="}  # base64 of "not a model"
    save_best(run, checkpoint.step, checkpoint.params, meta)
    assert main(["translate", "--run", str(run), "--backend", "numpy", "the cat"]) == 2
    assert "tokenizer model: expected a sentencepiece model" in capsys.readouterr().err
    meta["src_vocab"] = {"tokenizer": "unigram"}
    save_best(run, checkpoint.step, checkpoint.params, meta)
    assert main(["evaluate", "--run", str(run), "--backend", "numpy", "--split", "valid"]) == 2
    assert "tokenizer model: expected the run's sentencepiece model in the checkpoint" in capsys.readouterr().err


def eval_records(run):
    return [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "valid_bleu" in r]


def test_best_checkpoint_is_selected_on_validation_and_used_by_evaluate_and_translate(tmp_path, capsys):
    data = given_splits(tmp_path, 60, 10)
    run = tmp_path / "run"
    summary = tiny_train(run, data, steps=12, select_by="loss", keep=10)
    records = eval_records(run)
    assert [r["step"] for r in records] == [2, 4, 6, 8, 10, 12]
    assert all({"valid_exact_match", "valid_bleu", "valid_chrf", "valid_loss"} <= set(r) for r in records)
    best = min(records, key=lambda r: r["valid_loss"])
    assert summary["best"] == {"metric": "loss", "value": best["valid_loss"], "step": best["step"],
                               "loss": best["valid_loss"]}
    chosen = load_checkpoint(run / "best.npz")
    assert chosen.step == best["step"] and chosen.meta["best"]["step"] == best["step"]
    same_step = load_checkpoint(run / f"checkpoint-{best['step']:08d}.npz")
    for name, value in same_step.params.items():
        np.testing.assert_array_equal(chosen.params[name], value)
    assert load_run(str(run), "numpy").checkpoint_path.name == "best.npz"
    assert load_run(str(run), "numpy", "last").step == 12
    assert load_run(str(run), "numpy", str(run / "checkpoint-00000004.npz")).step == 4
    # selecting by another metric restarts the selection at the next evaluation
    summary = tiny_train(run, data, steps=14, select_by="bleu", keep=10)
    assert summary["best"]["metric"] == "bleu" and summary["best"]["step"] == 14


def test_patience_stops_training_and_a_rerun_only_rescores(tmp_path):
    data = DataSettings(task="copy", train_size=64)
    run = tmp_path / "run"
    settings = dict(select_by="exact", patience=2, stop_at_accuracy=None)
    frozen = OptimiserSettings(learning_rate=1e-12)  # nothing improves: exact match stays where it starts
    out = RunSettings(steps=20, batch_size=8, log_every=2, eval_every=2, eval_examples=10, **settings)
    summary = train(run, TINY, data, out, frozen, "numpy", progress=False, evaluate_test=False,
                    notify=lambda m: None)
    assert summary["steps"] == 6 and summary["best"]["step"] == 2  # best at 2, no better at 4 and 6
    messages = []
    again = train(run, TINY, data, out, frozen, "numpy", progress=False, evaluate_test=False,
                  notify=messages.append)
    assert again["steps_trained"] == 0 and any("ran out of --patience 2" in m for m in messages)
    # --fresh moves best.npz aside with the rest of the run
    train(run, TINY, data, RunSettings(steps=2, batch_size=8, eval_every=2, eval_examples=10), frozen, "numpy",
          resume=False, progress=False, evaluate_test=False, notify=lambda m: None)
    assert len(list(run.glob("previous-*/best.npz"))) == 1 and load_checkpoint(run / "best.npz").step == 2


def test_bad_selection_settings():
    with pytest.raises(ValueError, match=r"select_by: expected one of \('bleu', 'loss', 'exact'\), got 'f1'"):
        RunSettings(steps=1, select_by="f1")
    with pytest.raises(ValueError, match="patience: expected an int >= 1, got 0"):
        RunSettings(steps=1, patience=0)


def test_pad_multiple_sets_the_batch_widths_and_refuses_zero(tmp_path, capsys, monkeypatch):
    train_src, train_tgt = write_aligned(tmp_path, "train", 40, 0)
    flags = ["train", "--data", train_src, "--data-target", train_tgt, "--tokenizer", "word", "--steps", "2",
             "--batch-size", "8", "--hidden-dim", "8", "--embed-dim", "8", "--backend", "numpy", "--no-progress"]
    assert main([*flags, "--pad-multiple", "0", "--out", str(tmp_path / "bad")]) == 2
    assert "pad_multiple: expected an int >= 1, got 0" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists() or not any((tmp_path / "bad").glob("checkpoint-*"))
    widths = []
    original = NumpyBackend.train_step

    def spy(self, params, opt_state, batch, *rest):
        widths.append((batch.src.shape[1], batch.tgt_in.shape[1]))
        return original(self, params, opt_state, batch, *rest)

    monkeypatch.setattr(NumpyBackend, "train_step", spy)
    assert main([*flags, "--pad-multiple", "3", "--out", str(tmp_path / "run")]) == 0
    # a multiple of 3, or the split's longest side (5 source words; 5 target words and <eos>)
    assert widths and all(w % 3 == 0 or w == longest for pair in widths for w, longest in zip(pair, (5, 6)))


def test_word_output_is_natural_text_and_old_word_vocabularies_still_load():
    texts = ["J'ai froid.", "A man in an orange hat is welding something.", 'Well... (yes) "no", 3.5%!']
    vocab = Vocab.build(texts, "word")
    for text in texts:
        ids = vocab.encode(text)
        assert UNK_ID not in ids and vocab.decode(ids) == text
    assert vocab.pieces("J'ai froid.") == ["J", "'", "ai", "froid", "."]
    assert vocab.decode(vocab.encode("froid, J'ai")) == "froid, J'ai"
    old = Vocab.from_json({"tokens": [*SPECIALS, "J", "'", "ai", "froid", "."], "tokenizer": "word"})
    assert not old.joiners and old.decode(old.encode("J'ai froid.")) == "J ' ai froid ."
    assert Vocab.from_json(vocab.to_json()).joiners


def test_repeated_sources_are_scored_once_against_all_their_references():
    texts = [("go", "va"), ("run", "cours"), ("go", "allez"), ("go", "vas-y"), ("stop", "arrête")]
    rows, streams = references_by_source(texts)
    assert rows == [0, 1, 4]
    assert streams == [["va", "cours", "arrête"], ["allez", None, None], ["vas-y", None, None]]


def test_evaluate_reports_signatures_references_unknowns_and_takes_beam_options(tmp_path, capsys):
    train_src, train_tgt = write_aligned(tmp_path, "train", 60, 0)
    run = str(tmp_path / "run")
    assert main(["train", "--data", train_src, "--data-target", train_tgt, "--tokenizer", "word", "--steps", "2",
                 "--batch-size", "8", "--hidden-dim", "8", "--embed-dim", "8", "--backend", "numpy",
                 "--no-progress", "--out", run]) == 0
    (tmp_path / "scored.tsv").write_text("the cat\tcat the\nthe cat\tthe cat\nzebra ☃\tzebra\n", encoding="utf-8")
    capsys.readouterr()
    assert main(["evaluate", "--run", run, "--data", str(tmp_path / "scored.tsv"), "--beam", "2",
                 "--length-penalty", "1.0", "--backend", "numpy", "--json"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert scores["examples"] == 3 and scores["distinct_sources"] == 2
    assert "nrefs:var" in scores["bleu_signature"] and "tok:13a" in scores["bleu_signature"]
    assert scores["chrf_signature"].startswith("nrefs:var")
    assert 0 <= scores["unk_outputs"] <= 3 and scores["checkpoint"].endswith(".npz")
    ratio = scores["bleu_length_ratio"]  # sacrebleu's brevity penalty of that ratio
    assert ratio > 0 and scores["bleu_brevity_penalty"] == pytest.approx(min(1.0, np.exp(1 - 1 / ratio)))


def test_unk_outputs_counts_the_outputs_that_hold_unk():
    from seq2seq_lab.batching import encode_pairs
    from seq2seq_lab.evaluate import evaluate

    vocab = Vocab.build(["a b c"], "word")
    data, _ = encode_pairs([("a", "a b"), ("b", "c"), ("c", "a")], vocab, vocab)
    a, b, c = vocab.encode("a b c")

    class Scripted:  # greedy outputs by source token: a -> "a <unk>", b -> "c", c -> "<unk>"
        def greedy(self, params, src, lengths, max_len, **limit):
            script = {a: [a, UNK_ID, EOS_ID], b: [c, EOS_ID, EOS_ID], c: [UNK_ID, EOS_ID, EOS_ID]}
            return np.array([script[row[0]] for row in src]), None

    scores = evaluate(Scripted(), None, None, data, vocab, with_perplexity=False)
    assert scores["unk_outputs"] == 2 and scores["exact_match"] == pytest.approx(1 / 3)


def test_unk_dropout_replaces_source_tokens_only_and_repeats_by_seed():
    from seq2seq_lab.batching import unk_dropout
    from seq2seq_ref import make_batch

    config = ModelOptions().config(*[Vocab.build(["abcdefgh"])] * 2)
    rng = np.random.default_rng(0)
    src = [list(rng.integers(4, 12, size=n)) for n in rng.integers(5, 40, size=200)]
    batch = make_batch(src, [[5, 6]] * 200, config)
    dropped = unk_dropout(batch, 0.25, np.random.default_rng([3, 7, 1]), UNK_ID)
    real = np.arange(batch.src.shape[1]) < batch.src_lengths[:, None]
    assert ((dropped.src == UNK_ID) & ~real).sum() == 0 and (dropped.src[~real] == batch.src[~real]).all()
    assert abs((dropped.src[real] == UNK_ID).mean() - 0.25) < 0.02
    assert dropped.tgt_in is batch.tgt_in and dropped.tgt_out is batch.tgt_out
    assert (unk_dropout(batch, 0.25, np.random.default_rng([3, 7, 1]), UNK_ID).src == dropped.src).all()
    assert unk_dropout(batch, 0.0, np.random.default_rng(0), UNK_ID) is batch
    with pytest.raises(ValueError, match=r"unk_dropout: expected a float in \[0, 1\), got 1.0"):
        RunSettings(steps=1, unk_dropout=1.0)


def test_a_run_with_unk_dropout_resumes_exactly(tmp_path):
    data = DataSettings(task="reverse", train_size=64)

    def run(out, steps):
        settings = RunSettings(steps=steps, batch_size=8, log_every=1, eval_every=4, eval_examples=8,
                               unk_dropout=0.3, stop_at_accuracy=None)
        train(out, TINY, data, settings, OptimiserSettings(), "numpy", progress=False, evaluate_test=False,
              notify=lambda m: None)
        return [r["loss"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if "loss" in r]

    whole = run(tmp_path / "whole", 8)
    run(tmp_path / "split", 4)
    assert run(tmp_path / "split", 8) == whole
    plain = RunSettings(steps=8, batch_size=8, log_every=1, eval_every=4, eval_examples=8, stop_at_accuracy=None)
    train(tmp_path / "plain", TINY, data, plain, OptimiserSettings(), "numpy", progress=False, evaluate_test=False,
          notify=lambda m: None)
    plain_losses = [r["loss"] for r in map(json.loads, (tmp_path / "plain" / "metrics.jsonl").read_text()
                                           .splitlines()) if "loss" in r]
    assert plain_losses[0] != whole[0]


def test_max_minutes_validates_and_saves_the_last_step_and_the_bleu_plot_reads_the_runs(tmp_path):
    from seq2seq_lab.plots import plot_validation_bleu

    data = DataSettings(task="reverse", train_size=64)
    messages = []
    settings = RunSettings(steps=1000, batch_size=8, eval_every=500, eval_examples=8, max_minutes=1e-9)
    summary = train(tmp_path / "run", TINY, data, settings, OptimiserSettings(), "numpy", progress=False,
                    evaluate_test=False, notify=messages.append)
    assert summary["steps"] == 1 and [p.name for p in list_checkpoints(tmp_path / "run")] == ["checkpoint-00000001.npz"]
    assert any("--max-minutes" in m for m in messages)
    record = eval_records(tmp_path / "run")[-1]
    assert record["step"] == 1 and record["elapsed_s"] > 0
    out = plot_validation_bleu({"tiny": tmp_path / "run"}, tmp_path / "bleu.png",
                               anchor={"label": "anchor", "minutes": [5, 10], "bleu": [7.5, 26.0]})
    assert out.stat().st_size > 1000
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "metrics.jsonl").write_text("")
    with pytest.raises(ValueError, match="runs: expected validation records"):
        plot_validation_bleu({"none": tmp_path / "empty"}, tmp_path / "x.png")
    with pytest.raises(ValueError, match="max_minutes: expected a number > 0, got 0"):
        RunSettings(steps=1, max_minutes=0)


def test_lowercase_applies_to_every_split_and_to_translate_input(tmp_path, capsys):
    (tmp_path / "train.tsv").write_text("".join(f"{s.upper()}\t{s.title()}\n" for s in sentences(40, 0)),
                                        encoding="utf-8")
    (tmp_path / "valid.tsv").write_text("THE CAT\tThe Cat\n", encoding="utf-8")
    data = DataSettings(task=None, data=str(tmp_path / "train.tsv"), valid_data=str(tmp_path / "valid.tsv"),
                        tokenizer="word", lowercase=True)
    splits = load_data(data, 0).splits
    assert splits["valid"] == [("the cat", "the cat")] and all(s == s.lower() for s, _ in splits["train"])
    run = str(tmp_path / "run")
    assert main(["train", "--data", str(tmp_path / "train.tsv"), "--valid-data", str(tmp_path / "valid.tsv"),
                 "--tokenizer", "word", "--lowercase", "--steps", "2", "--batch-size", "8", "--hidden-dim", "8",
                 "--embed-dim", "8", "--backend", "numpy", "--no-progress", "--out", run]) == 0
    capsys.readouterr()
    assert main(["translate", "--run", run, "--backend", "numpy", "THE CAT SEES"]) == 0
    assert "unseen" not in capsys.readouterr().err  # lowercased before the vocabulary sees it


@pytest.mark.parametrize("backend", ["numpy", "jax"])
def test_the_update_scale_scales_the_step(backend):
    from seq2seq_lab.backends import make_backend
    from seq2seq_lab.batching import encode_pairs, make_padded_batch

    vocab = Vocab.build(["abcdef"])
    engine = make_backend(backend, TINY.config(vocab, vocab), OptimiserSettings("sgd", 0.1, momentum=0.0))
    data, _ = encode_pairs([("abc", "cba"), ("de", "ed")], vocab, vocab)
    batch = make_padded_batch(data, [0, 1], engine.config)
    start = engine.to_numpy(engine.init_params(0))  # host copies: the jax step donates its inputs
    moved = {}
    for scale in (1.0, 0.25):
        params = engine.to_device(start)
        params, _, _ = engine.train_step(params, engine.init_opt_state(params), batch, 0, 0, scale)
        moved[scale] = {k: np.asarray(v) - start[k] for k, v in engine.to_numpy(params).items()}
    for name, delta in moved[1.0].items():
        np.testing.assert_allclose(moved[0.25][name], 0.25 * delta, rtol=1e-4, atol=2.5e-7)  # float32 ulps of p


def test_the_plateau_schedule_reduces_the_rate_when_validation_stalls_and_resumes_with_it(tmp_path):
    data = DataSettings(task="copy", train_size=64)
    optimiser = OptimiserSettings(learning_rate=1e-12, schedule="plateau", plateau_factor=0.5, plateau_patience=1)
    settings = RunSettings(steps=6, batch_size=8, log_every=1, eval_every=2, eval_examples=8, select_by="exact",
                           stop_at_accuracy=None)
    train(tmp_path, TINY, data, settings, optimiser, "numpy", progress=False, evaluate_test=False,
          notify=lambda m: None)
    rates = {r["step"]: r["lr"] for r in map(json.loads, (tmp_path / "metrics.jsonl").read_text().splitlines())
             if "lr" in r}
    # best at step 2; no better at 4 (x0.5) and 6 (x0.25): the rate of steps 5-6 is halved
    assert rates[4] == pytest.approx(1e-12) and rates[5] == pytest.approx(0.5e-12)
    assert load_checkpoint(list_checkpoints(tmp_path)[-1]).meta["update_scale"] == 0.25
    train(tmp_path, TINY, data, settings.__class__(**{**settings.__dict__, "steps": 7}), optimiser, "numpy",
          progress=False, evaluate_test=False, notify=lambda m: None)
    last = [r for r in map(json.loads, (tmp_path / "metrics.jsonl").read_text().splitlines()) if "lr" in r][-1]
    assert last["step"] == 7 and last["lr"] == pytest.approx(0.25e-12)
    with pytest.raises(ValueError, match=r"plateau_factor: expected a float in \(0, 1\), got 1.5"):
        OptimiserSettings(schedule="plateau", plateau_factor=1.5)


def test_average_writes_the_mean_of_the_newest_checkpoints_and_evaluate_reads_it(tmp_path, capsys):
    data = given_splits(tmp_path, 40, 8)
    run = tmp_path / "run"
    tiny_train(run, data, steps=8, keep=4)
    paths = list_checkpoints(run)
    assert len(paths) == 4
    assert main(["average", "--run", str(run), "--last", "3"]) == 0
    assert "steps 4, 6, 8" in capsys.readouterr().out
    averaged = load_checkpoint(run / "averaged.npz")
    newest = [load_checkpoint(path) for path in paths[-3:]]
    assert averaged.meta["averaged_steps"] == [4, 6, 8] and averaged.step == 8 and averaged.opt_state == {}
    for name, value in averaged.params.items():
        assert value.dtype == newest[-1].params[name].dtype
        np.testing.assert_allclose(value, np.mean([c.params[name] for c in newest], axis=0), rtol=1e-6, atol=1e-7)
    assert not np.array_equal(averaged.params["output/W"], newest[-1].params["output/W"])
    assert main(["evaluate", "--run", str(run), "--checkpoint", "averaged", "--split", "valid", "--backend", "numpy",
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["checkpoint"].endswith("averaged.npz")


@pytest.mark.parametrize("argv, message", [
    (["--last", "1"], "last: expected an int >= 2"),
    (["--last", "9"], "last: expected at least 9 checkpoints"),
])
def test_average_refuses_bad_counts_and_evaluate_names_a_missing_average(tmp_path, capsys, argv, message):
    run = tmp_path / "run"
    tiny_train(run, DataSettings(task="dates", train_size=200), steps=4, keep=3)
    assert main(["average", "--run", str(run), *argv]) == 2
    assert message in capsys.readouterr().err
    assert not (run / "averaged.npz").exists()
    assert main(["evaluate", "--run", str(run), "--checkpoint", "averaged", "--backend", "numpy"]) == 2
    assert "seq2seq average" in capsys.readouterr().err


def test_average_refuses_checkpoints_of_different_runs(tmp_path):
    run, other = tmp_path / "run", tmp_path / "other"
    tiny_train(run, DataSettings(task="dates", train_size=200), steps=4, keep=3)
    train(other, replace(TINY, hidden_dim=12), DataSettings(task="dates", train_size=200),
          RunSettings(steps=6, batch_size=8, log_every=2, eval_every=6, eval_examples=20), OptimiserSettings(),
          "numpy", progress=False, notify=lambda m: None)
    stranger = list_checkpoints(other)[-1]
    (run / stranger.name).write_bytes(stranger.read_bytes())
    with pytest.raises(CheckpointError, match="another config .* only checkpoints of one run"):
        save_averaged(run, 2)
    assert not (run / "averaged.npz").exists()
