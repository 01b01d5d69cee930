"""PyTorch as an independent oracle, in float64: the GRU model on packed sequences, and multi-head attention.

Agreement is judged entry by entry with
    |a - b| / max(|a| + |b|, FLOOR),  FLOOR = 1e-2,
and must be <= 1e-12 everywhere.  An entry below the floor is judged absolutely, to 1e-14: a gradient
entry is a sum of terms of size O(1) (the largest entries here reach ~20), so float64 rounding leaves
it an absolute error of a few 1e-16 to ~2e-15 however small the entry is; a gradient that is exactly 0
in exact arithmetic (the key bias b_k: softmax ignores a shift shared by all scores) comes out as
~5e-16 in torch. With a floor of 1e-3 such entries measure up to 1.6e-12.
"""
import numpy as np
import pytest

from seq2seq_ref import ModelConfig, loss_and_grads
from seq2seq_ref.batch import length_mask
from seq2seq_ref.connections.multihead import (
    MultiHead,
    multihead_attention_backward,
    multihead_attention_forward,
)
from seq2seq_ref.gradcheck import relative_error
from tests.helpers import float64_params, ragged_batch

torch = pytest.importorskip("torch")

BOUND = 1e-12
FLOOR = 1e-2  # the absolute floor of the relative error's denominator (see the module docstring)


def worst_relative_error(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.max(relative_error(a, b, FLOOR), initial=0.0))


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("bidirectional", [False, True])
def test_gru_model_against_torch_gru_on_packed_sequences(bidirectional):
    from torch import nn

    from seq2seq_lab.bench.torch_model import TorchSeq2Seq

    config = ModelConfig(11, 10, 5, 6, 1, bidirectional, "none", encoder="gru", decoder="gru")
    params = float64_params(config, seed=3, scale=0.5)
    batch = ragged_batch(config, np.random.default_rng(7), batch_size=5, src_len=7, tgt_len=6)
    assert len(set(batch.src_lengths.tolist())) > 1 and len(set(batch.tgt_lengths.tolist())) > 1  # ragged
    model = TorchSeq2Seq(config).double().load_flat(params)
    assert type(model.encoder) is nn.GRU and type(model.decoder) is nn.GRU
    src, tgt_in, tgt_out = (torch.as_tensor(a) for a in (batch.src, batch.tgt_in, batch.tgt_out))
    tgt_mask = torch.as_tensor(length_mask(batch.tgt_lengths, batch.tgt_in.shape[1]), dtype=torch.float64)
    # src_lengths given: the encoder runs on pack_padded_sequence(..., enforce_sorted=False)
    loss = model.loss(src, tgt_in, tgt_out, tgt_mask, src_lengths=batch.src_lengths)
    loss.backward()

    reference, grads = loss_and_grads(params, config, batch)
    assert worst_relative_error(loss.item(), reference) <= BOUND
    torch_grads = model.flat_grads()
    assert set(torch_grads) == set(grads) == set(params)
    errors = {name: worst_relative_error(torch_grads[name], grads[name]) for name in grads}
    assert max(errors.values()) <= BOUND, errors
    # the packing matters: without the lengths the padding would be read as tokens
    with torch.no_grad():
        unpacked = model.loss(src, tgt_in, tgt_out, tgt_mask).item()
    assert worst_relative_error(unpacked, reference) > 1e-6


def torch_multihead(params, num_heads):
    """torch.nn.MultiheadAttention with our parameters: weights transposed, biases concatenated."""
    H, K = params["W_q"].shape[0], params["W_k"].shape[0]
    mha = torch.nn.MultiheadAttention(H, num_heads, kdim=K, vdim=K, batch_first=True).double()
    t = {name: torch.as_tensor(value) for name, value in params.items()}
    with torch.no_grad():
        if mha.in_proj_weight is not None:  # kdim == embed_dim: one packed [3H, H] weight
            mha.in_proj_weight.copy_(torch.cat([t["W_q"].T, t["W_k"].T, t["W_v"].T]))
        else:
            mha.q_proj_weight.copy_(t["W_q"].T)
            mha.k_proj_weight.copy_(t["W_k"].T)
            mha.v_proj_weight.copy_(t["W_v"].T)
        mha.in_proj_bias.copy_(torch.cat([t["b_q"], t["b_k"], t["b_v"]]))
        mha.out_proj.weight.copy_(t["W_o"].T)
        mha.out_proj.bias.copy_(t["b_o"])
    return mha


def torch_param_grads(mha, W_c):
    """Gradients of torch's parameters, mapped back to our nine names and layout."""
    H = mha.embed_dim
    if mha.in_proj_weight is not None:
        W_q, W_k, W_v = (g.T for g in mha.in_proj_weight.grad.split(H))
    else:
        W_q, W_k, W_v = (getattr(mha, f"{p}_proj_weight").grad.T for p in "qkv")
    b_q, b_k, b_v = mha.in_proj_bias.grad.split(H)
    grads = {"W_q": W_q, "W_k": W_k, "W_v": W_v, "b_q": b_q, "b_k": b_k, "b_v": b_v,
             "W_o": mha.out_proj.weight.grad.T, "b_o": mha.out_proj.bias.grad, "W_c": W_c.grad}
    return {name: g.numpy() for name, g in grads.items()}


@pytest.mark.parametrize("num_heads", [1, 2, 4])
@pytest.mark.parametrize("directions", [1, 2])
def test_multihead_attention_against_torch(num_heads, directions):
    rng = np.random.default_rng(10 * num_heads + directions)
    B, T, S, H = 3, 4, 6, 8
    K = directions * H  # bidirectional encoders give K = 2H: torch's separate q/k/v projection weights
    queries, keys = rng.standard_normal((B, T, H)), rng.standard_normal((B, S, K))
    src_lengths = np.array([S, 2, 4])
    src_mask = length_mask(src_lengths, S)
    config = ModelConfig(5, 5, 3, H, 1, directions == 2, "multihead", num_heads=num_heads)
    assert config.key_dim == K
    params = {name.split("/")[1]: 0.5 * rng.standard_normal(shape)
              for name, shape in MultiHead.param_shapes(config).items()}
    G = rng.standard_normal((B, T, H))  # the features' linear functional: sum(G * features)

    # ours: (M0) projections, (M1)-(M6), backward, then (M0') through MultiHead.memory_backward
    K_proj, V_proj = keys @ params["W_k"] + params["b_k"], keys @ params["W_v"] + params["b_v"]
    features, alpha, cache = multihead_attention_forward(queries, K_proj, V_proj, src_mask, params["W_q"],
                                                         params["b_q"], params["W_o"], params["b_o"],
                                                         params["W_c"], num_heads)
    dqueries, dK, dV, dW_q, db_q, dW_o, db_o, dW_c = multihead_attention_backward(G, cache)
    flat_params = {f"attention/{name}": value for name, value in params.items()}
    dkeys, memory_grads = MultiHead.memory_backward({"K": dK, "V": dV}, keys, flat_params)
    ours = {"W_q": dW_q, "b_q": db_q, "W_o": dW_o, "b_o": db_o, "W_c": dW_c,
            **{name.split("/")[1]: g for name, g in memory_grads.items()}}
    assert alpha.shape == (B, num_heads, T, S) and np.all(alpha[~np.broadcast_to(src_mask[:, None, None],
                                                                                  alpha.shape)] == 0)

    # torch: nn.MultiheadAttention with the padding mask, then tanh([o; s] W_c)
    mha = torch_multihead(params, num_heads)
    q = torch.tensor(queries, requires_grad=True)
    k = torch.tensor(keys, requires_grad=True)
    W_c = torch.tensor(params["W_c"], requires_grad=True)
    o, weights = mha(q, k, k, key_padding_mask=torch.as_tensor(~src_mask), need_weights=True,
                     average_attn_weights=True)
    torch_features = torch.tanh(torch.cat([o, q], dim=-1) @ W_c)
    (torch_features * torch.as_tensor(G)).sum().backward()

    errors = {"features": worst_relative_error(torch_features.detach().numpy(), features),
              "weights (head mean)": worst_relative_error(weights.detach().numpy(), alpha.mean(axis=1)),
              "queries": worst_relative_error(q.grad.numpy(), dqueries),
              "keys": worst_relative_error(k.grad.numpy(), dkeys)}
    torch_grads = torch_param_grads(mha, W_c)
    assert set(torch_grads) == set(ours) == set(params)  # all nine
    errors.update({name: worst_relative_error(torch_grads[name], ours[name]) for name in params})
    assert max(errors.values()) <= BOUND, errors
    assert np.all(weights.detach().numpy()[~np.broadcast_to(src_mask[:, None], (B, T, S))] == 0)
