"""`seq2seq train`, `seq2seq evaluate`, `seq2seq translate`: commands over a run folder."""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

from seq2seq_ref import ATTENTION_TYPES

from .backends import BACKENDS, OptimiserSettings, jax_available, make_backend
from .batching import encode_pairs
from .checkpoint import CheckpointError, latest_checkpoint
from .corpus import read_parallel, read_tsv
from .data import DataSettings, load_splits
from .evaluate import decode_ids, evaluate
from .tasks import TASKS
from .training import ModelOptions, RunSettings, TrainingDiverged, train
from .vocab import TOKENIZERS, Vocab, tokenize

DEFAULT_RUN = "runs/dates"


def default_backend() -> str:
    return "jax" if jax_available() else "numpy"


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    data = parser.add_argument_group("data")
    data.add_argument("--task", choices=TASKS, default=None, help="built-in task (default: dates, unless --data)")
    data.add_argument("--data", help="TSV file 'source<TAB>target[<TAB>...]', or the source side of two aligned files")
    data.add_argument("--data-target", help="target side of two aligned plain-text files")
    data.add_argument("--tokenizer", choices=TOKENIZERS, default="char", help="for --data (tasks are char-level)")
    data.add_argument("--min-freq", type=int, default=1)
    data.add_argument("--max-vocab", type=int, default=None)
    data.add_argument("--max-len", type=int, default=64, help="drop pairs with a longer side (tokens)")
    data.add_argument("--skip-malformed", action="store_true", help="skip malformed lines (default: fail)")
    data.add_argument("--train-size", type=int, default=20_000, help="training pairs of a built-in task")
    model = parser.add_argument_group("model")
    defaults = ModelOptions()
    model.add_argument("--attention", choices=ATTENTION_TYPES, default=defaults.attention)
    model.add_argument("--embed-dim", type=int, default=defaults.embed_dim)
    model.add_argument("--hidden-dim", type=int, default=defaults.hidden_dim)
    model.add_argument("--layers", type=int, default=defaults.num_layers)
    model.add_argument("--bidirectional", action=argparse.BooleanOptionalAction, default=defaults.bidirectional)
    model.add_argument("--dropout", type=float, default=defaults.dropout)
    model.add_argument("--label-smoothing", type=float, default=defaults.label_smoothing)
    run = parser.add_argument_group("training")
    length = run.add_mutually_exclusive_group()
    length.add_argument("--steps", type=int, default=None, help="optimiser steps (default 2000)")
    length.add_argument("--epochs", type=float, default=None, help="passes over the training pairs")
    run.add_argument("--batch-size", type=int, default=64)
    run.add_argument("--optimizer", choices=("adam", "sgd"), default="adam")
    run.add_argument("--lr", type=float, default=3e-3)
    run.add_argument("--momentum", type=float, default=0.9, help="for sgd")
    run.add_argument("--clip-norm", type=float, default=5.0, help="global-norm clipping; 0 turns it off")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--backend", choices=BACKENDS, default=None, help="default: jax if installed, else numpy")
    run.add_argument("--out", default=None, help="run folder (default runs/<task or data file name>)")
    run.add_argument("--fresh", action="store_true", help="start over instead of resuming from --out")
    run.add_argument("--keep", type=int, default=3, help="checkpoints kept")
    run.add_argument("--log-every", type=int, default=25)
    run.add_argument("--eval-every", type=int, default=250, help="validation exact match + checkpoint")
    run.add_argument("--stop-at-accuracy", type=float, default=0.995,
                     help="stop once validation exact match reaches this (default 0.995; 0 never stops early)")
    run.add_argument("--no-progress", action="store_true")


def run_train(args) -> int:
    task = args.task or (None if args.data else "dates")
    data = DataSettings(task=task, data=args.data, data_target=args.data_target, tokenizer=args.tokenizer,
                        min_freq=args.min_freq, max_vocab=args.max_vocab, max_len=args.max_len,
                        on_error="skip" if args.skip_malformed else "fail", train_size=args.train_size)
    model = ModelOptions(args.embed_dim, args.hidden_dim, args.layers, args.bidirectional, args.attention,
                         args.dropout, args.label_smoothing)
    steps = args.steps if args.steps is not None or args.epochs is not None else 2000
    run = RunSettings(steps=steps, epochs=args.epochs, batch_size=args.batch_size, seed=args.seed,
                      log_every=args.log_every, eval_every=args.eval_every, keep=args.keep,
                      stop_at_accuracy=args.stop_at_accuracy or None)
    optimiser = OptimiserSettings(args.optimizer, args.lr, args.momentum, args.clip_norm or None)
    out = Path(args.out or f"runs/{task or Path(args.data).stem}")
    backend = args.backend or default_backend()
    print(f"training {task or args.data} on {backend}; run folder {out}", file=sys.stderr)
    try:
        summary = train(out, model, data, run, optimiser, backend, resume=not args.fresh,
                        progress=not args.no_progress)
    except TrainingDiverged as error:
        print(f"error: {error}", file=sys.stderr)
        return 3
    test = summary["test"]
    print(f"test exact match {test['exact_match']:.4f}  token accuracy {test['token_accuracy']:.4f}  "
          f"perplexity {test['perplexity']:.3f}  BLEU {test['bleu']:.1f}  chrF {test['chrf']:.1f}  "
          f"({test['examples']} held-out pairs)")
    print(f"{summary['steps']} steps in {summary['train_seconds']:.0f} s ({summary['total_seconds']:.0f} s with "
          f"evaluation); checkpoint {summary['checkpoint']}; metrics {summary['metrics']}; "
          f"loss curve {summary['loss_curve']}")
    return 0


def load_run(run_dir: str, backend: str | None):
    checkpoint = latest_checkpoint(run_dir)
    if checkpoint is None:
        raise CheckpointError(f"run: expected a checkpoint in {run_dir}, found none (train one with `seq2seq train`)")
    engine = make_backend(backend or default_backend(), checkpoint.config,
                          OptimiserSettings(**checkpoint.meta["optimizer"]))
    return (checkpoint, engine, engine.to_device(checkpoint.params), Vocab.from_json(checkpoint.meta["src_vocab"]),
            Vocab.from_json(checkpoint.meta["tgt_vocab"]))


def add_evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", default=DEFAULT_RUN, help=f"run folder (default {DEFAULT_RUN})")
    parser.add_argument("--split", choices=("test", "valid", "train"), default="test",
                        help="split of the run's own data (default test)")
    parser.add_argument("--data", help="score these pairs instead (TSV, or source side of two aligned files)")
    parser.add_argument("--data-target", help="target side of two aligned files")
    parser.add_argument("--skip-malformed", action="store_true")
    parser.add_argument("--beam", type=int, default=1, help="beam size (1: greedy)")
    parser.add_argument("--backend", choices=BACKENDS, default=None)
    parser.add_argument("--json", action="store_true")


def run_evaluate(args) -> int:
    checkpoint, engine, params, src_vocab, tgt_vocab = load_run(args.run, args.backend)
    on_error = "skip" if args.skip_malformed else "fail"
    if args.data:
        corpus = read_parallel(args.data, args.data_target, on_error) if args.data_target else \
            read_tsv(args.data, on_error)
        pairs = corpus.pairs
    else:
        pairs = load_splits(DataSettings(**checkpoint.meta["data"]), checkpoint.meta["seed"])[args.split]
    data, dropped = encode_pairs(pairs, src_vocab, tgt_vocab)
    scores = evaluate(engine, params, checkpoint.config, data, tgt_vocab, beam=args.beam)
    scores["dropped_empty_source"] = dropped
    if args.json:
        print(json.dumps(scores, indent=1))
    else:
        print(" ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in scores.items()))
    return 0


def add_translate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("text", nargs="*", help="sentences to translate (default: one per line of stdin)")
    parser.add_argument("--run", default=DEFAULT_RUN, help=f"run folder (default {DEFAULT_RUN})")
    parser.add_argument("--beam", type=int, default=1, help="beam size (1: greedy)")
    parser.add_argument("--max-len", type=int, default=100)
    parser.add_argument("--attention-plot", metavar="FILE.png", help="save attention heatmaps (greedy only)")
    parser.add_argument("--backend", choices=BACKENDS, default=None)


def run_translate(args) -> int:
    texts = args.text or [line.rstrip("\n") for line in sys.stdin if line.strip()]
    if not texts:
        raise ValueError("text: expected sentences as arguments or on stdin, got none")
    if args.attention_plot and args.beam > 1:
        raise ValueError("attention_plot: expected greedy decoding (--beam 1), got --beam "
                         f"{args.beam}")
    checkpoint, engine, params, src_vocab, tgt_vocab = load_run(args.run, args.backend)
    sources = []
    for text in texts:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ids = src_vocab.encode(text, warn=True)
        for warning in caught:
            print(f"warning: {text!r}: {warning.message}", file=sys.stderr)
        if not ids:
            raise ValueError(f"text: expected a non-empty sentence, got {text!r}")
        sources.append(ids)
    outputs, weights = decode_ids(engine, params, sources, args.max_len, batch_size=min(len(sources), 64),
                                  beam=args.beam)
    for output in outputs:
        print(tgt_vocab.decode(output))
    if args.attention_plot:
        if weights[0] is None:
            raise ValueError("attention_plot: the model has attention 'none'; there are no weights to plot")
        from .plots import plot_attention

        items = [(tokenize(text, src_vocab.tokenizer),
                  [tgt_vocab.tokens[i] for i in output], weight)
                 for text, output, weight in zip(texts, outputs, weights)]
        print(f"attention heatmap: {plot_attention(items, args.attention_plot)}", file=sys.stderr)
    return 0
