"""The LSTM cell in JAX, MATH.md (1)-(6): one step, the scan with its hand-written VJP (1')-(6'), and the
pluggable nnx module at the flat parameter names W_x, W_h, b."""
from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from flax import nnx
from jax import lax

from .layers import sigmoid


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


class LSTM(nnx.Module):
    """The pluggable cell: W_x [D, 4H], W_h [H, 4H], b [4H]; gates i, f, g, o; state (h, c)."""

    def __init__(self, p, custom_vjp=True):
        self.W_x, self.W_h, self.b = nnx.Param(p["W_x"]), nnx.Param(p["W_h"]), nnx.Param(p["b"])
        self.scan = lstm_scan if custom_vjp else lstm_scan_autodiff

    def step(self, x, state, mask):
        """One step: x [B, D], state (h, c), mask bool[B] -> the new state."""
        return lstm_cell(x @ self.W_x[...] + self.b[...], *state, self.W_h[...], mask)[:2]

    def __call__(self, x, state, mask, unroll=1):
        """x [B, T, D], mask bool[B, T] -> hs [B, T, H], final (h, c)."""
        a_x = x @ self.W_x[...] + self.b[...]  # input half of (1), hoisted out of the scan: one GEMM
        hs, h, c = self.scan(jnp.swapaxes(a_x, 0, 1), *state, self.W_h[...], mask.T, unroll)
        return jnp.swapaxes(hs, 0, 1), (h, c)
