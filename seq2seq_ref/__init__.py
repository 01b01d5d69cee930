"""seq2seq_ref: the NumPy reference LSTM encoder-decoder with hand-written backprop."""
from .batch import Batch, make_batch
from .config import ATTENTION_TYPES, ModelConfig
from .model import backward, forward, loss_and_grads
from .params import init_params, param_shapes

__all__ = [
    "ATTENTION_TYPES", "Batch", "ModelConfig", "backward", "forward", "init_params",
    "loss_and_grads", "make_batch", "param_shapes",
]
