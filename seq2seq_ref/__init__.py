"""seq2seq_ref: the NumPy reference encoder-decoder (LSTM, GRU or Transformer sides, pluggable connections), by
hand."""
from .batch import Batch, make_batch
from .config import ATTENTION_TYPES, CELL_TYPES, ModelConfig
from .decode import DEFAULT_LENGTH_PENALTY, beam_search, greedy_decode
from .model import backward, forward, loss_and_grads
from .params import init_params, param_shapes

__all__ = [
    "ATTENTION_TYPES", "Batch", "CELL_TYPES", "DEFAULT_LENGTH_PENALTY", "ModelConfig", "backward", "beam_search",
    "forward", "greedy_decode", "init_params", "loss_and_grads", "make_batch", "param_shapes",
]
