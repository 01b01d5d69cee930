"""Benchmark sizes, and their analytic FLOP counts (derived in benchmarks/README.md)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from seq2seq_ref import ModelConfig
from seq2seq_ref.registry import CELLS


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
        """The model of one benchmark point: `cell` on both sides, `heads` heads where attention is multi-head.

        A family with its own stack (the Transformer) has one width d = hidden for embeddings and blocks, the
        heads of multi-head attention in its blocks, no second direction, and positions up to the lengths.
        """
        own_stack = CELLS[cell].own_encoder
        heads = (self.heads or default_heads(self.hidden)) if attention == "multihead" or own_stack else 1
        if CELLS[cell].own_decoder and attention != "multihead":
            raise ValueError(f"attention: expected 'multihead' with cell {cell!r}, whose decoder blocks read the "
                             f"encoder by multi-head cross-attention, got {attention!r}")
        return ModelConfig(src_vocab_size=self.vocab, tgt_vocab_size=self.vocab,
                           embed_dim=self.hidden if own_stack else self.embed, hidden_dim=self.hidden,
                           num_layers=self.layers, bidirectional=self.bidirectional and not own_stack,
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
    # for the test suite: the harness end to end in a second
    "tiny": BenchConfig("tiny", batch=4, embed=8, hidden=8, vocab=16, src_len=5, tgt_len=4),
}


def default_heads(hidden: int) -> int:
    """4 heads, or the largest divisor of hidden below 4."""
    return next(n for n in (4, 3, 2, 1) if hidden % n == 0)


def gate_blocks(cell: str) -> int:
    """Gate blocks of width H in one step's matrix products: 4 for the LSTM (i, f, g, o), 3 for the GRU (r, z, n)."""
    return CELLS[cell].param_shapes(1, 1)["W_h"][1]


def cell_step_flops(batch: int, input_dim: int, hidden: int, cell: str = "lstm") -> int:
    """(1) / (G1)-(G3): x W_x and h W_h for one step, 2 FLOPs per multiply-add.

    The GRU's r * (h W_hn + b_hn) and the gate math are elementwise: left out, as for the LSTM.
    """
    return 2 * batch * (input_dim + hidden) * gate_blocks(cell) * hidden


def transformer_forward_flops(c: BenchConfig, decode_steps: int | None = None) -> int:
    """Matrix-multiply FLOPs of one forward pass of a Transformer on both sides (benchmarks/README.md).

    Per block, (T4) attention: the Q, K, V, O projections (2 B n d^2 each over n positions) and the two
    quadratic products, scores Q K^T and context alpha V (2 B n m d each, n queries over m keys); (T7) the
    feed-forward network 2 * 2 B n d F.  Training computes the whole causal T x T score matrix (masked
    entries included); decoding with a key/value cache has position t attend to t keys only.
    """
    B, d, V, S, L = c.batch, c.hidden, c.vocab, c.src_len, c.layers
    F = c.ffn or 4 * d
    T = c.tgt_len if decode_steps is None else decode_steps
    self_pairs = T * T if decode_steps is None else T * (T + 1) // 2
    encoder = L * (4 * 2 * B * S * d * d + 2 * 2 * B * S * S * d + 2 * 2 * B * S * d * F)
    decoder = L * (4 * 2 * B * T * d * d + 2 * 2 * B * self_pairs * d             # (T10) causal self-attention
                   + 2 * 2 * B * T * d * d + 2 * 2 * B * S * d * d + 2 * 2 * B * T * S * d  # (T11) cross: Q, O; K, V
                   + 2 * 2 * B * T * d * F)                                        # (T12)
    return encoder + decoder + 2 * B * T * d * V


def forward_flops(c: BenchConfig, attention: str, decode_steps: int | None = None, cell: str = "lstm") -> int:
    """Matrix-multiply FLOPs of one forward pass (elementwise work is left out; it is O(1/H) of this)."""
    if CELLS[cell].own_encoder:
        return transformer_forward_flops(c, decode_steps)
    B, E, H, V, S = c.batch, c.embed, c.hidden, c.vocab, c.src_len
    T = c.tgt_len if decode_steps is None else decode_steps
    dirs = 2 if c.bidirectional else 1
    K, A = H * dirs, H
    encoder = sum(S * dirs * cell_step_flops(B, E if l == 0 else K, H, cell) for l in range(c.layers))
    decoder_input = E + (K if attention == "bahdanau" else 0)
    decoder = sum(T * cell_step_flops(B, decoder_input if l == 0 else H, H, cell) for l in range(c.layers))
    if attention == "bahdanau":
        # (A0) once; per step (A1) query projection, (A2) scores, (A4) context
        attend = 2 * B * S * K * A + T * (2 * B * H * A + 2 * B * S * A + 2 * B * S * K)
    elif attention == "luong":
        # (L1) s W_a and scores, (L3) context, (L4) [ctx; s] W_c
        attend = T * (2 * B * H * K + 2 * B * S * K + 2 * B * S * K + 2 * B * (K + H) * H)
    elif attention == "multihead":
        # (M0) once: keys W_k and keys W_v; per step (M1) s W_q, (M2) scores and (M4) context (heads x d = H
        # wide in all), (M5) heads W_o, (M6) [o; s] W_c
        attend = 2 * (2 * B * S * K * H) + T * (2 * B * H * H + 2 * B * S * H + 2 * B * S * H + 2 * B * H * H
                                                + 2 * B * 2 * H * H)
    elif attention == "none":
        attend = 0
    else:  # a new connection must state its cost: never time it at 0 FLOPs silently
        raise ValueError(f"attention: no FLOP count for {attention!r} in seq2seq_lab/bench/configs.py")
    output = 2 * B * T * H * V
    return encoder + decoder + attend + output


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
