"""Numerics both backends must get right: a sigmoid stable on both sides, an all-masked softmax row, the loss
dtype, and the custom LSTM VJP against plain autodiff of the scan (issue 9)."""
import jax

jax.config.update("jax_enable_x64", True)


import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
import pytest  # noqa: E402

import seq2seq_jax  # noqa: E402
from seq2seq_jax import layers as jax_layers  # noqa: E402
from seq2seq_jax import gru as jax_gru  # noqa: E402
from seq2seq_jax import lstm as jax_lstm  # noqa: E402
from seq2seq_ref import ModelConfig, init_params  # noqa: E402
from seq2seq_ref.gradcheck import relative_error  # noqa: E402
from seq2seq_ref.model import forward  # noqa: E402
from seq2seq_ref.ops import masked_softmax, sigmoid  # noqa: E402
from tests.helpers import float64_params, ragged_batch  # noqa: E402

X = np.concatenate([np.linspace(-80, 80, 1601), [-17.0, -8.0, -6.0, 6.0, 17.0]])


def true_sigmoid(x):
    x = np.asarray(x, np.float64)
    return np.where(x >= 0, 1 / (1 + np.exp(-np.abs(x))), np.exp(-np.abs(x)) / (1 + np.exp(-np.abs(x))))


@pytest.mark.parametrize("backend,dtype,bound", [
    ("numpy", np.float32, 1e-6), ("jax", jnp.float32, 1e-6), ("jax", jnp.bfloat16, 2.0 ** -6),
])
def test_sigmoid_is_relatively_exact_at_large_negative_and_positive_inputs(backend, dtype, bound):
    x = jnp.asarray(X, dtype) if backend == "jax" else X.astype(dtype)
    value = jax_layers.sigmoid(x) if backend == "jax" else sigmoid(x)
    assert value.dtype == dtype
    error = np.abs(np.asarray(value, np.float64) - true_sigmoid(x)) / true_sigmoid(x)
    assert error.max() <= bound, f"worst at x = {X[error.argmax()]}: {error.max():.2e}"  # 0.5(1+tanh) gave 1.0


def test_all_masked_softmax_rows_are_zero_not_nan():
    scores = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    mask = np.array([[True, False, True], [False, False, False]])
    for weights in (masked_softmax(scores, mask), np.asarray(jax_layers.masked_softmax(scores, mask))):
        assert np.all(weights[1] == 0) and np.isclose(weights[0].sum(), 1) and weights[0, 1] == 0
    grad = jax.grad(lambda s: (jax_layers.masked_softmax(s, mask) * jnp.arange(3.0)).sum())(scores)
    assert np.all(np.isfinite(grad)) and np.all(grad[1] == 0)


@pytest.mark.parametrize("attention", ["bahdanau", "luong"])
def test_an_all_padding_source_row_trains_without_nan_when_validation_is_off(attention, rng):
    config = ModelConfig(9, 8, 3, 4, attention=attention)
    params = float64_params(config)
    batch = ragged_batch(config, rng)
    src, src_lengths = batch.src.copy(), batch.src_lengths.copy()
    src[0], src_lengths[0] = config.pad_id, 0
    batch = batch._replace(src=src, src_lengths=src_lengths)
    loss, _ = forward(params, config, batch)
    assert np.isfinite(loss)
    step = seq2seq_jax.make_train_step(config, optax.sgd(0.1), validate=False)
    optimiser_state = optax.sgd(0.1).init(params)
    new_params, _, metrics = step(jax.tree.map(jnp.asarray, params), optimiser_state, batch)
    assert np.isfinite(float(metrics["loss"])) and all(np.isfinite(v).all() for v in new_params.values())


def test_the_loss_has_the_parameters_dtype(rng):
    config = ModelConfig(9, 8, 3, 4)
    batch = ragged_batch(config, rng)
    for dtype in (np.float32, np.float64):
        loss, _ = forward(init_params(config, 0, dtype), config, batch)
        assert np.asarray(loss).dtype == dtype


def assert_custom_vjp_equals_autodiff(custom, plain, inputs, mask, output_shapes, rng):
    """jax.grad of a weighted sum of the scan's outputs: hand-written VJP against autodiff of the plain scan."""
    weights = [rng.standard_normal(shape) for shape in output_shapes]

    def objective(scan):
        def f(*inputs):
            return sum((w * out).sum() for w, out in zip(weights, scan(*inputs, mask)))
        return jax.grad(f, argnums=tuple(range(len(inputs))))(*inputs)

    for h, a in zip(objective(custom), objective(plain)):
        assert float(np.max(relative_error(np.asarray(h), np.asarray(a), 1e-3))) <= 1e-12  # 5e-16 measured


def test_the_custom_lstm_vjp_equals_autodiff_of_the_plain_scan():
    rng = np.random.default_rng(5)
    T, B, H = 7, 4, 3
    a_x, h0, c0 = rng.standard_normal((T, B, 4 * H)), rng.standard_normal((B, H)), rng.standard_normal((B, H))
    W_h = rng.standard_normal((H, 4 * H))
    mask = rng.random((T, B)) < 0.6  # not a prefix: gaps in the middle of a row
    assert_custom_vjp_equals_autodiff(jax_lstm.lstm_scan, jax_lstm.lstm_scan_autodiff, (a_x, h0, c0, W_h), mask,
                                      ((T, B, H), (B, H), (B, H)), rng)
    # forward mode passes through the plain scan only
    tangent = jax.jvp(lambda w: jax_lstm.lstm_scan_autodiff(a_x, h0, c0, w, mask)[1], (W_h,), (np.ones_like(W_h),))
    assert np.all(np.isfinite(tangent[1]))
    with pytest.raises(TypeError, match="can't apply forward-mode autodiff"):
        jax.jvp(lambda w: jax_lstm.lstm_scan(a_x, h0, c0, w, mask)[1], (W_h,), (np.ones_like(W_h),))


def test_the_custom_gru_vjp_equals_autodiff_of_the_plain_scan():
    rng = np.random.default_rng(6)
    T, B, H = 7, 4, 3
    a_x, h0 = rng.standard_normal((T, B, 3 * H)), rng.standard_normal((B, H))
    W_h, b_h = rng.standard_normal((H, 3 * H)), rng.standard_normal(3 * H)
    mask = rng.random((T, B)) < 0.6
    assert_custom_vjp_equals_autodiff(jax_gru.gru_scan, jax_gru.gru_scan_autodiff, (a_x, h0, W_h, b_h), mask,
                                      ((T, B, H), (B, H)), rng)


@pytest.mark.parametrize("module, scan, cell", [(jax_lstm, "lstm_scan", "lstm"), (jax_gru, "gru_scan", "gru")])
def test_gradcheck_against_jax_uses_plain_autodiff(module, scan, cell):
    from seq2seq_jax.gradcheck import compare_with_autodiff

    def refuse(*args):
        raise AssertionError("the custom VJP was used")

    custom, forward_rule, backward_rule = (getattr(module, name) for name in (scan, f"_{scan}_fwd", f"_{scan}_bwd"))
    custom.defvjp(forward_rule, refuse)
    try:
        report = compare_with_autodiff(ModelConfig(7, 8, 4, 5, num_layers=2, bidirectional=True, attention="none",
                                                   encoder=cell, decoder=cell))
    finally:
        custom.defvjp(forward_rule, backward_rule)
    assert all(r["autodiff_passed"] for r in report.values())
