"""`seq2seq export --format ctranslate2`: a trained Transformer run as a CTranslate2 model folder, built with
CTranslate2's own specification API (ctranslate2.specs.TransformerSpec), so that it translates with
`ctranslate2.Translator` on CPU or GPU, with int8 or float16 weights where asked.

The folder holds CTranslate2's model.bin, config.json and vocabularies (JSON lists of tokens, in our id
order), the run's sentencepiece models (source.spm, target.spm) where it has subword vocabularies, and
seq2seq_export.json: what a caller must do to read and write as the run does (tokenizer, lowercasing, the
run's --max-len). Greedy decoding with

    translator.translate_batch(pieces, beam_size=1, max_decoding_length=max_len, min_decoding_length=0)

gives `seq2seq translate`'s tokens; beam search differs in its length normalisation (CTranslate2 divides by
|y| ** length_penalty, ours by GNMT's ((5 + |y|) / 6) ** length_penalty).
"""
from __future__ import annotations

import inspect
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from seq2seq_ref.params import tied_views
from seq2seq_ref.registry import CONNECTIONS, DECODERS, ENCODERS
from seq2seq_ref.transformer import TransformerEncoder
from seq2seq_ref.transformer_decoder import TransformerDecoder
from seq2seq_ref.transformer_layers import layer_norm_forward, sinusoidal_positions

from .run_cli import add_checkpoint_argument, load_run
from .subword import SubwordVocab
from .translator import Translator
from .vocab import UNK_ID

FORMATS = ("ctranslate2",)
# the epsilon both backends' layer norms use (T2), read where it is defined so that the export cannot drift
LAYER_NORM_EPSILON = inspect.signature(layer_norm_forward).parameters["eps"].default
# Our decoders never generate pad or bos (their log-probabilities are set to -inf); CTranslate2 has no such
# rule, so their output biases get this, which no trained logit overcomes (exp underflows to 0) and which
# float16 still represents.
NEVER = -1e4
EXPORT_INFO = "seq2seq_export.json"


def _ctranslate2():
    try:
        import ctranslate2
    except ImportError:
        raise ValueError("format: expected the ctranslate2 package for --format ctranslate2, got none installed "
                         "(pip install 'seq2seq-lab[export]')") from None
    return ctranslate2


def _check_quantization(quantization: str | None) -> None:
    from ctranslate2.specs.model_spec import ACCEPTED_MODEL_TYPES

    if quantization is not None and quantization not in ACCEPTED_MODEL_TYPES:
        raise ValueError(f"quantization: expected one of {tuple(ACCEPTED_MODEL_TYPES)} (CTranslate2's weight types) "
                         f"or none, got {quantization!r}")


def check_exportable(config) -> None:
    """A Transformer encoder and a Transformer decoder (whose cross-attention is multi-head): what CTranslate2
    runs. A recurrent side, or the connection of a recurrent decoder, has no CTranslate2 layer."""
    encoder, decoder = ENCODERS[config.encoder], DECODERS[config.decoder]
    if isinstance(encoder, TransformerEncoder) and isinstance(decoder, TransformerDecoder):
        return
    other = [stack.name for stack in (encoder, decoder)
             if not isinstance(stack, (TransformerEncoder, TransformerDecoder))]
    missing = [f"{name.upper()} layer" for name in dict.fromkeys(other)]
    if decoder.uses_connection and CONNECTIONS[config.attention].param_shapes(config):
        missing.append(f"{config.attention!r} attention of a recurrent decoder")
    raise ValueError(f"model: expected a Transformer encoder and a Transformer decoder (what CTranslate2 runs), "
                     f"got encoder={config.encoder!r}, decoder={config.decoder!r}, attention={config.attention!r}: "
                     f"CTranslate2 has no {' and no '.join(missing)}")


def _check_out(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"out: expected a new or empty folder, got {out}, which "
                         f"{'is a file' if not out.is_dir() else 'holds files'} (nothing is overwritten)")


def _linear(spec, W, b) -> None:
    """Ours computes x W + b with W [in, out]; CTranslate2's weight is [out, in]."""
    spec.weight = np.ascontiguousarray(W.T)
    spec.bias = b


def _norm(spec, params, prefix: str) -> None:
    spec.gamma, spec.beta = params[f"{prefix}/gamma"], params[f"{prefix}/beta"]


def _attention(spec, params, prefix: str, self_attention: bool) -> None:
    """Our heads are consecutive column blocks of W_q, W_k, W_v, as CTranslate2 splits its projections; it fuses
    the self-attention's query, key and value rows into one matrix, and the cross-attention's key and value."""
    W = {name: params[f"{prefix}/W_{name}"] for name in "qkvo"}
    b = {name: params[f"{prefix}/b_{name}"] for name in "qkvo"}
    if self_attention:
        _linear(spec.linear[0], np.concatenate([W["q"], W["k"], W["v"]], axis=1),
                np.concatenate([b["q"], b["k"], b["v"]]))
    else:
        _linear(spec.linear[0], W["q"], b["q"])
        _linear(spec.linear[1], np.concatenate([W["k"], W["v"]], axis=1), np.concatenate([b["k"], b["v"]]))
    _linear(spec.linear[-1], W["o"], b["o"])


def _feed_forward(spec, params, prefix: str, norm: str) -> None:
    _norm(spec.layer_norm, params, f"{prefix}/{norm}")
    _linear(spec.linear_0, params[f"{prefix}/ffn/W_1"], params[f"{prefix}/ffn/b_1"])
    _linear(spec.linear_1, params[f"{prefix}/ffn/W_2"], params[f"{prefix}/ffn/b_2"])


def ctranslate2_spec(config, params, src_tokens, tgt_tokens, positions: int):
    """The CTranslate2 TransformerSpec of a Transformer -> Transformer model.

    params: the flat parameters (seq2seq_ref/params.py names; tied ones are expanded here); src_tokens,
    tgt_tokens: the token of every id; positions: rows of the position table (the longest source or output
    CTranslate2 will then accept).
    """
    check_exportable(config)
    from ctranslate2.specs import common_spec, transformer_spec

    params = {name: np.asarray(value, dtype=np.float32) for name, value in tied_views(params, config).items()}
    d = config.hidden_dim
    spec = transformer_spec.TransformerSpec.from_config(
        config.num_layers, config.num_heads, pre_norm=True, activation=common_spec.Activation.RELU)  # (T6)-(T12)
    # The four specials by our ids: CTranslate2 looks them up by name, so ours keep theirs.
    spec.config.layer_norm_epsilon = LAYER_NORM_EPSILON
    spec.config.bos_token = spec.config.decoder_start_token = tgt_tokens[config.bos_id]
    spec.config.eos_token = tgt_tokens[config.eos_id]
    spec.config.unk_token = tgt_tokens[UNK_ID]
    # Our positions interleave sin and cos (T1); CTranslate2's built-in ones concatenate them: give the table.
    table = sinusoidal_positions(positions, d, np.float32)
    for side, embed in ((spec.encoder, "src_embed/W"), (spec.decoder, "tgt_embed/W")):
        embedding = side.embeddings[0] if isinstance(side.embeddings, list) else side.embeddings
        embedding.weight = params[embed]
        side.scale_embeddings = True  # √d · e + P (T5), (T9)
        side.position_encodings.encodings = table
        _norm(side.layer_norm, params, f"{'encoder' if side is spec.encoder else 'decoder'}/ln_f")  # (T8), (T13)
    for layer, block in enumerate(spec.encoder.layer):
        prefix = f"encoder/l{layer}"
        _norm(block.self_attention.layer_norm, params, f"{prefix}/ln_1")
        _attention(block.self_attention, params, f"{prefix}/attn", self_attention=True)
        _feed_forward(block.ffn, params, prefix, "ln_2")
    for layer, block in enumerate(spec.decoder.layer):
        prefix = f"decoder/l{layer}"
        _norm(block.self_attention.layer_norm, params, f"{prefix}/ln_1")
        _attention(block.self_attention, params, f"{prefix}/self", self_attention=True)
        _norm(block.attention.layer_norm, params, f"{prefix}/ln_2")
        _attention(block.attention, params, f"{prefix}/cross", self_attention=False)
        _feed_forward(block.ffn, params, prefix, "ln_3")
    bias = params["output/b"].copy()
    bias[[config.pad_id, config.bos_id]] = NEVER
    _linear(spec.decoder.projection, params["output/W"], bias)
    spec.register_source_vocabulary(list(src_tokens))
    spec.register_target_vocabulary(list(tgt_tokens))
    return spec


def export_ctranslate2(translator: Translator, out: str | os.PathLike, quantization: str | None = None) -> Path:
    """Write translator's model into the new (or empty) folder out as a CTranslate2 model; returns its path.

    quantization: the stored weight type, one of CTranslate2's (int8, float16, ...; None keeps float32).
    The folder appears whole or not at all: it is written beside out and renamed into place.
    """
    ctranslate2 = _ctranslate2()
    _check_quantization(quantization)
    out = Path(out)
    _check_out(out)
    config = translator.config
    src_vocab, tgt_vocab = translator.src_vocab, translator.tgt_vocab
    positions = max(config.max_positions, translator.max_len)  # the longest source, and the run's longest output
    spec = ctranslate2_spec(config, translator._params, src_vocab.tokens, tgt_vocab.tokens, positions)

    class SpecConverter(ctranslate2.converters.Converter):
        def _load(self):
            return spec

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        SpecConverter().convert(str(staging), quantization=quantization, force=True)
        info = {"tokenizer": src_vocab.tokenizer, "target_tokenizer": tgt_vocab.tokenizer,
                "lowercase": translator.data.lowercase, "max_len": translator.max_len,
                "max_positions": positions,
                "checkpoint": str(translator.checkpoint_path), "step": translator.step,
                "quantization": quantization or "float32"}
        for name, vocab in (("source", src_vocab), ("target", tgt_vocab)):
            if isinstance(vocab, SubwordVocab):
                (staging / f"{name}.spm").write_bytes(vocab.model)
                info[f"{name}_spm"] = f"{name}.spm"
            elif vocab.tokenizer == "word":
                info[f"{name}_joiners"] = vocab.joiners
        (staging / EXPORT_INFO).write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")
        if out.exists():
            out.rmdir()  # empty, as checked
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def add_arguments(parser) -> None:
    parser.add_argument("--format", choices=FORMATS, required=True, help="what to write")
    add_checkpoint_argument(parser)
    parser.add_argument("--out", required=True, help="the model folder to write (new, or empty)")
    parser.add_argument("--quantization", default=None, metavar="TYPE",
                        help="the stored weight type, one of CTranslate2's: int8, int8_float16, int16, float16, "
                             "bfloat16, ... (default: float32, as trained); CTranslate2 converts it to the "
                             "compute_type asked when it loads the model")


def run(args) -> int:
    _ctranslate2()
    _check_quantization(args.quantization)  # these two before the model is loaded
    _check_out(Path(args.out))
    translator = load_run(args.run, "numpy", args.checkpoint)
    out = export_ctranslate2(translator, args.out, args.quantization)
    print(f"wrote the CTranslate2 model of {translator.checkpoint_path} (step {translator.step}) to {out}; "
          f"translate with ctranslate2.Translator({str(out)!r}) (docs/cli.md: Export to CTranslate2)")
    return 0
