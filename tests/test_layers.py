"""Each layer's backward against finite differences of its forward (float64, random projections)."""
import numpy as np
import pytest

from seq2seq_ref.attention import (
    bahdanau_attention_backward, bahdanau_attention_forward, luong_attention_backward, luong_attention_forward,
)
from seq2seq_ref.gradcheck import numerical_gradient_array as num_grad
from seq2seq_ref.layers import (
    affine_backward, affine_forward, embedding_backward, embedding_forward, softmax_cross_entropy,
)
from seq2seq_ref.lstm import lstm_backward, lstm_forward, lstm_step_backward, lstm_step_forward
from seq2seq_ref.ops import masked_softmax, reverse_padded
from tests.helpers import assert_close_rel

BOUND = 1e-7


def test_embedding_backward(rng):
    ids = rng.integers(0, 6, size=(3, 4))
    W = rng.standard_normal((6, 5))
    dout = rng.standard_normal((3, 4, 5))
    out, cache = embedding_forward(ids, W)
    assert_close_rel(embedding_backward(dout, cache), num_grad(lambda W_: embedding_forward(ids, W_)[0], W, dout), BOUND)


def test_affine_backward(rng):
    x, W, b = rng.standard_normal((2, 3, 4)), rng.standard_normal((4, 5)), rng.standard_normal(5)
    dout = rng.standard_normal((2, 3, 5))
    dx, dW, db = affine_backward(dout, affine_forward(x, W, b)[1])
    assert_close_rel(dx, num_grad(lambda v: affine_forward(v, W, b)[0], x, dout), BOUND)
    assert_close_rel(dW, num_grad(lambda v: affine_forward(x, v, b)[0], W, dout), BOUND)
    assert_close_rel(db, num_grad(lambda v: affine_forward(x, W, v)[0], b, dout), BOUND)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_softmax_cross_entropy_gradient(rng, smoothing):
    logits = rng.standard_normal((2, 4, 6)) * 3
    targets = rng.integers(0, 6, size=(2, 4))
    mask = np.array([[1, 1, 1, 0], [1, 0, 0, 0]], dtype=bool)
    _, dlogits = softmax_cross_entropy(logits, targets, mask, smoothing)
    numeric = num_grad(lambda v: np.array(softmax_cross_entropy(v, targets, mask, smoothing)[0]), logits, np.array(1.0))
    assert_close_rel(dlogits, numeric, BOUND)
    assert np.all(dlogits[~mask] == 0)


def test_softmax_cross_entropy_matches_definition(rng):
    logits = rng.standard_normal((1, 3, 5))
    targets = np.array([[0, 4, 2]])
    mask = np.array([[True, True, False]])
    eps = 0.2
    p = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    q = (1 - eps) * np.eye(5)[targets] + eps / 5
    expected = -(q * np.log(p)).sum(-1)[mask].mean()
    assert np.isclose(softmax_cross_entropy(logits, targets, mask, eps)[0], expected, rtol=1e-13)


def test_softmax_cross_entropy_is_stable_for_huge_logits():
    logits = np.array([[[1000.0, 0.0, -1000.0]]])
    loss, dlogits = softmax_cross_entropy(logits, np.array([[0]]), np.array([[True]]))
    assert np.isfinite(loss) and loss == 0.0 and np.all(np.isfinite(dlogits))


def test_masked_softmax_gives_padding_exactly_zero():
    scores = np.array([[1e300, 2.0, -3.0, 5.0]])
    alpha = masked_softmax(scores, np.array([[False, True, True, False]]))
    assert alpha[0, 0] == 0.0 and alpha[0, 3] == 0.0 and np.isclose(alpha.sum(), 1.0)


@pytest.mark.parametrize("masked", [False, True])
def test_lstm_step_backward(rng, masked):
    B, D, H = 3, 4, 5
    x, h0, c0 = rng.standard_normal((B, D)), rng.standard_normal((B, H)), rng.standard_normal((B, H))
    W_x, W_h, b = rng.standard_normal((D, 4 * H)), rng.standard_normal((H, 4 * H)), rng.standard_normal(4 * H)
    mask = np.array([True, False, True]) if masked else None
    dh, dc = rng.standard_normal((B, H)), rng.standard_normal((B, H))
    h, c, cache = lstm_step_forward(x, h0, c0, W_x, W_h, b, mask)
    grads = lstm_step_backward(dh, dc, cache)
    inputs = [x, h0, c0, W_x, W_h, b]
    for k, analytic in enumerate(grads):
        def f(v, k=k):
            args = list(inputs)
            args[k] = v
            h_, c_, _ = lstm_step_forward(*args, mask)
            return np.concatenate([h_ * dh, c_ * dc])
        assert_close_rel(analytic, num_grad(f, inputs[k], np.array(1.0)), BOUND)


def test_lstm_sequence_backward_with_ragged_lengths_and_final_state(rng):
    B, T, D, H = 3, 5, 3, 4
    x = rng.standard_normal((B, T, D))
    h0, c0 = rng.standard_normal((B, H)), rng.standard_normal((B, H))
    W_x, W_h, b = rng.standard_normal((D, 4 * H)), rng.standard_normal((H, 4 * H)), rng.standard_normal(4 * H)
    lengths = np.array([5, 1, 3])
    dhs, dh_T, dc_T = rng.standard_normal((B, T, H)), rng.standard_normal((B, H)), rng.standard_normal((B, H))
    _, _, cache = lstm_forward(x, h0, c0, W_x, W_h, b, lengths)
    grads = lstm_backward(dhs, dh_T, dc_T, cache)
    inputs = [x, h0, c0, W_x, W_h, b]
    for k, analytic in enumerate(grads):
        def f(v, k=k):
            args = list(inputs)
            args[k] = v
            hs, (h_T, c_T), _ = lstm_forward(*args, lengths)
            return np.concatenate([(hs * dhs).ravel(), (h_T * dh_T).ravel(), (c_T * dc_T).ravel()])
        assert_close_rel(analytic, num_grad(f, inputs[k], np.array(1.0)), BOUND)
    # padded inputs receive no gradient
    assert np.all(grads[0][1, 1:] == 0) and np.all(grads[0][2, 3:] == 0)


def test_reverse_padded_is_an_involution_keeping_padding():
    x = np.arange(2 * 4).reshape(2, 4, 1)
    lengths = np.array([4, 2])
    rev = reverse_padded(x, lengths)
    assert rev[:, :, 0].tolist() == [[3, 2, 1, 0], [5, 4, 6, 7]]
    assert np.array_equal(reverse_padded(rev, lengths), x)


def _attention_inputs(rng, B=2, S=4, K=6, H=5, A=3):
    keys = rng.standard_normal((B, S, K))
    src_mask = np.array([[True, True, True, False], [True, False, False, False]])
    return keys, src_mask


def test_bahdanau_attention_backward(rng):
    B, S, K, H, A = 2, 4, 6, 5, 3
    keys, src_mask = _attention_inputs(rng)
    query, keys_proj = rng.standard_normal((B, H)), rng.standard_normal((B, S, A))
    W_q, v = rng.standard_normal((H, A)), rng.standard_normal(A)
    dcontext = rng.standard_normal((B, K))
    context, alpha, cache = bahdanau_attention_forward(query, keys, keys_proj, src_mask, W_q, v)
    assert np.all(alpha[~src_mask] == 0) and np.allclose(alpha.sum(1), 1)
    grads = bahdanau_attention_backward(dcontext, cache)
    inputs = {"query": query, "keys": keys, "keys_proj": keys_proj, "W_q": W_q, "v": v}
    for (name, x), analytic in zip(inputs.items(), grads):
        def f(value, name=name):
            args = dict(inputs, **{name: value})
            return bahdanau_attention_forward(args["query"], args["keys"], args["keys_proj"], src_mask,
                                              args["W_q"], args["v"])[0]
        assert_close_rel(analytic, num_grad(f, x, dcontext), BOUND)
    assert np.all(grads[1][~src_mask] == 0)


def test_luong_attention_backward(rng):
    B, T, K, H = 2, 3, 6, 5
    keys, src_mask = _attention_inputs(rng)
    queries = rng.standard_normal((B, T, H))
    W_a, W_c = rng.standard_normal((H, K)) * 0.5, rng.standard_normal((K + H, H)) * 0.3
    dout = rng.standard_normal((B, T, H))
    out, alpha, cache = luong_attention_forward(queries, keys, src_mask, W_a, W_c)
    assert np.all(alpha[~np.broadcast_to(src_mask[:, None], alpha.shape)] == 0)
    grads = luong_attention_backward(dout, cache)
    inputs = {"queries": queries, "keys": keys, "W_a": W_a, "W_c": W_c}
    for (name, x), analytic in zip(inputs.items(), grads):
        def f(value, name=name):
            args = dict(inputs, **{name: value})
            return luong_attention_forward(args["queries"], args["keys"], src_mask, args["W_a"], args["W_c"])[0]
        assert_close_rel(analytic, num_grad(f, x, dout), BOUND)
