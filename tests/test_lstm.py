"""The sequence function is the step function applied T times; masking carries the state."""
import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from seq2seq_ref.lstm import lstm_backward, lstm_forward, lstm_step_backward, lstm_step_forward


@st.composite
def lstm_problems(draw):
    B, T, D, H = draw(st.integers(1, 4)), draw(st.integers(1, 6)), draw(st.integers(1, 5)), draw(st.integers(1, 5))
    lengths = np.array(draw(st.lists(st.integers(1, T), min_size=B, max_size=B)))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    arrays = [rng.standard_normal(s) for s in [(B, T, D), (B, H), (B, H), (D, 4 * H), (H, 4 * H), (4 * H,)]]
    return arrays, lengths, rng


@given(lstm_problems())
def test_sequence_equals_steps_forward_and_backward(problem):
    (x, h0, c0, W_x, W_h, b), lengths, rng = problem
    B, T, _ = x.shape
    hs, (h_T, c_T), cache = lstm_forward(x, h0, c0, W_x, W_h, b, lengths)
    h, c, step_caches = h0, c0, []
    for t in range(T):
        h, c, step_cache = lstm_step_forward(x[:, t], h, c, W_x, W_h, b, t < lengths)
        np.testing.assert_allclose(hs[:, t], h, rtol=1e-12, atol=1e-14)
        step_caches.append(step_cache)
    np.testing.assert_allclose(h_T, h, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(c_T, c, rtol=1e-12, atol=1e-14)

    dhs, dh_T, dc_T = rng.standard_normal(hs.shape), rng.standard_normal(h0.shape), rng.standard_normal(c0.shape)
    dx, dh0, dc0, dW_x, dW_h, db = lstm_backward(dhs, dh_T, dc_T, cache)
    dh, dc = dh_T, dc_T
    sums = [np.zeros_like(W_x), np.zeros_like(W_h), np.zeros_like(b)]
    for t in reversed(range(T)):
        dx_t, dh, dc, *dparams = lstm_step_backward(dh + dhs[:, t], dc, step_caches[t])
        np.testing.assert_allclose(dx[:, t], dx_t, rtol=1e-10, atol=1e-12)
        sums = [s + d for s, d in zip(sums, dparams)]
    for ours, expected in zip([dh0, dc0, dW_x, dW_h, db], [dh, dc, *sums]):
        np.testing.assert_allclose(ours, expected, rtol=1e-10, atol=1e-12)


@given(lstm_problems())
def test_state_is_carried_past_each_length(problem):
    (x, h0, c0, W_x, W_h, b), lengths, _ = problem
    hs, (h_T, c_T), _ = lstm_forward(x, h0, c0, W_x, W_h, b, lengths)
    for row, n in enumerate(lengths):
        short, (h_n, c_n), _ = lstm_forward(x[row:row + 1, :n], h0[row:row + 1], c0[row:row + 1], W_x, W_h, b,
                                            np.array([n]))
        np.testing.assert_allclose(h_T[row], h_n[0], rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(c_T[row], c_n[0], rtol=1e-12, atol=1e-14)
        assert np.all(hs[row, n:] == h_T[row])


def test_forget_gate_block_is_second():
    # With only the forget pre-activation driven high and the input gate shut, c is carried unchanged.
    H = 2
    b = np.zeros(4 * H)
    b[:H], b[H:2 * H] = -50.0, 50.0
    c0 = np.array([[0.7, -0.3]])
    _, c, _ = lstm_step_forward(np.zeros((1, 1)), np.zeros((1, H)), c0, np.zeros((1, 4 * H)), np.zeros((H, 4 * H)), b)
    np.testing.assert_allclose(c, c0, rtol=1e-12)
