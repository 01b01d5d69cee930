"""Small builders shared by the tests."""
import itertools

import numpy as np

from seq2seq_ref import ModelConfig, init_params, make_batch
from seq2seq_ref.gradcheck import relative_error
from seq2seq_ref.registry import CELLS, CONNECTIONS, DECODERS, ENCODERS

# Every registered component: a new cell, stack or connection is tested without anyone adding it here.
CELL_NAMES = tuple(CELLS)
ENCODER_NAMES = tuple(ENCODERS)
DECODER_NAMES = tuple(DECODERS)
ATTENTIONS = tuple(CONNECTIONS)

# What a stack may require, by the field its error names (a Transformer side: embed_dim = hidden_dim, an
# encoder that is not bidirectional, a decoder that accepts only a connection with heads).
_FITS = {"embed_dim": lambda fields: {"embed_dim": fields["hidden_dim"]},
         "bidirectional": lambda fields: {"bidirectional": False},
         "attention": lambda fields: {"attention": next(name for name, connection in CONNECTIONS.items()
                                                       if DECODERS[fields["decoder"]].accepts(connection))},
         "input_feeding": lambda fields: {"input_feeding": False}}


def grid(layers_and_directions=((1, False), (2, True)), **sizes):
    """(encoder, decoder, attention, layers, bidirectional) of every registered combination, fitted as
    config_with_heads fits them, each once."""
    seen = []
    for encoder, decoder, attention in itertools.product(ENCODER_NAMES, DECODER_NAMES, ATTENTIONS):
        for layers, bidirectional in layers_and_directions:
            c = config_with_heads(**sizes, num_layers=layers, bidirectional=bidirectional, attention=attention,
                                  encoder=encoder, decoder=decoder)
            variant = (c.encoder, c.decoder, c.attention, c.num_layers, c.bidirectional)
            if variant not in seen:
                seen.append(variant)
    return seen


def config_with_heads(heads=2, **fields) -> ModelConfig:
    """A ModelConfig of these fields with `heads` heads where something takes them (multi-head attention, a
    Transformer side), else one; a field that a chosen family cannot take is fitted to it (_FITS)."""
    for _ in range(len(_FITS) + 1):
        try:
            try:
                return ModelConfig(**fields, num_heads=heads)
            except ValueError:
                return ModelConfig(**fields)
        except ValueError as error:
            field = str(error).split(":")[0]
            if field not in _FITS:
                raise
            fields = {**fields, **_FITS[field](fields)}
    raise AssertionError(f"no config fits {fields}")


def ragged_batch(config: ModelConfig, rng, batch_size=3, src_len=5, tgt_len=4, src_width=None, tgt_width=None):
    src_lengths = rng.integers(1, src_len + 1, size=batch_size)
    tgt_lengths = rng.integers(0, tgt_len, size=batch_size)
    src = [rng.integers(3, config.src_vocab_size, size=n).tolist() for n in src_lengths]
    tgt = [rng.integers(3, config.tgt_vocab_size, size=n).tolist() for n in tgt_lengths]
    return make_batch(src, tgt, config, src_width=src_width, tgt_width=tgt_width)


def float64_params(config, seed=0, scale=0.3):
    rng = np.random.default_rng(seed)
    return {k: v + scale * rng.standard_normal(v.shape) for k, v in init_params(config, seed, np.float64).items()}


def assert_close_rel(analytic, numeric, bound, tiny=1e-5):
    err = float(np.max(relative_error(np.asarray(analytic), np.asarray(numeric), tiny)))
    assert err <= bound, f"max relative error {err:.3e} > {bound:.0e}"


def torch_loss_and_grads(model, batch):
    """The torch baseline's mean token loss on a Batch (float) and its gradients by flat name, after backward."""
    import torch

    from seq2seq_ref.batch import length_mask

    src, tgt_in, tgt_out = (torch.as_tensor(a) for a in (batch.src, batch.tgt_in, batch.tgt_out))
    tgt_mask = torch.as_tensor(length_mask(batch.tgt_lengths, batch.tgt_in.shape[1]), dtype=torch.float64)
    loss = model.loss(src, tgt_in, tgt_out, tgt_mask, batch.src_lengths)
    loss.backward()
    return loss.item(), model.flat_grads()
