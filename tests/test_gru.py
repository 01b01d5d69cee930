"""The GRU's sequence function is its step function applied T times; masking carries the state (MATH.md §2b)."""
import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from seq2seq_ref.gru import gru_backward, gru_forward, gru_step_backward, gru_step_forward


@st.composite
def gru_problems(draw):
    B, T, D, H = draw(st.integers(1, 4)), draw(st.integers(1, 6)), draw(st.integers(1, 5)), draw(st.integers(1, 5))
    lengths = np.array(draw(st.lists(st.integers(1, T), min_size=B, max_size=B)))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    arrays = [rng.standard_normal(s) for s in [(B, T, D), (B, H), (D, 3 * H), (H, 3 * H), (3 * H,), (3 * H,)]]
    return arrays, lengths, rng


@given(gru_problems())
def test_sequence_equals_steps_forward_and_backward(problem):
    (x, h0, W_x, W_h, b_x, b_h), lengths, rng = problem
    B, T, _ = x.shape
    hs, h_T, cache = gru_forward(x, h0, W_x, W_h, b_x, b_h, lengths)
    h, step_caches = h0, []
    for t in range(T):
        h, step_cache = gru_step_forward(x[:, t], h, W_x, W_h, b_x, b_h, t < lengths)
        np.testing.assert_allclose(hs[:, t], h, rtol=1e-12, atol=1e-14)
        step_caches.append(step_cache)
    np.testing.assert_allclose(h_T, h, rtol=1e-12, atol=1e-14)

    dhs, dh_T = rng.standard_normal(hs.shape), rng.standard_normal(h0.shape)
    dx, dh0, dW_x, dW_h, db_x, db_h = gru_backward(dhs, dh_T, cache)
    dh = dh_T
    sums = [np.zeros_like(W_x), np.zeros_like(W_h), np.zeros_like(b_x), np.zeros_like(b_h)]
    for t in reversed(range(T)):
        dx_t, dh, *dparams = gru_step_backward(dh + dhs[:, t], step_caches[t])
        np.testing.assert_allclose(dx[:, t], dx_t, rtol=1e-10, atol=1e-12)
        sums = [s + d for s, d in zip(sums, dparams)]
    for ours, expected in zip([dh0, dW_x, dW_h, db_x, db_h], [dh, *sums]):
        np.testing.assert_allclose(ours, expected, rtol=1e-10, atol=1e-12)


@given(gru_problems())
def test_state_is_carried_past_each_length(problem):
    (x, h0, W_x, W_h, b_x, b_h), lengths, _ = problem
    hs, h_T, _ = gru_forward(x, h0, W_x, W_h, b_x, b_h, lengths)
    for row, n in enumerate(lengths):
        _, h_n, _ = gru_forward(x[row:row + 1, :n], h0[row:row + 1], W_x, W_h, b_x, b_h, np.array([n]))
        np.testing.assert_allclose(h_T[row], h_n[0], rtol=1e-12, atol=1e-14)
        assert np.all(hs[row, n:] == h_T[row])


def test_update_gate_block_is_second_and_keeps_the_state():
    # (G4) h = (1 - z) n + z h_prev: with only the update pre-activation driven high, h_prev is kept.
    H = 2
    b_x = np.zeros(3 * H)
    b_x[H:2 * H] = 50.0
    h0 = np.array([[0.7, -0.3]])
    h, _ = gru_step_forward(np.zeros((1, 1)), h0, np.zeros((1, 3 * H)), np.zeros((H, 3 * H)), b_x, np.zeros(3 * H))
    np.testing.assert_allclose(h, h0, rtol=1e-12)
