"""The decoder: stacked LSTMs, attention, and the features fed to the output layer.

Two paths compute the same function:
* decoder_step_forward, one target position at a time; used for decoding, and
  for training with Bahdanau attention, whose context joins the LSTM input (A5);
* decoder_forward's parallel path for "none" and "luong", whose LSTM inputs do
  not depend on attention, so each layer runs over the whole sequence and Luong
  attention is computed for every step at once.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .attention import (
    bahdanau_attention_backward,
    bahdanau_attention_forward,
    luong_attention_backward,
    luong_attention_forward,
)
from .layers import dropout_backward, dropout_forward
from .lstm import lstm_backward, lstm_forward, lstm_step_backward, lstm_step_forward


class Memory(NamedTuple):
    """What the decoder attends to. keys [B, S, K]; keys_proj [B, S, A] (Bahdanau only); src_mask bool[B, S]."""

    keys: np.ndarray
    keys_proj: np.ndarray | None
    src_mask: np.ndarray


def make_memory(keys, src_mask, params, config) -> Memory:
    """(A0) keys_proj = keys W_k, once per source sentence rather than once per step."""
    keys_proj = keys @ params["attention/W_k"] if config.attention == "bahdanau" else None
    return Memory(keys, keys_proj, src_mask)


def _lstm_params(params, layer):
    return params[f"decoder/l{layer}/W_x"], params[f"decoder/l{layer}/W_h"], params[f"decoder/l{layer}/b"]


def _add(grads, name, value):
    grads[name] = grads[name] + value if name in grads else value


def decoder_step_forward(y_t, states, memory: Memory, step_mask, params, config, layer_masks=None):
    """One target position.

    y_t:    [B, E]       embedded previous target token
    states: L pairs (h, c), each [B, H]
    step_mask: bool[B]   False where the target has ended (state carried)
    layer_masks: per-layer dropout masks [B, D] for layers >= 1, or None
    Returns feature [B, H], the new states, alpha [B, S] (None without
    attention) and the cache.
    """
    layer_masks = layer_masks or [None] * config.num_layers
    alpha = attention_cache = None
    x = y_t
    if config.attention == "bahdanau":
        context, alpha, attention_cache = bahdanau_attention_forward(
            states[-1][0], memory.keys, memory.keys_proj, memory.src_mask,
            params["attention/W_q"], params["attention/v"],
        )
        x = np.concatenate([y_t, context], axis=1)  # (A5)
    new_states, lstm_caches = [], []
    for layer in range(config.num_layers):
        x = dropout_forward(x, layer_masks[layer])
        h, c, lstm_cache = lstm_step_forward(x, *states[layer], *_lstm_params(params, layer), step_mask)
        new_states.append((h, c))
        lstm_caches.append(lstm_cache)
        x = h
    feature = x
    if config.attention == "luong":
        feature, alpha, attention_cache = luong_attention_forward(
            x[:, None], memory.keys, memory.src_mask, params["attention/W_a"], params["attention/W_c"]
        )
        feature, alpha = feature[:, 0], alpha[:, 0]
    cache = (config, y_t.shape[1], layer_masks, lstm_caches, attention_cache)
    return feature, new_states, alpha, cache


def decoder_step_backward(dfeature, dstates, cache):
    """dfeature: [B, H]; dstates: L pairs (dh, dc) on this step's new states.

    Returns dy_t [B, E], dstates_prev (L pairs), dkeys [B, S, K] or 0,
    dkeys_proj [B, S, A] or None, and the parameter gradients (a dict).
    """
    config, E, layer_masks, lstm_caches, attention_cache = cache
    grads, dkeys, dkeys_proj = {}, 0.0, None
    dx = dfeature
    if config.attention == "luong":
        dqueries, dkeys, grads["attention/W_a"], grads["attention/W_c"] = luong_attention_backward(
            dfeature[:, None], attention_cache
        )
        dx = dqueries[:, 0]
    dstates_prev = [None] * config.num_layers
    for layer in reversed(range(config.num_layers)):
        dh, dc = dstates[layer]
        dx, dh_prev, dc_prev, dW_x, dW_h, db = lstm_step_backward(dh + dx, dc, lstm_caches[layer])
        dx = dropout_backward(dx, layer_masks[layer])
        dstates_prev[layer] = (dh_prev, dc_prev)
        prefix = f"decoder/l{layer}"
        grads.update({f"{prefix}/W_x": dW_x, f"{prefix}/W_h": dW_h, f"{prefix}/b": db})
    dy = dx
    if config.attention == "bahdanau":
        dy, dcontext = dx[:, :E], dx[:, E:]  # (A5')
        dquery, dkeys, dkeys_proj, grads["attention/W_q"], grads["attention/v"] = bahdanau_attention_backward(
            dcontext, attention_cache
        )
        dh_top, dc_top = dstates_prev[-1]
        dstates_prev[-1] = (dh_top + dquery, dc_top)
    return dy, dstates_prev, dkeys, dkeys_proj, grads


def decoder_forward(y, tgt_lengths, init_states, keys, src_mask, params, config, dropout_masks):
    """The decoder over a teacher-forced target.

    y: [B, T, E] embedded tgt_in; tgt_lengths: int[B]; init_states: L pairs (h, c)
    keys: [B, S, K]; src_mask: bool[B, S]; dropout_masks: dict (may be empty)
    Returns features [B, T, H], alpha [B, T, S] (None without attention) and the cache.
    """
    T = y.shape[1]
    layer_masks = [dropout_masks.get(f"decoder/l{layer}") for layer in range(config.num_layers)]
    memory = make_memory(keys, src_mask, params, config)
    if config.attention == "bahdanau":
        step_masks = np.arange(T)[None, :] < tgt_lengths[:, None]
        states, step_caches, features, alphas = init_states, [], [], []
        for t in range(T):
            masks_t = [None if m is None else m[:, t] for m in layer_masks]
            feature, states, alpha, step_cache = decoder_step_forward(
                y[:, t], states, memory, step_masks[:, t], params, config, masks_t
            )
            features.append(feature)
            alphas.append(alpha)
            step_caches.append(step_cache)
        cache = ("steps", config, memory, params["attention/W_k"], step_caches)
        return np.stack(features, 1), np.stack(alphas, 1), cache
    inputs, lstm_caches = y, []
    for layer in range(config.num_layers):
        inputs = dropout_forward(inputs, layer_masks[layer])
        inputs, _, lstm_cache = lstm_forward(inputs, *init_states[layer], *_lstm_params(params, layer), tgt_lengths)
        lstm_caches.append(lstm_cache)
    features, alpha, attention_cache = inputs, None, None
    if config.attention == "luong":
        features, alpha, attention_cache = luong_attention_forward(
            inputs, keys, src_mask, params["attention/W_a"], params["attention/W_c"]
        )
    return features, alpha, ("parallel", config, keys, layer_masks, lstm_caches, attention_cache)


def decoder_backward(dfeatures, cache):
    """dfeatures: [B, T, H].

    Returns dy [B, T, E], dinit_states (L pairs), dkeys [B, S, K] and the
    parameter gradients (a dict).
    """
    if cache[0] == "steps":
        _, config, memory, W_k, step_caches = cache
        B, H = dfeatures.shape[0], config.hidden_dim
        grads, dys = {}, []
        dkeys, dkeys_proj = np.zeros_like(memory.keys), np.zeros_like(memory.keys_proj)
        dstates = [(np.zeros((B, H), dfeatures.dtype), np.zeros((B, H), dfeatures.dtype))] * config.num_layers
        for t in reversed(range(len(step_caches))):
            dy_t, dstates, dkeys_t, dkeys_proj_t, step_grads = decoder_step_backward(
                dfeatures[:, t], dstates, step_caches[t]
            )
            dys.append(dy_t)
            dkeys += dkeys_t
            dkeys_proj += dkeys_proj_t
            for name, value in step_grads.items():
                _add(grads, name, value)
        K, A = W_k.shape
        grads["attention/W_k"] = memory.keys.reshape(-1, K).T @ dkeys_proj.reshape(-1, A)  # (A0')
        dkeys += dkeys_proj @ W_k.T  # (A0')
        return np.stack(dys[::-1], 1), dstates, dkeys, grads
    _, config, keys, layer_masks, lstm_caches, attention_cache = cache
    grads = {}
    dkeys, dhs = np.zeros_like(keys), dfeatures
    if config.attention == "luong":
        dhs, dkeys, grads["attention/W_a"], grads["attention/W_c"] = luong_attention_backward(
            dfeatures, attention_cache
        )
    B, H = dfeatures.shape[0], config.hidden_dim
    zeros = np.zeros((B, H), dtype=dfeatures.dtype)
    dstates = [None] * config.num_layers
    for layer in reversed(range(config.num_layers)):
        dx, dh0, dc0, dW_x, dW_h, db = lstm_backward(dhs, zeros, zeros, lstm_caches[layer])
        dstates[layer] = (dh0, dc0)
        prefix = f"decoder/l{layer}"
        grads.update({f"{prefix}/W_x": dW_x, f"{prefix}/W_h": dW_h, f"{prefix}/b": db})
        dhs = dropout_backward(dx, layer_masks[layer])
    return dhs, dstates, dkeys, grads
