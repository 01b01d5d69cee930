"""The LSTM layer, MATH.md equations (1)-(6): cell, step and sequence, forward and backward.

Gate order i, f, g, o along the 4H axis (as cuDNN/PyTorch). A position past a
sequence's length is masked: the state is carried unchanged, eq. (5)-(6), so it
neither changes nor sends gradient into the parameters.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .components import Cell
from .ops import sigmoid


class CellCache(NamedTuple):
    h_prev: np.ndarray
    c_prev: np.ndarray
    i: np.ndarray
    f: np.ndarray
    g: np.ndarray
    o: np.ndarray
    tanh_c: np.ndarray
    mask: np.ndarray  # [B, 1] floats, 1 where the step is real
    W_h: np.ndarray


def lstm_cell_forward(a_x, h_prev, c_prev, W_h, mask):
    """Equations (1)-(6) given the input half of (1) already computed.

    a_x:    [B, 4H]  x_t W_x + b
    h_prev: [B, H], c_prev: [B, H]
    W_h:    [H, 4H]
    mask:   bool[B]  False past a sequence's end
    Returns h [B, H], c [B, H] and the cache.
    """
    a = a_x + h_prev @ W_h                                    # (1)
    a_i, a_f, a_g, a_o = np.split(a, 4, axis=1)
    i, f, g, o = sigmoid(a_i), sigmoid(a_f), np.tanh(a_g), sigmoid(a_o)  # (2)
    c_new = f * c_prev + i * g                                # (3)
    tanh_c = np.tanh(c_new)
    h_new = o * tanh_c                                        # (4)
    m = mask[:, None].astype(a.dtype)
    c = np.where(mask[:, None], c_new, c_prev)                # (5)
    h = np.where(mask[:, None], h_new, h_prev)                # (6)
    return h, c, CellCache(h_prev, c_prev, i, f, g, o, tanh_c, m, W_h)


def lstm_cell_backward(dh, dc, cache: CellCache):
    """Backward of (1)-(6) down to the pre-activations.

    dh, dc: [B, H]  total gradient reaching this step's outputs h_t, c_t
    Returns da [B, 4H], dh_prev [B, H], dc_prev [B, H].
    """
    h_prev, c_prev, i, f, g, o, tanh_c, m, W_h = cache
    dh_new = dh * m                                           # (6')
    dc_new = dc * m                                           # (5')
    do = dh_new * tanh_c                                      # (4')
    dc_new = dc_new + dh_new * o * (1.0 - tanh_c**2)          # (4') c reaches h too: add, never assign
    di, df, dg = dc_new * g, dc_new * c_prev, dc_new * i      # (3')
    dc_prev = dc_new * f + (1.0 - m) * dc                     # (3'), (5')
    da = np.concatenate(                                      # (2')
        [di * i * (1.0 - i), df * f * (1.0 - f), dg * (1.0 - g**2), do * o * (1.0 - o)], axis=1
    )
    dh_prev = da @ W_h.T + (1.0 - m) * dh                     # (1'), (6')
    return da, dh_prev, dc_prev


def lstm_step_forward(x, h_prev, c_prev, W_x, W_h, b, mask=None):
    """One LSTM step, equations (1)-(6).

    x: [B, D], h_prev: [B, H], c_prev: [B, H]
    W_x: [D, 4H], W_h: [H, 4H], b: [4H]
    mask: bool[B] or None (every row real)
    Returns h [B, H], c [B, H] and the cache.
    """
    if mask is None:
        mask = np.ones(x.shape[0], dtype=bool)
    h, c, cell = lstm_cell_forward(x @ W_x + b, h_prev, c_prev, W_h, mask)
    return h, c, (x, W_x, cell)


def lstm_step_backward(dh, dc, cache):
    """Returns dx [B, D], dh_prev, dc_prev [B, H], dW_x [D, 4H], dW_h [H, 4H], db [4H]."""
    x, W_x, cell = cache
    da, dh_prev, dc_prev = lstm_cell_backward(dh, dc, cell)
    return da @ W_x.T, dh_prev, dc_prev, x.T @ da, cell.h_prev.T @ da, da.sum(axis=0)


def lstm_forward(x, h0, c0, W_x, W_h, b, lengths):
    """An LSTM over a padded sequence.

    x: [B, T, D], h0: [B, H], c0: [B, H], W_x: [D, 4H], W_h: [H, 4H], b: [4H]
    lengths: int[B], 1 <= lengths <= T
    Returns hs [B, T, H] (every step's h; past a length, the carried state),
    the final (h_T, c_T) (each sequence's state at its own length) and the cache.
    """
    B, T, _ = x.shape
    a_x = x @ W_x + b  # input half of (1) for all steps in one GEMM
    mask = np.arange(T)[None, :] < lengths[:, None]
    hs = np.empty((B, T, h0.shape[1]), dtype=a_x.dtype)
    h, c, cells = h0, c0, []
    for t in range(T):
        h, c, cell = lstm_cell_forward(a_x[:, t], h, c, W_h, mask[:, t])
        hs[:, t] = h
        cells.append(cell)
    return hs, (h, c), (x, W_x, h0, hs, cells)


def lstm_backward(dhs, dh_T, dc_T, cache):
    """Backpropagation through time.

    dhs: [B, T, H]  gradient on every step's h;  dh_T, dc_T: [B, H] on the final state
    Returns dx [B, T, D], dh0 [B, H], dc0 [B, H], dW_x, dW_h, db.
    """
    x, W_x, h0, hs, cells = cache
    B, T, D = x.shape
    H = h0.shape[1]
    da = np.empty((B, T, 4 * H), dtype=dhs.dtype)
    dh, dc = dh_T, dc_T
    for t in reversed(range(T)):
        da[:, t], dh, dc = lstm_cell_backward(dh + dhs[:, t], dc, cells[t])
    h_prev = np.concatenate([h0[:, None], hs[:, :-1]], axis=1)
    da_flat = da.reshape(B * T, 4 * H)
    # (1') summed over time: one GEMM each instead of one per step
    dW_x = x.reshape(B * T, D).T @ da_flat
    dW_h = h_prev.reshape(B * T, H).T @ da_flat
    return da @ W_x.T, dh, dc, dW_x, dW_h, da_flat.sum(axis=0)


class LSTM(Cell):
    """The LSTM as a pluggable cell (components.Cell): state (h, c); parameters W_x, W_h, b."""

    name = "lstm"
    state_names = ("h", "c")

    @staticmethod
    def param_shapes(input_dim, hidden_dim):
        H = hidden_dim
        return {"W_x": (input_dim, 4 * H), "W_h": (H, 4 * H), "b": (4 * H,)}

    @staticmethod
    def init_param(suffix, shape, hidden_dim, rng):
        """U(-1/sqrt(H), 1/sqrt(H)) as PyTorch; bias 0 but the forget-gate block 1 (Gers et al. 2000)."""
        if suffix == "b":
            value = np.zeros(shape)
            value[hidden_dim: 2 * hidden_dim] = 1.0
            return value
        bound = 1.0 / np.sqrt(hidden_dim)
        return rng.uniform(-bound, bound, size=shape)

    @staticmethod
    def forward(x, state, p, lengths):
        hs, (h, c), cache = lstm_forward(x, *state, p["W_x"], p["W_h"], p["b"], lengths)
        return hs, (h, c), cache

    @staticmethod
    def backward(dhs, dstate, cache):
        dx, dh0, dc0, dW_x, dW_h, db = lstm_backward(dhs, *dstate, cache)
        return dx, (dh0, dc0), {"W_x": dW_x, "W_h": dW_h, "b": db}

    @staticmethod
    def step_forward(x, state, p, mask):
        h, c, cache = lstm_step_forward(x, *state, p["W_x"], p["W_h"], p["b"], mask)
        return (h, c), cache

    @staticmethod
    def step_backward(dstate, cache):
        dx, dh, dc, dW_x, dW_h, db = lstm_step_backward(*dstate, cache)
        return dx, (dh, dc), {"W_x": dW_x, "W_h": dW_h, "b": db}
