"""The recurrent stacks in JAX, equation for equation seq2seq_ref.encoder.RecurrentEncoder and
seq2seq_ref.decoder.RecurrentDecoder: layers of any JAX cell module (seq2seq_jax.gru.GRU's interface), the bridge
(B3), and the decoder's connection (passed in by Seq2Seq, which holds it at the flat names attention/...).
seq2seq_jax.registry binds each registered cell: ENCODERS[name] = partial(RecurrentEncoder, cell)."""
from __future__ import annotations

import jax.numpy as jnp
from flax import nnx
from jax import lax

from seq2seq_ref import registry as reference
from seq2seq_ref.components import layer_params
from seq2seq_ref.config import ModelConfig

from .layers import dropout, length_mask, reverse_padded


def make_cell(cell, config: ModelConfig, side: str, params, prefix: str, custom_vjp: bool):
    """The JAX `cell` module over the parameters under prefix (their suffixes: the reference cell's)."""
    return cell(layer_params(params, prefix, reference.CELLS[getattr(config, side)]), custom_vjp)


class EncoderLayer(nnx.Module):
    def __init__(self, cell, config, params, prefix, custom_vjp=True):
        self.fwd = make_cell(cell, config, "encoder", params, f"{prefix}/fwd", custom_vjp)
        if config.bidirectional:
            self.bwd = make_cell(cell, config, "encoder", params, f"{prefix}/bwd", custom_vjp)


class RecurrentEncoder(nnx.Module):
    """encoder/l{l}/{fwd,bwd}/<p>: x [B, S, E] -> keys [B, S, K] and the final states (B1)-(B2)."""

    def __init__(self, cell, config: ModelConfig, params, custom_vjp=True):
        self.config = config
        for layer in range(config.num_layers):
            setattr(self, f"l{layer}", EncoderLayer(cell, config, params, f"encoder/l{layer}", custom_vjp))

    def __call__(self, x, lengths, dropout_masks, unroll=1, segments=None):
        """segments: None (a recurrent stack does not pack: check_batch refuses a packed batch for it)."""
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


class RecurrentDecoder(nnx.Module):
    """decoder/l{l}/<p>: layers of a cell, joined to the encoder by the connection Seq2Seq passes in."""

    def __init__(self, cell, config: ModelConfig, params, custom_vjp=True):
        self.config = config
        for layer in range(config.num_layers):
            setattr(self, f"l{layer}", make_cell(cell, config, "decoder", params, f"decoder/l{layer}", custom_vjp))

    def layers(self):
        return [getattr(self, f"l{layer}") for layer in range(self.config.num_layers)]

    @property
    def feeds_input(self) -> bool:
        return reference.CONNECTIONS[self.config.attention].feeds_input

    def memory(self, keys, attention):
        """Memory.derived: what the connection precomputes once per sentence."""
        return attention.memory(keys)

    def initial_states(self, encoder_states, encoder_state_names, max_len):
        """(B3) the decoder's initial states from the encoder's final ones, entry by entry by name; with input
        feeding, (F1)'s f_0 = 0 after them.  max_len: unused (a recurrent state has no positions)."""
        config, names = self.config, reference.CELLS[self.config.decoder].state_names
        out = []
        for state in encoder_states:
            named = dict(zip(encoder_state_names, state))
            out.append(tuple(named[n] if n in named else jnp.zeros_like(state[0]) for n in names))
        if config.input_feeding:
            h = encoder_states[0][0]
            out.append((jnp.zeros((h.shape[0], config.output_dim), h.dtype),))
        return out

    def extend_states(self, states, max_len):
        return states

    def cells_step(self, x, states, step_mask, layer_masks):
        """All layers for one position: x [B, D_0] -> top h [B, H], new states."""
        new_states = []
        for cell, state, keep in zip(self.layers(), states, layer_masks):
            state = cell.step(dropout(x, keep), state, step_mask)
            new_states.append(state)
            x = state[0]
        return x, new_states

    def step(self, y_t, states, memory, step_mask, layer_masks, attention, heads=False):
        """One position: y_t [B, E] -> feature [B, F], new states, alpha [B, S] (heads: [B, heads, S]) or None."""
        alpha, x, config = None, y_t, self.config
        if config.input_feeding:
            states, (feed,) = states[:-1], states[-1]
            x = jnp.concatenate([y_t, feed], axis=-1)  # (F1)
        if self.feeds_input:
            context, alpha = attention.context(states[-1][0], memory)
            alpha = alpha[:, None] if heads else alpha
            x = jnp.concatenate([y_t, context], axis=-1)  # (A5)
        top, states = self.cells_step(x, states, step_mask, layer_masks)
        feature = top
        if self.feeds_input and config.deep_output:
            feature = jnp.concatenate([top, context, y_t], axis=-1)  # (A6)
        if not self.feeds_input:
            feature, alpha = self._attend(attention, top[:, None], memory, heads)
            feature, alpha = feature[:, 0], None if alpha is None else alpha[..., 0, :]
        if config.input_feeding:
            states = [*states, (jnp.where(step_mask[:, None], feature, feed),)]
        return feature, states, alpha

    def _attend(self, attention, queries, memory, heads):
        """The connection over queries [B, T, H]: features and weights [B, T, S] (heads: [B, heads, T, S], one
        head for a connection without several)."""
        if heads and reference.CONNECTIONS[self.config.attention].uses_heads:
            return attention(queries, memory, heads=True)
        feature, alpha = attention(queries, memory)
        return feature, alpha[:, None] if heads and alpha is not None else alpha

    def features(self, y, mask, memory, states, dropout_masks, attention, unroll=1, segments=None, heads=False):
        """Teacher-forced: y [B, T, E] embedded tgt_in -> features [B, T, F], weights [B, T, S] (heads:
        [B, 1, heads, T, S]) or None.  segments: None (a recurrent stack does not pack)."""
        layer_masks = [dropout_masks.get(f"decoder/l{layer}") for layer in range(self.config.num_layers)]
        if self.feeds_input or self.config.input_feeding:  # a step's input depends on the step before
            def body(carry, inputs):
                y_t, mask_t, masks_t = inputs
                feature, carry, alpha = self.step(y_t, carry, memory, mask_t, masks_t, attention, heads)
                return carry, (feature, alpha)

            time_major = [None if m is None else jnp.swapaxes(m, 0, 1) for m in layer_masks]
            _, (features, alpha) = lax.scan(body, states, (jnp.swapaxes(y, 0, 1), mask.T, time_major), unroll=unroll)
            if alpha is not None:  # [T, B, S] or [T, B, heads, S]
                alpha = jnp.moveaxis(alpha, 0, 2)[:, None] if heads else jnp.swapaxes(alpha, 0, 1)
            return jnp.swapaxes(features, 0, 1), alpha
        for cell, state, keep in zip(self.layers(), states, layer_masks):  # every layer over the whole target
            y, _ = cell(dropout(y, keep), state, mask, unroll)
        features, alpha = self._attend(attention, y, memory, heads)
        return features, alpha[:, None] if heads and alpha is not None else alpha
