"""The encoder-decoder as Flax NNX modules, equation for equation the NumPy reference.

Every nnx.Param sits at the attribute path of its flat name: `encoder/l0/fwd/W_x`
is `model.encoder.l0.fwd.W_x`, so the flat dict and the NNX state convert
losslessly (seq2seq_jax.params).  Cells and connections come from
seq2seq_jax.registry; what they are (state entries, whether a connection feeds
the decoder input) from seq2seq_ref.registry.  Equation numbers are MATH.md's.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx
from jax import lax

from seq2seq_ref import registry as reference
from seq2seq_ref.components import Memory
from seq2seq_ref.config import ModelConfig
from seq2seq_ref.params import layer_params

from .layers import Embed, Linear, TiedLinear, dropout, length_mask, reverse_padded
from .registry import CELLS, CONNECTIONS, DECODERS, ENCODERS


def make_cell(config: ModelConfig, side: str, params, prefix: str, custom_vjp: bool):
    name = getattr(config, side)
    return CELLS[name](layer_params(params, prefix, reference.CELLS[name]), custom_vjp)


class EncoderLayer(nnx.Module):
    def __init__(self, config, params, prefix, custom_vjp=True):
        self.fwd = make_cell(config, "encoder", params, f"{prefix}/fwd", custom_vjp)
        if config.bidirectional:
            self.bwd = make_cell(config, "encoder", params, f"{prefix}/bwd", custom_vjp)


class Encoder(nnx.Module):
    def __init__(self, config: ModelConfig, params, custom_vjp=True):
        self.config = config
        for layer in range(config.num_layers):
            setattr(self, f"l{layer}", EncoderLayer(config, params, f"encoder/l{layer}", custom_vjp))

    def __call__(self, x, lengths, dropout_masks, unroll=1):
        """x [B, S, E] -> keys [B, S, K] and the encoder's final states (B1)-(B2)."""
        B, S = x.shape[:2]
        zeros = tuple(jnp.zeros((B, self.config.hidden_dim), x.dtype)
                      for _ in reference.CELLS[self.config.encoder].state_names)
        mask = length_mask(lengths, S)
        inputs, states = x, []
        for layer in range(self.config.num_layers):
            if layer > 0:
                inputs = dropout(inputs, dropout_masks.get(f"encoder/l{layer}"))
            cells = getattr(self, f"l{layer}")
            hs_fwd, state_fwd = cells.fwd(inputs, zeros, mask, unroll)
            if self.config.bidirectional:
                hs_bwd, state_bwd = cells.bwd(reverse_padded(inputs, lengths), zeros, mask, unroll)
                inputs = jnp.concatenate([hs_fwd, reverse_padded(hs_bwd, lengths)], axis=-1)  # (B1)
                states.append(tuple(f + b for f, b in zip(state_fwd, state_bwd)))            # (B2)
            else:
                inputs = hs_fwd
                states.append(state_fwd)
        return inputs, states


def bridge(states, config: ModelConfig):
    """(B3) the decoder's initial states from the encoder's final ones, entry by entry by name; with input
    feeding, (F1)'s f_0 = 0 after them."""
    encoder, decoder = reference.CELLS[config.encoder], reference.CELLS[config.decoder]
    out = []
    for state in states:
        named = dict(zip(encoder.state_names, state))
        out.append(tuple(named[n] if n in named else jnp.zeros_like(state[0]) for n in decoder.state_names))
    if config.input_feeding:
        h = states[0][0]
        out.append((jnp.zeros((h.shape[0], config.output_dim), h.dtype),))
    return out


class Decoder(nnx.Module):
    def __init__(self, config: ModelConfig, params, custom_vjp=True):
        self.config = config
        for layer in range(config.num_layers):
            setattr(self, f"l{layer}", make_cell(config, "decoder", params, f"decoder/l{layer}", custom_vjp))

    def layers(self):
        return [getattr(self, f"l{layer}") for layer in range(self.config.num_layers)]

    def step(self, x, states, step_mask, layer_masks):
        """All layers for one position: x [B, D_0] -> top h [B, H], new states."""
        new_states = []
        for cell, state, keep in zip(self.layers(), states, layer_masks):
            state = cell.step(dropout(x, keep), state, step_mask)
            new_states.append(state)
            x = state[0]
        return x, new_states

    def __call__(self, y, mask, states, layer_masks, unroll=1):
        """All layers over the whole target at once (no context feeds back): y [B, T, E] -> hs [B, T, H]."""
        for cell, state, keep in zip(self.layers(), states, layer_masks):
            y, _ = cell(dropout(y, keep), state, mask, unroll)
        return y


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
        self.encoder = ENCODERS.get(config.encoder, Encoder)(config, params, custom_vjp)
        self.own_decoder = reference.CELLS[config.decoder].own_decoder
        self.decoder = DECODERS.get(config.decoder, Decoder)(config, params, custom_vjp)
        # a decoder family with its own stack reads the encoder through its own attention
        self.attention = None if self.own_decoder else CONNECTIONS[config.attention](params, config)
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

    @property
    def feeds_input(self) -> bool:
        return reference.CONNECTIONS[self.config.attention].feeds_input

    def encode(self, src, src_lengths, dropout_masks=None, unroll=1, max_len=1):
        """src int[B, S] -> Memory (what the connection reads) and the decoder's initial states (for a decoder
        family with its own stack: its decoding cache, for max_len positions)."""
        dropout_masks = dropout_masks or {}
        x = dropout(self.embedding("src")(src), dropout_masks.get("src_embed"))
        keys, states = self.encoder(x, src_lengths, dropout_masks, unroll)
        if self.own_decoder:
            memory = Memory(keys, length_mask(src_lengths, src.shape[1]), self.decoder.memory(keys))
            return memory, self.decoder.initial_states(src.shape[0], max_len, keys.dtype)
        memory = Memory(keys, length_mask(src_lengths, src.shape[1]), self.attention.memory(keys))
        return memory, bridge(states, self.config)

    def decoder_step(self, y_t, states, memory: Memory, step_mask, layer_masks):
        """One position: y_t [B, E] -> feature [B, F], new states, alpha [B, S] or None."""
        if self.own_decoder:
            return self.decoder.step(y_t, states, memory)
        alpha, x, config = None, y_t, self.config
        if config.input_feeding:
            states, (feed,) = states[:-1], states[-1]
            x = jnp.concatenate([y_t, feed], axis=-1)  # (F1)
        if self.feeds_input:
            context, alpha = self.attention.context(states[-1][0], memory)
            x = jnp.concatenate([y_t, context], axis=-1)  # (A5)
        top, states = self.decoder.step(x, states, step_mask, layer_masks)
        feature = top
        if self.feeds_input and config.deep_output:
            feature = jnp.concatenate([top, context, y_t], axis=-1)  # (A6)
        if not self.feeds_input:
            feature, alpha = self.attention(top[:, None], memory)
            feature, alpha = feature[:, 0], None if alpha is None else alpha[:, 0]
        if config.input_feeding:
            states = [*states, (jnp.where(step_mask[:, None], feature, feed),)]
        return feature, states, alpha

    def extend_states(self, states, max_len):
        """Decoding states with room for max_len positions (a decoder family with a cache of positions: the
        cache padded; a recurrent decoder's states as they are)."""
        return self.decoder.extend_states(states, max_len) if self.own_decoder else states

    def features(self, tgt_in, tgt_lengths, memory: Memory, states, dropout_masks=None, unroll=1):
        """Teacher-forced decoder features [B, T, F] and attention weights [B, T, S] (or None)."""
        dropout_masks = dropout_masks or {}
        y = dropout(self.embedding("tgt")(tgt_in), dropout_masks.get("tgt_embed"))
        if self.own_decoder:
            return self.decoder.features(y, memory, dropout_masks)
        mask = length_mask(tgt_lengths, tgt_in.shape[1])
        layer_masks = [dropout_masks.get(f"decoder/l{layer}") for layer in range(self.config.num_layers)]
        if self.feeds_input or self.config.input_feeding:  # a step's input depends on the step before
            def body(carry, inputs):
                y_t, mask_t, masks_t = inputs
                feature, carry, alpha = self.decoder_step(y_t, carry, memory, mask_t, masks_t)
                return carry, (feature, alpha)

            time_major = [None if m is None else jnp.swapaxes(m, 0, 1) for m in layer_masks]
            _, (features, alpha) = lax.scan(body, states, (jnp.swapaxes(y, 0, 1), mask.T, time_major), unroll=unroll)
            return jnp.swapaxes(features, 0, 1), None if alpha is None else jnp.swapaxes(alpha, 0, 1)
        return self.attention(self.decoder(y, mask, states, layer_masks, unroll), memory)

    def loss(self, batch, dropout_masks=None, unroll=1):
        """(O2) mean smoothed cross-entropy over real target tokens; computed in float32 at least."""
        dropout_masks = dropout_masks or {}
        memory, states = self.encode(batch.src, batch.src_lengths, dropout_masks, unroll)
        features, _ = self.features(batch.tgt_in, batch.tgt_lengths, memory, states, dropout_masks, unroll)
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


def softmax_cross_entropy(logits, targets, mask, label_smoothing=0.0):
    """(O2): logits [B, T, V], targets int[B, T], mask bool[B, T] -> scalar."""
    log_p = jax.nn.log_softmax(logits, axis=-1)
    target_log_p = jnp.take_along_axis(log_p, targets[..., None], axis=-1)[..., 0]
    per_token = -(1 - label_smoothing) * target_log_p - label_smoothing * log_p.mean(axis=-1)
    return jnp.where(mask, per_token, 0.0).sum() / mask.sum()
