"""The flat parameter dict <-> Flax NNX state, and initialisation (the reference's, so both start equal)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from seq2seq_ref.config import ModelConfig
from seq2seq_ref.params import init_params as reference_init_params
from seq2seq_ref.validation import check_config, check_params

from .models import Seq2Seq


def check_precision(params) -> None:
    """float64 arrays would be silently narrowed to float32 unless jax_enable_x64 is on."""
    if not jax.config.jax_enable_x64 and any(np.dtype(v.dtype) == np.float64 for v in params.values()):
        raise ValueError("params: expected float32 (or enable float64 with "
                         "jax.config.update('jax_enable_x64', True)), got float64 arrays")


def init_params(config: ModelConfig, seed: int, dtype=jnp.float32) -> dict[str, jax.Array]:
    """The reference's init_params(config, seed, dtype), as jax arrays: both backends start from equal values."""
    params = reference_init_params(config, seed, np.dtype(dtype))
    check_precision(params)
    return {name: jnp.asarray(value) for name, value in params.items()}


def from_flat(config: ModelConfig, params) -> Seq2Seq:
    """The NNX module holding exactly these arrays (numpy or jax)."""
    check_config(config)
    check_params(params, config)
    check_precision(params)
    return Seq2Seq(config, {name: jnp.asarray(value) for name, value in params.items()})


def to_flat(model: Seq2Seq) -> dict[str, jax.Array]:
    """The flat dict of a module: each nnx.Param under its attribute path joined by '/'."""
    return {"/".join(map(str, path)): variable[...] for path, variable in nnx.to_flat_state(nnx.state(model, nnx.Param))}
