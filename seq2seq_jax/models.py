"""The encoder-decoder as Flax NNX modules, equation for equation the NumPy reference.

Every nnx.Param sits at the attribute path of its flat name: `encoder/l0/fwd/W_x`
is `model.encoder.l0.fwd.W_x`, so the flat dict and the NNX state convert
losslessly (seq2seq_jax.params).  Recurrences run under lax.scan; the input
half of (1), x W_x + b, is one matrix product for all steps before the scan.
Equation numbers are MATH.md's.
"""
from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from flax import nnx
from jax import lax

from seq2seq_ref.config import ModelConfig
from seq2seq_ref.decoder import Memory


def sigmoid(x):
    # Stable on both sides (XLA's logistic); 0.5 (1 + tanh(x / 2)) cancels for x << 0 in float32 and bf16.
    return jax.nn.sigmoid(x)


def lstm_cell(a_x, h, c, W_h, mask):
    """(1)-(6) given a_x = x W_x + b: [B, 4H]; mask bool[B] carries the state where False.

    Returns the new (h, c) and what the backward (1')-(6') reads: (c_prev, i, f, g, o, tanh(c~)).
    """
    a = a_x + h @ W_h                                                     # (1)
    a_i, a_f, a_g, a_o = jnp.split(a, 4, axis=-1)
    i, f, g, o = sigmoid(a_i), sigmoid(a_f), jnp.tanh(a_g), sigmoid(a_o)  # (2)
    c_new = f * c + i * g                                                 # (3)
    tanh_c = jnp.tanh(c_new)
    keep = mask[:, None]
    h_out = jnp.where(keep, o * tanh_c, h)                                # (4), (6)
    c_out = jnp.where(keep, c_new, c)                                     # (5)
    return h_out, c_out, (c, i, f, g, o, tanh_c)


@partial(jax.custom_vjp, nondiff_argnums=(5,))
def lstm_scan(a_x, h0, c0, W_h, mask, unroll=1):
    """(1)-(6) over time: a_x [T, B, 4H] (x W_x + b, time-major), mask bool[T, B] -> hs [T, B, H], h_T, c_T.

    Its backward is MATH.md's (1')-(6') by hand: a reverse scan that does one
    matrix product per step (da W_h^T), then dW_h for all steps as one large
    product, as the NumPy reference does.  Autodiff of the scan would instead
    accumulate h^T da inside every step; this is the faster schedule on CPU,
    with identical values.
    """
    (h, c), (hs, _) = _lstm_scan_forward(a_x, h0, c0, W_h, mask, unroll)
    return hs, h, c


def _lstm_scan_forward(a_x, h0, c0, W_h, mask, unroll):
    def body(carry, inputs):
        h, c, saved = lstm_cell(inputs[0], *carry, W_h, inputs[1])
        return (h, c), (h, saved)

    return lax.scan(body, (h0, c0), (a_x, mask), unroll=unroll)


def _lstm_scan_fwd(a_x, h0, c0, W_h, mask, unroll):
    (h, c), (hs, gates) = _lstm_scan_forward(a_x, h0, c0, W_h, mask, unroll)
    return (hs, h, c), (h0, W_h, mask, hs, gates)


def _lstm_scan_bwd(unroll, residuals, cotangents):
    h0, W_h, mask, hs, gates = residuals
    dhs, dh_T, dc_T = cotangents

    def body(carry, inputs):
        dh_next, dc = carry
        dh_out, m, (c_prev, i, f, g, o, tanh_c) = inputs
        dh = dh_next + dh_out
        keep = m[:, None]
        dh_new = jnp.where(keep, dh, 0.0)                                     # (6')
        dc_new = jnp.where(keep, dc, 0.0)                                     # (5')
        do = dh_new * tanh_c                                                  # (4')
        dc_new = dc_new + dh_new * o * (1.0 - tanh_c**2)                      # (4')
        da = jnp.concatenate([dc_new * g * i * (1.0 - i), dc_new * c_prev * f * (1.0 - f),   # (3'), (2')
                              dc_new * i * (1.0 - g**2), do * o * (1.0 - o)], axis=-1)
        dc_prev = dc_new * f + jnp.where(keep, 0.0, dc)                       # (3'), (5')
        dh_prev = da @ W_h.T + jnp.where(keep, 0.0, dh)                       # (1'), (6')
        return (dh_prev, dc_prev), da

    (dh0, dc0), da = lax.scan(body, (dh_T, dc_T), (dhs, mask, gates), reverse=True, unroll=unroll)
    h_prev = jnp.concatenate([h0[None], hs[:-1]], axis=0)
    dW_h = jnp.einsum("tbh,tbk->hk", h_prev, da)                              # (1') all steps in one product
    return da, dh0, dc0, dW_h, None


lstm_scan.defvjp(_lstm_scan_fwd, _lstm_scan_bwd)


def lstm_scan_autodiff(a_x, h0, c0, W_h, mask, unroll=1):
    """lstm_scan without the custom VJP: jax.grad differentiates the plain lax.scan.

    The independent third leg of the gradient check (`seq2seq gradcheck --against jax`): with the custom
    VJP, "hand-written vs autodiff" would compare two hand-written backward passes.  Forward mode
    (jax.jvp, jacfwd) cannot pass through a custom_vjp at all; it can through this one.
    """
    (h, c), (hs, _) = _lstm_scan_forward(a_x, h0, c0, W_h, mask, unroll)
    return hs, h, c


def reverse_padded(x, lengths):
    """Reverse each sequence's first lengths[b] steps along axis 1; padding stays put (B1)."""
    B, T = x.shape[:2]
    t = jnp.arange(T)[None, :]
    index = jnp.where(t < lengths[:, None], lengths[:, None] - 1 - t, t)
    return x[jnp.arange(B)[:, None], index]


def masked_softmax(scores, mask):
    """(A3) padded positions get a -inf score, hence exactly zero weight; an all-masked row is all zeros."""
    scores = jnp.where(mask, scores, -jnp.inf)
    top = lax.stop_gradient(scores.max(axis=-1, keepdims=True))  # a shift: softmax does not depend on it
    weights = jnp.exp(scores - jnp.where(jnp.isfinite(top), top, 0.0))
    total = weights.sum(axis=-1, keepdims=True)
    return weights / jnp.where(total > 0, total, 1.0)


def length_mask(lengths, width):
    return jnp.arange(width)[None, :] < lengths[:, None]


def dropout(x, keep_mask):
    """(D1); keep_mask None means no dropout."""
    return x if keep_mask is None else x * keep_mask


class Embed(nnx.Module):
    def __init__(self, W):
        self.W = nnx.Param(W)

    def __call__(self, ids):
        return jnp.take(self.W[...], ids, axis=0)  # (E1)


class Linear(nnx.Module):
    def __init__(self, W, b):
        self.W, self.b = nnx.Param(W), nnx.Param(b)

    def __call__(self, x):
        return x @ self.W[...] + self.b[...]  # (O1)


class LSTM(nnx.Module):
    """W_x [D, 4H], W_h [H, 4H], b [4H]; gates i, f, g, o."""

    def __init__(self, W_x, W_h, b, custom_vjp=True):
        self.W_x, self.W_h, self.b = nnx.Param(W_x), nnx.Param(W_h), nnx.Param(b)
        self.scan = lstm_scan if custom_vjp else lstm_scan_autodiff

    def step(self, x, h, c, mask):
        """One step: x [B, D], h, c [B, H], mask bool[B] -> (h, c)."""
        return lstm_cell(x @ self.W_x[...] + self.b[...], h, c, self.W_h[...], mask)[:2]

    def __call__(self, x, h0, c0, mask, unroll=1):
        """x [B, T, D], mask bool[B, T] -> hs [B, T, H], final (h, c)."""
        a_x = x @ self.W_x[...] + self.b[...]  # input half of (1), hoisted out of the scan: one GEMM
        hs, h, c = self.scan(jnp.swapaxes(a_x, 0, 1), h0, c0, self.W_h[...], mask.T, unroll)
        return jnp.swapaxes(hs, 0, 1), (h, c)


class EncoderLayer(nnx.Module):
    def __init__(self, params, prefix, bidirectional, custom_vjp=True):
        self.fwd = LSTM(*(params[f"{prefix}/fwd/{n}"] for n in ("W_x", "W_h", "b")), custom_vjp)
        if bidirectional:
            self.bwd = LSTM(*(params[f"{prefix}/bwd/{n}"] for n in ("W_x", "W_h", "b")), custom_vjp)


class Encoder(nnx.Module):
    def __init__(self, config: ModelConfig, params, custom_vjp=True):
        self.config = config
        for layer in range(config.num_layers):
            setattr(self, f"l{layer}", EncoderLayer(params, f"encoder/l{layer}", config.bidirectional, custom_vjp))

    def __call__(self, x, lengths, dropout_masks, unroll=1):
        """x [B, S, E] -> keys [B, S, K] and the decoder's initial states (B2)."""
        B, S = x.shape[:2]
        zeros = jnp.zeros((B, self.config.hidden_dim), x.dtype)
        mask = length_mask(lengths, S)
        inputs, states = x, []
        for layer in range(self.config.num_layers):
            if layer > 0:
                inputs = dropout(inputs, dropout_masks.get(f"encoder/l{layer}"))
            lstms = getattr(self, f"l{layer}")
            hs_fwd, (h_fwd, c_fwd) = lstms.fwd(inputs, zeros, zeros, mask, unroll)
            if self.config.bidirectional:
                hs_bwd, (h_bwd, c_bwd) = lstms.bwd(reverse_padded(inputs, lengths), zeros, zeros, mask, unroll)
                inputs = jnp.concatenate([hs_fwd, reverse_padded(hs_bwd, lengths)], axis=-1)  # (B1)
                states.append((h_fwd + h_bwd, c_fwd + c_bwd))                               # (B2)
            else:
                inputs = hs_fwd
                states.append((h_fwd, c_fwd))
        return inputs, states


class BahdanauAttention(nnx.Module):
    def __init__(self, W_q, W_k, v):
        self.W_q, self.W_k, self.v = nnx.Param(W_q), nnx.Param(W_k), nnx.Param(v)

    def project_keys(self, keys):
        return keys @ self.W_k[...]  # (A0)

    def __call__(self, query, memory: Memory):
        """query [B, H] -> context [B, K], alpha [B, S]."""
        u = jnp.tanh(memory.keys_proj + (query @ self.W_q[...])[:, None, :])  # (A1)
        alpha = masked_softmax(u @ self.v[...], memory.src_mask)                # (A2), (A3)
        return jnp.einsum("bs,bsk->bk", alpha, memory.keys), alpha              # (A4)


class LuongAttention(nnx.Module):
    def __init__(self, W_a, W_c):
        self.W_a, self.W_c = nnx.Param(W_a), nnx.Param(W_c)

    def __call__(self, queries, memory: Memory):
        """queries [B, T, H] -> attentional states [B, T, H], alpha [B, T, S]."""
        scores = jnp.einsum("bth,bsh->bts", queries @ self.W_a[...], memory.keys)     # (L1)
        alpha = masked_softmax(scores, memory.src_mask[:, None, :])                    # (L2)
        context = jnp.einsum("bts,bsk->btk", alpha, memory.keys)                       # (L3)
        return jnp.tanh(jnp.concatenate([context, queries], axis=-1) @ self.W_c[...]), alpha  # (L4)


class Decoder(nnx.Module):
    def __init__(self, config: ModelConfig, params, custom_vjp=True):
        self.config = config
        for layer in range(config.num_layers):
            setattr(self, f"l{layer}",
                    LSTM(*(params[f"decoder/l{layer}/{n}"] for n in ("W_x", "W_h", "b")), custom_vjp))

    def layers(self):
        return [getattr(self, f"l{layer}") for layer in range(self.config.num_layers)]

    def step(self, x, states, step_mask, layer_masks):
        """All layers for one position: x [B, D_0] -> top h [B, H], new states."""
        new_states = []
        for lstm, (h, c), keep in zip(self.layers(), states, layer_masks):
            h, c = lstm.step(dropout(x, keep), h, c, step_mask)
            new_states.append((h, c))
            x = h
        return x, new_states

    def __call__(self, y, mask, states, layer_masks, unroll=1):
        """All layers over the whole target at once (no attention feeds back): y [B, T, E] -> hs [B, T, H]."""
        for lstm, (h0, c0), keep in zip(self.layers(), states, layer_masks):
            y, _ = lstm(dropout(y, keep), h0, c0, mask, unroll)
        return y


class Seq2Seq(nnx.Module):
    """The whole model, built from the flat parameter dict (names in seq2seq_ref.params).

    custom_vjp=False differentiates the LSTM scans by plain autodiff (lstm_scan_autodiff).
    """

    def __init__(self, config: ModelConfig, params, custom_vjp=True):
        self.config = config
        self.src_embed = Embed(params["src_embed/W"])
        self.tgt_embed = Embed(params["tgt_embed/W"])
        self.encoder = Encoder(config, params, custom_vjp)
        self.decoder = Decoder(config, params, custom_vjp)
        if config.attention == "bahdanau":
            self.attention = BahdanauAttention(params["attention/W_q"], params["attention/W_k"], params["attention/v"])
        elif config.attention == "luong":
            self.attention = LuongAttention(params["attention/W_a"], params["attention/W_c"])
        self.output = Linear(params["output/W"], params["output/b"])

    def encode(self, src, src_lengths, dropout_masks=None, unroll=1):
        """src int[B, S] -> Memory (what attention reads) and the decoder's initial states."""
        dropout_masks = dropout_masks or {}
        x = dropout(self.src_embed(src), dropout_masks.get("src_embed"))
        keys, states = self.encoder(x, src_lengths, dropout_masks, unroll)
        keys_proj = self.attention.project_keys(keys) if self.config.attention == "bahdanau" else None
        return Memory(keys, keys_proj, length_mask(src_lengths, src.shape[1])), states

    def decoder_step(self, y_t, states, memory: Memory, step_mask, layer_masks):
        """One position: y_t [B, E] -> feature [B, H], new states, alpha [B, S] or None."""
        alpha, x = None, y_t
        if self.config.attention == "bahdanau":
            context, alpha = self.attention(states[-1][0], memory)
            x = jnp.concatenate([y_t, context], axis=-1)  # (A5)
        feature, states = self.decoder.step(x, states, step_mask, layer_masks)
        if self.config.attention == "luong":
            feature, alpha = self.attention(feature[:, None], memory)
            feature, alpha = feature[:, 0], alpha[:, 0]
        return feature, states, alpha

    def features(self, tgt_in, tgt_lengths, memory: Memory, states, dropout_masks=None, unroll=1):
        """Teacher-forced decoder features [B, T, H] and attention weights [B, T, S] (or None)."""
        dropout_masks = dropout_masks or {}
        y = dropout(self.tgt_embed(tgt_in), dropout_masks.get("tgt_embed"))
        mask = length_mask(tgt_lengths, tgt_in.shape[1])
        layer_masks = [dropout_masks.get(f"decoder/l{layer}") for layer in range(self.config.num_layers)]
        if self.config.attention == "bahdanau":
            def body(carry, inputs):
                y_t, mask_t, masks_t = inputs
                feature, carry, alpha = self.decoder_step(y_t, carry, memory, mask_t, masks_t)
                return carry, (feature, alpha)

            time_major = [None if m is None else jnp.swapaxes(m, 0, 1) for m in layer_masks]
            _, (features, alpha) = lax.scan(body, states, (jnp.swapaxes(y, 0, 1), mask.T, time_major), unroll=unroll)
            return jnp.swapaxes(features, 0, 1), jnp.swapaxes(alpha, 0, 1)
        hs = self.decoder(y, mask, states, layer_masks, unroll)
        if self.config.attention == "luong":
            return self.attention(hs, memory)
        return hs, None

    def loss(self, batch, dropout_masks=None, unroll=1):
        """(O2) mean smoothed cross-entropy over real target tokens; computed in float32 at least."""
        dropout_masks = dropout_masks or {}
        memory, states = self.encode(batch.src, batch.src_lengths, dropout_masks, unroll)
        features, _ = self.features(batch.tgt_in, batch.tgt_lengths, memory, states, dropout_masks, unroll)
        logits = self.output(dropout(features, dropout_masks.get("output")))
        logits = logits.astype(jnp.promote_types(logits.dtype, jnp.float32))
        return softmax_cross_entropy(logits, batch.tgt_out, length_mask(batch.tgt_lengths, batch.tgt_in.shape[1]),
                                     self.config.label_smoothing)

    def step_log_probs(self, tokens, states, memory: Memory):
        """log p(next | prefix) [N, V] for prefixes ending in tokens int[N]; pad and bos never generated."""
        y = self.tgt_embed(tokens)
        feature, states, alpha = self.decoder_step(
            y, states, memory, jnp.ones(tokens.shape[0], bool), [None] * self.config.num_layers
        )
        log_p = jax.nn.log_softmax(self.output(feature), axis=-1)
        log_p = log_p.at[:, jnp.array([self.config.pad_id, self.config.bos_id])].set(-jnp.inf)
        return log_p, states, alpha


def softmax_cross_entropy(logits, targets, mask, label_smoothing=0.0):
    """(O2): logits [B, T, V], targets int[B, T], mask bool[B, T] -> scalar."""
    log_p = jax.nn.log_softmax(logits, axis=-1)
    target_log_p = jnp.take_along_axis(log_p, targets[..., None], axis=-1)[..., 0]
    per_token = -(1 - label_smoothing) * target_log_p - label_smoothing * log_p.mean(axis=-1)
    return jnp.where(mask, per_token, 0.0).sum() / mask.sum()
