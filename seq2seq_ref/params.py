"""The flat parameter contract: names, shapes and initialisation.

Names (both backends, and checkpoints, use exactly these):

    src_embed/W             [V_src, E]
    tgt_embed/W             [V_tgt, E]
    encoder/l{l}/fwd/W_x    [D_l, 4H]   D_0 = E, D_l = K above     (and .../bwd/... if bidirectional)
    encoder/l{l}/fwd/W_h    [H, 4H]
    encoder/l{l}/fwd/b      [4H]        gate blocks i, f, g, o; f initialised to 1
    decoder/l{l}/W_x        [D_l, 4H]   D_0 = E (+ K for bahdanau), D_l = H above
    decoder/l{l}/W_h        [H, 4H]
    decoder/l{l}/b          [4H]
    attention/W_q [H, A], attention/W_k [K, A], attention/v [A]      (bahdanau)
    attention/W_a [H, K], attention/W_c [K + H, H]                   (luong)
    output/W                [H, V_tgt]
    output/b                [V_tgt]
"""
from __future__ import annotations

import numpy as np

from .config import ModelConfig


def encoder_layer_names(config: ModelConfig) -> list[tuple[int, str]]:
    """(layer, direction) pairs in the order they run."""
    directions = ("fwd", "bwd") if config.bidirectional else ("fwd",)
    return [(layer, d) for layer in range(config.num_layers) for d in directions]


def param_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    E, H, K, A = config.embed_dim, config.hidden_dim, config.key_dim, config.attention_dim
    shapes: dict[str, tuple[int, ...]] = {
        "src_embed/W": (config.src_vocab_size, E),
        "tgt_embed/W": (config.tgt_vocab_size, E),
    }
    for layer, direction in encoder_layer_names(config):
        D = E if layer == 0 else K
        prefix = f"encoder/l{layer}/{direction}"
        shapes.update({f"{prefix}/W_x": (D, 4 * H), f"{prefix}/W_h": (H, 4 * H), f"{prefix}/b": (4 * H,)})
    for layer in range(config.num_layers):
        D = (E + (K if config.attention == "bahdanau" else 0)) if layer == 0 else H
        prefix = f"decoder/l{layer}"
        shapes.update({f"{prefix}/W_x": (D, 4 * H), f"{prefix}/W_h": (H, 4 * H), f"{prefix}/b": (4 * H,)})
    if config.attention == "bahdanau":
        shapes.update({"attention/W_q": (H, A), "attention/W_k": (K, A), "attention/v": (A,)})
    elif config.attention == "luong":
        shapes.update({"attention/W_a": (H, K), "attention/W_c": (K + H, H)})
    shapes.update({"output/W": (config.output_dim, config.tgt_vocab_size), "output/b": (config.tgt_vocab_size,)})
    return shapes


def init_params(config: ModelConfig, seed: int, dtype=np.float32) -> dict[str, np.ndarray]:
    """Fresh parameters, the same for a given (config, seed) in both backends.

    Embeddings ~ N(0, 1); every matrix ~ U(-1/sqrt(n), 1/sqrt(n)) with n its
    fan-in (H for the LSTM matrices, as PyTorch); LSTM biases 0 except the
    forget-gate block, 1 (Gers et al. 2000); output bias 0.
    """
    from .validation import check_config

    check_config(config)
    dtype = np.dtype(dtype)
    if not np.issubdtype(dtype, np.floating):
        raise ValueError(f"dtype: expected a floating dtype, got {dtype}")
    rng = np.random.default_rng(seed)
    H = config.hidden_dim
    params = {}
    for name, shape in param_shapes(config).items():
        kind = name.rsplit("/", 1)[1]
        if name.endswith("embed/W"):
            value = rng.standard_normal(shape)
        elif name == "output/b":
            value = np.zeros(shape)
        elif kind == "b":
            value = np.zeros(shape)
            value[H : 2 * H] = 1.0
        else:
            fan_in = H if kind in ("W_x", "W_h") else shape[0]
            bound = 1.0 / np.sqrt(fan_in)
            value = rng.uniform(-bound, bound, size=shape)
        params[name] = value.astype(dtype)
    return params
