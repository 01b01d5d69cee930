"""Gradient verification by central finite differences in float64 (MATH.md, "Checking gradients").

The derivative of the loss along one parameter entry is estimated with the
sixth-order central stencil

    f'(x) ~ [ 3/4 (f(x+h) - f(x-h)) - 3/20 (f(x+2h) - f(x-2h)) + 1/60 (f(x+3h) - f(x-3h)) ] / h

whose truncation error is O(h^6): it allows a step h = 5e-3 at which float64
round-off in f (about 1e-16 |f| / h) stays far below the gradients being
checked.  The two-point stencil (1/2, h = 1e-5) leaves errors near 1e-6 on
the small attention gradients, too coarse for a 1e-7 bound
(`seq2seq gradcheck --stencil 2 --step 1e-5` shows it).

Error per entry:  rel = |a - n| / max(|a| + |n|, tiny),  a analytic, n numeric.
With tiny = 1e-5 an entry of magnitude >= 1e-5 must agree to the threshold
relatively, and a smaller one (true zeros included: embedding rows no token
used) to threshold * tiny = 1e-12 absolutely.  Round-off in the stencil is
about 2e-13 absolute here, so a smaller tiny would measure that noise, not
the backprop.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Mapping

import numpy as np

from .batch import Batch, make_batch
from .config import ModelConfig
from .model import forward, loss_and_grads
from .params import init_params
from . import transformer_layers

STENCILS = {2: ((1, 1 / 2),), 4: ((1, 2 / 3), (2, -1 / 12)), 6: ((1, 3 / 4), (2, -3 / 20), (3, 1 / 60))}
DEFAULT_STENCIL = 6
DEFAULT_STEP = 5e-3
DEFAULT_TINY = 1e-5
DEFAULT_THRESHOLD = 1e-7
KINK_SHRINKS = (1, 2, 5)  # (C3) the step, then narrower ones (round-off grows as 1/h), where a stencil crosses a kink


def relative_error(analytic, numeric, tiny=DEFAULT_TINY):
    """(C2) |a - n| / max(|a| + |n|, tiny), elementwise."""
    return np.abs(analytic - numeric) / np.maximum(np.abs(analytic) + np.abs(numeric), tiny)


def relu_signs(f: Callable[[], float]) -> tuple[float, list[np.ndarray]]:
    """f() and the sign pattern of every relu it ran (transformer_layers.relu)."""
    transformer_layers.relu_sign_log = []
    try:
        return f(), transformer_layers.relu_sign_log
    finally:
        transformer_layers.relu_sign_log = None


def _same_signs(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))


def numerical_derivative(f: Callable[[], float], x: np.ndarray, flat_index: int,
                         step=DEFAULT_STEP, stencil=DEFAULT_STENCIL, signs=None) -> float:
    """(C1) d f / d x.flat[flat_index] by central differences; x is perturbed in place and restored.

    signs: the relu sign pattern at x (relu_signs), or None.  Given, a stencil point where any relu input has
    changed sign straddles a kink (C3): the difference quotient is not a derivative there, and NaN is returned.
    """
    flat = x.reshape(-1)  # a view: f sees the perturbation
    original = flat[flat_index]
    total = 0.0

    def value():
        if signs is None:
            return f()
        result, seen = relu_signs(f)
        return result if _same_signs(seen, signs) else np.nan

    try:
        for k, weight in STENCILS[stencil]:
            flat[flat_index] = original + k * step
            plus = value()
            flat[flat_index] = original - k * step
            minus = value()
            total += weight * (plus - minus)
    finally:
        flat[flat_index] = original
    return total / step


def numerical_gradient_array(f: Callable[[np.ndarray], np.ndarray], x: np.ndarray, dout: np.ndarray,
                             step=DEFAULT_STEP, stencil=DEFAULT_STENCIL) -> np.ndarray:
    """d sum(f(x) * dout) / dx for every entry of x (for checking one layer)."""
    grad = np.zeros_like(x)
    for i in range(x.size):
        grad.flat[i] = numerical_derivative(lambda: float(np.sum(f(x) * dout)), x, i, step, stencil)
    return grad


@dataclass(frozen=True)
class TensorCheck:
    name: str
    shape: tuple[int, ...]
    max_rel_error: float
    max_abs_error: float
    entries_checked: int
    entries_at_kinks: int = 0  # sampled entries whose stencil crossed a relu kink (C3), not compared

    def as_record(self) -> dict:
        record = asdict(self)
        record["shape"] = list(self.shape)
        return record


def check_tensors(loss: Callable[[], float], arrays: Mapping[str, np.ndarray], analytic: Mapping[str, np.ndarray],
                  max_entries=64, seed=0, step=DEFAULT_STEP, stencil=DEFAULT_STENCIL,
                  tiny=DEFAULT_TINY) -> list[TensorCheck]:
    """Compare analytic gradients with finite differences of loss() for each array.

    Every entry of arrays with at most max_entries entries, a seeded sample of
    max_entries from larger ones; entries whose stencil crosses a relu kink (C3) are counted, not
    compared.  loss must read the arrays (they are perturbed in place).
    """
    rng = np.random.default_rng(seed)
    _, signs = relu_signs(loss)
    signs = signs or None  # a model without relus needs no watching
    results = []
    for name, x in arrays.items():
        # every entry of a small tensor; else a seeded sample, drawn on past entries at kinks (C3) until
        # max_entries are compared or the tensor is exhausted
        order = np.arange(x.size) if x.size <= max_entries else rng.permutation(x.size)
        indices, numeric, at_kinks = [], [], 0
        for i in order:
            for shrink in KINK_SHRINKS:  # (C3) a stencil that crosses a kink is retried narrower
                n = numerical_derivative(loss, x, int(i), step / shrink, stencil, signs)
                if not np.isnan(n):
                    break
            if np.isnan(n):
                at_kinks += 1
                continue
            indices.append(int(i))
            numeric.append(n)
            if len(indices) == max_entries:
                break
        a = np.asarray(analytic[name], dtype=np.float64).reshape(-1)[np.array(indices, dtype=np.int64)]
        n = np.array(numeric)
        results.append(TensorCheck(name, tuple(x.shape), float(relative_error(a, n, tiny).max(initial=0.0)),
                                   float(np.abs(a - n).max(initial=0.0)), len(indices), at_kinks))
    return results


def random_batch(config: ModelConfig, rng: np.random.Generator, batch_size=3, src_len=6, tgt_len=5) -> Batch:
    """A ragged batch: the first source fills the width, the second has length 1, the last target is empty."""
    src_lengths = rng.integers(1, src_len + 1, size=batch_size)
    src_lengths[0], src_lengths[min(1, batch_size - 1)] = src_len, 1
    tgt_lengths = rng.integers(0, tgt_len, size=batch_size)
    tgt_lengths[-1] = 0
    first = 3  # ids below are pad, bos, eos by default; regular tokens follow
    src = [rng.integers(first, config.src_vocab_size, size=n).tolist() for n in src_lengths]
    tgt = [rng.integers(first, config.tgt_vocab_size, size=n).tolist() for n in tgt_lengths]
    return make_batch(src, tgt, config, src_width=src_len, tgt_width=tgt_len)


def gradcheck_problem(config: ModelConfig, seed=0):
    """float64 params (initialised, then perturbed so no gate or bias sits at a special value) and a ragged batch."""
    rng = np.random.default_rng(seed)
    params = {name: value + 0.3 * rng.standard_normal(value.shape)
              for name, value in init_params(config, seed, np.float64).items()}
    return params, random_batch(config, rng)


def gradcheck_model(config: ModelConfig, seed=0, max_entries=64, step=DEFAULT_STEP,
                    stencil=DEFAULT_STENCIL, tiny=DEFAULT_TINY) -> list[TensorCheck]:
    """Finite differences vs loss_and_grads for every parameter tensor (dropout off)."""
    if config.dropout != 0.0:
        raise ValueError(f"config.dropout: expected 0.0 for a gradient check (masks must not change), got {config.dropout}")
    params, batch = gradcheck_problem(config, seed)
    _, grads = loss_and_grads(params, config, batch)
    return check_tensors(lambda: forward(params, config, batch)[0], params, grads,
                         max_entries, seed, step, stencil, tiny)
