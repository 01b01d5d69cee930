"""One interface over the two backends, for the training loop, evaluation and checkpoints.

Optimiser state crosses the boundary in a neutral flat form, so a checkpoint
written by one backend resumes in the other:
    "count" (int: updates so far; the schedule's step), adam: "mu/<param>", "nu/<param>";
    sgd with momentum: "trace/<param>"
"""
from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

import numpy as np

from seq2seq_ref import ModelConfig

BACKENDS = ("jax", "numpy")


@dataclass(frozen=True)
class OptimiserSettings:
    """learning_rate is the constant rate, or the peak of a schedule (seq2seq_ref.optim.SCHEDULES)."""
    name: str = "adam"
    learning_rate: float = 3e-3
    momentum: float = 0.9
    beta2: float = 0.999          # adam's second-moment decay (Vaswani et al. 2017 use 0.98)
    clip_norm: float | None = 5.0
    schedule: str = "constant"
    warmup: int = 400
    decay_steps: int | str | None = None  # --schedule linear: the rate reaches zero after this update (MATH.md
    # (S5)); "fit": after the update the training loop fits to --max-minutes once warm-up is over
    plateau_factor: float = 0.5   # --schedule plateau: the rate is multiplied by this ...
    plateau_patience: int = 2     # ... after this many validations in a row without a better --select-by score

    def __post_init__(self):
        from seq2seq_ref.optim import check_optimizer

        check_optimizer(self.name, self.learning_rate, self.momentum, self.clip_norm, self.schedule, self.warmup,
                        self.beta2, self.decay_steps)
        if isinstance(self.plateau_factor, bool) or not 0.0 < self.plateau_factor < 1.0:
            raise ValueError(f"plateau_factor: expected a float in (0, 1), got {self.plateau_factor!r}")
        if isinstance(self.plateau_patience, bool) or not isinstance(self.plateau_patience, int) \
                or self.plateau_patience < 1:
            raise ValueError(f"plateau_patience: expected an int >= 1, got {self.plateau_patience!r}")

    def update_scale(self, evals_since_best: int, scale: float) -> float:
        """The plateau factor after a validation: scale times plateau_factor each time the run has gone
        plateau_patience more validations without improving (ReduceLROnPlateau); 1 for other schedules."""
        if self.schedule != "plateau":
            return 1.0
        reduce = evals_since_best > 0 and evals_since_best % self.plateau_patience == 0
        return scale * self.plateau_factor if reduce else scale

    @property
    def fits_decay(self) -> bool:
        """A linear schedule whose end the training loop fits to its time budget (decay_steps "fit")."""
        from seq2seq_ref.optim import FIT

        return self.schedule == "linear" and self.decay_steps == FIT

    def slots(self) -> tuple[str, ...]:
        return ("mu", "nu") if self.name == "adam" else ("trace",) if self.momentum else ()

    def arguments(self) -> dict:
        """make_optimizer's keyword arguments, the same in both backends."""
        return {"name": self.name, "learning_rate": self.learning_rate, "momentum": self.momentum,
                "clip_norm": self.clip_norm, "schedule": self.schedule, "warmup": self.warmup,
                "beta2": self.beta2, "decay_steps": self.decay_steps}  # plateau: in the loop

    def learning_rate_at(self, step: int) -> float:
        """The rate of update number step + 1 (step updates done before it)."""
        from seq2seq_ref.optim import learning_rate_schedule

        rate = learning_rate_schedule(self.learning_rate, self.schedule, self.warmup, decay_steps=self.decay_steps)
        return float(rate(step)) if callable(rate) else rate


def jax_available() -> bool:
    try:
        import jax  # noqa: F401
        import optax  # noqa: F401
        from flax import nnx  # noqa: F401
    except ImportError:
        return False
    return True


def make_backend(name: str, config: ModelConfig, optimiser: OptimiserSettings):
    if name == "numpy":
        return NumpyBackend(config, optimiser)
    if name == "jax":
        if not jax_available():
            raise ValueError("backend: 'jax' needs jax, flax and optax installed (pip install -e .)")
        return JaxBackend(config, optimiser)
    raise ValueError(f"backend: expected one of {BACKENDS}, got {name!r}")


def without_smoothing(config: ModelConfig) -> ModelConfig:
    return dataclasses.replace(config, label_smoothing=0.0, dropout=0.0)


class NumpyBackend:
    name = "numpy"

    def __init__(self, config: ModelConfig, optimiser: OptimiserSettings):
        from seq2seq_ref import optim

        from .allocator import keep_freed_memory

        keep_freed_memory()  # large temporaries stay in the heap between steps (allocator.py)
        self.config, self.settings = config, optimiser
        self.optimiser = optim.make_optimizer(**optimiser.arguments())
        self._apply = optim.apply_updates

    def init_params(self, seed: int):
        from seq2seq_ref import init_params

        return init_params(self.config, seed)

    def to_device(self, params):
        return {k: np.asarray(v) for k, v in params.items()}

    def init_opt_state(self, params):
        return self.optimiser.init(params)

    def train_step(self, params, opt_state, batch, seed: int, step: int, update_scale: float = 1.0):
        """One step; update_scale multiplies the optimiser's updates (the plateau schedule's factor)."""
        from seq2seq_ref import loss_and_grads

        dropout_rng = np.random.default_rng([seed, step]) if self.config.dropout else None
        loss, grads = loss_and_grads(params, self.config, batch, dropout_rng)
        updates, opt_state = self.optimiser.update(grads, opt_state)
        if update_scale != 1.0:
            updates = {name: u * np.asarray(update_scale, u.dtype) for name, u in updates.items()}
        return self._apply(params, updates), opt_state, loss

    devices = 1

    def block(self, value):
        """Returns once value is computed (NumPy computes before it returns)."""
        return value

    def scalar(self, value) -> float:
        return float(value)

    def local(self, params):
        return params

    def nll(self, params, batch) -> float:
        """Summed token negative log-likelihood (no smoothing): for perplexity."""
        from seq2seq_ref.model import forward

        loss, _ = forward(params, without_smoothing(self.config), batch)
        return float(loss) * int(batch.tgt_lengths.sum())

    def greedy(self, params, src, src_lengths, max_len, **limit):
        """seq2seq_ref.decode.greedy_decode; limit: its max_len_a, max_len_b."""
        from seq2seq_ref.decode import greedy_decode

        return greedy_decode(params, self.config, src, src_lengths, max_len, **limit)

    def beam(self, params, src, src_lengths, beam_size, max_len, length_penalty, **options):
        """seq2seq_ref.decode.beam_search; options: its max_len_a, max_len_b, early_stop."""
        from seq2seq_ref.decode import beam_search

        return beam_search(params, self.config, src, src_lengths, beam_size, max_len, length_penalty, **options)

    def to_numpy(self, params):
        return dict(params)

    def opt_state_to_arrays(self, state) -> dict[str, np.ndarray]:
        inner = state[-1]
        slots = {"mu": inner["mu"], "nu": inner["nu"]} if self.settings.name == "adam" else {"trace": inner["trace"]}
        return {"count": np.asarray(inner["count"]),
                **{f"{slot}/{k}": v for slot, values in slots.items() for k, v in values.items()}}

    def opt_state_from_arrays(self, arrays, params):
        state = list(self.init_opt_state(params))
        values = {slot: {k: arrays[f"{slot}/{k}"] for k in params} for slot in self.settings.slots()}
        count = int(arrays.get("count", 0))  # sgd checkpoints before schedules had none, and needed none
        state[-1] = {"count": count, **values} if self.settings.name == "adam" else \
            {"count": count, "trace": values.get("trace", {})}
        return tuple(state)


@functools.lru_cache(maxsize=8)
def _jax_functions(config: ModelConfig, optimiser: OptimiserSettings, unroll: int):
    """Compiled once per (config, optimiser) in a process, so a resumed or repeated run reuses the programs."""
    import jax
    import seq2seq_jax
    from seq2seq_jax.train import loss_fn

    transform = seq2seq_jax.make_optimizer(**optimiser.arguments())
    eval_config = without_smoothing(config)
    nll = jax.jit(lambda params, batch: loss_fn(params, eval_config, batch) * batch.tgt_lengths.sum())
    return transform, seq2seq_jax.make_train_step(config, transform, unroll=unroll), nll


class JaxBackend:
    """Under several processes (seq2seq_lab.distributed), params and optimiser state are replicated on every
    device of every process and each step's batch is split over them (seq2seq_jax.train's mesh); evaluation
    and decoding run on each process's own device, on a local copy of the params (local)."""
    name = "jax"

    def __init__(self, config: ModelConfig, optimiser: OptimiserSettings, unroll: int = 1):
        import jax
        import seq2seq_jax

        from .distributed import process_count

        self.config, self.settings, self._jax, self._module = config, optimiser, jax, seq2seq_jax
        self.optimiser, self._train_step, self._nll = _jax_functions(config, optimiser, unroll)
        self.mesh = None
        if process_count() > 1:
            self.mesh = seq2seq_jax.data_mesh()
            self._train_step = seq2seq_jax.make_train_step(config, self.optimiser, unroll=unroll, mesh=self.mesh)

    @property
    def devices(self) -> int:
        """The devices a training batch is split over (every process's)."""
        return 1 if self.mesh is None else self.mesh.size

    def init_params(self, seed: int):
        return self._placed(self._module.init_params(self.config, seed))

    def _placed(self, tree):
        return tree if self.mesh is None else self._module.replicate(tree, self.mesh)

    def to_device(self, params):
        return {k: self._jax.numpy.asarray(v) for k, v in params.items()}

    def init_opt_state(self, params):
        return self._placed(self.optimiser.init(self._placed(params)))

    def train_step(self, params, opt_state, batch, seed: int, step: int, update_scale: float = 1.0):
        key = self._jax.random.fold_in(self._jax.random.key(seed), step) if self.config.dropout else None
        params, opt_state, metrics = self._train_step(self._placed(params), opt_state, batch, key, update_scale)
        return params, opt_state, metrics["loss"]

    def block(self, value):
        """Returns once value is computed: JAX dispatches asynchronously, so a timing needs it."""
        return self._jax.block_until_ready(value)

    def scalar(self, value) -> float:
        """A device scalar (replicated over the processes, or not) as a float: a host sync."""
        return float(_host(value))

    def local(self, params):
        """The params on this process's own device (evaluation, decoding): a copy where they are spread over
        the processes, else themselves."""
        if self.mesh is None:
            return params
        return {k: self._jax.numpy.asarray(_host(v)) for k, v in params.items()}

    def nll(self, params, batch) -> float:
        return float(self._nll(params, batch))

    def greedy(self, params, src, src_lengths, max_len, **limit):
        tokens, weights = self._module.greedy_decode(params, self.config, src, src_lengths, max_len, **limit)
        return np.asarray(tokens), None if weights is None else np.asarray(weights)

    def beam(self, params, src, src_lengths, beam_size, max_len, length_penalty, **options):
        tokens, scores = self._module.beam_search(params, self.config, src, src_lengths, beam_size, max_len,
                                                  length_penalty, **options)
        return np.asarray(tokens), np.asarray(scores)

    def to_numpy(self, params):
        return {k: _host(v) for k, v in params.items()}

    def opt_state_to_arrays(self, state) -> dict[str, np.ndarray]:
        from optax import tree_utils

        counts = [value for _, value in tree_utils.tree_get_all_with_path(state, "count")]  # adam's, the schedule's
        arrays = {"count": _host(counts[0]) if counts else np.asarray(0)}
        for slot in self.settings.slots():
            arrays.update({f"{slot}/{k}": _host(v) for k, v in tree_utils.tree_get(state, slot).items()})
        return arrays

    def opt_state_from_arrays(self, arrays, params):
        from optax import tree_utils

        jnp = self._jax.numpy
        state = self.init_opt_state(params)
        values = {slot: {k: jnp.asarray(arrays[f"{slot}/{k}"]) for k in params} for slot in self.settings.slots()}
        counts = [value for _, value in tree_utils.tree_get_all_with_path(state, "count")]
        if counts:  # every count of the chain (adam's, the schedule's) is the number of updates
            values["count"] = jnp.asarray(arrays.get("count", 0), dtype=counts[0].dtype)
        return self._placed(tree_utils.tree_set(state, **values) if values else state)


def _host(value) -> np.ndarray:
    """A device array as a NumPy array; one replicated over several processes: this process's copy."""
    if getattr(value, "is_fully_addressable", True):
        return np.asarray(value)
    return np.asarray(value.addressable_data(0))
