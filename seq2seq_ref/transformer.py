"""The Transformer encoder stack (Vaswani et al. 2017), pre-LN, MATH.md (T5)-(T8).

    x_0 = √d · e + P                                  (T5) embeddings scaled, plus sinusoidal positions (T1)
    x ← x + drop(SelfAttn(LN_1(x)))                    (T6) each block l, key-padding mask
    x ← x + drop(FFN(LN_2(x)))                         (T7)
    keys = LN_f(x);   h = Σ_s m_s keys_s / n           (T8) final norm; the bridge state is the masked mean

Width d = hidden_dim = embed_dim.  The blocks run over every position of every
row at once (no loop over batch, heads or time); padded positions are computed
but no query ever attends to them.
"""
from __future__ import annotations

import math

import numpy as np

from .components import EncoderStack
from .layers import dropout_backward, dropout_forward
from .transformer_layers import (
    ATTENTION, FFN, attention_mask, block_params, check_width, feed_forward_backward, feed_forward_forward,
    init_block_param, layer_norm_backward, layer_norm_forward, segment_mask, segment_positions,
    self_attention_backward, self_attention_forward, sinusoidal_positions, sublayer_param_shapes,
)


def block_param_shapes(d: int, ffn_dim: int) -> dict[str, tuple[int, ...]]:
    """One pre-LN encoder block's parameters by suffix."""
    return sublayer_param_shapes(d, ffn_dim, {"attn": d}, norms=2)


def block_forward(x, mask, p, num_heads, keep):
    """(T6)-(T7) one pre-LN block.

    x: [B, S, d]; mask: bool[B, 1, S, S]; p: the block's parameters by suffix;
    keep: dropout keep masks {"weights": [B, heads, S, S], "attn": [B, S, d], "ffn": [B, S, d]} (entries may
    be missing).  Returns the block's output [B, S, d] and the cache.
    """
    a, ln_1 = layer_norm_forward(x, p["ln_1/gamma"], p["ln_1/beta"])
    s, attn = self_attention_forward(a, mask, *(p[f"attn/{n}"] for n in ATTENTION), num_heads, keep.get("weights"))
    x = x + dropout_forward(s, keep.get("attn"))                                           # (T6)
    b, ln_2 = layer_norm_forward(x, p["ln_2/gamma"], p["ln_2/beta"])
    f, ffn = feed_forward_forward(b, *(p[f"ffn/{n}"] for n in FFN))
    return x + dropout_forward(f, keep.get("ffn")), (ln_1, attn, ln_2, ffn, keep)          # (T7)


def block_backward(dy, cache):
    """(T7'), (T6'): a residual sum passes its gradient to both terms.  Returns dx and the gradients by suffix."""
    ln_1, attn, ln_2, ffn, keep = cache
    grads = {}
    df = dropout_backward(dy, keep.get("ffn"))
    db, *ffn_grads = feed_forward_backward(df, ffn)
    dx_2, grads["ln_2/gamma"], grads["ln_2/beta"] = layer_norm_backward(db, ln_2)
    dx = dy + dx_2                                                                         # (T7')
    ds = dropout_backward(dx, keep.get("attn"))
    da, *attn_grads = self_attention_backward(ds, attn)
    dx_1, grads["ln_1/gamma"], grads["ln_1/beta"] = layer_norm_backward(da, ln_1)
    grads.update({f"ffn/{n}": g for n, g in zip(FFN, ffn_grads)})
    grads.update({f"attn/{n}": g for n, g in zip(ATTENTION, attn_grads)})
    return dx + dx_1, grads                                                                # (T6')


def _keep_masks(dropout_masks, layer):
    return {part: dropout_masks[f"encoder/l{layer}/{part}"] for part in ("weights", "attn", "ffn")
            if f"encoder/l{layer}/{part}" in dropout_masks}


def transformer_encoder_forward(x, lengths, params, config, dropout_masks, segments=None):
    """x: [B, S, d] embedded source (dropout applied); lengths: int[B]; segments: int[B, S] of a packed batch
    (several sentences per row, (T14)), or None.

    Returns keys [B, S, d], the bridge states (L tuples (h,), h [B, d] the masked mean (T8)) and the cache.
    """
    B, S, d = x.shape
    # math.sqrt, a Python float, keeps x's dtype; np.sqrt's float64 scalar would promote float32 to float64
    if segments is None:
        h = math.sqrt(d) * x + sinusoidal_positions(S, d, x.dtype)                        # (T5)
        mask = attention_mask(lengths, S, causal=False)
    else:  # (T14) positions restart in each sentence, which attends to itself only
        h = math.sqrt(d) * x + sinusoidal_positions(S, d, x.dtype)[segment_positions(segments)]
        mask = segment_mask(segments, segments, causal=False)
    caches = []
    for layer in range(config.num_layers):
        h, cache = block_forward(h, mask, block_params(params, f"encoder/l{layer}/"), config.num_heads,
                                 _keep_masks(dropout_masks, layer))
        caches.append(cache)
    keys, ln_f = layer_norm_forward(h, params["encoder/ln_f/gamma"], params["encoder/ln_f/beta"])
    weights = (np.arange(S)[None, :] < lengths[:, None]).astype(x.dtype) / lengths[:, None].astype(x.dtype)  # (T8)
    mean = np.einsum("bs,bsd->bd", weights, keys)
    return keys, [(mean,)] * config.num_layers, (caches, ln_f, weights, d)


def transformer_encoder_backward(dkeys, dstates, cache):
    """dkeys: [B, S, d]; dstates: L tuples (dh,).  Returns dx [B, S, E] and the encoder's parameter gradients."""
    caches, ln_f, weights, d = cache
    if dstates is not None:  # None: the decoder took no state
        dmean = sum(dstate[0] for dstate in dstates)                                       # every layer got h
        dkeys = dkeys + weights[..., None] * dmean[:, None, :]                             # (T8')
    grads = {}
    dh, grads["encoder/ln_f/gamma"], grads["encoder/ln_f/beta"] = layer_norm_backward(dkeys, ln_f)
    for layer in reversed(range(len(caches))):
        dh, block_grads = block_backward(dh, caches[layer])
        grads.update({f"encoder/l{layer}/{suffix}": g for suffix, g in block_grads.items()})
    return math.sqrt(d) * dh, grads                                                        # (T5')


class TransformerEncoder(EncoderStack):
    """The Transformer as an EncoderStack: its bridge state is one entry, h (T8)."""

    name = "transformer"
    state_names = ("h",)
    one_width = True
    uses_heads = True
    uses_positions = True
    packs = True

    def check_config(self, config):
        check_width(config, "encoder")
        if config.bidirectional:
            raise ValueError(f"bidirectional: expected False with encoder={config.encoder!r} (self-attention "
                             f"already reads both ways), got True")

    def param_shapes(self, config):
        shapes = {}
        for layer in range(config.num_layers):
            for suffix, shape in block_param_shapes(config.hidden_dim, config.inner_dim).items():
                shapes[f"encoder/l{layer}/{suffix}"] = shape
        shapes.update({"encoder/ln_f/gamma": (config.hidden_dim,), "encoder/ln_f/beta": (config.hidden_dim,)})
        return shapes

    def init_param(self, name, shape, config, rng):
        return init_block_param(name, shape, rng)

    def dropout_shapes(self, config, B, S):
        """(D1) on the attention weights and on both residual branches of every block."""
        shapes = {}
        for layer in range(config.num_layers):
            shapes[f"encoder/l{layer}/weights"] = (B, config.num_heads, S, S)
            shapes[f"encoder/l{layer}/attn"] = (B, S, config.hidden_dim)
            shapes[f"encoder/l{layer}/ffn"] = (B, S, config.hidden_dim)
        return shapes

    def forward(self, x, lengths, params, config, dropout_masks, segments=None):
        return transformer_encoder_forward(x, lengths, params, config, dropout_masks, segments)

    def backward(self, dkeys, dstates, cache):
        return transformer_encoder_backward(dkeys, dstates, cache)

    def matmul_flops(self, config, batch, src_len):
        """Per block, (T4) the Q, K, V, O projections (2 B S d^2 each) and the two quadratic products, scores
        Q K^T and context alpha V (2 B S S d each); (T7) the feed-forward network 2 * 2 B S d F."""
        B, S, d, F = batch, src_len, config.hidden_dim, config.inner_dim
        return config.num_layers * (4 * 2 * B * S * d * d + 2 * 2 * B * S * S * d + 2 * 2 * B * S * d * F)
