"""The JAX training step, conversion, precision, data parallelism and input checks."""
import jax

jax.config.update("jax_enable_x64", True)

import subprocess  # noqa: E402
import sys  # noqa: E402
import textwrap  # noqa: E402
from pathlib import Path  # noqa: E402

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from flax import nnx  # noqa: E402

import seq2seq_jax  # noqa: E402
from seq2seq_ref import ModelConfig, init_params, loss_and_grads, make_batch, param_shapes  # noqa: E402
from seq2seq_ref.optim import adam, apply_updates, chain, clip_by_global_norm, sgd  # noqa: E402
from seq2seq_ref.optim import make_optimizer as make_reference_optimizer  # noqa: E402
from tests.helpers import float64_params, ragged_batch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ModelConfig(9, 8, 6, 7, num_layers=2, bidirectional=True, attention="bahdanau")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_flat_dict_and_nnx_state_convert_losslessly(dtype):
    params = init_params(CONFIG, 0, dtype)
    model = seq2seq_jax.from_flat(CONFIG, params)
    paths = {"/".join(map(str, p)) for p, _ in nnx.to_flat_state(nnx.state(model, nnx.Param))}
    assert paths == set(param_shapes(CONFIG))
    assert model.encoder.l1.bwd.W_x[...].shape == (14, 28)
    back = seq2seq_jax.to_flat(model)
    for name, value in params.items():
        assert back[name].dtype == dtype
        np.testing.assert_array_equal(np.asarray(back[name]), value)
    np.testing.assert_array_equal(np.asarray(seq2seq_jax.init_params(CONFIG, 0, dtype)["output/W"]),
                                  params["output/W"])


def _run_both(optimiser_ref, optimiser_jax, steps=3):
    params = float64_params(CONFIG)
    batch = ragged_batch(CONFIG, np.random.default_rng(0))
    ref_params, ref_state = params, optimiser_ref.init(params)
    for _ in range(steps):
        _, grads = loss_and_grads(ref_params, CONFIG, batch)
        updates, ref_state = optimiser_ref.update(grads, ref_state)
        ref_params = apply_updates(ref_params, updates)
    train_step = seq2seq_jax.make_train_step(CONFIG, optimiser_jax)
    jax_params = {k: jnp.asarray(v) for k, v in params.items()}
    opt_state = optimiser_jax.init(jax_params)
    for _ in range(steps):
        jax_params, opt_state, metrics = train_step(jax_params, opt_state, batch)
    for name in params:
        np.testing.assert_allclose(np.asarray(jax_params[name]), ref_params[name], rtol=1e-10, atol=1e-13)
    return metrics


def test_train_step_with_adam_and_clipping_equals_the_reference():
    metrics = _run_both(chain(clip_by_global_norm(0.5), adam(1e-2)),
                        seq2seq_jax.make_optimizer("adam", 1e-2, clip_norm=0.5))
    assert set(metrics) == {"loss", "grad_norm"}


def test_train_step_with_sgd_momentum_equals_the_reference():
    _run_both(sgd(0.1, momentum=0.9), seq2seq_jax.make_optimizer("sgd", 0.1, momentum=0.9))


# each schedule and each optimiser once (the schedule scales whatever update the optimiser computes); a linear
# schedule whose end is fitted later (decay_steps "fit") is its warm-up, then the peak, in both
@pytest.mark.parametrize("name,schedule,decay_steps", [("adam", "noam", None), ("sgd", "linear", 5),
                                                       ("adam", "linear", "fit")])
def test_train_step_under_a_schedule_equals_the_reference(name, schedule, decay_steps):
    """Six steps through warm-up (3 steps), the peak and the decay (linear: to zero after step 5, so the sixth
    update is zero): optax's schedule count against the reference's."""
    settings = {"name": name, "learning_rate": 1e-2, "momentum": 0.9, "clip_norm": 0.5, "schedule": schedule,
                "warmup": 3, "beta2": 0.98, "decay_steps": decay_steps}
    _run_both(make_reference_optimizer(**settings), seq2seq_jax.make_optimizer(**settings), steps=6)


def test_train_step_donates_params_and_optimiser_state():
    params = seq2seq_jax.init_params(CONFIG, 0)
    optimiser = seq2seq_jax.make_optimizer("adam", 1e-3)
    opt_state = optimiser.init(params)
    train_step = seq2seq_jax.make_train_step(CONFIG, optimiser)
    old = params["decoder/l0/W_h"]
    train_step(params, opt_state, ragged_batch(CONFIG, np.random.default_rng(0)))
    assert old.is_deleted()


def test_unroll_does_not_change_the_result():
    params = float64_params(CONFIG)
    batch = ragged_batch(CONFIG, np.random.default_rng(1))
    loss1, grads1 = seq2seq_jax.loss_and_grads(params, CONFIG, batch, unroll=1)
    loss4, grads4 = seq2seq_jax.loss_and_grads(params, CONFIG, batch, unroll=4)
    assert np.isclose(loss1, loss4, rtol=1e-13)
    for name in grads1:
        np.testing.assert_allclose(grads4[name], grads1[name], rtol=1e-10, atol=1e-14)


def test_bfloat16_compute_keeps_float32_params_and_gradients():
    params = seq2seq_jax.init_params(CONFIG, 0, jnp.float32)
    batch = ragged_batch(CONFIG, np.random.default_rng(2))
    loss32, grads32 = seq2seq_jax.loss_and_grads(params, CONFIG, batch)
    loss16, grads16 = seq2seq_jax.loss_and_grads(params, CONFIG, batch, compute_dtype="bfloat16")
    assert loss16.dtype == jnp.float32 and all(g.dtype == jnp.float32 for g in grads16.values())
    assert abs(float(loss16) - float(loss32)) <= 2e-2 * float(loss32)
    cosine = sum(float(jnp.vdot(grads16[k], grads32[k])) for k in grads32) / np.sqrt(
        sum(float(jnp.vdot(g, g)) for g in grads16.values()) * sum(float(jnp.vdot(g, g)) for g in grads32.values()))
    assert cosine > 0.99


def test_dropout_needs_a_key_repeats_with_it_and_places_masks_like_the_reference():
    config = ModelConfig(9, 8, 6, 7, num_layers=2, attention="luong", dropout=0.3)
    params = seq2seq_jax.init_params(config, 0)
    batch = ragged_batch(config, np.random.default_rng(3))
    with pytest.raises(ValueError, match="dropout_rng"):
        seq2seq_jax.loss_and_grads(params, config, batch)
    first, second, other = (float(seq2seq_jax.loss_and_grads(params, config, batch, s)[0]) for s in (1, 1, 2))
    assert first == second and first != other
    from seq2seq_jax.train import make_dropout_masks
    from seq2seq_ref.model import make_dropout_masks as reference_masks

    ours = make_dropout_masks(config, batch, jnp.float32, jax.random.key(0))
    theirs = reference_masks(config, batch, np.float32, 0)
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in theirs.items()}
    values = np.unique(np.concatenate([np.asarray(v).ravel() for v in ours.values()]))
    np.testing.assert_allclose(values, [0.0, 1 / 0.7], rtol=1e-6)


def test_jax_training_memorises():
    config = ModelConfig(10, 10, 16, 32, attention="luong", bidirectional=True)
    rng = np.random.default_rng(0)
    src = [rng.integers(3, 10, size=rng.integers(2, 6)).tolist() for _ in range(8)]
    batch = make_batch(src, [s[::-1] for s in src], config)
    optimiser = seq2seq_jax.make_optimizer("adam", 1e-2, clip_norm=5.0)
    params = seq2seq_jax.init_params(config, 0)
    opt_state = optimiser.init(params)
    train_step = seq2seq_jax.make_train_step(config, optimiser)
    for _ in range(300):
        params, opt_state, metrics = train_step(params, opt_state, batch)
    assert float(metrics["loss"]) < 0.05
    tokens, _ = seq2seq_jax.greedy_decode(params, config, batch.src, batch.src_lengths, batch.tgt_out.shape[1])
    np.testing.assert_array_equal(np.asarray(tokens), batch.tgt_out)


def test_bad_input_is_refused_before_tracing():
    params = seq2seq_jax.init_params(CONFIG, 0)
    batch = ragged_batch(CONFIG, np.random.default_rng(0))
    bad = batch._replace(src=batch.src + 100)
    with pytest.raises(ValueError, match=r"src: expected token ids in \[0, 9\)"):
        seq2seq_jax.loss_and_grads(params, CONFIG, bad)
    with pytest.raises(ValueError, match=r"src_lengths: expected lengths in"):
        seq2seq_jax.greedy_decode(params, CONFIG, batch.src, batch.src_lengths * 0, 3)
    with pytest.raises(ValueError, match=r"beam_size: expected an int >= 1, got 0"):
        seq2seq_jax.beam_search(params, CONFIG, batch.src, batch.src_lengths, 0, 3)
    optimiser = seq2seq_jax.make_optimizer()
    train_step = seq2seq_jax.make_train_step(CONFIG, optimiser)
    with pytest.raises(ValueError, match=r"params\['output/W'\]: expected shape \(7, 8\)"):
        train_step({**params, "output/W": params["output/W"].T}, optimiser.init(params), batch)
    with pytest.raises(ValueError, match=r"compute_dtype: expected one of"):
        seq2seq_jax.loss_and_grads(params, CONFIG, batch, compute_dtype="float16")
    with pytest.raises(ValueError, match=r"optimizer: expected one of \('adam', 'sgd'\), got 'rmsprop'"):
        seq2seq_jax.make_optimizer("rmsprop")
    with pytest.raises(ValueError, match=r"beta2: expected a float in \(0, 1\), got 1.0"):
        seq2seq_jax.make_optimizer("adam", beta2=1.0)


def _run_subprocess(code, env_extra):
    import os

    env = {**os.environ, **env_extra}
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, capture_output=True, text=True,
                            env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_float64_params_without_x64_are_refused():
    out = _run_subprocess("""
        import numpy as np, seq2seq_jax
        from seq2seq_ref import ModelConfig, init_params
        config = ModelConfig(5, 5, 2, 3)
        try:
            seq2seq_jax.from_flat(config, init_params(config, 0, np.float64))
        except ValueError as error:
            print(error)
    """, {})
    assert "jax_enable_x64" in out


def test_eight_devices_step_equals_one_device_step():
    # Gradients and an SGD-momentum step (linear in the gradients) must match.  Adam is left out on
    # purpose: its first update is lr * sign(g), so a near-zero gradient entry whose float32 sign
    # depends on the all-reduce order moves by a whole lr.
    out = _run_subprocess("""
        import jax, numpy as np, seq2seq_jax
        from seq2seq_jax.train import loss_fn
        from seq2seq_ref import ModelConfig
        from tests.helpers import ragged_batch
        assert jax.device_count() == 8, jax.devices()
        config = ModelConfig(11, 9, 8, 16, bidirectional=True, attention="bahdanau")
        batch = ragged_batch(config, np.random.default_rng(0), batch_size=16, src_len=7, tgt_len=6)
        optimiser = seq2seq_jax.make_optimizer("sgd", 0.5, momentum=0.9, clip_norm=1.0)
        grad_fn = jax.jit(jax.value_and_grad(loss_fn), static_argnums=1)

        def rel(a, b):  # per tensor, max |a - b| / max |a|; the 1e-6 floor keeps ~1e-9 tensors from measuring rounding
            return max(float(np.max(np.abs(np.asarray(a[k]) - np.asarray(b[k]))))
                       / (float(np.max(np.abs(np.asarray(a[k])))) + 1e-6) for k in a)

        results = []
        for mesh in (seq2seq_jax.data_mesh(jax.devices()[:1]), seq2seq_jax.data_mesh()):
            params = seq2seq_jax.replicate(seq2seq_jax.init_params(config, 0), mesh)
            loss, grads = grad_fn(params, config, seq2seq_jax.shard_batch(batch, mesh))
            opt_state = seq2seq_jax.init_opt_state(optimiser, params, mesh)
            step = seq2seq_jax.make_train_step(config, optimiser, mesh=mesh)
            for _ in range(2):
                params, opt_state, metrics = step(params, opt_state, batch)
            assert len(params["output/W"].sharding.device_set) == mesh.size
            results.append((float(loss), grads, params, float(metrics["loss"])))
        (loss1, grads1, params1, after1), (loss8, grads8, params8, after8) = results
        assert abs(loss1 - loss8) <= 1e-5 * abs(loss1) and abs(after1 - after8) <= 1e-5 * abs(after1)
        assert rel(grads1, grads8) <= 1e-5, rel(grads1, grads8)
        assert rel(params1, params8) <= 1e-5, rel(params1, params8)
        try:
            seq2seq_jax.shard_batch(ragged_batch(config, np.random.default_rng(0), batch_size=6), seq2seq_jax.data_mesh())
        except ValueError as error:
            print(error)
        print("loss", abs(loss1 - loss8) / abs(loss1), "grads", rel(grads1, grads8), "params", rel(params1, params8))
    """, {"XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu",
          "JAX_DISABLE_MOST_OPTIMIZATIONS": "1"})  # as in-process (conftest.py): both meshes compile alike
    assert "divisible by the 8 devices" in out
    print(out)
