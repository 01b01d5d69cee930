"""The encoder-decoder as Flax NNX modules, equation for equation the NumPy reference.

Every nnx.Param sits at the attribute path of its flat name: `encoder/l0/fwd/W_x`
is `model.encoder.l0.fwd.W_x`, so the flat dict and the NNX state convert
losslessly (seq2seq_jax.params).  The stacks and connections come from
seq2seq_jax.registry; what they are (state entries, whether a decoder stack
takes a connection, whether a connection feeds the decoder input) from
seq2seq_ref.registry.  Equation numbers are MATH.md's.
"""
from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from flax import nnx

from seq2seq_ref import registry as reference
from seq2seq_ref.components import Memory
from seq2seq_ref.config import ModelConfig

from .layers import Embed, Linear, TiedLinear, dropout, length_mask
from .registry import CONNECTIONS, DECODERS, ENCODERS


class Seq2Seq(nnx.Module):
    """The whole model, built from the flat parameter dict (names in seq2seq_ref.params).

    custom_vjp=False differentiates the recurrent scans by plain autodiff (the cells' *_scan_autodiff).
    """

    def __init__(self, config: ModelConfig, params, custom_vjp=True):
        self.config = config
        # (W1) one nnx.Param per flat name, so a shared matrix is one Param (autodiff sums its gradients (W1'))
        if config.tie_embeddings == "all":
            self.embed = Embed(params["embed/W"])
        else:
            self.src_embed, self.tgt_embed = Embed(params["src_embed/W"]), Embed(params["tgt_embed/W"])
        self.encoder = ENCODERS[config.encoder](config, params, custom_vjp)
        self.decoder = DECODERS[config.decoder](config, params, custom_vjp)
        # the connection's parameters are attention/..., so it sits here; a decoder stack that reads the
        # encoder through its own attention takes none
        uses_connection = reference.DECODERS[config.decoder].uses_connection
        self.attention = CONNECTIONS[config.attention](params, config) if uses_connection else None
        if config.tie_embeddings == "none":
            self.output = Linear(params["output/W"], params["output/b"])
        else:
            self.output = TiedLinear(params["output/b"])

    def embedding(self, side: str) -> Embed:
        """The embedding of side "src" or "tgt": one module for both with tie_embeddings="all" (W1)."""
        return self.embed if self.config.tie_embeddings == "all" else getattr(self, f"{side}_embed")

    def logits(self, features):
        """(O1) z = f W_out + b_out; tied (W1), W_out is the target embedding transposed."""
        if self.config.tie_embeddings == "none":
            return self.output(features)
        return self.output(features, self.embedding("tgt").W[...])

    def encode(self, src, src_lengths, dropout_masks=None, unroll=1, max_len=1, segments=None):
        """src int[B, S] -> Memory (what the decoder reads of the source) and the decoder's initial states (a
        decoder with a cache of positions: its cache, for max_len positions).  segments: a packed batch's
        source segment ids (T14), or None."""
        dropout_masks = dropout_masks or {}
        x = dropout(self.embedding("src")(src), dropout_masks.get("src_embed"))
        keys, states = self.encoder(x, src_lengths, dropout_masks, unroll, segments)
        memory = Memory(keys, length_mask(src_lengths, src.shape[1]), self.decoder.memory(keys, self.attention))
        encoder_state_names = reference.ENCODERS[self.config.encoder].state_names
        return memory, self.decoder.initial_states(states, encoder_state_names, max_len)

    def decoder_step(self, y_t, states, memory: Memory, step_mask, layer_masks):
        """One position: y_t [B, E] -> feature [B, F], new states, alpha [B, S] or None."""
        return self.decoder.step(y_t, states, memory, step_mask, layer_masks, self.attention)

    def extend_states(self, states, max_len):
        """Decoding states with room for max_len positions (a decoder with a cache of positions: the cache
        padded; a recurrent decoder's states as they are)."""
        return self.decoder.extend_states(states, max_len)

    def features(self, tgt_in, tgt_lengths, memory: Memory, states, dropout_masks=None, unroll=1, segments=None,
                 heads=False):
        """Teacher-forced decoder features [B, T, F] and attention weights [B, T, S] (or None; heads: every
        block's and head's, [B, L, H, T, S], as seq2seq_ref.model.attention).  segments: a packed batch's
        (source, target) segment ids (T14), or None."""
        dropout_masks = dropout_masks or {}
        y = dropout(self.embedding("tgt")(tgt_in), dropout_masks.get("tgt_embed"))
        mask = length_mask(tgt_lengths, tgt_in.shape[1])
        return self.decoder.features(y, mask, memory, states, dropout_masks, self.attention, unroll, segments,
                                     heads=heads)

    def attention_weights(self, batch, heads=False):
        """The teacher-forced decoder's attention weights (no dropout), as seq2seq_ref.model.attention:
        [B, T, S] (heads: [B, L, H, T, S]) or None."""
        memory, states = self.encode(batch.src, batch.src_lengths)
        return self.features(batch.tgt_in, batch.tgt_lengths, memory, states, heads=heads)[1]

    def loss(self, batch, dropout_masks=None, unroll=1):
        """(O2) mean smoothed cross-entropy over real target tokens; computed in float32 at least."""
        dropout_masks = dropout_masks or {}
        packed = batch.src_segments is not None  # (T14) several sentences per row
        memory, states = self.encode(batch.src, batch.src_lengths, dropout_masks, unroll,
                                     segments=batch.src_segments if packed else None)
        features, _ = self.features(batch.tgt_in, batch.tgt_lengths, memory, states, dropout_masks, unroll,
                                    segments=(batch.src_segments, batch.tgt_segments) if packed else None)
        logits = self.logits(dropout(features, dropout_masks.get("output")))
        logits = logits.astype(jnp.promote_types(logits.dtype, jnp.float32))
        return softmax_cross_entropy(logits, batch.tgt_out, length_mask(batch.tgt_lengths, batch.tgt_in.shape[1]),
                                     self.config.label_smoothing)

    def step_log_probs(self, tokens, states, memory: Memory):
        """log p(next | prefix) [N, V] for prefixes ending in tokens int[N]; pad and bos never generated."""
        y = self.embedding("tgt")(tokens)
        feature, states, alpha = self.decoder_step(
            y, states, memory, jnp.ones(tokens.shape[0], bool), [None] * self.config.num_layers
        )
        log_p = jax.nn.log_softmax(self.logits(feature), axis=-1)
        log_p = log_p.at[:, jnp.array([self.config.pad_id, self.config.bos_id])].set(-jnp.inf)
        return log_p, states, alpha


@partial(jax.jit, static_argnames=("config", "heads"))
def attention(params, config: ModelConfig, batch, heads=False):
    """seq2seq_ref.model.attention's twin: the teacher-forced decoder's attention weights (no dropout) for the
    flat params, [B, T, S] (heads: every block's and head's, [B, L, H, T, S]) or None."""
    return Seq2Seq(config, params).attention_weights(batch, heads)


def softmax_cross_entropy(logits, targets, mask, label_smoothing=0.0):
    """(O2): logits [B, T, V], targets int[B, T], mask bool[B, T] -> scalar."""
    log_p = jax.nn.log_softmax(logits, axis=-1)
    target_log_p = jnp.take_along_axis(log_p, targets[..., None], axis=-1)[..., 0]
    per_token = -(1 - label_smoothing) * target_log_p - label_smoothing * log_p.mean(axis=-1)
    return jnp.where(mask, per_token, 0.0).sum() / mask.sum()
