"""The Transformer decoder (Vaswani et al. 2017), pre-LN, MATH.md (T9)-(T13).

    y_0 = √d · e + P                                   (T9)  embedded target (teacher-forced) plus positions
    y ← y + drop(SelfAttn(LN_1(y)))                     (T10) causal: position t sees positions ≤ t
    y ← y + drop(CrossAttn(LN_2(y), keys))              (T11) the encoder's annotations, source padding masked
    y ← y + drop(FFN(LN_3(y)))                          (T12) each block l
    f = LN_f(y)                                         (T13) the features the output layer reads

Training runs every position at once.  Decoding (transformer_decoder_step)
runs one position per step: its state is each block's self-attention keys and
values of the prefix, and the cross-attention's keys and values are projected
once per sentence (transformer_decoder_memory), as in the JAX twin.
"""
from __future__ import annotations

import math

import numpy as np

from .components import DecoderStack, Memory, one_of
from .connections import CONNECTIONS
from .layers import dropout_backward, dropout_forward
from .connections.multihead import split_heads
from .ops import linear
from .transformer_layers import (
    ATTENTION, FFN, attention_backward, attention_forward, attention_over, attention_cache_weights, block_params, check_width,
    feed_forward_backward, feed_forward_forward, init_block_param, layer_norm_backward, layer_norm_forward,
    segment_mask, segment_positions, self_attention_backward, self_attention_forward, sinusoidal_positions,
    sublayer_param_shapes,
)

PARTS = ("self_weights", "self", "cross_weights", "cross", "ffn")  # its dropout places


def decoder_block_param_shapes(d: int, key_dim: int, ffn_dim: int) -> dict[str, tuple[int, ...]]:
    """One pre-LN decoder block's parameters by suffix; the cross-attention's keys and values read width K."""
    return sublayer_param_shapes(d, ffn_dim, {"self": d, "cross": key_dim}, norms=3)


def decoder_block_forward(y, keys, causal, src_mask, p, num_heads, keep):
    """(T10)-(T12) one block.

    y: [B, T, d]; keys: [B, S, K]; causal: bool[1, 1, T, T]; src_mask: bool[B, 1, 1, S];
    keep: dropout keep masks by PARTS (entries may be missing).
    Returns the block's output [B, T, d], the cross-attention weights [B, heads, T, S] and the cache.
    """
    a, ln_1 = layer_norm_forward(y, p["ln_1/gamma"], p["ln_1/beta"])
    s, self_cache = self_attention_forward(a, causal, *(p[f"self/{n}"] for n in ATTENTION), num_heads,
                                           keep.get("self_weights"))
    y = y + dropout_forward(s, keep.get("self"))                                           # (T10)
    b, ln_2 = layer_norm_forward(y, p["ln_2/gamma"], p["ln_2/beta"])
    c, alpha, cross_cache = attention_forward(b, keys, src_mask, *(p[f"cross/{n}"] for n in ATTENTION),
                                              num_heads, keep.get("cross_weights"))
    y = y + dropout_forward(c, keep.get("cross"))                                          # (T11)
    g, ln_3 = layer_norm_forward(y, p["ln_3/gamma"], p["ln_3/beta"])
    f, ffn = feed_forward_forward(g, *(p[f"ffn/{n}"] for n in FFN))
    y = y + dropout_forward(f, keep.get("ffn"))                                            # (T12)
    return y, alpha, (ln_1, self_cache, ln_2, cross_cache, ln_3, ffn, keep)


def decoder_block_backward(dy, cache):
    """(T12')-(T10'): each residual sum passes its gradient to both terms.  Returns dy_in, dkeys, grads."""
    ln_1, self_cache, ln_2, cross_cache, ln_3, ffn, keep = cache
    grads = {}
    dg, *ffn_grads = feed_forward_backward(dropout_backward(dy, keep.get("ffn")), ffn)
    dy_3, grads["ln_3/gamma"], grads["ln_3/beta"] = layer_norm_backward(dg, ln_3)
    dy = dy + dy_3                                                                         # (T12')
    db, dkeys, *cross_grads = attention_backward(dropout_backward(dy, keep.get("cross")), cross_cache)
    dy_2, grads["ln_2/gamma"], grads["ln_2/beta"] = layer_norm_backward(db, ln_2)
    dy = dy + dy_2                                                                         # (T11')
    da, *self_grads = self_attention_backward(dropout_backward(dy, keep.get("self")), self_cache)
    dy_1, grads["ln_1/gamma"], grads["ln_1/beta"] = layer_norm_backward(da, ln_1)
    grads.update({f"ffn/{n}": g for n, g in zip(FFN, ffn_grads)})
    grads.update({f"cross/{n}": g for n, g in zip(ATTENTION, cross_grads)})
    grads.update({f"self/{n}": g for n, g in zip(ATTENTION, self_grads)})
    return dy + dy_1, dkeys, grads                                                         # (T10')


def transformer_decoder_forward(y, keys, src_mask, params, config, dropout_masks, segments=None):
    """y: [B, T, d] embedded tgt_in (dropout applied); keys: [B, S, K]; src_mask: bool[B, S]; segments: a
    packed batch's (source int[B, S], target int[B, T]) segment ids ((T14): the k-th target sentence of a row
    reads the k-th source sentence), or None.

    Returns features [B, T, d], the last block's cross-attention weights averaged over heads [B, T, S] and
    the cache.
    """
    B, T, d = y.shape
    if segments is None:
        x = math.sqrt(d) * y + sinusoidal_positions(T, d, y.dtype)                        # (T9) as (T5)
        causal = np.tril(np.ones((T, T), dtype=bool))[None, None]
        source = src_mask[:, None, None, :]
    else:
        src_segments, tgt_segments = segments
        x = math.sqrt(d) * y + sinusoidal_positions(T, d, y.dtype)[segment_positions(tgt_segments)]  # (T14)
        causal = segment_mask(tgt_segments, tgt_segments, causal=True)
        source = segment_mask(tgt_segments, src_segments, causal=False)
    caches = []
    for layer in range(config.num_layers):
        keep = {part: dropout_masks[f"decoder/l{layer}/{part}"] for part in PARTS
                if f"decoder/l{layer}/{part}" in dropout_masks}
        x, alpha, cache = decoder_block_forward(x, keys, causal, source, block_params(params, f"decoder/l{layer}/"),
                                                config.num_heads, keep)
        caches.append(cache)
    features, ln_f = layer_norm_forward(x, params["decoder/ln_f/gamma"], params["decoder/ln_f/beta"])  # (T13)
    return features, alpha.mean(axis=1), (caches, ln_f, d)


def transformer_decoder_head_weights(cache):
    """The cross-attention weights (T11) of every block and head of a forward, from its cache: [B, L, heads, T, S]."""
    caches, _, _ = cache
    return np.stack([attention_cache_weights(block_cache[3]) for block_cache in caches], axis=1)


def transformer_decoder_backward(dfeatures, cache):
    """dfeatures: [B, T, d].  Returns dy [B, T, d] (embedded tgt_in), dkeys [B, S, K] and the gradients."""
    caches, ln_f, d = cache
    grads, dkeys = {}, 0.0
    dx, grads["decoder/ln_f/gamma"], grads["decoder/ln_f/beta"] = layer_norm_backward(dfeatures, ln_f)  # (T13')
    for layer in reversed(range(len(caches))):
        dx, dkeys_layer, block_grads = decoder_block_backward(dx, caches[layer])
        dkeys = dkeys + dkeys_layer                                                        # every block reads keys
        grads.update({f"decoder/l{layer}/{suffix}": g for suffix, g in block_grads.items()})
    return math.sqrt(d) * dx, dkeys, grads                                                 # (T9')


def transformer_decoder_memory(keys, params, config):
    """Each block's cross-attention keys and values, projected once per sentence for decoding:
    keys [B, S, K] -> {"l{layer}/K", "l{layer}/V": [B, heads, S, d_h]}."""
    derived = {}
    for layer in range(config.num_layers):
        p = block_params(params, f"decoder/l{layer}/")
        for name in ("K", "V"):
            derived[f"l{layer}/{name}"] = split_heads(
                linear(keys, p[f"cross/W_{name.lower()}"], p[f"cross/b_{name.lower()}"]), config.num_heads)
    return derived


def transformer_decoder_step(y_t, states, memory, params, config):
    """One decoding position t: the blocks of transformer_decoder_forward at the last position only.

    y_t: [B, d] embedded previous token; states: per block (K, V) [B, heads, t, d_h], the self-attention
    keys and values of the prefix (none at t = 0); memory.derived: transformer_decoder_memory's.
    Position t's output depends on earlier positions only through their keys and values (T10 is causal),
    so each step costs one position where recomputing the prefix costs t.
    Returns the feature [B, d] at t, the states with position t appended, and its weights [B, S] (the last
    block's cross-attention, averaged over heads).
    """
    t, d, heads = states[0][0].shape[2], y_t.shape[1], config.num_heads
    x = math.sqrt(d) * y_t[:, None] + sinusoidal_positions(t + 1, d, y_t.dtype)[t]       # (T9) at position t
    source = memory.src_mask[:, None, None, :]
    new_states = []
    for layer, (K, V) in enumerate(states):
        p = block_params(params, f"decoder/l{layer}/")
        a, _ = layer_norm_forward(x, p["ln_1/gamma"], p["ln_1/beta"])
        K = np.concatenate([K, split_heads(linear(a, p["self/W_k"], p["self/b_k"]), heads)], axis=2)
        V = np.concatenate([V, split_heads(linear(a, p["self/W_v"], p["self/b_v"]), heads)], axis=2)
        s, _ = attention_over(a, K, V, True, *(p[f"self/{n}"] for n in ("W_q", "b_q", "W_o", "b_o")), heads)
        x = x + s                                                                          # (T10) t sees <= t
        b, _ = layer_norm_forward(x, p["ln_2/gamma"], p["ln_2/beta"])
        c, alpha = attention_over(b, memory.derived[f"l{layer}/K"], memory.derived[f"l{layer}/V"], source,
                                  *(p[f"cross/{n}"] for n in ("W_q", "b_q", "W_o", "b_o")), heads)
        x = x + c                                                                          # (T11)
        g, _ = layer_norm_forward(x, p["ln_3/gamma"], p["ln_3/beta"])
        x = x + feed_forward_forward(g, *(p[f"ffn/{n}"] for n in FFN))[0]                  # (T12)
        new_states.append((K, V))
    feature, _ = layer_norm_forward(x[:, 0], params["decoder/ln_f/gamma"], params["decoder/ln_f/beta"])  # (T13)
    return feature, new_states, alpha[:, :, 0].mean(axis=1)


class TransformerDecoder(DecoderStack):
    """The Transformer as a DecoderStack.  It reads the encoder through its blocks' own multi-head
    cross-attention, so it takes no connection of its own (uses_connection False) and accepts only a
    connection with heads as config.attention, whose num_heads its blocks share."""

    name = "transformer"
    uses_connection = False
    one_width = True
    uses_heads = True
    uses_positions = True
    position_cache = True
    packs = True

    def accepts(self, connection):
        return connection.uses_heads

    def check_config(self, config):
        check_width(config, "decoder")
        if not self.accepts(CONNECTIONS[config.attention]):
            accepted = [name for name, connection in CONNECTIONS.items() if self.accepts(connection)]
            raise ValueError(f"attention: expected {one_of(accepted)} with decoder={config.decoder!r} (its blocks' "
                             f"cross-attention has heads), got {config.attention!r}")
        if config.input_feeding:
            raise ValueError(f"input_feeding: expected False with decoder={config.decoder!r} (it sees every earlier "
                             f"position already), got True")

    def param_shapes(self, config):
        shapes = {}
        for layer in range(config.num_layers):
            for suffix, shape in decoder_block_param_shapes(config.hidden_dim, config.key_dim,
                                                            config.inner_dim).items():
                shapes[f"decoder/l{layer}/{suffix}"] = shape
        shapes.update({"decoder/ln_f/gamma": (config.hidden_dim,), "decoder/ln_f/beta": (config.hidden_dim,)})
        return shapes

    def init_param(self, name, shape, config, rng):
        return init_block_param(name, shape, rng)

    def dropout_shapes(self, config, B, S, T):
        """(D1) on the self- and cross-attention weights and on the three residual branches of every block."""
        shapes, d, heads = {}, config.hidden_dim, config.num_heads
        for layer in range(config.num_layers):
            shapes.update({f"decoder/l{layer}/self_weights": (B, heads, T, T), f"decoder/l{layer}/self": (B, T, d),
                           f"decoder/l{layer}/cross_weights": (B, heads, T, S), f"decoder/l{layer}/cross": (B, T, d),
                           f"decoder/l{layer}/ffn": (B, T, d)})
        return shapes

    def initial_states(self, encoder_states, encoder_state_names, config):
        """The decoding state: each block's self-attention keys and values of the prefix [B, heads, t, d_h],
        empty at first; the encoder's final states are not read."""
        h = encoder_states[0][0]
        shape = (h.shape[0], config.num_heads, 0, config.hidden_dim // config.num_heads)
        return [(np.zeros(shape, h.dtype), np.zeros(shape, h.dtype)) for _ in range(config.num_layers)]

    def initial_states_backward(self, dstates, encoder_state_names, config):
        return None

    def memory(self, keys, src_mask, params, config) -> Memory:
        return Memory(keys, src_mask, transformer_decoder_memory(keys, params, config))

    def forward(self, y, tgt_lengths, init_states, keys, src_mask, params, config, dropout_masks, segments=None):
        return transformer_decoder_forward(y, keys, src_mask, params, config, dropout_masks, segments)

    def head_weights(self, alpha, cache):
        """Every block's cross-attention weights [B, L, heads, T, S] (forward's alpha: the last block's mean)."""
        return transformer_decoder_head_weights(cache)

    def backward(self, dfeatures, cache):
        dy, dkeys, grads = transformer_decoder_backward(dfeatures, cache)
        return dy, None, dkeys, grads

    def step(self, y_t, states, memory: Memory, params, config, step_mask=None):
        """(step_mask is not needed: a position past a target's end never reaches a real one, (T10) is causal.)"""
        return transformer_decoder_step(y_t, states, memory, params, config)

    def matmul_flops(self, config, batch, src_len, tgt_len, decoding=False):
        """Per block, (T10) self-attention: Q, K, V, O projections and the scores and context over the prefix
        (training computes the whole causal T x T matrix, masked entries included; decoding with the cache has
        position t attend to t keys); (T11) cross-attention: Q, O per position, K, V once per source position,
        scores and context over S; (T12) the feed-forward network."""
        B, S, T, d, F = batch, src_len, tgt_len, config.hidden_dim, config.inner_dim
        self_pairs = T * (T + 1) // 2 if decoding else T * T
        return config.num_layers * (4 * 2 * B * T * d * d + 2 * 2 * B * self_pairs * d
                                    + 2 * 2 * B * T * d * d + 2 * 2 * B * S * d * d + 2 * 2 * B * T * S * d
                                    + 2 * 2 * B * T * d * F)
