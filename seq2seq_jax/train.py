"""Loss, gradients and the jit-compiled training step; data parallelism over a device mesh.

    train_step = make_train_step(config, make_optimizer("adam", 1e-3, clip_norm=5.0))
    params, opt_state, metrics = train_step(params, opt_state, batch)

One step is one XLA program: forward, backward (autodiff), optimiser update.
params and opt_state are donated, so their buffers are reused in place; the
metrics stay on the device until the caller reads them.
"""
from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from seq2seq_ref.config import ModelConfig
from seq2seq_ref.model import dropout_mask_shapes
from seq2seq_ref.optim import check_optimizer, learning_rate_schedule
from seq2seq_ref.validation import check_batch, check_config, check_dropout_rng, check_params

from .models import Seq2Seq
from .params import check_precision

DATA_AXIS = "data"
COMPUTE_DTYPES = {None: None, "float32": jnp.float32, "bfloat16": jnp.bfloat16}


def make_dropout_masks(config: ModelConfig, batch, dtype, key) -> dict:
    """(D1) keep masks at the reference's places (seq2seq_ref.model.dropout_mask_shapes), drawn from key."""
    if config.dropout == 0.0:
        return {}
    keep = 1.0 - config.dropout
    # the uniform draws take p's dtype: a Python float would draw in float64 under jax_enable_x64 whatever the
    # model's dtype; float32 at least, since a bfloat16 p would round the keep probability
    p = jnp.asarray(keep, jnp.promote_types(dtype, jnp.float32))
    # a draw per mask, which XLA fuses into the mask's use; one draw for all masks, split after, compiles faster
    # (a 3+3-block Transformer's step 19.6 s -> 17.7 s) but ran the Multi30k recipe's step 5 % slower
    return {
        name: jax.random.bernoulli(jax.random.fold_in(key, index), p, shape).astype(dtype) / keep
        for index, (name, shape) in enumerate(dropout_mask_shapes(config, batch).items())
    }


def loss_fn(params, config: ModelConfig, batch, dropout_key=None, compute_dtype=None, unroll=1, custom_vjp=True):
    """The mean token loss, a pure function of the flat params (what jax.grad differentiates).

    compute_dtype (e.g. jnp.bfloat16) casts the parameters for the forward and
    backward passes only; the loss is reduced in float32 and the gradients come
    back in the parameters' dtype.  custom_vjp=False takes the LSTM gradients by plain autodiff of the
    scan instead of the hand-written backward (lstm.lstm_scan_autodiff, gru.gru_scan_autodiff): slower, for checking.
    """
    if compute_dtype is not None:
        params = {name: value.astype(compute_dtype) for name, value in params.items()}
    masks = make_dropout_masks(config, batch, params["output/b"].dtype, dropout_key)
    return Seq2Seq(config, params, custom_vjp).loss(batch, masks, unroll)


def as_key(dropout_rng):
    """An int seed or a jax PRNG key -> a key; None stays None."""
    if dropout_rng is None or isinstance(dropout_rng, jax.Array):
        return dropout_rng
    if isinstance(dropout_rng, (int, np.integer)) and not isinstance(dropout_rng, bool):
        return jax.random.key(int(dropout_rng))
    raise ValueError(f"dropout_rng: expected an int seed or a jax.random key, got {type(dropout_rng).__name__}")


def resolve_compute_dtype(compute_dtype):
    if compute_dtype not in COMPUTE_DTYPES and compute_dtype not in (jnp.float32, jnp.bfloat16):
        raise ValueError(f"compute_dtype: expected one of {list(COMPUTE_DTYPES)}, got {compute_dtype!r}")
    return COMPUTE_DTYPES.get(compute_dtype, compute_dtype)


def _check(params, config, batch, dropout_rng):
    check_config(config)
    check_params(params, config)
    check_precision(params)
    batch = check_batch(batch, config)
    check_dropout_rng(config, dropout_rng)
    return batch


@partial(jax.jit, static_argnames=("config", "compute_dtype", "unroll", "custom_vjp"))
def _loss_and_grads(params, config, batch, dropout_key, compute_dtype, unroll, custom_vjp):
    return jax.value_and_grad(loss_fn)(params, config, batch, dropout_key, compute_dtype, unroll, custom_vjp)


def loss_and_grads(params, config: ModelConfig, batch, dropout_rng=None, *, compute_dtype=None, unroll=1,
                   custom_vjp=True):
    """The reference's loss_and_grads by autodiff, jit-compiled.  Inputs are validated before tracing.

    custom_vjp=False: the recurrent scans (LSTM, GRU) too are differentiated by autodiff, not by their hand-written VJPs.
    """
    batch = _check(params, config, batch, dropout_rng)
    return _loss_and_grads(params, config, batch, as_key(dropout_rng), resolve_compute_dtype(compute_dtype), unroll,
                           bool(custom_vjp))


def make_optimizer(name: str = "adam", learning_rate: float = 1e-3, momentum: float = 0.9,
                   clip_norm: float | None = None, schedule: str = "constant",
                   warmup: int = 1, beta2: float = 0.999,
                   decay_steps: int | str | None = None) -> optax.GradientTransformation:
    """optax.adam (second-moment decay beta2) or optax.sgd (with momentum) at a scheduled learning rate
    (seq2seq_ref.optim.SCHEDULES: the reference's formula over jax.numpy), after optax.clip_by_global_norm when
    clip_norm is set."""
    check_optimizer(name, learning_rate, momentum, clip_norm, schedule, warmup, beta2, decay_steps)
    rate = learning_rate_schedule(learning_rate, schedule, warmup, xp=jnp, decay_steps=decay_steps)
    optimiser = optax.adam(rate, b2=beta2) if name == "adam" else optax.sgd(rate, momentum or None)
    return optax.chain(optax.clip_by_global_norm(clip_norm), optimiser) if clip_norm else optimiser


def data_mesh(devices=None) -> Mesh:
    """A 1-D mesh over all visible devices (all hosts' after jax.distributed.initialize())."""
    devices = jax.devices() if devices is None else devices
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def shard_batch(batch, mesh: Mesh):
    """Split every batch array along its first axis over the mesh's data axis.  Under several processes
    (jax.distributed), each process passes the same global batch and feeds only its own rows, those of its
    devices (jax.make_array_from_process_local_data)."""
    size = mesh.shape[DATA_AXIS]
    if batch.src.shape[0] % size:
        raise ValueError(f"batch: expected a batch size divisible by the {size} devices of the mesh, "
                         f"got {batch.src.shape[0]}")
    sharding = NamedSharding(mesh, PartitionSpec(DATA_AXIS))
    if jax.process_count() == 1:
        return jax.device_put(batch, sharding)

    def rows_of_this_process(array):
        array = np.asarray(array)
        spans = [index[0] for index in sharding.addressable_devices_indices_map(array.shape).values()]
        low, high = min(span.start or 0 for span in spans), max(span.stop or array.shape[0] for span in spans)
        return jax.make_array_from_process_local_data(sharding, array[low:high], array.shape)

    return jax.tree.map(rows_of_this_process, batch)


def replicate(tree, mesh: Mesh):
    """A full copy on every device of the mesh (params, optimiser state).  Under several processes, every
    process passes the same values (an array already spread over the processes is kept as it is)."""
    sharding = NamedSharding(mesh, PartitionSpec())
    if jax.process_count() == 1:
        return jax.device_put(tree, sharding)

    def place(leaf):
        if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
            return leaf
        value = np.asarray(leaf)
        return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])

    return jax.tree.map(place, tree)


def make_train_step(config: ModelConfig, optimiser: optax.GradientTransformation, *, compute_dtype=None,
                    unroll: int = 1, mesh: Mesh | None = None, validate: bool = True):
    """A jit-compiled train_step(params, opt_state, batch, dropout_rng=None, update_scale=1.0)
    -> (params, opt_state, metrics).

    update_scale multiplies the optimiser's updates (the learning rate, for sgd and adam alike): the
    plateau schedule's factor, a traced value, so changing it compiles nothing.

    metrics: {"loss", "grad_norm"} as device scalars (reading them syncs).
    With a mesh, the batch is sharded over it and params / opt_state must be
    replicated on it (replicate()); XLA inserts the gradient all-reduce.  The
    result equals a one-device step.  validate checks each host batch first;
    turn it off for batches already on the device (checking would copy them back).
    """
    check_config(config)
    compute_dtype = resolve_compute_dtype(compute_dtype)

    def step(params, opt_state, batch, dropout_key, update_scale):
        loss, grads = jax.value_and_grad(loss_fn)(params, config, batch, dropout_key, compute_dtype, unroll)
        updates, opt_state = optimiser.update(grads, opt_state, params)
        updates = jax.tree.map(lambda u: u * update_scale.astype(u.dtype), updates)
        metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads)}
        return optax.apply_updates(params, updates), opt_state, metrics

    out_shardings = None
    if mesh is not None:
        replicated = NamedSharding(mesh, PartitionSpec())
        out_shardings = (replicated, replicated, replicated)
    compiled = jax.jit(step, donate_argnums=(0, 1), out_shardings=out_shardings)

    def train_step(params, opt_state, batch, dropout_rng=None, update_scale=1.0):
        if validate:
            batch = _check(params, config, batch, dropout_rng)
        if mesh is not None:
            batch = shard_batch(batch, mesh)
        return compiled(params, opt_state, batch, as_key(dropout_rng), jnp.asarray(update_scale, jnp.float32))

    return train_step


def init_opt_state(optimiser: optax.GradientTransformation, params, mesh: Mesh | None = None):
    opt_state = optimiser.init(params)
    return opt_state if mesh is None else replicate(opt_state, mesh)
