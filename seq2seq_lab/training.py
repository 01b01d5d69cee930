"""The training loop behind `seq2seq train`, for either backend.

A run lives in one folder: checkpoints, metrics.jsonl, loss_curve.png and
summary.json.  Started again on the same folder, it resumes from the newest
checkpoint and continues exactly as if never interrupted: each step's batch
depends only on (seed, step) and so does its dropout mask.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import sys
import threading
import time
import uuid
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from seq2seq_ref import ModelConfig
from seq2seq_ref.optim import fitted_scale
from seq2seq_ref.registry import DECODERS, ENCODERS

from .recipes import DecodingSettings
from .backends import OptimiserSettings, make_backend
from .batching import BatchPlan, encode_pairs, unk_dropout
from .checkpoint import (RUN_ID, CheckpointError, best_checkpoint, checkpoint_path, latest_checkpoint,
                         list_checkpoints, save_best, save_checkpoint)
from .data import DataSettings, build_vocabs, load_data, vocab_from_json
from .distributed import any_process, process_count, process_index, share
from .evaluate import evaluate
from .plots import plot_loss_curve
from .run_folder import exclusive, move_previous_run, remove_stale_temporaries, truncate_metrics
from .vocab import BOS_ID, EOS_ID, PAD_ID, UNK_ID, Vocab



def _to_stderr(message: str) -> None:
    print(message, file=sys.stderr)


DEFAULT_STEPS = 2000


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; nothing after the last good checkpoint was saved."""


@dataclass(frozen=True)
class ModelOptions:
    embed_dim: int = 32
    hidden_dim: int = 128
    num_layers: int = 1
    bidirectional: bool = True
    attention: str = "bahdanau"
    dropout: float = 0.0
    label_smoothing: float = 0.0
    encoder: str = "lstm"
    decoder: str = "lstm"
    num_heads: int = 1
    output_from: str = "state"
    input_feeding: bool = False
    ffn_dim: int | None = None
    max_positions: int = 512
    tie_embeddings: str = "none"

    def __post_init__(self):
        ModelConfig(src_vocab_size=3, tgt_vocab_size=3, **asdict(self))  # the model's checks, before data is read

    def config(self, src_vocab: Vocab, tgt_vocab: Vocab) -> ModelConfig:
        return ModelConfig(src_vocab_size=len(src_vocab), tgt_vocab_size=len(tgt_vocab), pad_id=PAD_ID,
                           bos_id=BOS_ID, eos_id=EOS_ID,
                           **asdict(self))


# the model's fields a run fixes (resuming compares them), as ModelOptions lists them
MODEL_FIELDS = tuple(field.name for field in fields(ModelOptions))


@dataclass(frozen=True)
class RunSettings:
    steps: int | None = None
    epochs: float | None = None
    batch_size: int = 64
    seed: int = 0
    log_every: int = 25
    eval_every: int = 250
    eval_examples: int = 500
    keep: int = 3
    stop_at_accuracy: float | None = 0.995  # stop early once valid exact match reaches this (None: never)
    pad_multiple: int = 8
    select_by: str | None = None  # best.npz by valid "bleu", "loss" or "exact"; None: exact for a task, else bleu
    patience: int | None = None   # stop after this many evaluations without a better best (None: never)
    unk_dropout: float = 0.0      # each training source token becomes <unk> with this probability
    max_minutes: float | None = None  # stop (validating and saving first) after this much wall time (None: never)
    pack: int | None = None       # pack several sentences per row of this many tokens a side (None: one per row)

    def __post_init__(self):
        if (self.steps is None) == (self.epochs is None):
            raise ValueError(f"steps, epochs: expected exactly one, got steps={self.steps}, epochs={self.epochs}")
        for name in ("batch_size", "log_every", "eval_every", "eval_examples", "keep", "pad_multiple"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: expected an int >= 1, got {getattr(self, name)}")
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"steps: expected an int >= 1, got {self.steps}")
        if self.epochs is not None and not 0 < self.epochs < math.inf:
            raise ValueError(f"epochs: expected a finite number > 0, got {self.epochs}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) \
                or not 0 <= self.seed < 2 ** 32:
            raise ValueError(f"seed: expected an int in [0, 2^32), got {self.seed!r}")
        if self.stop_at_accuracy is not None and not 0 <= self.stop_at_accuracy <= 1:
            raise ValueError(f"stop_at_accuracy: expected a fraction in [0, 1], got {self.stop_at_accuracy}")
        if isinstance(self.unk_dropout, bool) or not isinstance(self.unk_dropout, (int, float)) \
                or not 0.0 <= self.unk_dropout < 1.0:
            raise ValueError(f"unk_dropout: expected a float in [0, 1), got {self.unk_dropout!r}")
        if self.max_minutes is not None and not self.max_minutes > 0:
            raise ValueError(f"max_minutes: expected a number > 0, got {self.max_minutes!r}")
        if self.select_by is not None and self.select_by not in SELECT_BY:
            raise ValueError(f"select_by: expected one of {tuple(SELECT_BY)}, got {self.select_by!r}")
        if self.patience is not None and (isinstance(self.patience, bool) or not isinstance(self.patience, int)
                                          or self.patience < 1):
            raise ValueError(f"patience: expected an int >= 1, got {self.patience!r}")
        if self.pack is not None and (isinstance(self.pack, bool) or not isinstance(self.pack, int) or self.pack < 1):
            raise ValueError(f"pack: expected a row width, an int >= 1, got {self.pack!r}")


# --select-by: the validation record's key, and whether higher is better
SELECT_BY = {"bleu": ("valid_bleu", True), "loss": ("valid_loss", False), "exact": ("valid_exact_match", True)}


def is_better(select_by: str, record: dict, best: dict | None) -> bool:
    """Whether a validation record beats the best so far by --select-by; a tie goes to the lower validation loss.

    The tie-break matters where the score cannot separate checkpoints: BLEU is 0 at every validation when the
    targets are shorter than its 4-grams, and exact match can stay 0 for a long time; without it the first
    validation would be kept forever (and --patience would stop the run).
    """
    if best is None or best.get("metric") != select_by:
        return True
    value = record[SELECT_BY[select_by][0]]
    if value == best["value"]:
        return record["valid_loss"] < best.get("loss", math.inf)
    return value > best["value"] if SELECT_BY[select_by][1] else value < best["value"]


def validation_record(engine, params, config, valid_data, tgt_vocab, max_len: int, step: int) -> dict:
    """Greedy exact match, BLEU and chrF on the validation sample, and its loss (mean token NLL, unsmoothed)."""
    scores = evaluate(engine, params, config, valid_data, tgt_vocab, max_len=max_len)
    return {"step": step, "valid_exact_match": scores["exact_match"], "valid_bleu": scores["bleu"],
            "valid_chrf": scores["chrf"], "valid_loss": math.log(scores["perplexity"])}


def _check_resume(meta: dict, config: ModelConfig, data: DataSettings, optimiser: OptimiserSettings,
                  run: RunSettings, path) -> None:
    """A checkpoint may only be resumed by the run that wrote it."""
    wanted = {"config": {f: getattr(config, f) for f in MODEL_FIELDS}, "data": data.to_json(),
              "optimizer": asdict(optimiser), "seed": run.seed, "batch_size": run.batch_size, "pack": run.pack}
    old = ModelConfig(**meta["config"])  # a checkpoint older than a field gets its default (LSTM, one head)
    stored = {"config": {f: getattr(old, f) for f in MODEL_FIELDS},
              "data": DataSettings(**meta["data"]).to_json(),  # paths made absolute as they are now
              "optimizer": asdict(OptimiserSettings(**meta["optimizer"])), "seed": meta["seed"], "batch_size": meta["batch_size"],
              "pack": meta.get("pack")}
    for key in wanted:
        if wanted[key] != stored[key]:
            if isinstance(wanted[key], dict):
                diff = {k: (stored[key].get(k), v) for k, v in wanted[key].items() if stored[key].get(k) != v}
            else:
                diff = (stored[key], wanted[key])
            raise CheckpointError(f"checkpoint: {path} was written with other {key} settings "
                                  f"(checkpoint, requested): {diff}; use another --out or --fresh")


def train(out_dir: str | Path, model: ModelOptions = ModelOptions(), data: DataSettings = DataSettings(),
          run: RunSettings = RunSettings(steps=DEFAULT_STEPS), optimiser: OptimiserSettings = OptimiserSettings(),
          backend: str = "jax", resume: bool = True, progress: bool = True, evaluate_test: bool = True,
          notify=_to_stderr, decoding: DecodingSettings = DecodingSettings()) -> dict:
    """Train (or resume) the run in out_dir; returns the summary also written to summary.json.

    resume=False starts a new run: an earlier run in out_dir is moved into
    out_dir/previous-<timestamp>/, never deleted, and only once the new run's
    data, vocabularies and model have been checked.  notify receives one-line
    messages for the user (moved runs, dropped pairs, re-scoring).  Ctrl-C
    (SIGINT, in the main thread) saves the current step as a checkpoint and
    raises TrainingInterrupted; a second Ctrl-C stops at once.  decoding: how translate and evaluate decode
    with the run unless told otherwise (its recipe's [decoding]), stored in every checkpoint.
    """
    if optimiser.fits_decay and run.max_minutes is None:
        raise ValueError("decay_steps: 'fit' ends the linear schedule when --max-minutes runs out, expected "
                         "--max-minutes with it, got none")
    if model.tie_embeddings == "all" and not data.shared_vocab:
        raise ValueError("tie_embeddings: 'all' makes one matrix the source and the target embedding, so both "
                         "sides need one vocabulary: expected --data with --tokenizer bpe or unigram and "
                         "--shared-vocab, got separate vocabularies; 'target' ties only the target side")
    if run.pack is not None and not (ENCODERS[model.encoder].packs and DECODERS[model.decoder].packs):
        packing = [name for name, stack in ENCODERS.items() if stack.packs and name in DECODERS
                   and DECODERS[name].packs]
        raise ValueError(f"pack: expected none with encoder={model.encoder!r} and decoder={model.decoder!r} "
                         f"(packed batches need stacks that pack on both sides: {packing}), got {run.pack}")
    out_dir = Path(out_dir)
    writer = process_index() == 0  # under several processes (seq2seq_lab.distributed) process 0 alone writes
    if process_count() > 1 and backend != "jax":
        raise ValueError(f"backend: several processes train with the jax backend, got {backend!r}")
    with exclusive(out_dir) if writer else contextlib.nullcontext():
        if writer:
            for path in remove_stale_temporaries(out_dir):
                notify(f"removed {path.name}, left by a process that died while writing a checkpoint")
        return _train_locked(out_dir, model, data, run, optimiser, backend, resume, progress, evaluate_test, notify,
                             decoding)


class TrainingInterrupted(Exception):
    """Ctrl-C during training: the step reached was saved as a checkpoint (checkpoint is its path)."""

    def __init__(self, step: int, checkpoint: Path):
        super().__init__(f"interrupted at step {step}; saved {checkpoint}")
        self.step, self.checkpoint = step, checkpoint


@contextlib.contextmanager
def _stop_requests(notify):
    """A flag the first Ctrl-C sets, so that the loop saves the step it is on and stops; the second Ctrl-C
    raises KeyboardInterrupt as usual.  Only where Python's own handler is in place (the main thread, SIGINT
    not ignored)."""
    requested = threading.Event()
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
        yield requested
        return

    def handler(signum, frame):
        requested.set()
        signal.signal(signal.SIGINT, signal.default_int_handler)
        notify("Ctrl-C: saving a checkpoint when this step is done, then stopping (Ctrl-C again: stop at once, "
               "keeping only the last checkpoint)")

    signal.signal(signal.SIGINT, handler)
    try:
        yield requested
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@contextlib.contextmanager
def _saving(what: str, out_dir: Path):
    """Adds to an OSError while writing (a full disk) what was being written, and that the last checkpoint is
    intact: the writes are atomic."""
    try:
        yield
    except OSError as error:
        newest = _newest(out_dir)
        error.add_note(f"writing {what} in {out_dir}; the last good checkpoint is "
                       f"{newest or 'none: none was written'}")
        raise


def _train_locked(out_dir, model, data, run, optimiser, backend, resume, progress, evaluate_test, notify,
                  decoding) -> dict:
    started = time.perf_counter()
    writer = process_index() == 0
    checkpoint = latest_checkpoint(out_dir) if resume else None
    _same_checkpoint_everywhere(checkpoint, out_dir)
    loaded = load_data(data, run.seed, checkpoint.meta.get("data_files") if checkpoint is not None else None,
                       str(out_dir))
    splits = loaded.splits
    if checkpoint is not None:
        src_vocab = vocab_from_json(checkpoint.meta["src_vocab"])
        tgt_vocab = vocab_from_json(checkpoint.meta["tgt_vocab"])
    else:  # process 0 builds them, the others take its: one vocabulary whatever a tokenizer's training does
        vocabs = build_vocabs(data, splits["train"]) if writer else None
        src_vocab, tgt_vocab = (vocab_from_json(v) for v in
                                share(None if vocabs is None else [v.to_json() for v in vocabs]))
    config = model.config(src_vocab, tgt_vocab)
    engine = make_backend(backend, config, optimiser)
    if checkpoint is not None:  # before the data is filtered, so a changed --max-len is named as what it is
        _check_resume(checkpoint.meta, config, data, optimiser, run, checkpoint.path)
    encoded, dropped = encode_splits(splits, src_vocab, tgt_vocab, data.max_len)
    if any(dropped.values()):
        notify(f"dropped pairs with a side longer than --max-len {data.max_len} tokens: "
               + ", ".join(f"{name} {n}" for name, n in dropped.items()))
    _check_positions(config, encoded, data.max_len)
    train_data, valid_data = encoded["train"], encoded["valid"][: run.eval_examples]
    if len(train_data) < run.batch_size:
        raise ValueError(f"batch_size: expected at most the {len(train_data)} training pairs, got {run.batch_size}")
    plan = BatchPlan(train_data, config, run.batch_size, run.seed, run.pad_multiple, run.pack)
    rows = run.batch_size if run.pack is None else plan.rows
    if rows % engine.devices:
        raise ValueError(f"batch_size: expected a multiple of the {engine.devices} devices of the "
                         f"{process_count()} processes (each takes an equal share of a batch's rows), got "
                         + (f"{rows}" if run.pack is None else f"{run.batch_size} (packed into {rows} rows)"))
    batches_per_epoch = plan.batches_per_epoch
    total_steps = run.steps if run.steps is not None else max(1, math.ceil(run.epochs * batches_per_epoch))
    # --decay-steps fit: the end fitted by the invocation that reached warm-up's end, kept by every later one
    fitted = checkpoint.meta.get("fitted_decay_steps") if checkpoint is not None and optimiser.fits_decay else None
    if fitted is not None:
        total_steps = min(total_steps, fitted)
    if not resume and writer and (aside := move_previous_run(out_dir)) is not None:  # only now: the run is sound
        notify(f"--fresh: moved the previous run in {out_dir} to {aside}")

    meta = {"config": asdict(config), "src_vocab": src_vocab.to_json(), "tgt_vocab": tgt_vocab.to_json(),
            "data": data.to_json(), "data_files": loaded.files, "optimizer": asdict(optimiser),
            "decoding": decoding.to_json(),
            "seed": run.seed, "batch_size": run.batch_size, "pack": run.pack, "backend": engine.name,
            "fitted_decay_steps": fitted,
            "rng": {"kind": "stateless: batch order from (seed, epoch), dropout from (seed, step)",
                    "seed": run.seed},
            # one run's identity across its checkpoints (`seq2seq average` refuses to mix runs)
            RUN_ID: (checkpoint.meta.get(RUN_ID) if checkpoint is not None else None) or uuid.uuid4().hex}
    if checkpoint is not None:
        params = engine.to_device(checkpoint.params)
        opt_state = engine.opt_state_from_arrays(checkpoint.opt_state, params)
        start = checkpoint.step
        last_accuracy = checkpoint.meta.get("valid_exact_match")  # None: saved by Ctrl-C before any validation
        stopped_early = (run.stop_at_accuracy is not None and last_accuracy is not None
                         and last_accuracy >= run.stop_at_accuracy)
        out_of_patience = run.patience is not None and checkpoint.meta.get("evals_since_best", 0) >= run.patience
        if stopped_early or out_of_patience or total_steps <= start:
            why = (f"it stopped early at validation exact match {checkpoint.meta['valid_exact_match']:.4f}"
                   if stopped_early else f"it ran out of --patience {run.patience}" if out_of_patience
                   else f"it is at step {start}, at or past the {total_steps} asked for")
            notify(f"re-scoring the checkpoint in {out_dir}, not training: {why}")
            total_steps = start
        else:
            notify(f"resuming from {checkpoint.path.name} (step {start} of {total_steps})")
    else:
        params = engine.init_params(run.seed)
        opt_state = engine.init_opt_state(params)
        start = 0
    metrics_path = out_dir / "metrics.jsonl"
    if writer:
        truncate_metrics(metrics_path, start)

    bar = _progress(total_steps, start, progress)
    tokens_since, tokens_trained, clock = 0, 0, time.perf_counter()
    train_seconds = eval_seconds = 0.0
    valid_accuracy = checkpoint.meta.get("valid_exact_match") if checkpoint is not None else None
    valid_record = checkpoint.meta.get("valid") if checkpoint is not None else None
    select_by = run.select_by or ("exact" if data.task is not None else "bleu")
    best = checkpoint.meta.get("best") if checkpoint is not None else None
    evals_since_best = checkpoint.meta.get("evals_since_best", 0) if checkpoint is not None else 0
    update_scale = checkpoint.meta.get("update_scale", 1.0) if checkpoint is not None else 1.0
    if best is not None and best.get("metric") != select_by:
        notify(f"--select-by {select_by}: the run's best.npz was selected by {best.get('metric')}; the next "
               "evaluation replaces it")
        best, evals_since_best = None, 0
    def save_step(host_params, **extra):
        """The checkpoint of the step reached, with the run's state as it is now (the last validation's)."""
        if not writer:
            return checkpoint_path(out_dir, step)
        with _saving(f"the checkpoint of step {step}", out_dir):
            return save_checkpoint(out_dir, step, host_params, engine.opt_state_to_arrays(opt_state),
                                   {**meta, "valid_exact_match": valid_accuracy, "valid": valid_record,
                                    "best": best, "evals_since_best": evals_since_best,
                                    "update_scale": update_scale, **extra}, run.keep)

    def scale_of(count: int) -> float:
        """The factor on update count + 1: the plateau schedule's, or a fitted linear decay's (MATH.md (S5))."""
        if optimiser.fits_decay:
            return 1.0 if fitted is None else fitted_scale(count, fitted, optimiser.warmup)
        return update_scale

    validations = 0
    eta_from = None  # (time, step) after the first logged interval: the ETA leaves out the first compilation
    step, stopped = start, None
    startup_seconds = time.perf_counter() - started
    shapes, new_shape_seconds, shape_clock = set(), 0.0, None  # a step on a new shape compiles it first
    distributed = process_count() > 1
    with _stop_requests(notify) as stop_requested, \
            open(metrics_path if writer else os.devnull, "a", encoding="utf-8") as log:
        while step < total_steps:
            batch = plan.batch(step)
            # a function of (seed, step), as the batch and dropout are: resuming stays exact
            batch = unk_dropout(batch, run.unk_dropout, np.random.default_rng([run.seed, step, 1]), UNK_ID)
            shape = (batch.src.shape, batch.tgt_in.shape)
            if shape not in shapes:
                shapes.add(shape)
                if step > start:
                    engine.block(loss)  # the steps queued before this one are not its compilation
                shape_clock = time.perf_counter()
            params, opt_state, loss = engine.train_step(params, opt_state, batch, run.seed, step, scale_of(step))
            if shape_clock is not None:
                engine.block(loss)
                new_shape_seconds += time.perf_counter() - shape_clock
                shape_clock = None
            tokens_since += int(batch.tgt_lengths.sum())
            step += 1
            out_of_time = run.max_minutes is not None and time.perf_counter() - started > 60 * run.max_minutes
            if distributed:  # the processes' clocks and Ctrl-Cs differ: they agree at the steps they log
                logged = step % run.log_every == 0 or step % run.eval_every == 0 or step == total_steps
                out_of_time, interrupted = any_process(out_of_time, stop_requested.is_set()) if logged else (False,) * 2
                if interrupted:
                    stop_requested.set()
            if out_of_time:
                stopped = f"--max-minutes {run.max_minutes:g} of wall time have passed"
                notify(f"stopped at step {step}: {stopped}")
                total_steps = step  # validate and save this step, then stop
            elif (optimiser.fits_decay and fitted is None and step >= optimiser.warmup
                  and step % run.log_every == 0 and step - start > len(shapes)):
                engine.block(loss)  # the time of the steps queued so far
                seconds_per_step = ((train_seconds + time.perf_counter() - clock - new_shape_seconds)
                                    / (step - start - len(shapes)))
                seconds_left = 60 * run.max_minutes - (time.perf_counter() - started)
                fitted = share(fit_decay_steps(step, seconds_left, seconds_per_step, run.eval_every,
                                               eval_seconds / validations if validations else 0.0, total_steps)
                               if writer else None)  # every process decays alike: process 0's clock decides
                meta["fitted_decay_steps"] = total_steps = bar.total = fitted
                notify(f"--decay-steps fit: {1000 * seconds_per_step:.0f} ms a step, {seconds_left:.0f} s left of "
                       f"--max-minutes: the learning rate reaches zero after step {fitted}")
            evaluate_now = step % run.eval_every == 0 or step == total_steps
            if step % run.log_every == 0 or evaluate_now:
                loss = engine.scalar(loss)  # the only host sync of the loop
                if not math.isfinite(loss):
                    _diverged(f"loss became {loss}", step, out_dir)
                now = time.perf_counter()
                train_seconds += now - clock
                tokens_trained += tokens_since
                record = {"step": step, "epoch": round(step / batches_per_epoch, 3), "loss": loss,
                          "lr": optimiser.learning_rate_at(step - 1) * scale_of(step - 1),
                          "tokens_per_s": tokens_since / (now - clock),
                          "elapsed_s": now - started}
                tokens_since, clock = 0, now
                with _saving(metrics_path.name, out_dir):
                    log.write(json.dumps(record) + "\n")
                    log.flush()
                bar.update(step - bar.n)
                eta_from = eta_from or (now, step)
                bar.set_postfix(loss=f"{loss:.4f}", tok_s=f"{record['tokens_per_s']:.0f}",
                                eta=_eta(eta_from, now, step, total_steps))
            if evaluate_now:  # process 0 validates; every process takes its record, so the same decisions
                record = share(validation_record(engine, engine.local(params), config, valid_data, tgt_vocab,
                                                 data.max_len, step) if writer else None)
                record["elapsed_s"] = time.perf_counter() - started  # wall time of this invocation, validation included
                valid_accuracy, valid_record = record["valid_exact_match"], record
                validations += 1
                with _saving(metrics_path.name, out_dir):
                    log.write(json.dumps(record) + "\n")
                    log.flush()
                    _durable(log, writer)  # the log is durable up to the checkpoint written next
                bar.set_postfix(loss=f"{loss:.4f}", valid_em=f"{valid_accuracy:.3f}",
                                valid_bleu=f"{record['valid_bleu']:.1f}",
                                eta=_eta(eta_from, time.perf_counter(), step, total_steps))
                host_params = engine.to_numpy(params)
                if not all(np.isfinite(value).all() for value in host_params.values()):
                    _diverged("parameters became non-finite", step, out_dir)
                if is_better(select_by, record, best):
                    best = {"metric": select_by, "value": record[SELECT_BY[select_by][0]], "step": step,
                            "loss": record["valid_loss"]}
                    evals_since_best = 0
                    if writer:
                        with _saving("best.npz", out_dir):
                            save_best(out_dir, step, host_params, {**meta, "valid": record, "best": best})
                else:
                    evals_since_best += 1
                update_scale = optimiser.update_scale(evals_since_best, update_scale)  # --schedule plateau
                saved = save_step(host_params)
                now = time.perf_counter()
                eval_seconds += now - clock
                clock = now  # the next record's throughput counts training time only
                if run.stop_at_accuracy is not None and valid_accuracy >= run.stop_at_accuracy:
                    stopped = (f"validation exact match {valid_accuracy:.4f} reached --stop-at-accuracy "
                               f"{run.stop_at_accuracy:g}")
                    notify(f"stopped at step {step}: {stopped}")
                    break
                if run.patience is not None and evals_since_best >= run.patience:
                    stopped = (f"{run.patience} evaluations without a better validation {select_by} than "
                               f"{best['value']:.4f} at step {best['step']} (--patience)")
                    notify(f"stopped at step {step}: {stopped}")
                    break
            if stop_requested.is_set():
                if not evaluate_now:  # a step between validations: saved with the last validation's record
                    with _saving(metrics_path.name, out_dir):
                        log.flush()
                        _durable(log, writer)
                    saved = save_step(engine.to_numpy(params), interrupted=True)
                bar.close()
                raise TrainingInterrupted(step, saved)
    if stopped is not None and bar.total != step:
        bar.total = step  # the bar ends full where the run ended, not frozen part-way
        bar.set_description_str("stopped early")
        bar.refresh()
    bar.close()
    summary = {"run_dir": str(out_dir), "backend": engine.name, "steps": step, "resumed_from": start,
               "steps_trained": step - start, "train_seconds": train_seconds,
               "tokens_per_s": tokens_trained / train_seconds if train_seconds else None,
               "validation_seconds": eval_seconds, "startup_seconds": startup_seconds,
               "batch_shapes": len(shapes), "new_shape_step_seconds": new_shape_seconds,
               "train_pairs": len(train_data), "dropped_for_length": dropped,
               "max_len": data.max_len, "valid_exact_match": valid_accuracy, "stopped_early": stopped,
               "checkpoint": str(_newest(out_dir)), "metrics": str(metrics_path)}
    summary["best"] = best
    if optimiser.fits_decay:
        summary["fitted_decay_steps"] = fitted
    summary["processes"] = process_count()
    if not writer:  # process 0 tests the model and writes the summary
        return summary
    if evaluate_test:  # with the selected params, as evaluate and translate use them; given splits may have no test
        chosen = best_checkpoint(out_dir)
        test_params = params if chosen is None else engine.to_device(chosen.params)
        test_clock = time.perf_counter()
        summary["test"] = evaluate(engine, test_params, config, encoded["test"], tgt_vocab,
                                   max_len=data.max_len, progress=progress) if splits["test"] else None
        summary["test_seconds"] = time.perf_counter() - test_clock
    summary["total_seconds"] = time.perf_counter() - started
    with _saving("loss_curve.png and summary.json", out_dir):
        summary["loss_curve"] = str(plot_loss_curve(metrics_path, out_dir / "loss_curve.png"))
        (out_dir / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def fit_decay_steps(step: int, seconds_left: float, seconds_per_step: float, eval_every: int,
                    seconds_per_validation: float, most: int) -> int:
    """Where `--decay-steps fit` ends the linear schedule, fitted at `step`: the steps that fit in seconds_left
    at seconds_per_step, less the validations on the way (every eval_every steps, seconds_per_validation
    each; the last one, after the time is up, is not counted); at least step, at most `most`."""
    def validations_before(end: int) -> int:
        return max(0, (end - 1) // eval_every - step // eval_every)

    end = step + int(max(0.0, seconds_left) // seconds_per_step)
    # the validations on the way grow with the end: come down from the end without them until the steps and
    # validations fit
    while end > step:
        spare = seconds_left - validations_before(end) * seconds_per_validation
        if (end - step) * seconds_per_step <= spare:
            break
        end = min(end - 1, step + int(max(0.0, spare) // seconds_per_step))
    return max(step, min(most, end))


def _check_positions(config: ModelConfig, encoded: dict, max_len: int) -> None:
    """A Transformer side reads at most max_positions source positions: say so before training, not mid-run."""
    longest = max((data.max_src_len for data in encoded.values() if len(data)), default=0)
    if config.uses_positions and longest > config.max_positions:
        raise ValueError(f"max_positions: expected at least the longest source kept by --max-len {max_len} "
                         f"({longest} tokens), got --max-positions {config.max_positions}; raise --max-positions "
                         "or lower --max-len")


def _eta(since, now: float, step: int, total: int) -> str:
    """Time left at the pace since the first logged interval (the first compilation is not the pace)."""
    from tqdm import tqdm

    if since is None or step <= since[1]:
        return "?"
    return tqdm.format_interval((now - since[0]) / (step - since[1]) * (total - step))


def encode_splits(splits, src_vocab: Vocab, tgt_vocab: Vocab, max_len: int):
    """Every split encoded and filtered by max_len alike; returns (encoded splits, pairs dropped per split)."""
    encoded, dropped = {}, {}
    for name, pairs in splits.items():
        encoded[name], dropped[name] = encode_pairs(pairs, src_vocab, tgt_vocab, max_len)
        if pairs and not len(encoded[name]):
            raise ValueError(f"max_len: expected some {name} pairs within --max-len {max_len} tokens a side, "
                             f"got all {len(pairs)} longer (or with an empty source); raise --max-len")
    return encoded, dropped


def _durable(log, writer: bool) -> None:
    """The metrics log on disk up to here (process 0's; the others write theirs to /dev/null, which fsync
    refuses)."""
    if writer:
        os.fsync(log.fileno())


def _same_checkpoint_everywhere(checkpoint, out_dir: Path) -> None:
    """Every process resumes from the checkpoint process 0 found: the run folder must be one folder that all of
    them see (a shared file system), else each would start from its own state."""
    mine = None if checkpoint is None else checkpoint.step
    theirs = share(mine)
    if theirs != mine:
        found = {step: "no checkpoint" if step is None else f"the checkpoint of step {step}" for step in (mine, theirs)}
        raise ValueError(f"out: process {process_index()} finds {found[mine]} in {out_dir}, process 0 "
                         f"{found[theirs]}: expected the run folder on a file system that every process sees")


def _diverged(what: str, step: int, out_dir: Path):
    newest = _newest(out_dir)
    raise TrainingDiverged(f"{what} at step {step}; stopped without saving (the last good checkpoint is "
                           f"{newest or 'none: none was written'}). Lower --lr or set --clip-norm.")


def _newest(out_dir: Path):
    paths = list_checkpoints(out_dir)
    return paths[-1] if paths else None


def _progress(total: int, start: int, enabled: bool):
    from tqdm import tqdm

    # tqdm's own rate and ETA would count the first compilation as the pace; the postfix carries _eta instead
    return tqdm(total=total, initial=start, disable=not enabled, unit="step", dynamic_ncols=True,
                bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]")
