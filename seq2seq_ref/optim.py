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
learning-rate schedules (optax.sgd/adam given a schedule; optax.scale_by_schedule):
    lr is a float, or a function of c, the number of earlier updates (0 at the first);
    noam (S4): lr(c) = peak min((c + 1) / warmup, sqrt(warmup / (c + 1)))
    linear (S5): lr(c) = peak min((c + 1) / warmup, max(0, (N - c) / (N + 1 - warmup))), N = decay_steps
    linear with decay_steps "fit": N is not known when training starts (the training loop fits it to a time
    budget once warm-up is over): lr(c) = peak min((c + 1) / warmup, 1), and the loop multiplies each update
    by fitted_scale(c) = min(1, max(0, (N - c) / (N + 1 - warmup))), so their product is (S5)'s.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Union

import numpy as np

OPTIMIZERS = ("adam", "sgd")
SCHEDULES = ("constant", "noam", "linear", "plateau")  # plateau: a constant rate here, scaled by the training loop
FIT = "fit"  # decay_steps of a linear schedule whose end the training loop fits to its time budget
LearningRate = Union[float, Callable[[int], float]]


@dataclass(frozen=True)
class GradientTransformation:
    init: Callable[[dict], Any]
    update: Callable[[dict, Any], tuple[dict, Any]]


def _check_positive(name, value, allow_zero=False):
    ok = value >= 0 if allow_zero else value > 0
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name}: expected a float {bound}, got {value!r}")


def noam_schedule(peak: float, warmup: int, xp=np) -> Callable:
    """(S4) Linear warm-up to peak at update `warmup`, then decay as 1/sqrt(update) (Vaswani et al. 2017, 5.3).

    Returns lr(c), c = the number of earlier updates, as optax schedules count.  xp is the array
    namespace (numpy here; seq2seq_jax passes jax.numpy so that one formula serves both backends).
    Vaswani's d^-0.5 warmup^-0.5 factor is the choice peak = that product.
    """
    def schedule(count):
        step = count + 1.0  # a float before dividing: jax divides int32 in float32 even under x64
        return peak * xp.minimum(step / warmup, xp.sqrt(warmup / step))

    return schedule


def linear_schedule(peak: float, warmup: int, decay_steps: int | str, xp=np) -> Callable:
    """(S5) Linear warm-up to peak at update `warmup`, then linear decay to zero after update `decay_steps`.

    For a run of known length, decaying to zero beats 1/sqrt decay at the same budget (Li, Yumer &
    Ramanan, "Budgeted Training", ICLR 2020); update decay_steps still moves, at
    peak / (decay_steps + 1 - warmup), and later updates are zero.  Returns lr(c), c = the number of
    earlier updates; xp as in noam_schedule.
    """
    def schedule(count):
        step = count + 1.0
        decay = 1.0 if decay_steps == FIT else linear_decay(count, decay_steps, warmup, xp)
        return peak * xp.minimum(step / warmup, decay)

    return schedule


def linear_decay(count, decay_steps: int, warmup: int, xp=np):
    """(S5)'s decay term max(0, (N - c) / (N + 1 - warmup)) at c = count earlier updates, N = decay_steps."""
    return xp.maximum(0.0, (decay_steps + 1.0 - (count + 1.0)) / (decay_steps + 1.0 - warmup))


def fitted_scale(count: int, decay_steps: int, warmup: int) -> float:
    """The factor on update count + 1 of a linear schedule with decay_steps "fit", once the loop has fitted N =
    decay_steps: min(1, (S5)'s decay term), so that peak min((c + 1) / warmup, 1) times it is (S5)'s rate."""
    return float(min(1.0, linear_decay(count, decay_steps, warmup)))


def check_optimizer(name: str, learning_rate: float, momentum: float = 0.0, clip_norm: float | None = None,
                    schedule: str = "constant", warmup: int = 1, beta2: float = 0.999,
                    decay_steps: int | str | None = None) -> None:
    """The settings of make_optimizer, in both backends: a ValueError naming the first bad one."""
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer: expected one of {OPTIMIZERS}, got {name!r}")
    _check_positive("learning_rate", learning_rate)
    _check_positive("momentum", momentum, allow_zero=True)
    if clip_norm is not None:
        _check_positive("clip_norm", clip_norm)
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule: expected one of {SCHEDULES}, got {schedule!r}")
    if isinstance(warmup, bool) or not isinstance(warmup, (int, np.integer)) or warmup < 1:
        raise ValueError(f"warmup: expected an int >= 1, got {warmup!r}")
    if isinstance(beta2, bool) or not isinstance(beta2, (int, float, np.floating)) or not 0.0 < beta2 < 1.0:
        raise ValueError(f"beta2: expected a float in (0, 1), got {beta2!r}")
    if schedule != "linear" and decay_steps is not None:
        raise ValueError(f"decay_steps: only schedule 'linear' takes it, got {decay_steps!r} with {schedule!r}")
    if schedule == "linear" and decay_steps != FIT and (
            isinstance(decay_steps, bool) or not isinstance(decay_steps, (int, np.integer)) or decay_steps < warmup):
        raise ValueError(f"decay_steps: expected an int >= warmup ({warmup}) or {FIT!r} with schedule 'linear', "
                         f"got {decay_steps!r}")


def learning_rate_schedule(learning_rate: float, schedule: str = "constant", warmup: int = 1, xp=np,
                           decay_steps: int | str | None = None) -> LearningRate:
    """The noam or linear schedule function peaking at learning_rate; a float for 'constant' (and 'plateau',
    whose factor the training loop applies to the updates, as validation decides it)."""
    if schedule == "noam":
        return noam_schedule(learning_rate, warmup, xp)
    if schedule == "linear":
        return linear_schedule(learning_rate, warmup, decay_steps, xp)
    return learning_rate


def make_optimizer(name: str = "adam", learning_rate: float = 1e-3, momentum: float = 0.9,
                   clip_norm: float | None = None, schedule: str = "constant", warmup: int = 1, beta2: float = 0.999,
                   decay_steps: int | str | None = None):
    """adam (its second-moment decay beta2) or sgd (with momentum) at a scheduled learning rate, after
    clip_by_global_norm when clip_norm is set; the same chain as seq2seq_jax.make_optimizer, so their states
    convert one to one."""
    check_optimizer(name, learning_rate, momentum, clip_norm, schedule, warmup, beta2, decay_steps)
    rate = learning_rate_schedule(learning_rate, schedule, warmup, decay_steps=decay_steps)
    base = adam(rate, b2=beta2) if name == "adam" else sgd(rate, momentum)
    return chain(clip_by_global_norm(clip_norm), base) if clip_norm else chain(base)


def _rate_at(learning_rate: LearningRate, count: int) -> float:
    """A Python float, as every hyperparameter here: a NumPy float64 would promote float32 updates to float64."""
    return float(learning_rate(count) if callable(learning_rate) else learning_rate)


def _check_rate(learning_rate):
    if not callable(learning_rate):
        _check_positive("learning_rate", learning_rate)


def sgd(learning_rate: LearningRate, momentum: float = 0.0) -> GradientTransformation:
    """state: {"count": updates so far, "trace": {name: m}} (trace empty without momentum)."""
    _check_rate(learning_rate)
    _check_positive("momentum", momentum, allow_zero=True)
    momentum = float(momentum)

    def init(params):
        return {"count": 0, "trace": {name: np.zeros_like(p) for name, p in params.items()} if momentum else {}}

    def update(grads, state):
        rate, trace = _rate_at(learning_rate, state["count"]), state["trace"]
        if momentum:
            trace = {name: g + momentum * trace[name] for name, g in grads.items()}  # (S1)
            grads = trace
        return {name: -rate * m for name, m in grads.items()}, {"count": state["count"] + 1, "trace": trace}

    return GradientTransformation(init, update)


def adam(learning_rate: LearningRate, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8) -> GradientTransformation:
    _check_rate(learning_rate)
    for name, value in (("b1", b1), ("b2", b2)):
        if not 0.0 <= value < 1.0:
            raise ValueError(f"{name}: expected a float in [0, 1), got {value!r}")
    _check_positive("eps", eps, allow_zero=True)
    b1, b2, eps = float(b1), float(b2), float(eps)

    def init(params):
        zeros = {name: np.zeros_like(p) for name, p in params.items()}
        return {"count": 0, "mu": zeros, "nu": dict(zeros)}

    def update(grads, state):
        rate, count = _rate_at(learning_rate, state["count"]), state["count"] + 1
        mu = {name: b1 * state["mu"][name] + (1 - b1) * g for name, g in grads.items()}  # (S2)
        nu = {name: b2 * state["nu"][name] + (1 - b2) * g * g for name, g in grads.items()}
        updates = {}
        for name, m in mu.items():
            m_hat = m / (1 - b1**count)
            v_hat = nu[name] / (1 - b2**count)
            updates[name] = -rate * (m_hat / (np.sqrt(v_hat) + eps))
        return updates, {"count": count, "mu": mu, "nu": nu}

    return GradientTransformation(init, update)


def global_norm(tree: dict) -> float:
    return float(np.sqrt(sum(np.sum(np.square(g)) for g in tree.values())))


def clip_by_global_norm(max_norm: float) -> GradientTransformation:
    _check_positive("max_norm", max_norm)
    max_norm = float(max_norm)

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
