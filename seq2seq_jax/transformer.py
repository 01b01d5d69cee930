"""The Transformer encoder in JAX, MATH.md (T5)-(T8): seq2seq_ref.transformer, whose backward autodiff gives.

Its parameters sit at the attribute paths of their flat names: `encoder/l0/attn/W_q` is
`model.encoder.l0.attn.W_q`, `encoder/ln_f/gamma` is `model.encoder.ln_f.gamma`.
"""
from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from seq2seq_ref.transformer import block_param_shapes
from seq2seq_ref.transformer_layers import ATTENTION, FFN
from seq2seq_ref.transformer_layers import sinusoidal_positions

from .layers import dropout, length_mask
from .transformer_layers import feed_forward, layer_norm, segment_mask, segment_positions, self_attention


class Params(nnx.Module):
    """A group of parameters by suffix, each an nnx.Param attribute."""

    def __init__(self, arrays: dict):
        for name, value in arrays.items():
            setattr(self, name, nnx.Param(value))

    def __getitem__(self, name):
        return getattr(self, name)[...]


class EncoderBlock(nnx.Module):
    def __init__(self, params, prefix, d, ffn_dim):
        groups = {}
        for suffix in block_param_shapes(d, ffn_dim):
            group, name = suffix.split("/")
            groups.setdefault(group, {})[name] = params[f"{prefix}/{suffix}"]
        for group, arrays in groups.items():
            setattr(self, group, Params(arrays))

    def __call__(self, x, mask, num_heads, keep):
        a = layer_norm(x, self.ln_1["gamma"], self.ln_1["beta"])
        s = self_attention(a, mask, *(self.attn[n] for n in ATTENTION), num_heads, keep.get("weights"))
        x = x + dropout(s, keep.get("attn"))                                                 # (T6)
        f = feed_forward(layer_norm(x, self.ln_2["gamma"], self.ln_2["beta"]), *(self.ffn[n] for n in FFN))
        return x + dropout(f, keep.get("ffn"))                                               # (T7)


class TransformerEncoder(nnx.Module):
    """The encoder side: x [B, S, d] -> keys [B, S, d] and the bridge states (T8), as the recurrent Encoder."""

    def __init__(self, config, params, custom_vjp=True):
        self.config = config
        for layer in range(config.num_layers):
            setattr(self, f"l{layer}", EncoderBlock(params, f"encoder/l{layer}", config.hidden_dim,
                                                    config.inner_dim))
        self.ln_f = Params({"gamma": params["encoder/ln_f/gamma"], "beta": params["encoder/ln_f/beta"]})

    def __call__(self, x, lengths, dropout_masks, unroll=1, segments=None):
        """segments: a packed batch's source segment ids [B, S] (T14), or None."""
        B, S, d = x.shape
        table = jnp.asarray(sinusoidal_positions(S, d), x.dtype)
        valid = length_mask(lengths, S)
        if segments is None:
            h = jnp.sqrt(jnp.asarray(d, x.dtype)) * x + table                                 # (T5)
            mask = valid[:, None, None, :]  # key padding, as attention_mask(causal=False)
        else:
            h = jnp.sqrt(jnp.asarray(d, x.dtype)) * x + table[segment_positions(segments)]    # (T14)
            mask = segment_mask(segments, segments, causal=False)
        for layer in range(self.config.num_layers):
            keep = {part: dropout_masks[f"encoder/l{layer}/{part}"] for part in ("weights", "attn", "ffn")
                    if f"encoder/l{layer}/{part}" in dropout_masks}
            h = getattr(self, f"l{layer}")(h, mask, self.config.num_heads, keep)
        keys = layer_norm(h, self.ln_f["gamma"], self.ln_f["beta"])
        weights = valid.astype(x.dtype) / lengths[:, None].astype(x.dtype)                 # (T8)
        mean = jnp.einsum("bs,bsd->bd", weights, keys)
        return keys, [(mean,)] * self.config.num_layers
