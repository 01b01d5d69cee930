"""The GRU layer (Cho et al. 2014, the cuDNN/PyTorch variant), MATH.md equations (G1)-(G4): step and sequence.

Gate order r, z, n along the 3H axis. Two biases, b_x and b_h, because the
reset gate multiplies the hidden half of the candidate, bias included (G3).
A position past a sequence's length carries the state unchanged (G4), as the
LSTM's (5)-(6) do.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .components import Cell
from .ops import sigmoid


class GRUCache(NamedTuple):
    h_prev: np.ndarray
    r: np.ndarray
    z: np.ndarray
    n: np.ndarray
    a_h_n: np.ndarray  # h_prev W_hn + b_hn, which r multiplies
    m: np.ndarray      # [B, 1] floats, 1 where the step is real
    W_h: np.ndarray


def gru_cell_forward(a_x, h_prev, W_h, b_h, mask):
    """Equations (G1)-(G4) given the input half a_x = x W_x + b_x [B, 3H] already computed.

    h_prev: [B, H];  W_h: [H, 3H];  b_h: [3H];  mask: bool[B], False past a sequence's end
    Returns h [B, H] and the cache.
    """
    a_h = h_prev @ W_h + b_h
    a_x_r, a_x_z, a_x_n = np.split(a_x, 3, axis=1)
    a_h_r, a_h_z, a_h_n = np.split(a_h, 3, axis=1)
    r = sigmoid(a_x_r + a_h_r)                                  # (G1)
    z = sigmoid(a_x_z + a_h_z)                                  # (G2)
    n = np.tanh(a_x_n + r * a_h_n)                              # (G3)
    h_new = (1.0 - z) * n + z * h_prev                          # (G4)
    h = np.where(mask[:, None], h_new, h_prev)                  # (G4) carried past the end
    return h, GRUCache(h_prev, r, z, n, a_h_n, mask[:, None].astype(a_x.dtype), W_h)


def gru_cell_backward(dh, cache: GRUCache):
    """Backward of (G1)-(G4) down to the pre-activations.

    dh: [B, H]  total gradient reaching this step's output h_t
    Returns da_x [B, 3H] (the input half, with its bias), da_h [B, 3H] (the hidden half) and dh_prev [B, H].
    """
    h_prev, r, z, n, a_h_n, m, W_h = cache
    dh_new = dh * m
    dn = dh_new * (1.0 - z)                                     # (G4')
    dz = dh_new * (h_prev - n)                                  # (G4')
    dn_pre = dn * (1.0 - n**2)                                  # (G3')
    dr = dn_pre * a_h_n                                         # (G3')
    dz_pre = dz * z * (1.0 - z)                                 # (G2')
    dr_pre = dr * r * (1.0 - r)                                 # (G1')
    da_x = np.concatenate([dr_pre, dz_pre, dn_pre], axis=1)
    da_h = np.concatenate([dr_pre, dz_pre, dn_pre * r], axis=1)  # (G3') r scales the hidden half of n
    dh_prev = da_h @ W_h.T + dh_new * z + (1.0 - m) * dh       # (G4'), (G1')-(G3') through h W_h
    return da_x, da_h, dh_prev


def gru_step_forward(x, h_prev, W_x, W_h, b_x, b_h, mask=None):
    """One GRU step, (G1)-(G4).

    x: [B, D], h_prev: [B, H], W_x: [D, 3H], W_h: [H, 3H], b_x, b_h: [3H]
    mask: bool[B] or None (every row real)
    Returns h [B, H] and the cache.
    """
    if mask is None:
        mask = np.ones(x.shape[0], dtype=bool)
    h, cell = gru_cell_forward(x @ W_x + b_x, h_prev, W_h, b_h, mask)
    return h, (x, W_x, cell)


def gru_step_backward(dh, cache):
    """Returns dx [B, D], dh_prev [B, H], dW_x [D, 3H], dW_h [H, 3H], db_x [3H], db_h [3H]."""
    x, W_x, cell = cache
    da_x, da_h, dh_prev = gru_cell_backward(dh, cell)
    return da_x @ W_x.T, dh_prev, x.T @ da_x, cell.h_prev.T @ da_h, da_x.sum(axis=0), da_h.sum(axis=0)


def gru_forward(x, h0, W_x, W_h, b_x, b_h, lengths):
    """A GRU over a padded sequence.

    x: [B, T, D], h0: [B, H], W_x: [D, 3H], W_h: [H, 3H], b_x, b_h: [3H]; lengths: int[B], 1 <= lengths <= T
    Returns hs [B, T, H] (past a length, the carried state), the final h (each sequence's state at its own
    length) and the cache.
    """
    B, T, _ = x.shape
    a_x = x @ W_x + b_x  # input half of (G1)-(G3) for all steps in one GEMM
    mask = np.arange(T)[None, :] < lengths[:, None]
    hs = np.empty((B, T, h0.shape[1]), dtype=a_x.dtype)
    h, cells = h0, []
    for t in range(T):
        h, cell = gru_cell_forward(a_x[:, t], h, W_h, b_h, mask[:, t])
        hs[:, t] = h
        cells.append(cell)
    return hs, h, (x, W_x, h0, hs, cells)


def gru_backward(dhs, dh_T, cache):
    """Backpropagation through time.

    dhs: [B, T, H] gradient on every step's h;  dh_T: [B, H] on the final state
    Returns dx [B, T, D], dh0 [B, H], dW_x, dW_h, db_x, db_h.
    """
    x, W_x, h0, hs, cells = cache
    B, T, D = x.shape
    H = h0.shape[1]
    da_x = np.empty((B, T, 3 * H), dtype=dhs.dtype)
    da_h = np.empty((B, T, 3 * H), dtype=dhs.dtype)
    dh = dh_T
    for t in reversed(range(T)):
        da_x[:, t], da_h[:, t], dh = gru_cell_backward(dh + dhs[:, t], cells[t])
    h_prev = np.concatenate([h0[:, None], hs[:, :-1]], axis=1)
    da_x_flat, da_h_flat = da_x.reshape(B * T, 3 * H), da_h.reshape(B * T, 3 * H)
    # summed over time: one GEMM each instead of one per step
    dW_x = x.reshape(B * T, D).T @ da_x_flat
    dW_h = h_prev.reshape(B * T, H).T @ da_h_flat
    return da_x @ W_x.T, dh, dW_x, dW_h, da_x_flat.sum(axis=0), da_h_flat.sum(axis=0)


class GRU(Cell):
    """The GRU as a pluggable cell (components.Cell): state (h,); parameters W_x, W_h, b_x, b_h."""

    name = "gru"
    state_names = ("h",)

    @staticmethod
    def param_shapes(input_dim, hidden_dim):
        H = hidden_dim
        return {"W_x": (input_dim, 3 * H), "W_h": (H, 3 * H), "b_x": (3 * H,), "b_h": (3 * H,)}

    @staticmethod
    def init_param(suffix, shape, hidden_dim, rng):
        """Matrices U(-1/sqrt(H), 1/sqrt(H)) as PyTorch; biases 0."""
        if suffix in ("b_x", "b_h"):
            return np.zeros(shape)
        bound = 1.0 / np.sqrt(hidden_dim)
        return rng.uniform(-bound, bound, size=shape)

    @staticmethod
    def forward(x, state, p, lengths):
        hs, h, cache = gru_forward(x, state[0], p["W_x"], p["W_h"], p["b_x"], p["b_h"], lengths)
        return hs, (h,), cache

    @staticmethod
    def backward(dhs, dstate, cache):
        dx, dh0, dW_x, dW_h, db_x, db_h = gru_backward(dhs, dstate[0], cache)
        return dx, (dh0,), {"W_x": dW_x, "W_h": dW_h, "b_x": db_x, "b_h": db_h}

    @staticmethod
    def step_forward(x, state, p, mask):
        h, cache = gru_step_forward(x, state[0], p["W_x"], p["W_h"], p["b_x"], p["b_h"], mask)
        return (h,), cache

    @staticmethod
    def step_backward(dstate, cache):
        dx, dh, dW_x, dW_h, db_x, db_h = gru_step_backward(dstate[0], cache)
        return dx, (dh,), {"W_x": dW_x, "W_h": dW_h, "b_x": db_x, "b_h": db_h}
