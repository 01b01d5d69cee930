"""The GRU cell in JAX, MATH.md (G1)-(G4): one step, the scan with its hand-written VJP (G1')-(G4'), and the
pluggable nnx module at the flat parameter names W_x, W_h, b_x, b_h (gates r, z, n, as cuDNN/PyTorch)."""
from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from flax import nnx
from jax import lax

from .layers import sigmoid


def gru_cell(a_x, h, W_h, b_h, mask):
    """(G1)-(G4) given a_x = x W_x + b_x: [B, 3H]; mask bool[B] carries the state where False.

    Returns the new h and what the backward reads: (h_prev, r, z, n, a_h_n).
    """
    a_h = h @ W_h + b_h
    a_x_r, a_x_z, a_x_n = jnp.split(a_x, 3, axis=-1)
    a_h_r, a_h_z, a_h_n = jnp.split(a_h, 3, axis=-1)
    r = sigmoid(a_x_r + a_h_r)                                         # (G1)
    z = sigmoid(a_x_z + a_h_z)                                         # (G2)
    n = jnp.tanh(a_x_n + r * a_h_n)                                    # (G3)
    h_out = jnp.where(mask[:, None], (1.0 - z) * n + z * h, h)         # (G4)
    return h_out, (h, r, z, n, a_h_n)


@partial(jax.custom_vjp, nondiff_argnums=(5,))
def gru_scan(a_x, h0, W_h, b_h, mask, unroll=1):
    """(G1)-(G4) over time: a_x [T, B, 3H] (x W_x + b_x, time-major), mask bool[T, B] -> hs [T, B, H], h_T.

    Its backward is MATH.md's (G1')-(G4') by hand, as the NumPy reference: a reverse scan with one matrix
    product per step (da_h W_h^T), then dW_h and db_h for all steps at once.
    """
    h, (hs, _) = _gru_scan_forward(a_x, h0, W_h, b_h, mask, unroll)
    return hs, h


def gru_scan_autodiff(a_x, h0, W_h, b_h, mask, unroll=1):
    """gru_scan without the custom VJP: jax.grad differentiates the plain lax.scan (the checks' third leg)."""
    h, (hs, _) = _gru_scan_forward(a_x, h0, W_h, b_h, mask, unroll)
    return hs, h


def _gru_scan_forward(a_x, h0, W_h, b_h, mask, unroll):
    def body(h, inputs):
        h, saved = gru_cell(inputs[0], h, W_h, b_h, inputs[1])
        return h, (h, saved)

    return lax.scan(body, h0, (a_x, mask), unroll=unroll)


def _gru_scan_fwd(a_x, h0, W_h, b_h, mask, unroll):
    h, (hs, saved) = _gru_scan_forward(a_x, h0, W_h, b_h, mask, unroll)
    return (hs, h), (W_h, mask, saved)


def _gru_scan_bwd(unroll, residuals, cotangents):
    W_h, mask, saved = residuals
    dhs, dh_T = cotangents

    def body(dh_next, inputs):
        dh_out, m, (h_prev, r, z, n, a_h_n) = inputs
        dh = dh_next + dh_out
        dh_new = jnp.where(m[:, None], dh, 0.0)
        dn_pre = dh_new * (1.0 - z) * (1.0 - n**2)                     # (G4'), (G3')
        dz_pre = dh_new * (h_prev - n) * z * (1.0 - z)                 # (G4'), (G2')
        dr_pre = dn_pre * a_h_n * r * (1.0 - r)                        # (G3'), (G1')
        da_x = jnp.concatenate([dr_pre, dz_pre, dn_pre], axis=-1)
        da_h = jnp.concatenate([dr_pre, dz_pre, dn_pre * r], axis=-1)  # (G3')
        dh_prev = da_h @ W_h.T + dh_new * z + jnp.where(m[:, None], 0.0, dh)  # (G4')
        return dh_prev, (da_x, da_h)

    dh0, (da_x, da_h) = lax.scan(body, dh_T, (dhs, mask, saved), reverse=True, unroll=unroll)
    h_prev = saved[0]
    dW_h = jnp.einsum("tbh,tbk->hk", h_prev, da_h)                     # all steps in one product
    return da_x, dh0, dW_h, da_h.sum(axis=(0, 1)), None


gru_scan.defvjp(_gru_scan_fwd, _gru_scan_bwd)


class GRU(nnx.Module):
    """The pluggable cell: W_x [D, 3H], W_h [H, 3H], b_x, b_h [3H]; state (h,)."""

    def __init__(self, p, custom_vjp=True):
        self.W_x, self.W_h = nnx.Param(p["W_x"]), nnx.Param(p["W_h"])
        self.b_x, self.b_h = nnx.Param(p["b_x"]), nnx.Param(p["b_h"])
        self.scan = gru_scan if custom_vjp else gru_scan_autodiff

    def step(self, x, state, mask):
        """One step: x [B, D], state (h,), mask bool[B] -> the new state."""
        return (gru_cell(x @ self.W_x[...] + self.b_x[...], state[0], self.W_h[...], self.b_h[...], mask)[0],)

    def __call__(self, x, state, mask, unroll=1):
        """x [B, T, D], mask bool[B, T] -> hs [B, T, H], final (h,)."""
        a_x = x @ self.W_x[...] + self.b_x[...]  # input half of (G1)-(G3), hoisted out of the scan: one GEMM
        hs, h = self.scan(jnp.swapaxes(a_x, 0, 1), state[0], self.W_h[...], self.b_h[...], mask.T, unroll)
        return jnp.swapaxes(hs, 0, 1), (h,)
