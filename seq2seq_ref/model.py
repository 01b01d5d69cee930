"""The whole model: forward to the loss, backward to every parameter.

forward -> (loss, cache) and backward(cache) -> grads can be stepped through in
a debugger next to MATH.md; loss_and_grads validates inputs and runs both.
"""
from __future__ import annotations

import numpy as np

from .batch import Batch, length_mask
from .config import ModelConfig
from .layers import (
    affine_backward,
    affine_forward,
    dropout_backward,
    dropout_forward,
    embedding_backward,
    embedding_forward,
    softmax_cross_entropy,
)
from .params import tie_grads, tied_views
from .registry import CONNECTIONS, DECODERS, ENCODERS
from .validation import check_batch, check_config, check_dropout_rng, check_params


def dropout_mask_shapes(config: ModelConfig, batch: Batch) -> dict[str, tuple[int, ...]]:
    """Where dropout applies (D1): embeddings, inputs of layers >= 1, output features."""
    (B, S), T = batch.src.shape, batch.tgt_in.shape[1]
    shapes = {"src_embed": (B, S, config.embed_dim), "tgt_embed": (B, T, config.embed_dim)}
    shapes.update(ENCODERS[config.encoder].dropout_shapes(config, B, S))
    shapes.update(DECODERS[config.decoder].dropout_shapes(config, B, S, T))
    shapes["output"] = (B, T, config.output_dim)
    return shapes


def make_dropout_masks(config: ModelConfig, batch: Batch, dtype, dropout_rng) -> dict[str, np.ndarray]:
    """Inverted-dropout keep masks (0 or 1/(1-p)), drawn in a fixed order; {} when dropout is 0."""
    check_dropout_rng(config, dropout_rng)
    if config.dropout == 0.0:
        return {}
    rng = np.random.default_rng(dropout_rng)
    keep = 1.0 - config.dropout
    return {
        name: ((rng.random(shape) < keep) / keep).astype(dtype)
        for name, shape in dropout_mask_shapes(config, batch).items()
    }


def forward(params, config: ModelConfig, batch: Batch, dropout_rng=None):
    """Teacher-forced forward pass to the mean token loss; no validation (see loss_and_grads).

    Returns loss (a scalar of the params' dtype) and the cache for backward.
    """
    dtype = params["output/b"].dtype
    params = tied_views(params, config)  # (W1)
    masks = make_dropout_masks(config, batch, dtype, dropout_rng)
    features, _, caches = _features(params, config, batch, masks)
    features = dropout_forward(features, masks.get("output"))
    logits, output_cache = affine_forward(features, params["output/W"], params["output/b"])  # (O1)
    tgt_mask = length_mask(batch.tgt_lengths, batch.tgt_in.shape[1])
    loss, dlogits = softmax_cross_entropy(logits, batch.tgt_out, tgt_mask, config.label_smoothing)  # (O2)
    cache = (config, masks, *caches, output_cache, dlogits)
    return loss, cache


def attention(params, config: ModelConfig, batch: Batch, heads: bool = False):
    """The attention weights of the teacher-forced decoder (no dropout): which source positions each target
    step reads, as the decoder's forward gives them.

    batch: the sources and the outputs to explain (tgt_in = <bos> output).
    heads=False: alpha [B, T, S], the weights decoding reports (a Transformer decoder's: its last block's
    cross-attention averaged over heads; a multi-head connection's: averaged over heads).
    heads=True: [B, L, H, T, S], every block's (L: the Transformer decoder's blocks, else 1) and every head's
    (H: num_heads for multi-head attention, else 1) weights.
    Rows: those of tgt_in (row t is the step that predicts tgt_out[:, t]).  None for a connection without
    weights.
    """
    _, alpha, caches = _features(tied_views(params, config), config, batch, {})
    if not heads:
        return alpha
    return DECODERS[config.decoder].head_weights(alpha, caches[3])


def attention_layout(config: ModelConfig) -> tuple[int, int] | None:
    """(L, H): the blocks and heads of attention(..., heads=True)'s weights [B, L, H, T, S]; None for a model
    without attention weights."""
    decoder, connection = DECODERS[config.decoder], CONNECTIONS[config.attention]
    if not decoder.uses_connection:  # it reads the source through each block's own multi-head attention
        return config.num_layers, config.num_heads
    if not connection.has_weights:
        return None
    return 1, config.num_heads if connection.uses_heads else 1


def _features(params, config: ModelConfig, batch: Batch, masks: dict):
    """Embeddings, encoder, bridge and decoder: the decoder's features [B, T, F], its attention weights and the
    caches of each part."""
    src_mask = length_mask(batch.src_lengths, batch.src.shape[1])
    encoder, decoder = ENCODERS[config.encoder], DECODERS[config.decoder]
    x, src_embed_cache = embedding_forward(batch.src, params["src_embed/W"])            # (E1)
    x = dropout_forward(x, masks.get("src_embed"))
    packed = batch.src_segments is not None  # (T14) several sentences per row
    keys, final_states, encoder_cache = encoder.forward(x, batch.src_lengths, params, config, masks,
                                                        batch.src_segments)
    init_states = decoder.initial_states(final_states, encoder.state_names, config)   # (B3)
    y, tgt_embed_cache = embedding_forward(batch.tgt_in, params["tgt_embed/W"])         # (E1)
    y = dropout_forward(y, masks.get("tgt_embed"))
    features, alpha, decoder_cache = decoder.forward(
        y, batch.tgt_lengths, init_states, keys, src_mask, params, config, masks,
        (batch.src_segments, batch.tgt_segments) if packed else None
    )
    return features, alpha, (src_embed_cache, encoder_cache, tgt_embed_cache, decoder_cache)


def backward(cache, dloss=1.0):
    """Gradients of dloss * loss for every parameter: a dict with the params' names (a tied matrix's summed (W1'))."""
    config, masks, src_embed_cache, encoder_cache, tgt_embed_cache, decoder_cache, output_cache, dlogits = cache
    grads = {}
    dlogits = dlogits * dlogits.dtype.type(dloss)  # in the loss's dtype, whatever scalar type dloss has
    encoder, decoder = ENCODERS[config.encoder], DECODERS[config.decoder]
    dfeatures, grads["output/W"], grads["output/b"] = affine_backward(dlogits, output_cache)  # (O1')
    dfeatures = dropout_backward(dfeatures, masks.get("output"))
    dy, dinit_states, dkeys, decoder_grads = decoder.backward(dfeatures, decoder_cache)
    dy = dropout_backward(dy, masks.get("tgt_embed"))
    grads["tgt_embed/W"] = embedding_backward(dy, tgt_embed_cache)
    dfinal_states = None if dinit_states is None else decoder.initial_states_backward(
        dinit_states, encoder.state_names, config)                                      # (B3')
    dx, encoder_grads = encoder.backward(dkeys, dfinal_states, encoder_cache)
    dx = dropout_backward(dx, masks.get("src_embed"))
    grads["src_embed/W"] = embedding_backward(dx, src_embed_cache)
    grads.update(decoder_grads)
    grads.update(encoder_grads)
    return tie_grads(grads, config)  # (W1')


def loss_and_grads(params, config: ModelConfig, batch: Batch, dropout_rng=None):
    """Mean cross-entropy over real target tokens and its gradient.

    params: the flat dict of init_params; config: ModelConfig; batch: Batch
    dropout_rng: seed or numpy Generator, required when config.dropout > 0
    Returns (loss, grads), grads with the params' names, shapes and dtype.
    """
    check_config(config)
    dtype = check_params(params, config)
    batch = check_batch(batch, config)
    loss, cache = forward(params, config, batch, dropout_rng)  # forward checks dropout_rng before computing
    grads = backward(cache)
    return dtype.type(loss), {name: grads[name].astype(dtype, copy=False) for name in params}
