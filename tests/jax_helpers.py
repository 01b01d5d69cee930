"""Hypothesis strategies for the agreement suite."""
import dataclasses

import numpy as np
from hypothesis import strategies as st

from seq2seq_ref import init_params, make_batch
from tests.helpers import ATTENTIONS, DECODER_NAMES, ENCODER_NAMES, config_with_heads


@st.composite
def agreement_problems(draw, dtype=np.float64, encoder=None, tie=True):
    """A random config (vocabularies 3-50, embed/hidden 1-32, 1-2 layers, both directions, every
    registered encoder family (or the one given), decoder family and connection, fitted as config_with_heads
    fits them, and with tie: tied embeddings where they fit), random float params and a ragged batch
    (1-8 rows, lengths 1-12)."""
    hidden_dim = draw(st.integers(1, 32))
    config = config_with_heads(
        heads=draw(st.sampled_from([h for h in range(1, hidden_dim + 1) if hidden_dim % h == 0])),
        src_vocab_size=draw(st.integers(3, 50)), tgt_vocab_size=draw(st.integers(3, 50)),
        embed_dim=draw(st.integers(1, 32)), hidden_dim=hidden_dim,
        num_layers=draw(st.integers(1, 2)), bidirectional=draw(st.booleans()),
        attention=draw(st.sampled_from(ATTENTIONS)),
        encoder=encoder or draw(st.sampled_from(ENCODER_NAMES)), decoder=draw(st.sampled_from(DECODER_NAMES)),
    )
    for option in (dict(output_from="state+context+input"), dict(input_feeding=True)):  # where they apply
        if draw(st.booleans()):
            try:
                config = dataclasses.replace(config, **option)
            except ValueError:
                pass
    seed = draw(st.integers(0, 2**31 - 1))
    tie = ("none", "none", "target", "all")[seed % 4] if tie else "none"  # from the seed: earlier draws stay
    if tie != "none":  # (W1) where the output width can be the embedding width (not with the deep output)
        vocab = dict(src_vocab_size=config.tgt_vocab_size) if tie == "all" else {}
        try:
            config = dataclasses.replace(config, embed_dim=config.output_dim, tie_embeddings=tie, **vocab)
        except ValueError:
            pass
    rng = np.random.default_rng(seed)
    batch_size = draw(st.integers(1, 8))
    src_lengths = rng.integers(1, 13, size=batch_size)
    tgt_lengths = rng.integers(0, 12, size=batch_size)  # + EOS: 1..12 decoder steps
    src = [rng.integers(0, config.src_vocab_size, size=n).tolist() for n in src_lengths]
    tgt = [rng.integers(3, config.tgt_vocab_size, size=n).tolist() if config.tgt_vocab_size > 3 else [0] * n
           for n in tgt_lengths]
    batch = make_batch(src, tgt, config)
    params = {k: (v + 0.5 * rng.standard_normal(v.shape)).astype(dtype)
              for k, v in init_params(config, seed, np.float64).items()}
    return config, params, batch
