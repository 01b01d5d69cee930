"""The flat parameter contract: names, shapes and initialisation.

Names (both backends, and checkpoints, use exactly these):

    src_embed/W             [V_src, E]
    tgt_embed/W             [V_tgt, E]
    encoder/l{l}/fwd/<p>    the encoder cell's parameters, input D_0 = E, D_l = K above
                            (and .../bwd/<p> if bidirectional)
    decoder/l{l}/<p>        the decoder cell's parameters, input D_0 = E (+ the connection's input_dim),
                            D_l = H above
    attention/<p>           the connection's parameters
    output/W                [F, V_tgt]
    output/b                [V_tgt]

Tied embeddings (W1) drop the names a shared matrix stands for: with tie_embeddings="target" there is
no output/W (it is tgt_embed/W transposed); with "all", embed/W [V, E] replaces src_embed/W,
tgt_embed/W and output/W.  tied_views gives the model every name back; tie_grads sums the
gradients of the places one matrix serves (W1').

with <p> per cell (lstm.LSTM, gru.GRU: param_shapes) and per connection
(connections/*.py: param_shapes); each stack (registry.ENCODERS, registry.DECODERS) lists its names. For the LSTM: W_x [D, 4H], W_h [H, 4H],
b [4H] (gates i, f, g, o); for the GRU: W_x [D, 3H], W_h [H, 3H], b_x, b_h [3H]
(gates r, z, n); Bahdanau: W_q [H, A], W_k [K, A], v [A]; Luong: W_a [H, K],
W_c [K + H, H]; multi-head: W_q [H, H], W_k, W_v [K, H], W_o [H, H], their b_* [H], W_c [K + H, H].

A Transformer stack (d = hidden_dim, F = ffn_dim; MATH.md section 4) has these names instead of the
cell's and the connection's:

    encoder/l{l}/attn/W_q, W_k, W_v, W_o [d, d] and b_q, b_k, b_v, b_o [d]    self-attention (T4)
    encoder/l{l}/ffn/W_1 [d, F], b_1 [F], W_2 [F, d], b_2 [d]                  feed-forward (T3)
    encoder/l{l}/ln_1/gamma, beta [d] and ln_2/...; encoder/ln_f/...        layer norms (T2)
    decoder/l{l}/self/... and decoder/l{l}/cross/... (as attn/ above; cross's W_k, W_v read the keys,
    [K, d]), decoder/l{l}/ffn/..., decoder/l{l}/ln_1, ln_2, ln_3/..., decoder/ln_f/...
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from .checks import check_config
from .config import ModelConfig
from .registry import DECODERS, ENCODERS


def param_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Every parameter's name and shape, in the order init_params draws them: embeddings, the encoder stack's,
    the decoder stack's (with its connection's), the output layer's."""
    E = config.embed_dim
    if config.tie_embeddings == "all":
        shapes: dict[str, tuple[int, ...]] = {"embed/W": (config.tgt_vocab_size, E)}
    else:
        shapes = {"src_embed/W": (config.src_vocab_size, E), "tgt_embed/W": (config.tgt_vocab_size, E)}
    shapes.update(ENCODERS[config.encoder].param_shapes(config))
    shapes.update(DECODERS[config.decoder].param_shapes(config))
    if config.tie_embeddings == "none":
        shapes["output/W"] = (config.output_dim, config.tgt_vocab_size)
    shapes["output/b"] = (config.tgt_vocab_size,)
    return shapes


def tied_views(params, config: ModelConfig) -> dict:
    """(W1) Every name the model reads, a tied one as a view of the matrix it shares (numpy or jax arrays)."""
    if config.tie_embeddings == "none":
        return params
    if "output/W" in params:  # untied parameters, or views already: either way not what a tied model holds
        shared = "embed/W" if config.tie_embeddings == "all" else "tgt_embed/W"
        raise ValueError(f"params: expected no 'output/W' with tie_embeddings={config.tie_embeddings!r} (the "
                         f"output layer is {shared} transposed), got one")
    views = dict(params)
    if config.tie_embeddings == "all":
        views["src_embed/W"] = views["tgt_embed/W"] = views.pop("embed/W")
    views["output/W"] = views["tgt_embed/W"].T
    return views


def tie_grads(grads: dict, config: ModelConfig) -> dict:
    """(W1') The gradient of a shared matrix is the sum of the gradients of the places it serves."""
    if config.tie_embeddings == "none":
        return grads
    grads = dict(grads)
    shared = grads.pop("tgt_embed/W") + grads.pop("output/W").T
    if config.tie_embeddings == "all":
        grads["embed/W"] = shared + grads.pop("src_embed/W")
    else:
        grads["tgt_embed/W"] = shared
    return grads


def init_params(config: ModelConfig, seed: int, dtype=np.float32) -> dict[str, np.ndarray]:
    """Fresh parameters, the same for a given (config, seed) in both backends.

    Embeddings ~ N(0, 1), or N(0, 1/d) read by a stack with positions (the Transformer: its √d scale (T5)
    brings them to the scale of the positions) or tied to the output projection (W1), whose logits it keeps
    at unit scale; output bias 0; each stack's parameters as the stack says (a recurrent stack's as its
    cell says: matrices U(-1/sqrt(H), 1/sqrt(H)) as PyTorch, the LSTM's forget-gate bias 1, Gers et al.
    2000; its connection's as the connection says, default U(-1/sqrt(n), 1/sqrt(n)) with n the fan-in).
    One generator draws them in the order of param_shapes.
    """
    check_config(config)
    dtype = np.dtype(dtype)
    if not np.issubdtype(dtype, np.floating):
        raise ValueError(f"dtype: expected a floating dtype, got {dtype}")
    rng = np.random.default_rng(seed)
    encoder, decoder = ENCODERS[config.encoder], DECODERS[config.decoder]
    encoder_names, decoder_names = encoder.param_shapes(config), decoder.param_shapes(config)
    params = {}
    for name, shape in param_shapes(config).items():
        if name.endswith("embed/W"):
            value = rng.standard_normal(shape)
            tied = name == "embed/W" or (name == "tgt_embed/W" and config.tie_embeddings == "target")
            if tied or (encoder if name == "src_embed/W" else decoder).uses_positions:
                value = value / np.sqrt(shape[1])  # N(0, 1/d): (T5)'s √d scale gives N(0, 1), as the positions
        elif name == "output/b":
            value = np.zeros(shape)
        elif name in encoder_names:
            value = encoder.init_param(name, shape, config, rng)
        elif name in decoder_names:
            value = decoder.init_param(name, shape, config, rng)
        else:
            bound = 1.0 / np.sqrt(shape[0])
            value = rng.uniform(-bound, bound, size=shape)
        params[name] = value.astype(dtype)
    return params


def check_params(params: Mapping[str, np.ndarray], config: ModelConfig) -> np.dtype:
    """Every expected name present with its shape, nothing extra, one float dtype.

    Returns that dtype.
    """
    if not isinstance(params, Mapping):
        raise ValueError(f"params: expected a dict of name -> array, got {type(params).__name__}")
    expected = param_shapes(config)
    missing = sorted(set(expected) - set(params))
    extra = sorted(set(params) - set(expected))
    if missing or extra:
        raise ValueError(
            f"params: expected the names of param_shapes(config) for encoder={config.encoder!r}, "
            f"decoder={config.decoder!r}, attention={config.attention!r}, "
            f"num_layers={config.num_layers}, bidirectional={config.bidirectional}, "
            f"tie_embeddings={config.tie_embeddings!r}; "
            f"missing {missing}, unexpected {extra}"
        )
    dtypes = set()
    for name, shape in expected.items():
        value = params[name]
        # an array of either backend (numpy, jax): the model reads .dtype, .T and slices, which a list lacks
        if not all(hasattr(value, attribute) for attribute in ("__array__", "shape", "dtype")):
            raise ValueError(f"params[{name!r}]: expected an array (numpy or jax), got {type(value).__name__}")
        if tuple(value.shape) != shape:
            raise ValueError(f"params[{name!r}]: expected shape {shape}, got {tuple(value.shape)}")
        dtype = np.dtype(value.dtype)
        if not np.issubdtype(dtype, np.floating):
            raise ValueError(f"params[{name!r}]: expected a floating dtype, got {dtype}")
        dtypes.add(dtype)
    if len(dtypes) != 1:
        raise ValueError(f"params: expected one floating dtype for every tensor, got a mix of {sorted(map(str, dtypes))}")
    return dtypes.pop()
