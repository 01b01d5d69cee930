"""The Transformer decoder in JAX, MATH.md (T9)-(T13): seq2seq_ref.transformer_decoder, whose backward autodiff
gives, plus incremental decoding with a key/value cache.

Teacher-forced training runs every position at once, as the reference.  Decoding
keeps, for every block, the self-attention keys and values of the positions
decoded so far ([B, heads, max_len, d_h], written at position t) and the
position t itself: each step costs one position, never a recomputation of the
prefix; beam search reorders the cache rows with the other states.  Masked
cache slots get weight exactly 0, so the result equals the reference's
recomputation.
"""
from __future__ import annotations

import jax.numpy as jnp
from flax import nnx
from jax import lax

from seq2seq_ref.transformer_decoder import PARTS, decoder_block_param_shapes
from seq2seq_ref.transformer_layers import FFN
from seq2seq_ref.transformer_layers import sinusoidal_positions

from .layers import dropout
from .transformer import Params
from .transformer_layers import attend, feed_forward, layer_norm, project, segment_mask, segment_positions


class DecoderBlock(nnx.Module):
    def __init__(self, params, prefix, d, key_dim, ffn_dim):
        groups = {}
        for suffix in decoder_block_param_shapes(d, key_dim, ffn_dim):
            group, name = suffix.split("/")
            groups.setdefault(group, {})[name] = params[f"{prefix}/{suffix}"]
        for group, arrays in groups.items():
            setattr(self, group, Params(arrays))

    def memory(self, keys, num_heads):
        """The cross-attention's keys and values [B, heads, S, d_h], once per sentence."""
        return project(keys, self.cross["W_k"], self.cross["b_k"], num_heads), \
            project(keys, self.cross["W_v"], self.cross["b_v"], num_heads)

    def __call__(self, y, cross_kv, causal, source, num_heads, keep, self_kv=None):
        """(T10)-(T12).  y [B, T, d]; cross_kv from memory(); causal, source: bool masks broadcastable to
        [B, heads, T, *]; self_kv: the self-attention's keys and values to attend over (the cache), or None
        for the block's own positions.  Returns y, the cross weights [B, heads, T, S], and this call's
        self-attention keys and values."""
        a = layer_norm(y, self.ln_1["gamma"], self.ln_1["beta"])
        k, v = project(a, self.self["W_k"], self.self["b_k"], num_heads), \
            project(a, self.self["W_v"], self.self["b_v"], num_heads)
        K, V = (k, v) if self_kv is None else self_kv(k, v)
        s, _ = attend(project(a, self.self["W_q"], self.self["b_q"], num_heads), K, V, causal,
                      self.self["W_o"], self.self["b_o"], keep.get("self_weights"))
        y = y + dropout(s, keep.get("self"))                                                # (T10)
        b = layer_norm(y, self.ln_2["gamma"], self.ln_2["beta"])
        c, alpha = attend(project(b, self.cross["W_q"], self.cross["b_q"], num_heads), *cross_kv, source,
                          self.cross["W_o"], self.cross["b_o"], keep.get("cross_weights"))
        y = y + dropout(c, keep.get("cross"))                                               # (T11)
        f = feed_forward(layer_norm(y, self.ln_3["gamma"], self.ln_3["beta"]), *(self.ffn[n] for n in FFN))
        return y + dropout(f, keep.get("ffn")), alpha, (K, V)                               # (T12)


class TransformerDecoder(nnx.Module):
    """The decoder side: it reads the encoder's annotations through each block's cross-attention itself."""

    def __init__(self, config, params, custom_vjp=True):
        self.config = config
        for layer in range(config.num_layers):
            setattr(self, f"l{layer}", DecoderBlock(params, f"decoder/l{layer}", config.hidden_dim, config.key_dim,
                                                    config.inner_dim))
        self.ln_f = Params({"gamma": params["decoder/ln_f/gamma"], "beta": params["decoder/ln_f/beta"]})

    def blocks(self):
        return [getattr(self, f"l{layer}") for layer in range(self.config.num_layers)]

    def memory(self, keys, attention=None):
        """Memory.derived: each block's cross-attention keys and values (attention: None, it takes no
        connection)."""
        derived = {}
        for layer, block in enumerate(self.blocks()):
            derived[f"l{layer}/K"], derived[f"l{layer}/V"] = block.memory(keys, self.config.num_heads)
        return derived

    def features(self, y, mask, memory, states, dropout_masks, attention=None, unroll=1, segments=None, heads=False):
        """Teacher-forced: y [B, T, d] embedded tgt_in -> features [B, T, d], the last block's cross-attention
        weights averaged over heads [B, T, S] (heads: every block's and head's, [B, L, heads, T, S]).
        segments: a packed batch's (source, target) segment ids (T14), or None.  (mask, states, attention,
        unroll: the recurrent stack's arguments, unused: causal attention needs no target mask, the positions
        past a target's end never reach a real one.)"""
        B, T, d = y.shape
        table = jnp.asarray(sinusoidal_positions(T, d), y.dtype)
        if segments is None:
            x = jnp.sqrt(jnp.asarray(d, y.dtype)) * y + table                                  # (T9)
            causal = jnp.tril(jnp.ones((T, T), bool))[None, None]
            source = memory.src_mask[:, None, None, :]
        else:
            src_segments, tgt_segments = segments
            x = jnp.sqrt(jnp.asarray(d, y.dtype)) * y + table[segment_positions(tgt_segments)]  # (T14)
            causal = segment_mask(tgt_segments, tgt_segments, causal=True)
            source = segment_mask(tgt_segments, src_segments, causal=False)
        alphas = []
        for layer, block in enumerate(self.blocks()):
            keep = {part: dropout_masks[f"decoder/l{layer}/{part}"] for part in PARTS
                    if f"decoder/l{layer}/{part}" in dropout_masks}
            cross_kv = (memory.derived[f"l{layer}/K"], memory.derived[f"l{layer}/V"])
            x, alpha, _ = block(x, cross_kv, causal, source, self.config.num_heads, keep)
            alphas.append(alpha)
        weights = jnp.stack(alphas, axis=1) if heads else alphas[-1].mean(axis=1)
        return layer_norm(x, self.ln_f["gamma"], self.ln_f["beta"]), weights              # (T13)

    def initial_states(self, encoder_states, encoder_state_names, max_len):
        """An empty cache for max_len positions per block, and the position t = 0 (one per row, so that the
        states reorder row by row like a recurrent decoder's); the encoder's final states are not read."""
        batch_size, dtype = encoder_states[0][0].shape[0], encoder_states[0][0].dtype
        heads = self.config.num_heads
        shape = (batch_size, heads, max_len, self.config.hidden_dim // heads)
        return [(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype)) for _ in self.blocks()] + \
            [(jnp.zeros((batch_size,), jnp.int32),)]

    def step(self, y_t, states, memory, step_mask=None, layer_masks=None, attention=None):
        """One position with the cache: y_t [B, d] -> feature [B, d], the new states, weights [B, S]."""
        caches, (position,) = states[:-1], states[-1]
        t = position[0]
        d = y_t.shape[-1]
        max_len = caches[0][0].shape[2]
        table = jnp.asarray(sinusoidal_positions(max_len, d), y_t.dtype)
        x = (jnp.sqrt(jnp.asarray(d, y_t.dtype)) * y_t + table[t])[:, None]                # (T9) at position t
        visible = (jnp.arange(max_len) <= t)[None, None, None, :]                           # (T10) causal
        source = memory.src_mask[:, None, None, :]
        new_caches = []
        for layer, (block, (K, V)) in enumerate(zip(self.blocks(), caches)):
            def write(k, v, K=K, V=V):
                return lax.dynamic_update_slice_in_dim(K, k, t, 2), lax.dynamic_update_slice_in_dim(V, v, t, 2)

            cross_kv = (memory.derived[f"l{layer}/K"], memory.derived[f"l{layer}/V"])
            x, alpha, cache = block(x, cross_kv, visible, source, self.config.num_heads, {}, self_kv=write)
            new_caches.append(cache)
        feature = layer_norm(x[:, 0], self.ln_f["gamma"], self.ln_f["beta"])                # (T13)
        return feature, new_caches + [(position + 1,)], alpha[:, :, 0].mean(axis=1)

    def extend_states(self, states, max_len):
        """The states with room for max_len positions: each cache padded (the new positions masked until
        written)."""
        caches, position = states[:-1], states[-1]
        more = max_len - caches[0][0].shape[2]
        pad = lambda c: jnp.pad(c, ((0, 0), (0, 0), (0, more), (0, 0)))  # noqa: E731
        return [(pad(K), pad(V)) for K, V in caches] + [position]
