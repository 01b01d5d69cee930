"""`seq2seq export --format ctranslate2`: CTranslate2 runs the exported model as ours does."""
import json

import numpy as np
import pytest

ctranslate2 = pytest.importorskip("ctranslate2")

import sentencepiece  # noqa: E402

import seq2seq_lab  # noqa: E402
from seq2seq_lab.backends import OptimiserSettings  # noqa: E402
from seq2seq_lab.cli import main  # noqa: E402
from seq2seq_lab.data import DataSettings  # noqa: E402
from seq2seq_lab.export import EXPORT_INFO, ctranslate2_spec  # noqa: E402
from seq2seq_lab.training import ModelOptions, RunSettings, train  # noqa: E402
from seq2seq_lab.vocab import SPECIALS  # noqa: E402
from seq2seq_ref import ModelConfig, init_params  # noqa: E402
from seq2seq_ref.decode import encode, step_log_probs  # noqa: E402
from seq2seq_ref.params import tied_views  # noqa: E402
from tests.test_translation import TINY, sentences, write_aligned  # noqa: E402

# the tiny runs validate on pairs that also appear in training: what they learn is not the point here
pytestmark = pytest.mark.filterwarnings("ignore:valid_data:UserWarning")

TRANSFORMER = ModelOptions(embed_dim=16, hidden_dim=16, num_layers=2, bidirectional=False, attention="multihead",
                           encoder="transformer", decoder="transformer", num_heads=2, ffn_dim=32,
                           tie_embeddings="target")


def tiny_run(folder, model: ModelOptions, steps: int, **data):
    train_src, train_tgt = write_aligned(folder, "train", 60, 0)
    valid_src, valid_tgt = write_aligned(folder, "valid", 8, 1)
    settings = DataSettings(task=None, data=train_src, data_target=train_tgt, valid_data=valid_src,
                            valid_target=valid_tgt, max_len=12, **data)
    run = RunSettings(steps=steps, batch_size=8, log_every=steps, eval_every=steps, eval_examples=8)
    train(folder / "run", model, settings, run, OptimiserSettings(), "numpy", progress=False, evaluate_test=False,
          notify=lambda m: None)
    return folder / "run"


@pytest.fixture(scope="module")
def bpe_run(tmp_path_factory):
    """A Transformer -> Transformer run with bpe vocabularies, trained a few dozen steps."""
    return tiny_run(tmp_path_factory.mktemp("bpe"), TRANSFORMER, 24, tokenizer="bpe", vocab_size=300)


@pytest.fixture(scope="module")
def lstm_run(tmp_path_factory):
    return tiny_run(tmp_path_factory.mktemp("lstm"), TINY, 1, tokenizer="word")


def cli(capsys, *argv):
    capsys.readouterr()
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_ctranslate2_greedy_output_is_ours_on_every_sentence(bpe_run, tmp_path, capsys):
    out = tmp_path / "ct2"
    code, stdout, stderr = cli(capsys, "export", "--format", "ctranslate2", "--run", str(bpe_run), "--out", str(out))
    assert code == 0, stderr
    assert str(out) in stdout
    info = json.loads((out / EXPORT_INFO).read_text())
    assert (info["tokenizer"], info["max_len"]) == ("bpe", 12)
    # novel sentences, a repeated word, and characters never seen in training (byte pieces)
    texts = sentences(24, 5) + ["dog", "the the the the the the cat", "der Hund läuft"]
    ours = seq2seq_lab.load(bpe_run, backend="numpy").translate(texts)
    source = sentencepiece.SentencePieceProcessor(model_file=str(out / info["source_spm"]))
    target = sentencepiece.SentencePieceProcessor(model_file=str(out / info["target_spm"]))
    results = ctranslate2.Translator(str(out), device="cpu").translate_batch(
        [source.encode(text, out_type=str) for text in texts], beam_size=1, max_decoding_length=info["max_len"],
        min_decoding_length=0)
    theirs = [target.decode(result.hypotheses[0]) for result in results]
    assert theirs == ours
    assert any(len(target.encode(text)) == info["max_len"] for text in ours)  # some stopped at max_len, no <eos>


def test_a_quantized_export_stores_int8_weights_and_translates(bpe_run, tmp_path, capsys):
    full, int8 = tmp_path / "float32", tmp_path / "int8"
    for out, extra in ((full, ()), (int8, ("--quantization", "int8"))):
        code, _, stderr = cli(capsys, "export", "--format", "ctranslate2", "--run", str(bpe_run), "--out", str(out),
                              *extra)
        assert code == 0, stderr
    assert json.loads((int8 / EXPORT_INFO).read_text())["quantization"] == "int8"
    assert (int8 / "model.bin").stat().st_size < 0.6 * (full / "model.bin").stat().st_size
    results = ctranslate2.Translator(str(int8), device="cpu", compute_type="int8").translate_batch(
        [["▁the", "▁cat"]], beam_size=2)
    assert results[0].hypotheses[0]


@pytest.mark.parametrize("tie", ["none", "target", "all"])
def test_ctranslate2_scores_every_token_as_our_decoder_does(tie, tmp_path):
    """Teacher-forced log-probabilities of random sentences under random parameters (every bias, gain and shift
    perturbed, so that a swapped or transposed tensor shows): CTranslate2's score_batch against our decoding
    steps, renormalised without pad and bos, which neither generates."""
    config = ModelConfig(src_vocab_size=14, tgt_vocab_size=14, embed_dim=16, hidden_dim=16, num_layers=2,
                         attention="multihead", encoder="transformer", decoder="transformer", num_heads=4, ffn_dim=24,
                         tie_embeddings=tie)
    rng = np.random.default_rng(0)
    params = {name: (value + 0.3 * rng.standard_normal(value.shape)).astype(np.float32)
              for name, value in init_params(config, 0).items()}
    tokens = [*SPECIALS, *(f"w{i}" for i in range(10))]
    spec = ctranslate2_spec(config, params, tokens, tokens, positions=16)
    spec.validate()
    spec.optimize()
    spec.save(str(tmp_path))
    sources = [rng.integers(4, 14, size=n).tolist() for n in (1, 5, 9)]
    targets = [rng.integers(4, 14, size=n).tolist() for n in (6, 0, 3)]
    scored = ctranslate2.Translator(str(tmp_path), device="cpu").score_batch(
        [[tokens[i] for i in ids] for ids in sources], [[tokens[i] for i in ids] for ids in targets])
    views = tied_views(params, config)
    for src, tgt, result in zip(sources, targets, scored):
        memory, states = encode(views, config, np.array([src]), np.array([len(src)]))
        ours = []
        for previous, following in zip([config.bos_id, *tgt], [*tgt, config.eos_id]):
            log_p, states, _ = step_log_probs(views, config, np.array([previous]), states, memory)
            ours.append(log_p[0, following] - np.logaddexp.reduce(log_p[0][np.isfinite(log_p[0])]))
        np.testing.assert_allclose(result.log_probs, ours, atol=2e-4)


def test_a_recurrent_run_is_refused_with_one_error_line_naming_its_sides(lstm_run, tmp_path, capsys):
    out = tmp_path / "ct2"
    code, stdout, stderr = cli(capsys, "export", "--format", "ctranslate2", "--run", str(lstm_run), "--out", str(out))
    assert code == 2 and not stdout
    assert stderr.count("\n") == 1
    assert stderr.startswith("error: model: expected a Transformer encoder and a Transformer decoder")
    assert stderr.rstrip().endswith("CTranslate2 has no LSTM layer and no 'luong' attention of a recurrent decoder")
    assert not out.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("encoder, decoder, attention, missing", [
    ("transformer", "gru", "multihead", "no GRU layer and no 'multihead' attention of a recurrent decoder"),
    ("lstm", "transformer", "multihead", "no LSTM layer"),
    ("gru", "lstm", "none", "no GRU layer and no LSTM layer"),
])
def test_a_hybrid_model_is_refused_naming_what_ctranslate2_lacks(encoder, decoder, attention, missing):
    config = ModelConfig(src_vocab_size=9, tgt_vocab_size=9, embed_dim=8, hidden_dim=8, encoder=encoder,
                         decoder=decoder, attention=attention, num_heads=2 if attention == "multihead" else 1)
    with pytest.raises(ValueError, match=f"^model: expected a Transformer encoder and a Transformer decoder .*"
                                         f"CTranslate2 has {missing}$"):
        ctranslate2_spec(config, init_params(config, 0), [], [], positions=8)


def test_an_unknown_quantization_is_one_error_line_before_the_model_is_read(lstm_run, tmp_path, capsys):
    code, _, stderr = cli(capsys, "export", "--format", "ctranslate2", "--run", str(lstm_run), "--out",
                          str(tmp_path / "ct2"), "--quantization", "int3")
    assert code == 2 and stderr.count("\n") == 1
    assert stderr.startswith("error: quantization: expected one of ('int8', ") and "got 'int3'" in stderr
    assert list(tmp_path.iterdir()) == []


def test_a_folder_with_files_is_never_overwritten(bpe_run, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    code, _, stderr = cli(capsys, "export", "--format", "ctranslate2", "--run", str(bpe_run), "--out", str(tmp_path))
    assert code == 2 and stderr.startswith("error: out: expected a new or empty folder")
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_a_failed_write_leaves_no_folder_behind(bpe_run, tmp_path, capsys, monkeypatch):
    def full_disk(self, output_dir):
        assert not (tmp_path / "ct2").exists()  # written aside: the destination never holds half a model
        raise OSError(28, "No space left on device", output_dir)

    monkeypatch.setattr(ctranslate2.specs.TransformerSpec, "save", full_disk)
    code, _, stderr = cli(capsys, "export", "--format", "ctranslate2", "--run", str(bpe_run), "--out",
                          str(tmp_path / "ct2"))
    assert code == 74 and "No space left on device" in stderr
    assert list(tmp_path.iterdir()) == []
