"""The encoder: stacked, optionally bidirectional LSTMs, and the bridge (B1)-(B2).

The keys for attention are the top layer's outputs, [h_fwd; h_bwd] when
bidirectional.  The bridge hands layer l's final state to decoder layer l:
unchanged when unidirectional, the sum of both directions when bidirectional
(B2), so the decoder keeps width H and the bridge has no parameters.
"""
from __future__ import annotations

import numpy as np

from .layers import dropout_backward, dropout_forward
from .lstm import lstm_backward, lstm_forward, reverse_padded


def _lstm_params(params, layer, direction):
    prefix = f"encoder/l{layer}/{direction}"
    return params[f"{prefix}/W_x"], params[f"{prefix}/W_h"], params[f"{prefix}/b"]


def encoder_forward(x, lengths, params, config, dropout_masks):
    """x: [B, S, E] embedded source; lengths: int[B]; dropout_masks: dict (may be empty).

    Returns keys [B, S, K], the decoder's initial states (a list of L pairs
    (h, c), each [B, H]) and the cache.
    """
    B, H = x.shape[0], config.hidden_dim
    zeros = np.zeros((B, H), dtype=x.dtype)
    inputs, states, caches = x, [], []
    for layer in range(config.num_layers):
        if layer > 0:
            inputs = dropout_forward(inputs, dropout_masks.get(f"encoder/l{layer}"))
        hs_fwd, (h_fwd, c_fwd), cache_fwd = lstm_forward(
            inputs, zeros, zeros, *_lstm_params(params, layer, "fwd"), lengths
        )
        if config.bidirectional:
            # (B1) the backward direction reads each sequence from its own last token
            hs_bwd, (h_bwd, c_bwd), cache_bwd = lstm_forward(
                reverse_padded(inputs, lengths), zeros, zeros, *_lstm_params(params, layer, "bwd"), lengths
            )
            inputs = np.concatenate([hs_fwd, reverse_padded(hs_bwd, lengths)], axis=-1)
            states.append((h_fwd + h_bwd, c_fwd + c_bwd))  # (B2)
        else:
            inputs, cache_bwd = hs_fwd, None
            states.append((h_fwd, c_fwd))  # (B2)
        caches.append((cache_fwd, cache_bwd))
    return inputs, states, (caches, lengths, dropout_masks, config)


def encoder_backward(dkeys, dstates, cache):
    """dkeys: [B, S, K]; dstates: L pairs (dh, dc) on the decoder's initial states.

    Returns dx [B, S, E] and the encoder's parameter gradients (a dict).
    """
    caches, lengths, dropout_masks, config = cache
    H, grads = config.hidden_dim, {}
    doutputs = dkeys
    for layer in reversed(range(config.num_layers)):
        cache_fwd, cache_bwd = caches[layer]
        dh, dc = dstates[layer]  # (B2') a sum passes its gradient to both terms
        dx, _, _, *dparams_fwd = lstm_backward(doutputs[..., :H], dh, dc, cache_fwd)
        named = {"fwd": dparams_fwd}
        if config.bidirectional:
            dx_rev, _, _, *dparams_bwd = lstm_backward(
                reverse_padded(doutputs[..., H:], lengths), dh, dc, cache_bwd
            )
            dx = dx + reverse_padded(dx_rev, lengths)
            named["bwd"] = dparams_bwd
        for direction, (dW_x, dW_h, db) in named.items():
            prefix = f"encoder/l{layer}/{direction}"
            grads.update({f"{prefix}/W_x": dW_x, f"{prefix}/W_h": dW_h, f"{prefix}/b": db})
        doutputs = dropout_backward(dx, dropout_masks.get(f"encoder/l{layer}")) if layer > 0 else dx
    return doutputs, grads
