"""The optimisers follow optax's formulas (stated in seq2seq_ref/optim.py)."""
import numpy as np
import pytest

from seq2seq_ref.optim import (adam, apply_updates, chain, clip_by_global_norm, fitted_scale, global_norm,
                               linear_schedule, make_optimizer, noam_schedule, sgd)


def test_adam_two_steps_by_hand():
    lr, b1, b2, eps = 0.1, 0.9, 0.999, 1e-8
    params = {"w": np.array([1.0, -2.0])}
    g1, g2 = np.array([0.5, -1.0]), np.array([-0.25, 3.0])
    opt = adam(lr, b1, b2, eps)
    state = opt.init(params)
    u1, state = opt.update({"w": g1}, state)
    u2, state = opt.update({"w": g2}, state)
    m1, v1 = (1 - b1) * g1, (1 - b2) * g1**2
    np.testing.assert_allclose(u1["w"], -lr * (m1 / (1 - b1)) / (np.sqrt(v1 / (1 - b2)) + eps), rtol=1e-15)
    m2, v2 = b1 * m1 + (1 - b1) * g2, b2 * v1 + (1 - b2) * g2**2
    np.testing.assert_allclose(u2["w"], -lr * (m2 / (1 - b1**2)) / (np.sqrt(v2 / (1 - b2**2)) + eps), rtol=1e-15)
    assert state["count"] == 2


def test_adam_first_step_is_lr_times_sign():
    opt = adam(0.01)
    updates, _ = opt.update({"w": np.array([3.0, -1e-3])}, opt.init({"w": np.zeros(2)}))
    np.testing.assert_allclose(updates["w"], [-0.01, 0.01], rtol=1e-4)


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_sgd_with_momentum_by_hand(momentum):
    opt = sgd(0.5, momentum)
    g1, g2 = np.array([1.0, 2.0]), np.array([-1.0, 0.5])
    state = opt.init({"w": np.zeros(2)})
    u1, state = opt.update({"w": g1}, state)
    u2, state = opt.update({"w": g2}, state)
    np.testing.assert_allclose(u1["w"], -0.5 * g1)
    np.testing.assert_allclose(u2["w"], -0.5 * (g2 + momentum * g1))


def test_clip_by_global_norm():
    clip = clip_by_global_norm(1.0)
    grads = {"a": np.array([3.0]), "b": np.array([4.0])}
    clipped, _ = clip.update(grads, clip.init(grads))
    assert np.isclose(global_norm(clipped), 1.0)
    np.testing.assert_allclose(clipped["a"], [0.6])
    small = {"a": np.array([0.3]), "b": np.array([0.4])}
    assert clip.update(small, ())[0] is small


def test_chain_and_apply_updates_keep_dtype():
    params = {"w": np.ones(3, dtype=np.float32)}
    opt = chain(clip_by_global_norm(1.0), adam(0.1))
    updates, _ = opt.update({"w": np.full(3, 10.0, dtype=np.float32)}, opt.init(params))
    new = apply_updates(params, updates)
    assert new["w"].dtype == np.float32 and np.all(new["w"] < 1)


def test_noam_schedule_is_vaswanis_formula():
    """(S4) against the paper's d^-0.5 min(step^-0.5, step warmup^-1.5), step = c + 1, peak = (d warmup)^-0.5."""
    d, warmup = 64, 10
    schedule = noam_schedule((d * warmup) ** -0.5, warmup)
    for count in range(40):
        step = count + 1
        paper = d**-0.5 * min(step**-0.5, step * warmup**-1.5)
        assert schedule(count) == pytest.approx(paper, rel=1e-15)
    assert schedule(warmup - 1) == pytest.approx((d * warmup) ** -0.5, rel=1e-15)
    assert schedule(0) == pytest.approx(schedule(warmup - 1) / warmup, rel=1e-15)
    assert schedule(4 * warmup - 1) == pytest.approx(schedule(warmup - 1) / 2, rel=1e-15)


def test_linear_schedule_warms_up_then_falls_to_zero_at_decay_steps():
    """(S5): update `step` = c + 1 moves at peak min(step / warmup, (N + 1 - step) / (N + 1 - warmup))."""
    peak, warmup, decay_steps = 0.5, 4, 10
    schedule = linear_schedule(peak, warmup, decay_steps)
    rates = [schedule(count) for count in range(14)]
    expected = [0.125, 0.25, 0.375, 0.5, 6 / 7 * 0.5, 5 / 7 * 0.5, 4 / 7 * 0.5, 3 / 7 * 0.5, 2 / 7 * 0.5,
                1 / 7 * 0.5, 0.0, 0.0, 0.0, 0.0]
    np.testing.assert_allclose(rates, expected, rtol=1e-15, atol=0)
    assert max(rates) == schedule(warmup - 1) == peak and schedule(decay_steps - 1) > 0
    assert linear_schedule(peak, 3, 3)(2) == peak and linear_schedule(peak, 3, 3)(3) == 0.0  # no decay phase


def test_a_fitted_linear_schedule_times_its_scale_is_s5_with_the_fitted_end():
    """decay_steps "fit": warm-up then the peak, times fitted_scale(c, N) once N is fitted, is (S5) with N, at
    every update (during warm-up the scale is 1: N need not be known yet)."""
    peak, warmup, decay_steps = 0.5, 4, 10
    warm = linear_schedule(peak, warmup, "fit")
    exact = linear_schedule(peak, warmup, decay_steps)
    for count in range(14):
        assert warm(count) * fitted_scale(count, decay_steps, warmup) == pytest.approx(exact(count), rel=1e-15,
                                                                                       abs=0)
    assert [warm(count) for count in range(6)] == [0.125, 0.25, 0.375, 0.5, 0.5, 0.5]
    assert [fitted_scale(count, decay_steps, warmup) for count in range(warmup)] == [1.0] * warmup


@pytest.mark.parametrize("name", ["adam", "sgd"])
@pytest.mark.parametrize("kind", ["noam", "linear"])
def test_a_scheduled_step_is_the_constant_step_at_that_rate(name, kind):
    """Update c of a scheduled optimiser equals update c of the same optimiser at the constant rate schedule(c)."""
    schedule = noam_schedule(0.1, 3) if kind == "noam" else linear_schedule(0.1, 3, 5)
    grads = [{"w": np.array([0.5, -1.0])}, {"w": np.array([2.0, 0.25])}, {"w": np.array([-1.0, 1.0])},
             {"w": np.array([0.1, 0.3])}, {"w": np.array([1.5, -0.5])}]
    scheduled = make_optimizer(name, 0.1, momentum=0.9, schedule=kind, warmup=3,
                               decay_steps=None if kind == "noam" else 5)
    state = scheduled.init({"w": np.zeros(2)})
    for count, g in enumerate(grads):
        constant = adam(schedule(count)) if name == "adam" else sgd(schedule(count), 0.9)
        expected, _ = constant.update(g, state[-1])
        updates, state = scheduled.update(g, state)
        np.testing.assert_array_equal(updates["w"], expected["w"])
    assert state[-1]["count"] == len(grads)


@pytest.mark.parametrize("kwargs, message", [
    ({"schedule": "cosine"}, r"schedule: expected one of \('constant', 'noam', 'linear', 'plateau'\), got 'cosine'"),
    ({"schedule": "noam", "warmup": 0}, r"warmup: expected an int >= 1, got 0"),
    ({"schedule": "linear", "warmup": 5}, r"decay_steps: expected an int >= warmup \(5\) or 'fit' with schedule "
                                          r"'linear', got None"),
    ({"schedule": "linear", "warmup": 5, "decay_steps": "fits"}, r"decay_steps: expected an int .* got 'fits'"),
    ({"schedule": "noam", "decay_steps": "fit"}, r"decay_steps: only schedule 'linear' takes it, got 'fit'"),
    ({"schedule": "linear", "warmup": 5, "decay_steps": 4}, r"decay_steps: expected an int >= warmup \(5\)"),
    ({"schedule": "linear", "warmup": 5, "decay_steps": 10.0}, r"decay_steps: expected an int .* got 10.0"),
    ({"schedule": "noam", "decay_steps": 10}, r"decay_steps: only schedule 'linear' takes it, got 10 with 'noam'"),
    ({"name": "rmsprop"}, r"optimizer: expected one of \('adam', 'sgd'\), got 'rmsprop'"),
    ({"clip_norm": -1.0}, r"clip_norm: expected a float > 0, got -1.0"),
])
def test_bad_optimizer_settings_name_the_setting(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_optimizer(**kwargs)


@pytest.mark.parametrize("make", [lambda: adam(-1.0), lambda: adam(0.1, b1=1.0), lambda: sgd(0.1, momentum=-1),
                                  lambda: clip_by_global_norm(0.0)])
def test_bad_hyperparameters_are_rejected(make):
    with pytest.raises(ValueError, match="expected"):
        make()
