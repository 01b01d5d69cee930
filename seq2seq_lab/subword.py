"""Subword vocabularies: sentencepiece models (BPE, Sennrich et al. 2016; unigram, Kudo 2018) trained on the
training split and stored inside every checkpoint, so a run folder is all `translate` needs.

The model keeps the four specials at the ids of vocab.py, normalises nothing (identity rule, whitespace
kept as it is: decoding spells the text back exactly), and falls back to UTF-8 bytes for a character it never saw, so
no input ever becomes <unk>.
"""
from __future__ import annotations

import base64
import io
from typing import Iterable

from .vocab import BOS_ID, EOS_ID, PAD_ID, SPECIALS, UNK_ID, content_ids

SUBWORD_TOKENIZERS = ("bpe", "unigram")
MAX_SENTENCE_BYTES = 4192  # sentencepiece's default max_sentence_length


def _utf8(text: str) -> str:
    """text, refused with the position of what UTF-8 cannot spell (a lone surrogate, as undecodable bytes of a
    command line become): sentencepiece reads UTF-8 and would fail deep inside."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise ValueError(f"text: expected valid UTF-8 text, got {text[error.start:error.end]!r} at position "
                         f"{error.start}") from None
    return text


class SubwordVocab:
    """The Vocab interface (len, encode, decode, tokens, to_json) over a sentencepiece model."""

    def __init__(self, model: bytes, tokenizer: str):
        import sentencepiece

        if tokenizer not in SUBWORD_TOKENIZERS:
            raise ValueError(f"tokenizer: expected one of {SUBWORD_TOKENIZERS}, got {tokenizer!r}")
        try:
            self.processor = sentencepiece.SentencePieceProcessor(model_proto=model)
        except RuntimeError as error:
            raise ValueError(f"tokenizer model: expected a sentencepiece model, got {len(model)} bytes that do "
                             f"not parse ({error})") from None
        ids = [self.processor.piece_to_id(piece) for piece in SPECIALS]
        if ids != [PAD_ID, BOS_ID, EOS_ID, UNK_ID]:
            raise ValueError(f"tokenizer model: expected the specials {SPECIALS} at ids 0-3, got ids {ids}")
        self.model, self.tokenizer = model, tokenizer
        self.tokens = [self.processor.id_to_piece(i) for i in range(self.processor.get_piece_size())]

    @classmethod
    def train(cls, texts: Iterable[str], tokenizer: str, vocab_size: int) -> "SubwordVocab":
        import sentencepiece

        if tokenizer not in SUBWORD_TOKENIZERS:
            raise ValueError(f"tokenizer: expected one of {SUBWORD_TOKENIZERS}, got {tokenizer!r}")
        texts = list(texts)
        sizes = [len(text.encode("utf-8")) for text in texts]
        # sentencepiece skips a longer sentence, and with none left it fails with a bare internal check
        if sizes and min(sizes) > MAX_SENTENCE_BYTES:
            raise ValueError(f"data: expected training sentences of at most {MAX_SENTENCE_BYTES} UTF-8 bytes (the "
                             f"longest a {tokenizer} model learns from), got {len(texts)} sentences all longer "
                             f"({min(sizes)} to {max(sizes)} bytes); put one sentence on each line")
        buffer = io.BytesIO()
        try:
            sentencepiece.SentencePieceTrainer.train(
                sentence_iterator=iter(texts), model_writer=buffer, model_type=tokenizer,
                max_sentence_length=MAX_SENTENCE_BYTES,
                vocab_size=vocab_size, pad_id=PAD_ID, bos_id=BOS_ID, eos_id=EOS_ID, unk_id=UNK_ID,
                pad_piece=SPECIALS[PAD_ID], bos_piece=SPECIALS[BOS_ID], eos_piece=SPECIALS[EOS_ID],
                unk_piece=SPECIALS[UNK_ID], byte_fallback=True, character_coverage=1.0,
                normalization_rule_name="identity", remove_extra_whitespaces=False, num_threads=1, minloglevel=2)
        except RuntimeError as error:
            message = str(error)
            if "Vocabulary size too high" in message:
                most = message.rsplit("<=", 1)[-1].strip(" .")
                raise ValueError(f"vocab_size: expected at most {most} for a {tokenizer} model of this training "
                                 f"split, got {vocab_size}") from None
            if "Vocabulary size is smaller than required_chars" in message:
                least = message.rsplit(" vs ", 1)[-1].split(".")[0]
                raise ValueError(f"vocab_size: expected at least {least} (the 4 specials, 256 byte pieces and every "
                                 f"character of the training split), got {vocab_size}") from None
            raise
        return cls(buffer.getvalue(), tokenizer)

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, text: str, warn: bool = False) -> list[int]:
        """Piece ids; never <unk> (unseen characters become their UTF-8 bytes), so warn has nothing to say."""
        return self.processor.encode(_utf8(text))

    def decode(self, ids: Iterable[int]) -> str:
        """Text up to the first <eos>, pad and bos dropped: the pieces joined back exactly."""
        return self.processor.decode(content_ids(ids))

    def pieces(self, text: str) -> list[str]:
        """The pieces of text, for display (attention plots)."""
        return self.processor.encode(_utf8(text), out_type=str)

    def to_json(self) -> dict:
        return {"tokenizer": self.tokenizer, "model": base64.b64encode(self.model).decode("ascii")}

    @classmethod
    def from_json(cls, data: dict) -> "SubwordVocab":
        try:
            model = base64.b64decode(data["model"], validate=True)
        except (KeyError, TypeError, ValueError):
            raise ValueError("tokenizer model: expected the run's sentencepiece model in the checkpoint, got none "
                             "or a corrupt one") from None
        return cls(model, data["tokenizer"])
