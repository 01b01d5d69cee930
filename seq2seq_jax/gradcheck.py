"""The third leg of the gradient check: hand-written backprop vs JAX autodiff, in float64.

Autodiff means autodiff everywhere: the model is built with custom_vjp=False, so the recurrent scans (LSTM, GRU) are
differentiated by jax.grad through the plain lax.scan, not by their hand-written custom VJP.

Same problem (params, ragged batch) as seq2seq_ref.gradcheck.  Per tensor,
rel = |a - j| / max(|a| + |j|, AUTODIFF_TINY): with AUTODIFF_RTOL = 1e-9 and
AUTODIFF_TINY = 1e-3 an entry passes when |a - j| <= max(1e-9 (|a| + |j|), 1e-12),
i.e. relative 1e-9 with an absolute floor of 1e-12.
"""
from __future__ import annotations

import jax
import numpy as np

from seq2seq_ref.config import ModelConfig
from seq2seq_ref.gradcheck import gradcheck_problem, relative_error
from seq2seq_ref.model import loss_and_grads as reference_loss_and_grads

AUTODIFF_RTOL = 1e-9
AUTODIFF_TINY = 1e-3


def compare_with_autodiff(config: ModelConfig, seed=0) -> dict[str, dict]:
    """{name: {"autodiff_max_rel_error", "autodiff_max_abs_error", "autodiff_passed"}} for every tensor."""
    jax.config.update("jax_enable_x64", True)
    from .train import loss_and_grads

    params, batch = gradcheck_problem(config, seed)
    _, hand = reference_loss_and_grads(params, config, batch)
    _, auto = loss_and_grads(params, config, batch, custom_vjp=False)  # autodiff all the way, recurrent scans too
    report = {}
    for name, a in hand.items():
        j = np.asarray(auto[name])
        rel = float(relative_error(a, j, AUTODIFF_TINY).max())
        report[name] = {"autodiff_max_rel_error": rel, "autodiff_max_abs_error": float(np.abs(a - j).max()),
                        "autodiff_passed": rel <= AUTODIFF_RTOL}
    return report
