"""The recurrent encoder stack: stacked, optionally bidirectional layers of any cell (B1)-(B2).

The keys for attention are the top layer's outputs, [h_fwd; h_bwd] when
bidirectional.  Layer l's final state goes to decoder layer l: unchanged when
unidirectional, the sum of both directions when bidirectional (B2); the
decoder's bridge (decoder.RecurrentDecoder.initial_states, (B3)) then matches
it entry by entry to its own cell's state.
"""
from __future__ import annotations

import numpy as np

from .components import EncoderStack, cell_step_flops, layer_params
from .layers import dropout_backward, dropout_forward
from .ops import reverse_padded


def encoder_layer_names(config) -> list[tuple[int, str]]:
    """(layer, direction) pairs in the order they run."""
    directions = ("fwd", "bwd") if config.bidirectional else ("fwd",)
    return [(layer, d) for layer in range(config.num_layers) for d in directions]


class RecurrentEncoder(EncoderStack):
    """An EncoderStack of `cell` layers, each one direction or two (config.bidirectional)."""

    has_directions = True

    def __init__(self, cell):
        self.cell, self.name, self.state_names = cell, cell.name, cell.state_names

    def __repr__(self):
        return f"RecurrentEncoder({self.cell.__name__})"

    def check_config(self, config):
        self.cell.check_config(config, "encoder")

    def param_shapes(self, config):
        """encoder/l{l}/{fwd,bwd}/<p>: the cell's parameters, input D_0 = E, D_l = K above."""
        shapes = {}
        for layer, direction in encoder_layer_names(config):
            input_dim = config.embed_dim if layer == 0 else config.key_dim
            for suffix, shape in self.cell.param_shapes(input_dim, config.hidden_dim).items():
                shapes[f"encoder/l{layer}/{direction}/{suffix}"] = shape
        return shapes

    def init_param(self, name, shape, config, rng):
        return self.cell.init_param(name.rsplit("/", 1)[1], shape, config.hidden_dim, rng)

    def dropout_shapes(self, config, B, S):
        """(D1) on the inputs of layers >= 1."""
        return {f"encoder/l{layer}": (B, S, config.key_dim) for layer in range(1, config.num_layers)}

    def forward(self, x, lengths, params, config, dropout_masks, segments=None):
        """x: [B, S, E] embedded source; lengths: int[B]; dropout_masks: dict (may be empty); segments: None
        (a recurrent stack does not pack: check_batch refuses a packed batch for it).

        Returns keys [B, S, K], the final states (a list of L state tuples of the cell, each entry [B, H]) and
        the cache.
        """
        cell, B, H = self.cell, x.shape[0], config.hidden_dim
        zeros = tuple(np.zeros((B, H), dtype=x.dtype) for _ in cell.state_names)
        inputs, states, caches = x, [], []
        for layer in range(config.num_layers):
            if layer > 0:
                inputs = dropout_forward(inputs, dropout_masks.get(f"encoder/l{layer}"))
            hs_fwd, state_fwd, cache_fwd = cell.forward(inputs, zeros,
                                                        layer_params(params, f"encoder/l{layer}/fwd", cell), lengths)
            if config.bidirectional:
                # (B1) the backward direction reads each sequence from its own last token
                hs_bwd, state_bwd, cache_bwd = cell.forward(
                    reverse_padded(inputs, lengths), zeros, layer_params(params, f"encoder/l{layer}/bwd", cell),
                    lengths
                )
                inputs = np.concatenate([hs_fwd, reverse_padded(hs_bwd, lengths)], axis=-1)
                states.append(tuple(f + b for f, b in zip(state_fwd, state_bwd)))  # (B2)
            else:
                inputs, cache_bwd = hs_fwd, None
                states.append(state_fwd)  # (B2)
            caches.append((cache_fwd, cache_bwd))
        return inputs, states, (caches, lengths, dropout_masks, config)

    def backward(self, dkeys, dstates, cache):
        """dkeys: [B, S, K]; dstates: L state-tuple gradients on the final states (None: the decoder took none).

        Returns dx [B, S, E] and the encoder's parameter gradients (a dict).
        """
        caches, lengths, dropout_masks, config = cache
        cell, H, grads = self.cell, config.hidden_dim, {}
        if dstates is None:
            dstates = [tuple(np.zeros((dkeys.shape[0], H), dkeys.dtype) for _ in cell.state_names)] * config.num_layers
        doutputs = dkeys
        for layer in reversed(range(config.num_layers)):
            cache_fwd, cache_bwd = caches[layer]
            dstate = dstates[layer]  # (B2') a sum passes its gradient to both terms
            dx, _, dparams = cell.backward(doutputs[..., :H], dstate, cache_fwd)
            named = {"fwd": dparams}
            if config.bidirectional:
                dx_rev, _, named["bwd"] = cell.backward(reverse_padded(doutputs[..., H:], lengths), dstate, cache_bwd)
                dx = dx + reverse_padded(dx_rev, lengths)
            for direction, dp in named.items():
                grads.update({f"encoder/l{layer}/{direction}/{suffix}": value for suffix, value in dp.items()})
            doutputs = dropout_backward(dx, dropout_masks.get(f"encoder/l{layer}")) if layer > 0 else dx
        return doutputs, grads

    def matmul_flops(self, config, batch, src_len):
        """S steps of each layer and direction."""
        return sum(src_len * cell_step_flops(self.cell, batch, config.embed_dim if layer == 0 else config.key_dim,
                                             config.hidden_dim)
                   for layer, _ in encoder_layer_names(config))
