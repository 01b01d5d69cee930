"""The encoder: stacked, optionally bidirectional recurrent layers of any cell, and the bridge (B1)-(B3).

The keys for attention are the top layer's outputs, [h_fwd; h_bwd] when
bidirectional.  Layer l's final state goes to decoder layer l: unchanged when
unidirectional, the sum of both directions when bidirectional (B2), then
matched entry by entry to the decoder cell's state (B3), so the decoder keeps
width H and the bridge has no parameters.
"""
from __future__ import annotations

import numpy as np

from .layers import dropout_backward, dropout_forward
from .ops import reverse_padded
from .params import layer_params
from .registry import CELLS


def encoder_forward(x, lengths, params, config, dropout_masks):
    """x: [B, S, E] embedded source; lengths: int[B]; dropout_masks: dict (may be empty).

    Returns keys [B, S, K], the encoder's final states (a list of L state
    tuples of the encoder cell, each entry [B, H]) and the cache.  A family with
    its own encoder stack (the Transformer) runs it; the others run below.
    """
    cell = CELLS[config.encoder]
    if cell.own_encoder:
        keys, states, cache = cell.encoder_forward(x, lengths, params, config, dropout_masks)
        return keys, states, ("own", cache, config)
    B, H = x.shape[0], config.hidden_dim
    zeros = tuple(np.zeros((B, H), dtype=x.dtype) for _ in cell.state_names)
    inputs, states, caches = x, [], []
    for layer in range(config.num_layers):
        if layer > 0:
            inputs = dropout_forward(inputs, dropout_masks.get(f"encoder/l{layer}"))
        hs_fwd, state_fwd, cache_fwd = cell.forward(inputs, zeros, layer_params(params, f"encoder/l{layer}/fwd", cell),
                                                    lengths)
        if config.bidirectional:
            # (B1) the backward direction reads each sequence from its own last token
            hs_bwd, state_bwd, cache_bwd = cell.forward(
                reverse_padded(inputs, lengths), zeros, layer_params(params, f"encoder/l{layer}/bwd", cell), lengths
            )
            inputs = np.concatenate([hs_fwd, reverse_padded(hs_bwd, lengths)], axis=-1)
            states.append(tuple(f + b for f, b in zip(state_fwd, state_bwd)))  # (B2)
        else:
            inputs, cache_bwd = hs_fwd, None
            states.append(state_fwd)  # (B2)
        caches.append((cache_fwd, cache_bwd))
    return inputs, states, ("recurrent", (caches, lengths, dropout_masks), config)


def encoder_backward(dkeys, dstates, cache):
    """dkeys: [B, S, K]; dstates: L state-tuple gradients on the encoder's final states.

    Returns dx [B, S, E] and the encoder's parameter gradients (a dict).
    """
    kind, cache, config = cache
    if kind == "own":
        return CELLS[config.encoder].encoder_backward(dkeys, dstates, cache)
    caches, lengths, dropout_masks = cache
    cell, H, grads = CELLS[config.encoder], config.hidden_dim, {}
    if dstates is None:  # the decoder took no state
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


def bridge_forward(states, config):
    """(B3) the decoder's initial states from the encoder's final ones, entry by entry by name.

    An entry the decoder cell has and the encoder cell lacks starts at zero (GRU -> LSTM: c_0 = 0); one the
    encoder has and the decoder lacks is not passed (LSTM -> GRU passes h only).
    """
    encoder, decoder = CELLS[config.encoder], CELLS[config.decoder]
    if decoder.own_decoder:  # it reads the encoder through its own attention, not from a state
        return decoder.initial_states(states[0][0].shape[0], config, states[0][0].dtype)
    out = []
    for state in states:
        named = dict(zip(encoder.state_names, state))
        out.append(tuple(named[n] if n in named else np.zeros_like(state[0]) for n in decoder.state_names))
    if config.input_feeding:  # (F1) f_0 = 0, carried with the states
        h = states[0][0]
        out.append((np.zeros((h.shape[0], config.output_dim), dtype=h.dtype),))
    return out


def bridge_backward(dstates, config):
    """(B3') gradients back to the encoder's final states; an entry the decoder did not take gets zero.
    None when the decoder took no state at all (a family with its own decoder stack)."""
    encoder, decoder = CELLS[config.encoder], CELLS[config.decoder]
    if decoder.own_decoder:
        return None
    out = []
    for dstate in dstates[: config.num_layers]:  # past them: input feeding's f_0, a constant
        named = dict(zip(decoder.state_names, dstate))
        out.append(tuple(named[n] if n in named else np.zeros_like(dstate[0]) for n in encoder.state_names))
    return out
