"""Benchmark sizes, and their analytic FLOP counts (derived in benchmarks/README.md)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from seq2seq_ref import ModelConfig
from seq2seq_ref.components import one_of
from seq2seq_ref.registry import CONNECTIONS, DECODERS, ENCODERS


@dataclass(frozen=True)
class BenchConfig:
    name: str
    batch: int
    embed: int
    hidden: int
    vocab: int
    src_len: int
    tgt_len: int
    layers: int = 1
    bidirectional: bool = False
    heads: int | None = None  # multi-head attention's heads; None: default_heads(hidden)
    ffn: int | None = None  # a Transformer block's feed-forward width; None: 4 * hidden

    def model(self, attention: str, cell: str = "lstm") -> ModelConfig:
        """The model of one benchmark point: the stacks named `cell` on both sides, `heads` heads where the
        connection or a stack has heads.

        A stack of one width (the Transformer) has embeddings as wide as its layers (d = hidden); a stack
        without a second direction runs one; positions reach the lengths.
        """
        encoder, decoder, connection = ENCODERS[cell], DECODERS[cell], CONNECTIONS[attention]
        one_width = encoder.one_width or decoder.one_width
        heads = self.heads or default_heads(self.hidden)
        if not (connection.uses_heads or encoder.uses_heads or decoder.uses_heads):
            heads = 1
        if not decoder.accepts(connection):
            accepted = [name for name, c in CONNECTIONS.items() if decoder.accepts(c)]
            raise ValueError(f"attention: expected {one_of(accepted)} with cell {cell!r}, got {attention!r}")
        return ModelConfig(src_vocab_size=self.vocab, tgt_vocab_size=self.vocab,
                           embed_dim=self.hidden if one_width else self.embed, hidden_dim=self.hidden,
                           num_layers=self.layers, bidirectional=self.bidirectional and encoder.has_directions,
                           attention=attention, encoder=cell, decoder=cell, num_heads=heads, ffn_dim=self.ffn,
                           max_positions=max(512, self.src_len, self.tgt_len))

    def replace(self, **changes) -> "BenchConfig":
        return dataclasses.replace(self, **changes)


CONFIGS = {
    # the seed article's Keras example
    "seed": BenchConfig("seed", batch=64, embed=128, hidden=256, vocab=256, src_len=100, tgt_len=100),
    "small": BenchConfig("small", batch=32, embed=64, hidden=128, vocab=256, src_len=20, tgt_len=20),
    # for accelerators
    "large": BenchConfig("large", batch=256, embed=512, hidden=1024, vocab=256, src_len=50, tgt_len=50, layers=2),
    # the Multi30k LSTM recipe's step (recipes/de-en-lstm.toml): a bidirectional encoder, 6,000 pieces, the
    # widths of a typical bucketed batch
    "lstm-recipe": BenchConfig("lstm-recipe", batch=128, embed=256, hidden=256, vocab=6000, src_len=20, tgt_len=16,
                            bidirectional=True),
    # for the test suite: the harness end to end in a second
    "tiny": BenchConfig("tiny", batch=4, embed=8, hidden=8, vocab=16, src_len=5, tgt_len=4),
}


def default_heads(hidden: int) -> int:
    """4 heads, or the largest divisor of hidden below 4."""
    return next(n for n in (4, 3, 2, 1) if hidden % n == 0)


def forward_flops(c: BenchConfig, attention: str, decode_steps: int | None = None, cell: str = "lstm") -> int:
    """Matrix-multiply FLOPs of one forward pass: each stack's count and its connection's (their matmul_flops,
    derived in benchmarks/README.md), and the output layer's; elementwise work is left out (O(1/H) of this).
    decode_steps: that many positions decoded one at a time (a cache of positions attends to the prefix only).

    A connection that states no count is refused: never timed at 0 FLOPs.
    """
    if attention not in CONNECTIONS:
        raise ValueError(f"attention: expected one of {tuple(CONNECTIONS)}, got {attention!r}")
    config = c.model(attention, cell)
    T = c.tgt_len if decode_steps is None else decode_steps
    try:
        encoder = ENCODERS[cell].matmul_flops(config, c.batch, c.src_len)
        decoder = DECODERS[cell].matmul_flops(config, c.batch, c.src_len, T, decoding=decode_steps is not None)
    except NotImplementedError:
        raise ValueError(f"attention: no FLOP count for {attention!r} with cell {cell!r} (its matmul_flops)") from None
    return encoder + decoder + 2 * c.batch * T * config.output_dim * c.vocab


def train_step_flops(c: BenchConfig, attention: str, cell: str = "lstm") -> int:
    """Forward + backward (each matrix product of the forward has two in the backward: 2x) = 3x forward."""
    return 3 * forward_flops(c, attention, cell=cell)


def beam_search_flops(c: BenchConfig, attention: str, beam: int, cell: str = "lstm") -> int:
    """Matrix-multiply FLOPs of beam search for tgt_len steps: the source work once per sentence (the
    encoder, and what the decoder derives from it once: the T = 0 count), the per-step work for beam * batch
    hypotheses."""
    per_sentence = forward_flops(c.replace(tgt_len=0), attention, cell=cell)
    hypotheses = c.replace(batch=c.batch * beam)
    return per_sentence + forward_flops(hypotheses, attention, cell=cell) - forward_flops(
        hypotheses.replace(tgt_len=0), attention, cell=cell)
