"""One training step (forward, backward, Adam update), one greedy decode and one beam search, per backend.

Each maker takes the benchmark config and one point (cell, attention, task)
and returns a zero-argument callable that runs the work once and returns only
when it is finished (device work included), plus a function giving the
device's peak memory in bytes (None where the library has none).
"""
from __future__ import annotations

import numpy as np

from seq2seq_ref import Batch, init_params

from .configs import BenchConfig

BENCH_BACKENDS = ("numpy", "jax", "torch")
TASKS = ("train", "decode", "beam")
DEFAULT_TASKS = ("train", "decode")


def full_length_batch(c: BenchConfig, seed: int = 0) -> Batch:
    """Random ids, every sequence full length (as the seed article's example)."""
    rng = np.random.default_rng(seed)
    tgt = rng.integers(3, c.vocab, size=(c.batch, c.tgt_len))
    return Batch(rng.integers(3, c.vocab, size=(c.batch, c.src_len)), np.full(c.batch, c.src_len),
                 np.concatenate([np.full((c.batch, 1), 1), tgt[:, :-1]], axis=1), tgt, np.full(c.batch, c.tgt_len))


def numpy_runner(c: BenchConfig, cell: str, attention: str, task: str, options: dict):
    from seq2seq_ref import loss_and_grads
    from seq2seq_ref.decode import beam_search, greedy_decode
    from seq2seq_ref.optim import adam, apply_updates

    from ..allocator import keep_freed_memory

    keep_freed_memory()  # as `seq2seq train --backend numpy` does
    config, batch = c.model(attention, cell), full_length_batch(c)
    state = {"params": init_params(config, 0)}
    optimiser = adam(1e-3)
    state["opt"] = optimiser.init(state["params"])

    def train():
        _, grads = loss_and_grads(state["params"], config, batch)
        updates, state["opt"] = optimiser.update(grads, state["opt"])
        state["params"] = apply_updates(state["params"], updates)

    def decode():
        greedy_decode(state["params"], config, batch.src, batch.src_lengths, c.tgt_len)

    def beam():
        beam_search(state["params"], config, batch.src, batch.src_lengths, options["beam"], c.tgt_len,
                    options["length_penalty"])

    return {"train": train, "decode": decode, "beam": beam}[task], lambda: None


def jax_runner(c: BenchConfig, cell: str, attention: str, task: str, options: dict):
    import jax
    import seq2seq_jax

    config = c.model(attention, cell)
    device = jax.devices()[0]
    batch = jax.device_put(full_length_batch(c), device)
    # committed to the device as the step's outputs are, or the second call compiles the step again
    params = jax.device_put(seq2seq_jax.init_params(config, 0), device)
    optimiser = seq2seq_jax.make_optimizer("adam", 1e-3)
    state = {"params": params, "opt": jax.device_put(optimiser.init(params), device)}
    step = seq2seq_jax.make_train_step(config, optimiser, compute_dtype=options.get("compute_dtype"),
                                       unroll=options.get("unroll", 1), validate=False)

    def train():
        state["params"], state["opt"], metrics = step(state["params"], state["opt"], batch)
        jax.block_until_ready(metrics["loss"])

    def decode():
        jax.block_until_ready(seq2seq_jax.greedy_decode(state["params"], config, np.asarray(batch.src),
                                                        np.asarray(batch.src_lengths), c.tgt_len)[0])

    def beam():
        jax.block_until_ready(seq2seq_jax.beam_search(state["params"], config, np.asarray(batch.src),
                                                      np.asarray(batch.src_lengths), options["beam"], c.tgt_len,
                                                      options["length_penalty"])[0])

    def peak():  # jax cannot reset it: the peak of every point the worker has run so far
        stats = device.memory_stats() or {}
        return stats.get("peak_bytes_in_use")

    return {"train": train, "decode": decode, "beam": beam}[task], peak


def torch_runner(c: BenchConfig, cell: str, attention: str, task: str, options: dict):
    import torch

    from .torch_model import TorchSeq2Seq

    config = c.model(attention, cell)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":  # a worker runs one point after another: this point's peak only
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    model = TorchSeq2Seq(config).load_flat(init_params(config, 0)).to(device)
    batch = full_length_batch(c)
    src, tgt_in, tgt_out = (torch.as_tensor(a, device=device) for a in (batch.src, batch.tgt_in, batch.tgt_out))
    mask = torch.ones(tgt_out.shape, device=device)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=options.get("compute_dtype") == "bfloat16")

    def train():
        optimiser.zero_grad(set_to_none=True)
        with autocast:
            loss = model.loss(src, tgt_in, tgt_out, mask)
        loss.backward()
        optimiser.step()
        sync()

    def decode():
        with autocast:
            model.greedy(src, c.tgt_len)
        sync()

    def beam():
        with autocast:
            model.beam_search(src, None, options["beam"], c.tgt_len, options["length_penalty"])
        sync()

    def peak():
        return torch.cuda.max_memory_allocated() if device.type == "cuda" else None

    return {"train": train, "decode": decode, "beam": beam}[task], peak


RUNNERS = {"numpy": numpy_runner, "jax": jax_runner, "torch": torch_runner}
