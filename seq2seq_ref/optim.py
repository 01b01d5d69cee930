"""SGD with momentum, Adam and global-norm clipping, written to optax's formulas.

Each is an (init, update) pair over flat dicts, as optax's GradientTransformation:
    state = opt.init(params);  updates, state = opt.update(grads, state);  params = apply_updates(params, updates)

sgd (optax.sgd with momentum, nesterov=False; optax.trace):
    m_t = g_t + mu m_{t-1},  m_0 = 0;            update = -lr m_t
adam (optax.adam, eps_root = 0; optax.scale_by_adam):
    m_t = b1 m_{t-1} + (1 - b1) g_t;  v_t = b2 v_{t-1} + (1 - b2) g_t^2
    m_hat = m_t / (1 - b1^t);  v_hat = v_t / (1 - b2^t)
    update = -lr m_hat / (sqrt(v_hat) + eps)
clip_by_global_norm (optax.clip_by_global_norm):
    n = sqrt(sum over tensors of sum(g^2));  g <- g if n < max_norm else (g / n) * max_norm
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np


@dataclass(frozen=True)
class GradientTransformation:
    init: Callable[[dict], Any]
    update: Callable[[dict, Any], tuple[dict, Any]]


def _check_positive(name, value, allow_zero=False):
    ok = value >= 0 if allow_zero else value > 0
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name}: expected a float {bound}, got {value!r}")


def sgd(learning_rate: float, momentum: float = 0.0) -> GradientTransformation:
    _check_positive("learning_rate", learning_rate)
    _check_positive("momentum", momentum, allow_zero=True)

    def init(params):
        return {name: np.zeros_like(p) for name, p in params.items()} if momentum else {}

    def update(grads, trace):
        if momentum:
            trace = {name: g + momentum * trace[name] for name, g in grads.items()}  # (S1)
            return {name: -learning_rate * m for name, m in trace.items()}, trace
        return {name: -learning_rate * g for name, g in grads.items()}, trace

    return GradientTransformation(init, update)


def adam(learning_rate: float, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8) -> GradientTransformation:
    _check_positive("learning_rate", learning_rate)
    for name, value in (("b1", b1), ("b2", b2)):
        if not 0.0 <= value < 1.0:
            raise ValueError(f"{name}: expected a float in [0, 1), got {value!r}")
    _check_positive("eps", eps, allow_zero=True)

    def init(params):
        zeros = {name: np.zeros_like(p) for name, p in params.items()}
        return {"count": 0, "mu": zeros, "nu": dict(zeros)}

    def update(grads, state):
        count = state["count"] + 1
        mu = {name: b1 * state["mu"][name] + (1 - b1) * g for name, g in grads.items()}  # (S2)
        nu = {name: b2 * state["nu"][name] + (1 - b2) * g * g for name, g in grads.items()}
        updates = {}
        for name, m in mu.items():
            m_hat = m / (1 - b1**count)
            v_hat = nu[name] / (1 - b2**count)
            updates[name] = -learning_rate * (m_hat / (np.sqrt(v_hat) + eps))
        return updates, {"count": count, "mu": mu, "nu": nu}

    return GradientTransformation(init, update)


def global_norm(tree: dict) -> float:
    return float(np.sqrt(sum(np.sum(np.square(g)) for g in tree.values())))


def clip_by_global_norm(max_norm: float) -> GradientTransformation:
    _check_positive("max_norm", max_norm)

    def update(grads, state):
        norm = global_norm(grads)  # (S3)
        if norm < max_norm:
            return grads, state
        return {name: (g / np.asarray(norm, g.dtype)) * max_norm for name, g in grads.items()}, state

    return GradientTransformation(lambda params: (), update)


def chain(*transforms: GradientTransformation) -> GradientTransformation:
    """Apply transforms in order, as optax.chain."""

    def init(params):
        return tuple(t.init(params) for t in transforms)

    def update(grads, states):
        new_states = []
        for transform, state in zip(transforms, states):
            grads, state = transform.update(grads, state)
            new_states.append(state)
        return grads, tuple(new_states)

    return GradientTransformation(init, update)


def apply_updates(params: dict, updates: dict) -> dict:
    """params + updates, keeping each parameter's dtype (as optax.apply_updates)."""
    return {name: (p + updates[name]).astype(p.dtype, copy=False) for name, p in params.items()}
