"""Tokenisation and the vocabulary (built from the training split, saved with the model)."""
from __future__ import annotations

import re
import warnings
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable, Sequence

SPECIALS = ("<pad>", "<bos>", "<eos>", "<unk>")
PAD_ID, BOS_ID, EOS_ID, UNK_ID = range(4)
TOKENIZERS = ("char", "word")
_WORD = re.compile(r"\w+|[^\w\s]", re.UNICODE)
# A word token that touched the token before it (no whitespace between) carries this mark, as OpenNMT's
# joiner annotation does, so that output is spaced as text is: "J'ai froid." <-> J ￭' ￭ai froid ￭.
JOINER = "\uffed"


def tokenize(text: str, kind: str, joiners: bool = False) -> list[str]:
    """'char': every character; 'word': words and single punctuation marks, marked with JOINER where they
    touch the previous token when joiners is set."""
    if kind == "char":
        return list(text)
    if kind != "word":
        raise ValueError(f"tokenizer: expected one of {TOKENIZERS}, got {kind!r}")
    if not joiners:
        return _WORD.findall(text)
    tokens, end = [], None
    for match in _WORD.finditer(text):
        tokens.append(JOINER + match.group() if match.start() == end else match.group())
        end = match.end()
    return tokens


def content_ids(ids: Iterable[int]) -> list[int]:
    """The ids before the first <eos>, without pad and bos: what a decoded sentence says."""
    out = []
    for i in map(int, ids):
        if i == EOS_ID:
            break
        if i not in (PAD_ID, BOS_ID):
            out.append(i)
    return out


def detokenize(tokens: Sequence[str], kind: str) -> str:
    """The text of tokens: characters joined; words spaced, except a JOINER-marked word, which is glued on."""
    if kind == "char":
        return "".join(tokens)
    return "".join(token[1:] if token.startswith(JOINER) else (" " if i else "") + token
                   for i, token in enumerate(tokens)).lstrip(" ")


def count_tokens(texts: Iterable[str], tokenizer: str = "char") -> Counter:
    """How often each token occurs in texts, as a vocabulary of this tokenizer splits them."""
    joiners = tokenizer == "word"
    return Counter(token for text in texts for token in tokenize(text, tokenizer, joiners))


@dataclass
class Vocab:
    """tokens[i] is the token with id i; the four specials come first."""

    tokens: list[str]
    tokenizer: str = "char"
    joiners: bool = False  # word tokens marked with JOINER (vocabularies built before the mark existed: False)
    index: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self):
        if tuple(self.tokens[:4]) != SPECIALS:
            raise ValueError(f"tokens: expected the specials {SPECIALS} first, got {self.tokens[:4]}")
        if len(set(self.tokens)) != len(self.tokens):
            raise ValueError("tokens: expected no duplicates")
        tokenize("", self.tokenizer)
        self.index = {token: i for i, token in enumerate(self.tokens)}

    @classmethod
    def build(cls, texts: Iterable[str], tokenizer: str = "char", min_freq: int = 1,
              max_size: int | None = None) -> "Vocab":
        """Tokens seen at least min_freq times, most frequent first (ties alphabetical), at most max_size in all."""
        return cls.from_counts(count_tokens(texts, tokenizer), tokenizer, min_freq, max_size)

    @classmethod
    def from_counts(cls, counts: Counter, tokenizer: str = "char", min_freq: int = 1,
                    max_size: int | None = None) -> "Vocab":
        """Vocab.build from the token counts of count_tokens."""
        if min_freq < 1:
            raise ValueError(f"min_freq: expected an int >= 1, got {min_freq}")
        if max_size is not None and max_size <= len(SPECIALS):
            raise ValueError(f"max_size: expected more than the {len(SPECIALS)} specials, got {max_size}")
        joiners = tokenizer == "word"
        kept = sorted((t for t, n in counts.items() if n >= min_freq and t not in SPECIALS),
                      key=lambda t: (-counts[t], t))
        if max_size is not None:
            kept = kept[: max_size - len(SPECIALS)]
        return cls([*SPECIALS, *kept], tokenizer, joiners)

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, text: str, warn: bool = False) -> list[int]:
        """Token ids; unseen tokens map to <unk> (with a warning naming them when warn is set)."""
        tokens = tokenize(text, self.tokenizer, self.joiners)
        ids = [self.index.get(t, UNK_ID) for t in tokens]
        if warn and UNK_ID in ids:
            unseen = sorted({t for t in tokens if t not in self.index})
            warnings.warn(f"{len(unseen)} token(s) unseen in training mapped to <unk>: {unseen}", stacklevel=2)
        return ids

    def drop_unseen(self, text: str, warn: bool = False) -> str:
        """text without the characters a char vocabulary never saw, stripped (with a warning naming them).

        A character model learnt nothing of a character it never saw; as `<unk>` it is a token the model met
        in no training input, and it moves the output (a trailing `☃` changed 182 of 200 dates).
        """
        if self.tokenizer != "char":
            raise ValueError(f"unseen: 'drop' is for char vocabularies, got a {self.tokenizer} vocabulary")
        unseen = sorted({ch for ch in text if ch not in self.index})
        if warn and unseen:
            warnings.warn(f"{len(unseen)} character(s) unseen in training dropped: {unseen}", stacklevel=2)
        return "".join(ch for ch in text if ch in self.index).strip()

    def decode(self, ids: Iterable[int]) -> str:
        """Text up to the first <eos>; pad and bos are dropped."""
        return detokenize([self.tokens[i] for i in content_ids(ids)], self.tokenizer)

    def pieces(self, text: str) -> list[str]:
        """The tokens of text, for display (attention plots)."""
        return [token.removeprefix(JOINER) for token in tokenize(text, self.tokenizer, self.joiners)]

    def to_json(self) -> dict:
        return {"tokens": self.tokens, "tokenizer": self.tokenizer, "joiners": self.joiners}

    @classmethod
    def from_json(cls, data: dict) -> "Vocab":
        return cls(list(data["tokens"]), data["tokenizer"], bool(data.get("joiners", False)))
