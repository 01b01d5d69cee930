"""Translating and scoring from Python: a trained run's model behind one object, as `seq2seq translate` and
`seq2seq evaluate` use it.

    import seq2seq_lab

    translator = seq2seq_lab.load("runs/dates")               # best.npz of the run, on jax if installed
    translator.translate("march 3rd, 2016")                     # a str in, a str out: '2016-03-03'
    translator.translate(["3/3/16", "", "03 mar 2016"], beam=4) # a list in, a list out ("" in, "" out)
    translator.translate("3/3/16", beam=4, n_best=3)           # [Hypothesis(text, score, tokens), ...] best first
    translator.score([("3/3/16", "2016-03-03")])               # the scores of `seq2seq evaluate`
    translator.score("test")                                   # ... on the run's own test split
"""
from __future__ import annotations

import numbers
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from seq2seq_ref.decode import DEFAULT_LENGTH_PENALTY, check_length_limit
from seq2seq_ref.validation import check_decode_args, check_flag

from .backends import OptimiserSettings, jax_available, make_backend
from .batching import round_width
from .checkpoint import Checkpoint, CheckpointError, averaged_checkpoint, best_checkpoint, latest_checkpoint, \
    load_checkpoint
from .data import DataSettings, load_data, vocab_from_json
from .evaluate import DEFAULT_BATCH_TOKENS, decode_ids, evaluate, width_limit
from .recipes import DecodingSettings
from .tasks import SPLITS
from .training import encode_splits
from .vocab import BOS_ID, EOS_ID, PAD_ID, UNK_ID

CHECKPOINTS = ("best", "last", "averaged")
UNSEEN = ("drop", "unk")


def default_backend() -> str:
    return "jax" if jax_available() else "numpy"


@dataclass(frozen=True)
class Hypothesis:
    """One output for a source: its text, score and tokens (<eos> last where the output reached it)."""
    text: str
    score: float | None  # beam search's log p(output) / ((5 + |output|) / 6) ** length_penalty; None: greedy
    tokens: tuple[str, ...]


@dataclass(frozen=True, eq=False)
class Translation:
    """All that decoding one input gave."""
    source: str                         # the input as the model read it: stripped, lowercased where the run
                                        # was, unseen characters dropped (--unseen drop)
    source_tokens: tuple[str, ...]
    hypotheses: tuple[Hypothesis, ...]  # best first; none for a blank input or one with nothing left to read
    attention: np.ndarray | None        # greedy decoding's weights [len(tokens of the best), len(source_tokens)];
                                        # None with beam search, a model without attention, or no hypotheses

    @property
    def text(self) -> str:
        """The best hypothesis's text; "" where there is none."""
        return self.hypotheses[0].text if self.hypotheses else ""


def load(run_dir: str | os.PathLike | None = None, checkpoint: str | os.PathLike = "best",
         backend: str | None = None) -> "Translator":
    """A trained run's model, ready to translate and score.

    checkpoint: "best" (the run's best.npz, selected on validation; its newest checkpoint where none was
    selected yet), "last" (its newest checkpoint), "averaged" (its averaged.npz, written by `seq2seq average`),
    or the path of a checkpoint file, which names its run: run_dir may then be None, and if given must be the
    file's folder. backend: "jax" or "numpy" (default: jax where installed).
    """
    if not isinstance(checkpoint, (str, os.PathLike)):
        raise ValueError(f"checkpoint: expected one of {CHECKPOINTS} or a path, got {checkpoint!r}")
    if run_dir is not None and not isinstance(run_dir, (str, os.PathLike)):
        raise ValueError(f"run_dir: expected a folder path, got {run_dir!r}")
    if checkpoint in CHECKPOINTS:
        if run_dir is None:
            raise ValueError(f"run_dir: expected the run folder to take its {checkpoint!r} checkpoint from, got None")
        found = {"best": lambda: best_checkpoint(run_dir) or latest_checkpoint(run_dir),
                 "last": lambda: latest_checkpoint(run_dir), "averaged": lambda: averaged_checkpoint(run_dir)}
        chosen = found[checkpoint]()
        if chosen is None and checkpoint == "averaged":
            raise CheckpointError(f"checkpoint: expected averaged.npz in {run_dir}, found none (write it with "
                                  f"`seq2seq average --run {run_dir} --last N`)")
        if chosen is None:
            raise CheckpointError(f"run: expected a checkpoint in {run_dir}, found none (train one with "
                                  "`seq2seq train`)")
    else:
        if run_dir is not None and Path(checkpoint).resolve().parent != Path(run_dir).resolve():
            raise ValueError(f"checkpoint: expected a file of the run in {run_dir}, got {checkpoint}, which is in "
                             f"another folder; give the file alone (its folder is its run), or "
                             f"{', '.join(CHECKPOINTS)} of the run")
        chosen = load_checkpoint(checkpoint)
    return Translator(chosen, backend)


class Translator:
    """A trained model and its vocabularies, on one backend: made by load()."""

    def __init__(self, checkpoint: Checkpoint, backend: str | None = None):
        meta = checkpoint.meta
        self._checkpoint = checkpoint
        self._data = DataSettings(**meta["data"])
        self._src_vocab, self._tgt_vocab = vocab_from_json(meta["src_vocab"]), vocab_from_json(meta["tgt_vocab"])
        self._engine = make_backend(backend or default_backend(), checkpoint.config,
                                    OptimiserSettings(**meta["optimizer"]))
        self._params = self._engine.to_device(checkpoint.params)
        self._dtype = next(iter(checkpoint.params.values())).dtype  # decoding computes in the params' dtype

    def __repr__(self) -> str:
        return f"<Translator {self.checkpoint_path} (step {self.step}) on {self.backend}>"

    @property
    def config(self):
        """The model's seq2seq_ref.ModelConfig."""
        return self._checkpoint.config

    @property
    def step(self) -> int:
        """The training step of the checkpoint."""
        return self._checkpoint.step

    @property
    def checkpoint_path(self) -> Path:
        return self._checkpoint.path

    @property
    def run_dir(self) -> Path:
        return self._checkpoint.path.parent

    @property
    def backend(self) -> str:
        return self._engine.name

    @property
    def src_vocab(self):
        """The source vocabulary (vocab.Vocab, or subword.SubwordVocab): encode, decode, tokens."""
        return self._src_vocab

    @property
    def tgt_vocab(self):
        return self._tgt_vocab

    @property
    def data(self) -> DataSettings:
        """The run's data settings (tokenizer, lowercase, max_len, files or task)."""
        return self._data

    @property
    def training(self) -> dict:
        """How the run was trained: its optimiser settings, batch size, seed, packing and backend."""
        meta = self._checkpoint.meta
        return {key: meta.get(key) for key in ("optimizer", "batch_size", "seed", "pack", "backend")}

    @property
    def max_len(self) -> int:
        """The run's --max-len: translate's default longest output, in tokens (<eos> included)."""
        return self._data.max_len

    def translate(self, texts, beam=None, length_penalty=None, n_best=1, max_len=None, unseen=None,
                  progress=False, batch_tokens=DEFAULT_BATCH_TOKENS, max_len_a=None, max_len_b=None,
                  early_stop=None):
        """Translations of texts: a str gives a str, a list (or other iterable) of str a list.

        beam: 1 decodes greedily, more searches that many hypotheses; length_penalty: alpha of beam search's
        length normalisation ((5 + |y|) / 6) ** alpha (MATH.md (N1)); these two and max_len_a, max_len_b,
        early_stop default (None) to the run's decoding settings (its recipe's [decoding]; else beam 1,
        length penalty 0.6, no per-sentence limit, the exact stop); n_best > 1 (at most beam) gives each
        input's list of n_best Hypothesis (text, score, tokens), best first, instead of its text; max_len:
        the longest output in tokens (default: the run's --max-len); unseen: "drop" a character unseen in
        training (char vocabularies; their default) or read it as "unk" (word vocabularies' default);
        progress: a bar on stderr when it is a terminal; batch_tokens: source tokens (padding included) per
        decoding batch. Inputs are decoded longest first in batches of similar lengths; the outputs come back in
        input order, and are those of decoding each input alone (scores and weights to float rounding).
        max_len_a, max_len_b: each output's length limit a * |source pieces| + b (fairseq's convention; MATH.md
        (N3)), below max_len; off (None) by default. early_stop: beam search ends a sentence once beam
        hypotheses have finished ((N4), fairseq's and CTranslate2's rule: faster, but it may miss a better,
        longer hypothesis that the default exact stop (N2) finds).

        A blank input gives "" (with n_best > 1, no hypotheses), as does one with nothing left once unseen
        characters are dropped (with a warning); every other warning names its input too.
        """
        results = self.decode(texts, beam, length_penalty, n_best, max_len, unseen, progress, batch_tokens,
                              max_len_a, max_len_b, early_stop)
        outputs = [result.text if n_best == 1 else list(result.hypotheses) for result in results]
        return outputs[0] if isinstance(texts, str) else outputs

    def decode(self, texts, beam=None, length_penalty=None, n_best=1, max_len=None, unseen=None,
               progress=False, batch_tokens=DEFAULT_BATCH_TOKENS, max_len_a=None, max_len_b=None,
               early_stop=None, pad_multiple=8) -> list[Translation]:
        """translate(), with all that decoding gave: a Translation per input (one for a str), in order.
        pad_multiple: batch widths are rounded up to a multiple of it (larger: fewer compiled shapes)."""
        texts = _texts(texts)
        beam, length_penalty, search = self._settings(beam, length_penalty, max_len_a, max_len_b, early_stop)
        beam, n_best = _count(beam, "beam"), _count(n_best, "n_best")
        batch_tokens, pad_multiple = _count(batch_tokens, "batch_tokens"), _count(pad_multiple, "pad_multiple")
        if n_best > beam:
            raise ValueError(f"n_best: expected at most beam = {beam} hypotheses, got {n_best} (search with "
                             f"beam >= n_best)")
        max_len = self.max_len if max_len is None else max_len
        check_decode_args(max_len, beam, length_penalty, self.config, self._dtype)  # the library's bounds, first
        max_len, length_penalty = int(max_len), float(length_penalty)  # NumPy scalars as Python numbers
        unseen = self._unseen(unseen)
        read, sources = [], []
        for text in texts:
            # training pairs are stripped when read (corpus.py), and lowercased with --lowercase
            text = text.lower().strip() if self._data.lowercase else text.strip()
            kept, ids = self._encode(text, unseen) if text else ("", [])
            read.append(kept)
            sources.append(ids)
        rows = [row for row, ids in enumerate(sources) if ids]
        found, weights = decode_ids(self._engine, self._params, [sources[row] for row in rows], max_len, beam=beam,
                                    length_penalty=length_penalty, n_best=n_best, progress=progress,
                                    batch_tokens=batch_tokens, max_width=width_limit(self.config),
                                    pad_multiple=pad_multiple, **search)
        decoded = dict(zip(rows, zip(found, weights)))
        results = []
        for row, kept in enumerate(read):
            hypotheses, weight = decoded.get(row, ((), None))
            results.append(Translation(
                kept, tuple(self._src_vocab.pieces(kept)) if kept else (),
                tuple(Hypothesis(self._tgt_vocab.decode(ids), score, tuple(self._tgt_vocab.tokens[i] for i in ids))
                      for ids, score in hypotheses), weight))
        return results

    def source_ids(self, text: str, unseen=None) -> list[int]:
        """The source ids the model reads for text (what decode() encodes)."""
        text = text.lower().strip() if self._data.lowercase else text.strip()
        unseen = self._unseen(unseen)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return self._encode(text, unseen)[1] if text else []

    def compile(self, rows: int, width: int, beam=None, length_penalty=None, pad_multiple=8) -> None:
        """Decodes a batch of `rows` random sources of up to `width` pieces (the width rounded as decode() rounds
        it), so that the programs a later batch of that shape needs are compiled (or loaded from JAX's
        persistent compilation cache) before it comes. The sources' lengths differ, so the shrinking batches
        of a search are compiled too."""
        beam, length_penalty, search = self._settings(beam, length_penalty, None, None, None)
        rows, width = _count(rows, "rows"), _count(width, "width")
        limit = width_limit(self.config)
        width = min(width, limit) if limit else width
        rng = np.random.default_rng(0)
        first = max(PAD_ID, UNK_ID, BOS_ID, EOS_ID) + 1  # ordinary pieces only
        sources = [rng.integers(first, len(self._src_vocab), int(length)).tolist()
                   for length in np.linspace(width, max(1, width // 2), rows).astype(int)]
        padded = round_width(width, _count(pad_multiple, "pad_multiple"), limit or sys.maxsize)
        decode_ids(self._engine, self._params, sources, self.max_len, beam=_count(beam, "beam"),
                   length_penalty=float(length_penalty), batch_tokens=rows * padded,
                   max_width=limit, pad_multiple=pad_multiple, **search)

    def attention(self, translation: Translation, hypothesis: int = 0, heads: bool = False) -> np.ndarray | None:
        """The attention weights with which the model reads translation's source while it writes its hypothesis
        number `hypothesis` (0: the best), any of beam search's n-best: the NumPy reference's teacher-forced
        decoder on that output (seq2seq_ref.model.attention).

        heads=False: [len(tokens of the hypothesis), len(source_tokens)], the weights decoding reports (a
        Transformer decoder's last block, averaged over heads); for greedy decoding they equal
        translation.attention to float rounding.  heads=True: [L, H, tokens, source tokens], every block's and
        head's (attention_layout gives L and H).  None for a model without attention weights.
        """
        from seq2seq_ref.batch import make_batch
        from seq2seq_ref.model import attention

        if not isinstance(translation, Translation):
            raise ValueError(f"translation: expected a Translation of decode(), got {type(translation).__name__}")
        if isinstance(hypothesis, bool) or not isinstance(hypothesis, numbers.Integral) \
                or not 0 <= hypothesis < len(translation.hypotheses):
            raise ValueError(f"hypothesis: expected an index in [0, {len(translation.hypotheses)}) of the "
                             f"translation's hypotheses, got {hypothesis!r}")
        heads = check_flag(heads, "heads")
        source = self._src_vocab.encode(translation.source)
        index = self._tgt_index()
        output = [index[token] for token in translation.hypotheses[hypothesis].tokens]
        steps = len(output)
        if output and output[-1] == self.config.eos_id:
            output = output[:-1]  # make_batch ends every target with <eos>
        params = self._checkpoint.params
        batch = make_batch([source], [output], self.config)
        alpha = attention(params, self.config, batch, heads=heads)
        return None if alpha is None else alpha[0, ..., :steps, : len(source)]

    @property
    def attention_layout(self) -> tuple[int, int] | None:
        """(L, H): the blocks and heads of attention(..., heads=True); None for a model without weights."""
        from seq2seq_ref.model import attention_layout

        return attention_layout(self.config)

    def _tgt_index(self) -> dict[str, int]:
        if not hasattr(self, "_tgt_ids"):
            self._tgt_ids = {token: i for i, token in enumerate(self._tgt_vocab.tokens)}
        return self._tgt_ids

    def score(self, data, beam=None, length_penalty=None, with_perplexity=True,
              progress=False, batch_tokens=DEFAULT_BATCH_TOKENS, max_len_a=None, max_len_b=None,
              early_stop=None) -> dict:
        """The scores of `seq2seq evaluate` (exact match, token accuracy, perplexity, BLEU and chrF with their
        signatures, ...), with the checkpoint's path and the pairs dropped for length.

        data: (source, reference) pairs, or the name of one of the run's own splits ("test", "valid", "train"),
        made again from its data (files refused where they changed since training). Pairs are lowercased where
        the run was, and those with a side longer than the run's --max-len, or a blank source, are dropped
        (with a warning); decoding stops at the run's --max-len. beam, length_penalty, progress, batch_tokens,
        max_len_a, max_len_b, early_stop: as translate().
        """
        beam, length_penalty, search = self._settings(beam, length_penalty, max_len_a, max_len_b, early_stop)
        beam, batch_tokens = _count(beam, "beam"), _count(batch_tokens, "batch_tokens")
        check_decode_args(self.max_len, beam, length_penalty, self.config, self._dtype)
        length_penalty = float(length_penalty)
        name, pairs = (data, self._split(data)) if isinstance(data, str) else ("given", _pairs(data))
        encoded, dropped = encode_splits({name: self._data.prepare(pairs)}, self._src_vocab, self._tgt_vocab,
                                         self.max_len)
        if dropped[name]:
            warnings.warn(f"dropped {dropped[name]} of {len(pairs)} pairs with a side longer than the run's "
                          f"--max-len {self.max_len} tokens (or a blank source)", stacklevel=2)
        scores = evaluate(self._engine, self._params, self.config, encoded[name], self._tgt_vocab, beam=beam,
                          with_perplexity=with_perplexity, max_len=self.max_len, length_penalty=length_penalty,
                          progress=progress, batch_tokens=batch_tokens, **search)
        return {**scores, "checkpoint": str(self.checkpoint_path), "dropped": dropped[name]}

    @property
    def decoding(self) -> DecodingSettings:
        """The run's decoding settings (its recipe's [decoding]): what translate, decode and score use for the
        arguments left at None."""
        return DecodingSettings.from_json(self._checkpoint.meta.get("decoding"))

    def _settings(self, beam, length_penalty, max_len_a, max_len_b, early_stop):
        """beam, length_penalty and the search options, each given or else the run's, checked."""
        stored = self.decoding
        pick = lambda given, name: getattr(stored, name) if given is None else given  # noqa: E731
        if max_len_a is None and max_len_b is None:
            max_len_a, max_len_b = stored.max_len_a, stored.max_len_b
        check_length_limit(max_len_a, max_len_b)
        search = dict(max_len_a=max_len_a, max_len_b=max_len_b,
                      early_stop=check_flag(pick(early_stop, "early_stop"), "early_stop"))
        return pick(beam, "beam"), pick(length_penalty, "length_penalty"), search

    def _split(self, name: str) -> list[tuple[str, str]]:
        if name not in SPLITS:
            raise ValueError(f"data: expected (source, reference) pairs or a split name, one of {SPLITS}, "
                             f"got {name!r}")
        meta = self._checkpoint.meta
        pairs = load_data(self._data, meta["seed"], meta.get("data_files"), str(self.run_dir)).splits[name]
        if not pairs:
            raise ValueError(f"split: the run in {self.run_dir} has no {name} split (it was trained with "
                             "--valid-data and no --test-data); score pairs of a file instead (--data)")
        return pairs

    def _unseen(self, unseen: str | None) -> str:
        if unseen is not None and unseen not in UNSEEN:
            raise ValueError(f"unseen: expected one of {UNSEEN} or None, got {unseen!r}")
        if unseen == "drop" and self._src_vocab.tokenizer != "char":
            raise ValueError(f"unseen: expected 'unk' with a {self._src_vocab.tokenizer} vocabulary ('drop' is for "
                             "char vocabularies), got 'drop'")
        return unseen or ("drop" if self._src_vocab.tokenizer == "char" else "unk")

    def _encode(self, text: str, unseen: str) -> tuple[str, list[int]]:
        """What the model reads of text, and its ids; the vocabulary's warnings name the input."""
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            kept = self._src_vocab.drop_unseen(text, warn=True) if unseen == "drop" else text
            ids = self._src_vocab.encode(kept, warn=True)
        for warning in caught:
            warnings.warn(f"{text!r}: {warning.message}", stacklevel=4)
        if not ids:
            warnings.warn(f"{text!r}: nothing left to translate once the characters unseen in training are "
                          "dropped; its output is empty", stacklevel=4)
        return kept, ids


def _texts(texts, name: str = "texts") -> list[str]:
    """texts as a list of str, each encodable as UTF-8 (an undecodable byte read with surrogateescape is not)."""
    if isinstance(texts, str):
        texts = [texts]
    elif isinstance(texts, (bytes, bytearray)) or not hasattr(texts, "__iter__"):
        raise ValueError(f"{name}: expected a str or a list of str, got {type(texts).__name__}")
    texts = list(texts)
    for number, text in enumerate(texts):
        if not isinstance(text, str):
            raise ValueError(f"{name}[{number}]: expected a str, got {type(text).__name__} {text!r}")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as error:
            raise ValueError(f"{name}[{number}]: expected text, got the lone surrogate {text[error.start]!r} at "
                             f"character {error.start} (bytes that were not UTF-8, decoded with "
                             "surrogateescape?)") from None
    return texts


def _pairs(pairs) -> list[tuple[str, str]]:
    if isinstance(pairs, (bytes, bytearray)) or not hasattr(pairs, "__iter__"):
        raise ValueError(f"data: expected (source, reference) pairs or a split name, got {type(pairs).__name__}")
    pairs = list(pairs)
    if not pairs:
        raise ValueError("data: expected at least one (source, reference) pair, got none")
    for number, pair in enumerate(pairs):
        if isinstance(pair, str) or not isinstance(pair, (tuple, list)) or len(pair) != 2 \
                or not all(isinstance(side, str) for side in pair):
            raise ValueError(f"data[{number}]: expected a (source, reference) pair of str, got {pair!r}")
        _texts(pair, f"data[{number}]")
    return [tuple(pair) for pair in pairs]


def _count(value, name: str) -> int:
    """An int >= 1 (a NumPy integer too) as a Python int."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name}: expected an int >= 1, got {value!r}")
    return int(value)

