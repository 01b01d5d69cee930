"""A float32 model computes in float32 throughout and a float64 model in float64, in both backends.

NumPy 2 promotes a float32 array that meets a float64 NumPy scalar or array to float64 without a word (NEP 50;
a Python float keeps the array's dtype): through np.sqrt(d) the NumPy Transformer ran its float32 steps in
float64.  On the NumPy side every ufunc and array function that an array computed from the parameters takes
part in is watched (watched()), and every array the forward pass caches is walked.  On the JAX side, with
jax_enable_x64 on so that a leak shows as float64 instead of being narrowed away, every equation of the traced
programs is inspected: loss and gradients (dropout on), greedy decoding and beam search.
"""
import jax

jax.config.update("jax_enable_x64", True)

from functools import partial  # noqa: E402

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import seq2seq_jax  # noqa: E402
from seq2seq_jax.decode import BeamState, GreedyState, _beam_run, _encode, _greedy_run  # noqa: E402
from seq2seq_ref.decode import length_limits, length_normaliser  # noqa: E402
from seq2seq_jax.train import loss_fn  # noqa: E402
from seq2seq_ref import init_params  # noqa: E402
from seq2seq_ref.decode import beam_search, greedy_decode  # noqa: E402
from seq2seq_ref.model import backward, forward  # noqa: E402
from seq2seq_ref.optim import apply_updates, make_optimizer  # noqa: E402
from tests.helpers import config_with_heads, grid, ragged_batch  # noqa: E402

# dropout and label smoothing on, so that their scalings are on the path too
SIZES = dict(src_vocab_size=7, tgt_vocab_size=6, embed_dim=4, hidden_dim=4, dropout=0.1, label_smoothing=0.1)
DTYPES = (np.float32, np.float64)
# options that change the computed path, each on the first registered combination that takes it
OPTIONS = (dict(output_from="state+context+input"), dict(input_feeding=True),
           dict(tie_embeddings="all", src_vocab_size=SIZES["tgt_vocab_size"]))


def make_config(variant, **options):
    encoder, decoder, attention, layers, bidirectional = variant
    return config_with_heads(**{**SIZES, **options}, encoder=encoder, decoder=decoder, attention=attention,
                             num_layers=layers, bidirectional=bidirectional)


def _with_options():
    cases = []
    for options in OPTIONS:
        for variant in grid(**SIZES):
            try:
                cases.append(make_config(variant, **options))
                break
            except ValueError:
                continue
    return cases


CONFIGS = [make_config(variant) for variant in grid(**SIZES)] + _with_options()


def config_id(config):
    options = [f"{name}={getattr(config, name)}" for name in ("output_from", "input_feeding", "tie_embeddings")
               if getattr(config, name) != type(config).__dataclass_fields__[name].default]
    return "-".join([config.encoder, config.decoder, config.attention, f"l{config.num_layers}",
                     "bi" if config.bidirectional else "uni", *options])


def watched(params, dtype):
    """params as arrays that fail on a floating result of any dtype but `dtype` in every ufunc and array
    function they take part in; array results are watched too, so everything computed from params is."""
    def check(result, what):
        for value in result if isinstance(result, tuple) else (result,):
            if isinstance(value, (np.ndarray, np.generic)) and np.issubdtype(value.dtype, np.floating):
                assert value.dtype == dtype, f"{what} gave {value.dtype} in a {np.dtype(dtype)} model"

    class Watched(np.ndarray):
        def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
            plain = lambda x: x.view(np.ndarray) if isinstance(x, Watched) else x  # noqa: E731
            if "out" in kwargs:
                kwargs["out"] = tuple(map(plain, kwargs["out"]))
            result = getattr(ufunc, method)(*map(plain, inputs), **kwargs)
            check(result, f"{ufunc.__name__}.{method}")
            return result.view(Watched) if type(result) is np.ndarray else result

        def __array_function__(self, func, types, args, kwargs):
            result = super().__array_function__(func, types, args, kwargs)
            check(result, func.__name__)
            return result

    return {name: value.view(Watched) for name, value in params.items()}


def floating_dtypes(tree, path="cache"):
    """(path, dtype) of every floating array or NumPy scalar in nested tuples, lists and dicts."""
    if isinstance(tree, (np.ndarray, np.generic)):
        if np.issubdtype(tree.dtype, np.floating):
            yield path, tree.dtype
    elif isinstance(tree, dict):
        for key, value in tree.items():
            yield from floating_dtypes(value, f"{path}[{key!r}]")
    elif isinstance(tree, (tuple, list)):
        for index, value in enumerate(tree):
            yield from floating_dtypes(value, f"{path}[{index}]")


def assert_all(tree, dtype, path):
    wrong = [(where, str(found)) for where, found in floating_dtypes(tree, path) if found != dtype]
    assert not wrong, f"{len(wrong)} arrays not {np.dtype(dtype)}, e.g. {wrong[:3]}"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("config", CONFIGS, ids=config_id)
def test_the_numpy_model_computes_in_its_dtype(config, dtype):
    params = watched(init_params(config, 0, dtype), dtype)
    batch = ragged_batch(config, np.random.default_rng(0))
    loss, cache = forward(params, config, batch, dropout_rng=0)
    assert np.asarray(loss).dtype == dtype
    assert_all(cache, dtype, "cache")
    assert_all(backward(cache), dtype, "grads")  # as computed, before loss_and_grads casts them
    tokens, weights = greedy_decode(params, config, batch.src, batch.src_lengths, 4)
    assert_all(weights, dtype, "greedy weights")
    other = np.float64 if dtype == np.float32 else np.float32  # a NumPy scalar alpha does not set the dtype
    _, scores = beam_search(params, config, batch.src, batch.src_lengths, 2, 4, other(0.6))
    assert scores.dtype == dtype


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name,settings", [("adam", dict(schedule="noam", warmup=2)), ("sgd", dict(momentum=0.9))])
def test_the_numpy_optimisers_keep_the_dtype_whatever_the_hyperparameters_type(name, settings, dtype):
    config = CONFIGS[0]
    params = watched(init_params(config, 0, dtype), dtype)
    grads = {key: value * 0.5 + 0.1 for key, value in params.items()}
    # np.float64 is a float subclass, so accepted: it must not promote float32 updates
    settings = {key: np.float64(value) if isinstance(value, float) else value for key, value in settings.items()}
    optimiser = make_optimizer(name, np.float64(1e-3), clip_norm=np.float64(0.5), **settings)
    state = optimiser.init(params)
    for _ in range(2):
        updates, state = optimiser.update(grads, state)
        assert_all(updates, dtype, "updates")
        assert_all(state, dtype, "state")
        params = apply_updates(params, updates)


def traced_dtypes(jaxpr):
    """The dtype of every floating value an equation of the program (and of the programs inside it) makes."""
    for eqn in jaxpr.eqns:
        for var in eqn.outvars:
            dtype = getattr(var.aval, "dtype", None)
            if dtype is not None and jnp.issubdtype(dtype, jnp.floating):
                yield eqn.primitive.name, dtype
        for value in eqn.params.values():
            for inner in value if isinstance(value, (tuple, list)) else (value,):
                inner = getattr(inner, "jaxpr", inner)  # a ClosedJaxpr holds a Jaxpr
                if hasattr(inner, "eqns"):
                    yield from traced_dtypes(inner)


def covering(configs):
    """The first configs that between them hold every encoder, decoder and connection that configs hold."""
    kept, seen = [], set()
    for config in configs:
        parts = {("encoder", config.encoder), ("decoder", config.decoder), ("attention", config.attention)}
        if parts - seen:
            kept.append(config)
            seen |= parts
    return kept


# Tracing costs a fraction of a second a program: float32, the dtype a leak would widen, over every registered
# combination at one layer and direction; float64, where only a hard-coded narrower dtype could go wrong,
# over each component once.
JAX_CONFIGS = [make_config(variant) for variant in grid(((1, False),), **SIZES)]
JAX_CASES = ([(config, np.float32) for config in JAX_CONFIGS]
             + [(config, np.float64) for config in covering(JAX_CONFIGS)])


def decoding_programs(params, config, src, src_lengths, beam_size, limits, best_bound, max_len=4):
    """The compiled parts of greedy decoding (beam_size 1) or beam search, run once each: the encoder and a
    decoding loop from a fresh state."""
    memory, states = _encode(params, config, src, src_lengths, beam_size, max_len)
    B, dtype = len(limits), params["output/b"].dtype
    ids = jnp.zeros((B, beam_size, max_len), jnp.int32)
    if beam_size == 1:
        state = GreedyState(jnp.int32(0), ids[:, 0], jnp.zeros((B, max_len, src.shape[1]), dtype), ids[:, 0, 0],
                            jnp.zeros(B, bool), limits, states)
        return _greedy_run(params, config, memory, state, max_len, 0)
    state = BeamState(jnp.int32(0), jnp.zeros((B, beam_size), dtype), ids, ids[:, 0, 0], jnp.zeros(B, bool),
                      jnp.zeros((B, beam_size), dtype), ids, limits, best_bound, ids[:, :, 0].reshape(-1), states)
    return _beam_run(params, config, memory, state, max_len, 0, 0.6, False)


@pytest.mark.parametrize("config,dtype", JAX_CASES, ids=lambda value: config_id(value) if hasattr(value, "encoder")
                         else np.dtype(value).name)
def test_the_jax_model_computes_in_its_dtype(config, dtype):
    params = seq2seq_jax.init_params(config, 0, dtype)
    batch = ragged_batch(config, np.random.default_rng(0))
    src = dict(src=batch.src, src_lengths=batch.src_lengths)
    limits = length_limits(batch.src_lengths, 4).astype(np.int32)  # (N3): each sentence's limit, here max_len
    best_bound = length_normaliser(limits.astype(np.float64), 0.6).astype(dtype)  # (N2) in the scores' dtype
    programs = {
        "loss and gradients": jax.make_jaxpr(jax.value_and_grad(partial(loss_fn, config=config, batch=batch)))(
            params, dropout_key=jax.random.key(0)),
        "greedy": jax.make_jaxpr(partial(decoding_programs, config=config, beam_size=1, limits=limits,
                                         best_bound=best_bound, **src))(params),
        "beam": jax.make_jaxpr(partial(decoding_programs, config=config, beam_size=2, limits=limits,
                                       best_bound=best_bound, **src))(params),
    }
    for name, program in programs.items():
        wrong = sorted({f"{primitive} -> {found}" for primitive, found in traced_dtypes(program.jaxpr)
                        if found != dtype})
        assert not wrong, f"{name}: {wrong}"
        assert all(np.dtype(out.dtype) == dtype for out in program.out_avals if jnp.issubdtype(out.dtype, jnp.floating))
