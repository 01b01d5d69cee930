"""The Transformer's layers: each backward against finite differences of its forward (float64), and against
torch where torch has the same layer."""
import numpy as np
import pytest

from seq2seq_ref.gradcheck import numerical_gradient_array as num_grad
from seq2seq_ref.transformer_layers import (
    attention_mask, feed_forward_backward, feed_forward_forward, layer_norm_backward, layer_norm_forward,
    self_attention_backward, self_attention_forward, sinusoidal_positions,
)
from seq2seq_ref.ops import linear
from tests.helpers import assert_close_rel

BOUND = 1e-7


def test_sinusoidal_positions():
    P = sinusoidal_positions(50, 7)
    assert P.shape == (50, 7) and np.allclose(P[0, 0::2], 0) and np.allclose(P[0, 1::2], 1)
    assert np.isclose(P[3, 2], np.sin(3 / 10000 ** (2 / 7))) and np.isclose(P[3, 5], np.cos(3 / 10000 ** (4 / 7)))


def test_linear_is_the_product_over_the_last_axis(rng):
    """One GEMM over the flattened leading axes, equal to numpy's stacked product; also for a transposed W."""
    x, W, b = rng.standard_normal((3, 4, 5)), rng.standard_normal((5, 6)), rng.standard_normal(6)
    np.testing.assert_allclose(linear(x, W, b), x @ W + b, rtol=1e-14)
    np.testing.assert_allclose(linear(x[:, ::2], W), x[:, ::2] @ W, rtol=1e-14)  # a strided input
    np.testing.assert_allclose(linear(x @ W, W.T), x @ W @ W.T, rtol=1e-13)
    assert linear(x.astype(np.float32), W.astype(np.float32), b.astype(np.float32)).dtype == np.float32


def test_layer_norm_backward(rng):
    x = rng.standard_normal((2, 3, 5)) * 3 + 1
    gamma, beta = rng.standard_normal(5), rng.standard_normal(5)
    dy = rng.standard_normal((2, 3, 5))
    y, cache = layer_norm_forward(x, gamma, beta)
    assert np.allclose(((y - beta) / gamma).mean(-1), 0) and np.allclose(((y - beta) / gamma).var(-1), 1, atol=1e-4)
    dx, dgamma, dbeta = layer_norm_backward(dy, cache)
    assert_close_rel(dx, num_grad(lambda v: layer_norm_forward(v, gamma, beta)[0], x, dy), BOUND)
    assert_close_rel(dgamma, num_grad(lambda v: layer_norm_forward(x, v, beta)[0], gamma, dy), BOUND)
    assert_close_rel(dbeta, num_grad(lambda v: layer_norm_forward(x, gamma, v)[0], beta, dy), BOUND)


def test_feed_forward_backward(rng):
    x = rng.standard_normal((2, 3, 4))
    W_1, b_1, W_2, b_2 = rng.standard_normal((4, 6)), rng.standard_normal(6), rng.standard_normal((6, 4)), \
        rng.standard_normal(4)
    dy = rng.standard_normal((2, 3, 4))
    grads = feed_forward_backward(dy, feed_forward_forward(x, W_1, b_1, W_2, b_2)[1])
    inputs = [x, W_1, b_1, W_2, b_2]
    for k, analytic in enumerate(grads):
        def f(v, k=k):
            return feed_forward_forward(*[v if i == k else a for i, a in enumerate(inputs)])[0]
        assert_close_rel(analytic, num_grad(f, inputs[k], dy), BOUND)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("num_heads", [1, 2])
def test_self_attention_backward(rng, causal, num_heads):
    B, T, d = 3, 5, 4
    x = rng.standard_normal((B, T, d))
    mask = attention_mask(np.array([5, 2, 3]), T, causal)
    weights = [rng.standard_normal(s) for s in ((d, d), (d,)) * 4]
    dy = rng.standard_normal((B, T, d))
    y, cache = self_attention_forward(x, mask, *weights, num_heads)
    grads = self_attention_backward(dy, cache)
    inputs = [x, *weights]

    def run(args):
        return self_attention_forward(args[0], mask, *args[1:], num_heads)[0]

    for k, analytic in enumerate(grads):
        numeric = num_grad(lambda v, k=k: run([v if i == k else a for i, a in enumerate(inputs)]), inputs[k], dy)
        if k == 4:  # b_k shifts every score of a row alike, which softmax ignores: its gradient is exactly 0
            assert np.abs(analytic).max() < 1e-13 and np.abs(numeric).max() < 1e-10
        else:
            assert_close_rel(analytic, numeric, BOUND)


def test_causal_mask_hides_the_future_and_padding(rng):
    B, T, d = 2, 4, 4
    x = rng.standard_normal((B, T, d))
    weights = [rng.standard_normal(s) for s in ((d, d), (d,)) * 4]
    mask = attention_mask(np.array([4, 2]), T, causal=True)
    y, _ = self_attention_forward(x, mask, *weights, 2)
    changed = x.copy()
    changed[:, 3] += 10.0      # the last position: no earlier query may see it
    changed[1, 2:] -= 7.0      # row 1's padding: no query may see it
    y2, _ = self_attention_forward(changed, mask, *weights, 2)
    np.testing.assert_allclose(y2[0, :3], y[0, :3], rtol=0, atol=1e-12)
    np.testing.assert_allclose(y2[1, :2], y[1, :2], rtol=0, atol=1e-12)


def test_self_attention_and_layer_norm_match_torch(rng):
    torch = pytest.importorskip("torch")
    B, T, d, heads = 3, 5, 8, 2
    x = rng.standard_normal((B, T, d))
    lengths = np.array([5, 2, 3])
    weights = [rng.standard_normal(s) for s in ((d, d), (d,)) * 4]
    W_q, b_q, W_k, b_k, W_v, b_v, W_o, b_o = weights
    mha = torch.nn.MultiheadAttention(d, heads, batch_first=True).double()
    with torch.no_grad():
        mha.in_proj_weight.copy_(torch.as_tensor(np.concatenate([W_q.T, W_k.T, W_v.T])))
        mha.in_proj_bias.copy_(torch.as_tensor(np.concatenate([b_q, b_k, b_v])))
        mha.out_proj.weight.copy_(torch.as_tensor(W_o.T))
        mha.out_proj.bias.copy_(torch.as_tensor(b_o))
    xt = torch.as_tensor(x)
    causal = torch.triu(torch.ones(T, T, dtype=torch.bool), 1)
    padding = torch.as_tensor(np.arange(T)[None, :] >= lengths[:, None])
    expected, _ = mha(xt, xt, xt, key_padding_mask=padding, attn_mask=causal, need_weights=False)
    y, _ = self_attention_forward(x, attention_mask(lengths, T, causal=True), *weights, heads)
    np.testing.assert_allclose(y, expected.detach().numpy(), rtol=1e-12, atol=1e-13)
    gamma, beta = rng.standard_normal(d), rng.standard_normal(d)
    norm = torch.nn.functional.layer_norm(xt, (d,), torch.as_tensor(gamma), torch.as_tensor(beta), eps=1e-5)
    np.testing.assert_allclose(layer_norm_forward(x, gamma, beta)[0], norm.numpy(), rtol=1e-12, atol=1e-13)


def test_the_jax_layers_equal_the_reference_and_their_autodiff_its_backward(rng):
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    from seq2seq_jax import transformer_layers as jl

    B, T, d, heads = 3, 5, 4, 2
    x, dy = rng.standard_normal((B, T, d)), rng.standard_normal((B, T, d))
    mask = attention_mask(np.array([5, 2, 3]), T, causal=True)
    weights = [rng.standard_normal(s) for s in ((d, d), (d,)) * 4]
    y, cache = self_attention_forward(x, mask, *weights, heads)
    np.testing.assert_allclose(jl.self_attention(x, mask, *weights, heads), y, rtol=1e-12, atol=1e-14)
    auto = jax.grad(lambda *a: (jl.self_attention(a[0], mask, *a[1:], heads) * dy).sum(),
                    argnums=tuple(range(9)))(x, *weights)
    for hand, autodiff in zip(self_attention_backward(dy, cache), auto):
        np.testing.assert_allclose(hand, autodiff, rtol=1e-10, atol=1e-12)
    gamma, beta = rng.standard_normal(d), rng.standard_normal(d)
    y, cache = layer_norm_forward(x, gamma, beta)
    np.testing.assert_allclose(jl.layer_norm(x, gamma, beta), y, rtol=1e-12, atol=1e-14)
    auto = jax.grad(lambda *a: (jl.layer_norm(*a) * dy).sum(), argnums=(0, 1, 2))(x, gamma, beta)
    for hand, autodiff in zip(layer_norm_backward(dy, cache), auto):
        np.testing.assert_allclose(hand, autodiff, rtol=1e-10, atol=1e-12)
    W_1, b_1, W_2, b_2 = rng.standard_normal((d, 6)), rng.standard_normal(6), rng.standard_normal((6, d)), \
        rng.standard_normal(d)
    y, cache = feed_forward_forward(x, W_1, b_1, W_2, b_2)
    np.testing.assert_allclose(jl.feed_forward(x, W_1, b_1, W_2, b_2), y, rtol=1e-12, atol=1e-14)
    auto = jax.grad(lambda *a: (jl.feed_forward(*a) * dy).sum(), argnums=tuple(range(5)))(x, W_1, b_1, W_2, b_2)
    for hand, autodiff in zip(feed_forward_backward(dy, cache), auto):
        np.testing.assert_allclose(hand, autodiff, rtol=1e-10, atol=1e-12)
