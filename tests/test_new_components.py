"""A new cell and a new connection, written here and registered at test time, work everywhere without a line
changed outside this file: they train from the command line, translate, pass finite differences, and the JAX
twin agrees with the reference.

The cell is the plain tanh RNN, h_t = tanh(x_t W_x + h_{t-1} W_h + b) (Elman 1990); the connection is
dot-product attention read from the decoder output, f_t = tanh([sum_s alpha_ts k_s ; s_t] W_c) with
alpha_t = softmax_s(s_t . k_s) (Luong et al. 2015's "dot").
"""
import jax

jax.config.update("jax_enable_x64", True)

import json  # noqa: E402

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from flax import nnx  # noqa: E402
from jax import lax  # noqa: E402

import seq2seq_jax  # noqa: E402
from seq2seq_jax import registry as jax_registry  # noqa: E402
from seq2seq_jax.layers import masked_softmax as jax_masked_softmax  # noqa: E402
from seq2seq_lab.checkpoint import list_checkpoints, load_checkpoint  # noqa: E402
from seq2seq_lab.cli import main  # noqa: E402
from seq2seq_ref import ModelConfig, loss_and_grads  # noqa: E402
from seq2seq_ref import registry as reference_registry  # noqa: E402
from seq2seq_ref.components import Cell, Connection  # noqa: E402
from seq2seq_ref.decode import beam_search, greedy_decode  # noqa: E402
from seq2seq_ref.gradcheck import DEFAULT_THRESHOLD, gradcheck_model  # noqa: E402
from seq2seq_ref.ops import masked_softmax, masked_softmax_backward  # noqa: E402
from tests.helpers import float64_params, ragged_batch  # noqa: E402


class TanhRNN(Cell):
    """h_t = tanh(x_t W_x + h_{t-1} W_h + b); a row past its length carries h."""

    name = "rnn"
    state_names = ("h",)

    @staticmethod
    def param_shapes(input_dim, hidden_dim):
        return {"W_x": (input_dim, hidden_dim), "W_h": (hidden_dim, hidden_dim), "b": (hidden_dim,)}

    @staticmethod
    def init_param(suffix, shape, hidden_dim, rng):
        bound = 1.0 / np.sqrt(hidden_dim)
        return rng.uniform(-bound, bound, size=shape)

    @staticmethod
    def step_forward(x, state, p, mask):
        h_prev = state[0]
        h_new = np.tanh(x @ p["W_x"] + h_prev @ p["W_h"] + p["b"])
        return (np.where(mask[:, None], h_new, h_prev),), (x, h_prev, h_new, mask, p)

    @staticmethod
    def step_backward(dstate, cache):
        x, h_prev, h_new, mask, p = cache
        da = np.where(mask[:, None], dstate[0], 0.0) * (1.0 - h_new**2)
        dh_prev = da @ p["W_h"].T + np.where(mask[:, None], 0.0, dstate[0])
        return da @ p["W_x"].T, (dh_prev,), {"W_x": x.T @ da, "W_h": h_prev.T @ da, "b": da.sum(axis=0)}

    @staticmethod
    def forward(x, state, p, lengths):
        hs, caches = [], []
        for t in range(x.shape[1]):
            state, cache = TanhRNN.step_forward(x[:, t], state, p, t < lengths)
            hs.append(state[0])
            caches.append(cache)
        return np.stack(hs, axis=1), state, caches

    @staticmethod
    def backward(dhs, dstate, caches):
        dxs, grads = [], {}
        for t in reversed(range(len(caches))):
            dx, dstate, step_grads = TanhRNN.step_backward((dstate[0] + dhs[:, t],), caches[t])
            dxs.append(dx)
            grads = {k: grads.get(k, 0.0) + g for k, g in step_grads.items()}
        return np.stack(dxs[::-1], axis=1), dstate, grads


class DotAttention(Connection):
    """alpha_t = softmax_s(s_t . k_s), c_t = sum_s alpha_ts k_s, f_t = tanh([c_t ; s_t] W_c): it reads the
    decoder output, and its dot product needs keys as wide as the decoder state."""

    name = "dot"

    @staticmethod
    def check_config(config):
        if config.key_dim != config.hidden_dim:
            raise ValueError(f"bidirectional: expected False with attention='dot' (keys as wide as the decoder "
                             f"state), got {config.bidirectional}")

    @staticmethod
    def param_shapes(config):
        return {"attention/W_c": (config.key_dim + config.hidden_dim, config.hidden_dim)}

    @staticmethod
    def matmul_flops(config, batch, src_len, steps):
        H, K = config.hidden_dim, config.key_dim
        return steps * (2 * batch * src_len * H + 2 * batch * src_len * K + 2 * batch * (K + H) * H)

    @staticmethod
    def output_forward(queries, memory, params, config):
        alpha = masked_softmax(queries @ memory.keys.transpose(0, 2, 1), memory.src_mask[:, None, :])
        joined = np.concatenate([alpha @ memory.keys, queries], axis=-1)
        features = np.tanh(joined @ params["attention/W_c"])
        return features, alpha, (queries, memory.keys, alpha, joined, features, params["attention/W_c"])

    @staticmethod
    def output_backward(dfeatures, cache):
        queries, keys, alpha, joined, features, W_c = cache
        dpre = dfeatures * (1.0 - features**2)
        djoined = dpre @ W_c.T
        dcontext, dqueries = djoined[..., :keys.shape[-1]], djoined[..., keys.shape[-1]:]
        dscores = masked_softmax_backward(dcontext @ keys.transpose(0, 2, 1), alpha)
        dkeys = alpha.transpose(0, 2, 1) @ dcontext + dscores.transpose(0, 2, 1) @ queries
        dW_c = np.einsum("btj,bth->jh", joined, dpre)
        return dqueries + dscores @ keys, dkeys, {}, {"attention/W_c": dW_c}


class JaxTanhRNN(nnx.Module):
    def __init__(self, p, custom_vjp=True):  # no hand-written VJP: autodiff differentiates the scan
        self.W_x, self.W_h, self.b = nnx.Param(p["W_x"]), nnx.Param(p["W_h"]), nnx.Param(p["b"])

    def step(self, x, state, mask):
        h_new = jnp.tanh(x @ self.W_x[...] + state[0] @ self.W_h[...] + self.b[...])
        return (jnp.where(mask[:, None], h_new, state[0]),)

    def __call__(self, x, state, mask, unroll=1):
        W_x, W_h, b = self.W_x[...], self.W_h[...], self.b[...]

        def body(h, inputs):
            x_t, m_t = inputs
            h = jnp.where(m_t[:, None], jnp.tanh(x_t @ W_x + h @ W_h + b), h)
            return h, h

        h, hs = lax.scan(body, state[0], (jnp.swapaxes(x, 0, 1), mask.T), unroll=unroll)
        return jnp.swapaxes(hs, 0, 1), (h,)


class JaxDotAttention(nnx.Module):
    def __init__(self, params, config):
        self.W_c = nnx.Param(params["attention/W_c"])

    def memory(self, keys):
        return {}

    def __call__(self, queries, memory):
        alpha = jax_masked_softmax(jnp.einsum("bth,bsh->bts", queries, memory.keys), memory.src_mask[:, None, :])
        context = jnp.einsum("bts,bsk->btk", alpha, memory.keys)
        return jnp.tanh(jnp.concatenate([context, queries], axis=-1) @ self.W_c[...]), alpha


@pytest.fixture
def toy_components():
    """TanhRNN as "rnn" and DotAttention as "dot" in both backends' registries, for this test only."""
    tables = [reference_registry.CELLS, reference_registry.ENCODERS, reference_registry.DECODERS,
              reference_registry.CONNECTIONS, jax_registry.CELLS, jax_registry.ENCODERS, jax_registry.DECODERS,
              jax_registry.CONNECTIONS]
    saved = [dict(table) for table in tables]
    reference_registry.register_cell("rnn", TanhRNN)
    reference_registry.register_connection("dot", DotAttention)
    jax_registry.register_cell("rnn", JaxTanhRNN)
    jax_registry.register_connection("dot", JaxDotAttention)
    yield
    for table, before in zip(tables, saved):
        table.clear()
        table.update(before)


SIZES = dict(src_vocab_size=7, tgt_vocab_size=8, embed_dim=4, hidden_dim=6)
# the new cell on both sides, with the new connection and with a built-in one; beside a built-in cell; under a
# Transformer decoder
TOY_CONFIGS = [dict(encoder="rnn", decoder="rnn", attention="dot", num_layers=2),
               dict(encoder="rnn", decoder="rnn", attention="bahdanau", num_layers=1, bidirectional=True),
               dict(encoder="gru", decoder="rnn", attention="dot", num_layers=1, input_feeding=True),
               dict(encoder="rnn", decoder="lstm", attention="dot", num_layers=2)]


@pytest.mark.usefixtures("toy_components")
@pytest.mark.parametrize("fields", TOY_CONFIGS, ids=lambda f: f"{f['encoder']}-{f['decoder']}-{f['attention']}")
def test_new_components_pass_finite_differences(fields):
    config = ModelConfig(**SIZES, **fields)
    checks = gradcheck_model(config, max_entries=6)
    new = {f"{side}/l0/{part}" for side, part in (("encoder", "fwd/W_h"), ("decoder", "W_h")) if fields[side] == "rnn"}
    new |= {"attention/W_c"} if fields["attention"] == "dot" else set()
    assert new and new <= {c.name for c in checks}
    assert max(c.max_rel_error for c in checks) <= DEFAULT_THRESHOLD, [c for c in checks
                                                                       if c.max_rel_error > DEFAULT_THRESHOLD]


@pytest.mark.usefixtures("toy_components")
@pytest.mark.parametrize("fields", TOY_CONFIGS[:1] + TOY_CONFIGS[2:], ids=lambda f: f"{f['encoder']}-{f['decoder']}")
def test_new_components_agree_between_the_backends(fields, rng):
    config = ModelConfig(**SIZES, **fields)
    params, batch = float64_params(config), ragged_batch(config, rng)
    loss, grads = loss_and_grads(params, config, batch)
    jax_loss, jax_grads = seq2seq_jax.loss_and_grads(params, config, batch)
    assert abs(float(jax_loss) - loss) <= 1e-10 * abs(loss)
    for name in grads:
        np.testing.assert_allclose(np.asarray(jax_grads[name]), grads[name], rtol=1e-9, atol=1e-12, err_msg=name)
    tokens, weights = greedy_decode(params, config, batch.src, batch.src_lengths, 6)
    jax_tokens, jax_weights = seq2seq_jax.greedy_decode(params, config, batch.src, batch.src_lengths, 6)
    np.testing.assert_array_equal(np.asarray(jax_tokens), tokens)
    np.testing.assert_allclose(np.asarray(jax_weights), weights, rtol=1e-9, atol=1e-12)
    hyps, scores = beam_search(params, config, batch.src, batch.src_lengths, 3, 6, 0.6)
    jax_hyps, jax_scores = seq2seq_jax.beam_search(params, config, batch.src, batch.src_lengths, 3, 6, 0.6)
    np.testing.assert_array_equal(np.asarray(jax_hyps), hyps)
    np.testing.assert_allclose(np.asarray(jax_scores), scores, rtol=1e-10)


@pytest.mark.usefixtures("toy_components")
def test_new_components_train_and_translate_from_the_command_line(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--task", "reverse", "--train-size", "200", "--steps", "20", "--batch-size", "16",
                 "--backend", "numpy", "--hidden-dim", "16", "--embed-dim", "8", "--encoder", "rnn", "--decoder",
                 "rnn", "--attention", "dot", "--no-bidirectional", "--lr", "0.01", "--out", str(run),
                 "--no-progress", "--log-every", "5", "--eval-every", "20"]) == 0
    config = load_checkpoint(list_checkpoints(run)[-1]).config
    assert (config.encoder, config.decoder, config.attention) == ("rnn", "rnn", "dot")
    losses = [r["loss"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "loss" in r]
    assert losses[-1] < losses[0]
    capsys.readouterr()
    for backend in ("jax", "numpy"):
        assert main(["translate", "--run", str(run), "--backend", backend, "--beam", "2", "abc", "ba"]) == 0
    jax_lines, numpy_lines = np.array_split(capsys.readouterr().out.splitlines(), 2)
    assert len(jax_lines) == 2 and list(jax_lines) == list(numpy_lines)


def test_the_registries_are_as_before_outside_the_fixture():
    assert "rnn" not in reference_registry.ENCODERS and "dot" not in jax_registry.CONNECTIONS
    with pytest.raises(ValueError, match=r"encoder: expected one of \('lstm', 'gru', 'transformer'\), got 'rnn'"):
        ModelConfig(**SIZES, encoder="rnn")

