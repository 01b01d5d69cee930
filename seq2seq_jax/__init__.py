"""seq2seq_jax: the reference model in Flax NNX, jit-compiled; same config, batch and parameter names."""
from seq2seq_ref import ATTENTION_TYPES, CELL_TYPES, Batch, ModelConfig, make_batch, param_shapes

from .decode import beam_search, greedy_decode
from .models import Seq2Seq, attention
from .params import from_flat, init_params, to_flat
from .train import (
    data_mesh, init_opt_state, loss_and_grads, loss_fn, make_optimizer, make_train_step, replicate, shard_batch,
)

__all__ = [
    "ATTENTION_TYPES", "Batch", "CELL_TYPES", "ModelConfig", "Seq2Seq", "attention", "beam_search", "data_mesh",
    "from_flat", "greedy_decode", "init_opt_state", "init_params", "loss_and_grads", "loss_fn", "make_batch",
    "make_optimizer", "make_train_step", "param_shapes", "replicate", "shard_batch", "to_flat",
]
