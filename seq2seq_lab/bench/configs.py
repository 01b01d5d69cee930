"""Benchmark sizes, and their analytic FLOP counts (derived in benchmarks/README.md)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from seq2seq_ref import ModelConfig


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

    def model(self, attention: str) -> ModelConfig:
        return ModelConfig(self.vocab, self.vocab, self.embed, self.hidden, self.layers, self.bidirectional, attention)

    def replace(self, **changes) -> "BenchConfig":
        return dataclasses.replace(self, **changes)


CONFIGS = {
    # the seed article's Keras example
    "seed": BenchConfig("seed", batch=64, embed=128, hidden=256, vocab=256, src_len=100, tgt_len=100),
    "small": BenchConfig("small", batch=32, embed=64, hidden=128, vocab=256, src_len=20, tgt_len=20),
    # for accelerators
    "large": BenchConfig("large", batch=256, embed=512, hidden=1024, vocab=256, src_len=50, tgt_len=50, layers=2),
    # for the test suite: the harness end to end in a second
    "tiny": BenchConfig("tiny", batch=4, embed=8, hidden=8, vocab=16, src_len=5, tgt_len=4),
}


def lstm_step_flops(batch: int, input_dim: int, hidden: int) -> int:
    """(1): x W_x and h W_h for one step, 2 FLOPs per multiply-add."""
    return 2 * batch * (input_dim + hidden) * 4 * hidden


def forward_flops(c: BenchConfig, attention: str, decode_steps: int | None = None) -> int:
    """Matrix-multiply FLOPs of one forward pass (elementwise work is left out; it is O(1/H) of this)."""
    B, E, H, V, S = c.batch, c.embed, c.hidden, c.vocab, c.src_len
    T = c.tgt_len if decode_steps is None else decode_steps
    dirs = 2 if c.bidirectional else 1
    K, A = H * dirs, H
    encoder = sum(S * dirs * lstm_step_flops(B, E if l == 0 else K, H) for l in range(c.layers))
    decoder_input = E + (K if attention == "bahdanau" else 0)
    decoder = sum(T * lstm_step_flops(B, decoder_input if l == 0 else H, H) for l in range(c.layers))
    if attention == "bahdanau":
        # (A0) once; per step (A1) query projection, (A2) scores, (A4) context
        attend = 2 * B * S * K * A + T * (2 * B * H * A + 2 * B * S * A + 2 * B * S * K)
    elif attention == "luong":
        # (L1) s W_a and scores, (L3) context, (L4) [ctx; s] W_c
        attend = T * (2 * B * H * K + 2 * B * S * K + 2 * B * S * K + 2 * B * (K + H) * H)
    else:
        attend = 0
    output = 2 * B * T * H * V
    return encoder + decoder + attend + output


def train_step_flops(c: BenchConfig, attention: str) -> int:
    """Forward + backward (each matrix product of the forward has two in the backward: 2x) = 3x forward."""
    return 3 * forward_flops(c, attention)
