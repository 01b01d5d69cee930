"""`seq2seq train`, `seq2seq evaluate`, `seq2seq translate`: commands over a run folder."""
from __future__ import annotations

import argparse
import codecs
import contextlib
import dataclasses
import json
import os
import sys
import warnings
from pathlib import Path

from seq2seq_ref.config import OUTPUT_FROM, TIE_EMBEDDINGS
from seq2seq_ref.decode import DEFAULT_LENGTH_PENALTY
from seq2seq_ref.optim import FIT, SCHEDULES
from seq2seq_ref.registry import CONNECTIONS, DECODERS, ENCODERS
from seq2seq_ref.validation import check_decode_args

from .backends import BACKENDS, OptimiserSettings
from .atomic import replacing
from .checkpoint import save_averaged
from .compile_cache import compile_cache
from .corpus import read_corpus, read_file, split_lines
from .data import TOKENIZERS, DataSettings
from .distributed import DistributedSettings, first_line, initialize, process_index
from .evaluate import DEFAULT_BATCH_TOKENS
from .plots import check_output_file, check_plot_path, plot_attention
from .recipes import DecodingSettings, read_recipe
from .tasks import SPLITS, TASKS
from .training import (DEFAULT_STEPS, SELECT_BY, ModelOptions, RunSettings, TrainingDiverged, TrainingInterrupted,
                       train)
from .translator import CHECKPOINTS, UNSEEN, Translator, default_backend, load

DEFAULT_RUN = "runs/dates"
BEAM_HELP = "beam size, 1: greedy (default: the run's, from its recipe's [decoding], else 1)"
NO_COMPILE_CACHE_HELP = ("jax: compile afresh instead of loading programs compiled before from JAX's persistent "
                         "compilation cache ($JAX_COMPILATION_CACHE_DIR, else $XDG_CACHE_HOME/seq2seq-lab/jax, "
                         "else ~/.cache/seq2seq-lab/jax)")


def default(settings, field: str):
    """A settings dataclass's default for one field: the CLI never types a default twice."""
    return next(f.default for f in dataclasses.fields(settings) if f.name == field)


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--recipe", metavar="FILE.toml",
                        help="training options and decoding settings from a recipe file (recipes/*.toml); a "
                             "flag given here overrides the recipe's value")
    data = parser.add_argument_group("data")
    data.add_argument("--task", choices=TASKS, default=None, help="built-in task (default: dates, unless --data)")
    data.add_argument("--data", help="TSV file 'source<TAB>target[<TAB>...]', or the source side of two aligned files")
    data.add_argument("--data-target", help="target side of two aligned plain-text files")
    for split in ("valid", "test"):
        data.add_argument(f"--{split}-data", help=f"a given {split} split (TSV, or the source side of two aligned "
                          f"files): with --valid-data nothing is re-split, --data is all training pairs"
                          f"{'' if split == 'valid' else ', and without --test-data there is no test split'}")
        data.add_argument(f"--{split}-target", help=f"target side of --{split}-data's aligned files")
    data.add_argument("--tokenizer", choices=TOKENIZERS, default=default(DataSettings, "tokenizer"),
                      help="for --data (tasks are char-level): characters, words, or a sentencepiece subword "
                           "model (bpe, unigram) trained on the training split and stored in every checkpoint")
    data.add_argument("--vocab-size", type=positive_int, default=default(DataSettings, "vocab_size"),
                      help="pieces of a bpe/unigram model, with the 4 specials and 256 byte-fallback pieces")
    data.add_argument("--shared-vocab", action="store_true",
                      help="one bpe/unigram model for source and target (default: one per side)")
    data.add_argument("--min-freq", type=int, default=default(DataSettings, "min_freq"),
                      help="keep tokens seen at least this often in training (char, word)")
    data.add_argument("--max-vocab", type=int, default=default(DataSettings, "max_vocab"),
                      help="at most this many tokens, specials included (char, word)")
    data.add_argument("--max-len", type=int, default=default(DataSettings, "max_len"),
                      help="drop pairs with a longer side (tokens), in every split; also the longest output "
                           "decoded when scoring")
    data.add_argument("--skip-malformed", action="store_true", help="skip malformed lines (default: fail)")
    data.add_argument("--lowercase", action="store_true",
                      help="lowercase both sides of every split; translate then lowercases its input too")
    data.add_argument("--train-size", type=int, default=default(DataSettings, "train_size"),
                      help="training pairs of a built-in task")
    model = parser.add_argument_group("model")
    defaults = ModelOptions()
    model.add_argument("--encoder", choices=tuple(ENCODERS), default=defaults.encoder, help="encoder stack")
    model.add_argument("--decoder", choices=tuple(DECODERS), default=defaults.decoder, help="decoder stack")
    model.add_argument("--attention", choices=tuple(CONNECTIONS), default=None,
                       help=f"how the decoder reads the encoder (default: {defaults.attention}, or multihead with "
                            "a Transformer decoder, whose blocks' cross-attention it is)")
    model.add_argument("--heads", type=positive_int, default=defaults.num_heads,
                       help="heads of --attention multihead and of a Transformer side (must divide --hidden-dim)")
    model.add_argument("--output-from", choices=OUTPUT_FROM, default=defaults.output_from,
                       help="what the output layer reads with bahdanau: the state, or the paper's deep output "
                            "[state; context; previous target embedding]")
    model.add_argument("--input-feeding", action=argparse.BooleanOptionalAction, default=defaults.input_feeding,
                       help="Luong's input feeding (luong, multihead, none): the previous attentional state joins "
                            "the decoder input")
    model.add_argument("--embed-dim", type=int, default=None,
                       help=f"token embedding width (default: {defaults.embed_dim}, or --hidden-dim with a "
                            "Transformer side, whose width is both)")
    model.add_argument("--hidden-dim", type=int, default=defaults.hidden_dim,
                       help="recurrent state width; a Transformer's model width d")
    model.add_argument("--layers", type=int, default=defaults.num_layers,
                       help="stacked recurrent layers (Transformer blocks) on each side")
    model.add_argument("--bidirectional", action=argparse.BooleanOptionalAction, default=None,
                       help=f"bidirectional recurrent encoder (default: {'on' if defaults.bidirectional else 'off'}"
                            " for a recurrent encoder, off for a Transformer, which reads both ways by itself)")
    model.add_argument("--ffn-dim", type=positive_int, default=defaults.ffn_dim,
                       help="a Transformer block's feed-forward width (default: 4 x --hidden-dim)")
    model.add_argument("--max-positions", type=positive_int, default=defaults.max_positions,
                       help="the longest source a Transformer side accepts")
    model.add_argument("--tie-embeddings", choices=TIE_EMBEDDINGS, default=defaults.tie_embeddings,
                       help="share matrices (MATH.md (W1)): 'target' makes the output layer the target embedding "
                            "transposed; 'all' also shares it with the source embedding (needs --shared-vocab)")
    model.add_argument("--dropout", type=float, default=defaults.dropout, help="dropout rate in training")
    model.add_argument("--label-smoothing", type=float, default=defaults.label_smoothing,
                       help="label smoothing of the loss")
    run = parser.add_argument_group("training")
    length = run.add_mutually_exclusive_group()
    length.add_argument("--steps", type=int, default=None, help=f"optimiser steps ({DEFAULT_STEPS} unless --epochs)")
    length.add_argument("--epochs", type=float, default=None, help="passes over the training pairs")
    run.add_argument("--batch-size", type=int, default=default(RunSettings, "batch_size"),
                     help="pairs per training step")
    run.add_argument("--optimizer", choices=("adam", "sgd"), default=default(OptimiserSettings, "name"),
                     help="optimiser")
    run.add_argument("--lr", type=float, default=default(OptimiserSettings, "learning_rate"),
                     help="learning rate (the peak rate of --schedule noam and linear)")
    run.add_argument("--schedule", choices=SCHEDULES, default=default(OptimiserSettings, "schedule"),
                     help="learning-rate schedule: constant; noam (linear warm-up over --warmup steps to --lr, "
                          "then decay as 1/sqrt(step); MATH.md (S4)); linear (the same warm-up, then linear "
                          "decay to zero at --decay-steps; (S5)); or plateau (--lr, reduced by "
                          "--plateau-factor whenever validation stalls)")
    run.add_argument("--warmup", type=positive_int, default=default(OptimiserSettings, "warmup"),
                     help="warm-up steps of --schedule noam and linear")
    run.add_argument("--decay-steps", type=decay_steps_arg, default=None,
                     help="--schedule linear: the step after which the rate is zero (default: --steps); 'fit' "
                          "(with --max-minutes): the step that the time reaches, fitted once warm-up is over "
                          "from the time a step has taken, so the run ends as its rate reaches zero on a slow "
                          "machine as on a fast one (--steps then only caps it)")
    run.add_argument("--plateau-factor", type=float, default=default(OptimiserSettings, "plateau_factor"),
                     help="--schedule plateau: multiply the rate by this after --plateau-patience validations "
                          "without a better --select-by score")
    run.add_argument("--plateau-patience", type=positive_int, default=default(OptimiserSettings, "plateau_patience"),
                     help="--schedule plateau: validations without improvement before each reduction")
    run.add_argument("--momentum", type=float, default=default(OptimiserSettings, "momentum"), help="for sgd")
    run.add_argument("--beta2", type=float, default=default(OptimiserSettings, "beta2"),
                     help="for adam: the decay of its second-moment average")
    run.add_argument("--clip-norm", type=float, default=default(OptimiserSettings, "clip_norm"),
                     help="global-norm clipping; 0 turns it off")
    run.add_argument("--seed", type=int, default=default(RunSettings, "seed"),
                     help="seeds the splits, initialisation, batches and dropout")
    run.add_argument("--backend", choices=BACKENDS, default=None, help="default: jax if installed, else numpy")
    run.add_argument("--out", default=None, help="run folder (default runs/<task or data file name>)")
    run.add_argument("--fresh", action="store_true",
                     help="start a new run instead of resuming; an earlier run in --out is moved into "
                          "--out/previous-<timestamp>/, never deleted")
    run.add_argument("--keep", type=int, default=default(RunSettings, "keep"), help="checkpoints kept")
    run.add_argument("--pad-multiple", type=int, default=default(RunSettings, "pad_multiple"),
                     help="batch widths round up to a multiple of this (coarser past 8 times it): smaller pads "
                          "less, but jax compiles its step once per (source width, target width)")
    run.add_argument("--pack", type=positive_int, default=default(RunSettings, "pack"), metavar="WIDTH",
                     help="pack several sentences into each row of WIDTH tokens a side (a Transformer: each "
                          "sentence attends to itself only, its positions start at 0), about --batch-size "
                          "sentences per batch: every batch has one shape, so jax compiles its step once, and "
                          "almost no padding is computed (default: one sentence per row)")
    run.add_argument("--log-every", type=int, default=default(RunSettings, "log_every"),
                     help="steps between loss records in metrics.jsonl")
    run.add_argument("--eval-every", type=int, default=default(RunSettings, "eval_every"),
                     help="steps between validations (loss, exact match, BLEU, chrF) and checkpoints")
    run.add_argument("--eval-examples", type=positive_int, default=default(RunSettings, "eval_examples"),
                     help="validate on the first N validation pairs (in file order)")
    run.add_argument("--select-by", choices=tuple(SELECT_BY), default=default(RunSettings, "select_by"),
                     help="keep best.npz, the checkpoint of the best validation bleu, loss or exact match "
                          "(default: exact for a built-in task, bleu for --data); a tie goes to the lower validation loss, so a "
                          "score that cannot separate checkpoints (BLEU on targets shorter than 4 tokens is 0) "
                          "never freezes the choice; evaluate and translate use it")
    run.add_argument("--patience", type=positive_int, default=default(RunSettings, "patience"),
                     help="stop after this many validations without a better --select-by score (default: never)")
    run.add_argument("--stop-at-accuracy", type=fraction, default=default(RunSettings, "stop_at_accuracy"),
                     help="stop once validation exact match reaches this (0 never stops early)")
    run.add_argument("--unk-dropout", type=float, default=default(RunSettings, "unk_dropout"),
                     help="each training source token becomes <unk> with this probability, so that the model "
                          "learns to read past words and characters it never saw (0: off)")
    run.add_argument("--max-minutes", type=float, default=default(RunSettings, "max_minutes"),
                     help="stop after this many minutes of wall time in this invocation, validating and saving "
                          "the last step first (default: no limit)")
    run.add_argument("--no-compile-cache", action="store_true", help=NO_COMPILE_CACHE_HELP)
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    several = parser.add_argument_group(
        "several processes (docs/distributed.md): every process runs the same command with its own --process-id")
    several.add_argument("--num-processes", type=positive_int, default=None,
                         help="processes training together (default: $JAX_NUM_PROCESSES, else 1)")
    several.add_argument("--process-id", type=int, default=None,
                         help="this process's number in [0, N); 0 writes the run folder (default: $JAX_PROCESS_ID)")
    several.add_argument("--coordinator", default=None, metavar="HOST:PORT",
                         help="process 0's address, reachable from every process (default: "
                              "$JAX_COORDINATOR_ADDRESS)")
    several.add_argument("--connect-timeout", type=positive_int, default=120, metavar="SECONDS",
                         help="give up when the processes have not all joined after this long (120)")
    several.add_argument("--heartbeat-timeout", type=positive_int, default=100, metavar="SECONDS",
                         help="a process silent this long counts as dead, and the others stop (100)")


def with_recipe(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """The train command's arguments with args.recipe's options as defaults (the flags in argv override them)
    and its decoding settings as args.decoding."""
    recipe = parser.parse_args(argv).recipe
    defaults, decoding = read_recipe(recipe, parser)
    parser.set_defaults(**defaults)
    args = parser.parse_args(argv)
    args.command, args.decoding = "train", decoding
    return args


def run_train(args) -> int:
    several = DistributedSettings.from_arguments(args.coordinator, args.num_processes, args.process_id,
                                                 args.connect_timeout, args.heartbeat_timeout)
    if several is None:
        return _run_train(args)
    if (args.backend or default_backend()) != "jax":
        raise ValueError(f"backend: several processes train with the jax backend, got {args.backend!r}")
    initialize(several)  # before any computation
    try:
        status = _run_train(args)
    except BaseException as error:  # noqa: BLE001: one line, then out without the runtime's exit barrier
        first = first_line(error)
        peer_lost = not isinstance(error, (ValueError, OSError, KeyboardInterrupt)) or "gloo" in first.lower() \
            or "UNAVAILABLE" in first or "DEADLINE_EXCEEDED" in first
        why = (f"another process stopped or cannot be reached ({first[:300]}); the run folder keeps its last "
               "checkpoint: run the same command on every process to resume" if peer_lost else first)
        print(f"error: process {several.process_id} of {several.num_processes}: {why}", file=sys.stderr,
              flush=True)
        sys.stdout.flush()
        # jax.distributed's exit waits for every process at a barrier, which a dead one never reaches
        os._exit(1 if peer_lost else 2)
    sys.stdout.flush()
    return status


def _run_train(args) -> int:
    task = args.task or (None if args.data else "dates")
    data = DataSettings(task=task, data=args.data, data_target=args.data_target, valid_data=args.valid_data,
                        valid_target=args.valid_target, test_data=args.test_data, test_target=args.test_target,
                        tokenizer=args.tokenizer, vocab_size=args.vocab_size, shared_vocab=args.shared_vocab,
                        min_freq=args.min_freq, max_vocab=args.max_vocab, max_len=args.max_len,
                        on_error="skip" if args.skip_malformed else "fail", train_size=args.train_size,
                        lowercase=args.lowercase)
    defaults, encoder, decoder = ModelOptions(), ENCODERS[args.encoder], DECODERS[args.decoder]
    if args.embed_dim is None:  # a stack of one width (the Transformer) has embeddings as wide as its layers
        args.embed_dim = args.hidden_dim if encoder.one_width or decoder.one_width else defaults.embed_dim
    if args.bidirectional is None:
        args.bidirectional = defaults.bidirectional and encoder.has_directions
    if args.attention is None:  # the default connection, or the first the decoder accepts (a Transformer's: heads)
        accepted = [name for name, connection in CONNECTIONS.items() if decoder.accepts(connection)]
        args.attention = defaults.attention if defaults.attention in accepted else accepted[0]
    model = ModelOptions(embed_dim=args.embed_dim, hidden_dim=args.hidden_dim, num_layers=args.layers,
                         bidirectional=args.bidirectional, attention=args.attention, dropout=args.dropout,
                         label_smoothing=args.label_smoothing, encoder=args.encoder, decoder=args.decoder,
                         num_heads=args.heads, output_from=args.output_from, input_feeding=args.input_feeding,
                         ffn_dim=args.ffn_dim, max_positions=args.max_positions,
                         tie_embeddings=args.tie_embeddings)
    steps = args.steps if args.steps is not None or args.epochs is not None else DEFAULT_STEPS
    run = RunSettings(steps=steps, epochs=args.epochs, batch_size=args.batch_size, seed=args.seed,
                      log_every=args.log_every, eval_every=args.eval_every, keep=args.keep,
                      pad_multiple=args.pad_multiple, eval_examples=args.eval_examples, select_by=args.select_by,
                      patience=args.patience, pack=args.pack,
                      unk_dropout=args.unk_dropout, max_minutes=args.max_minutes,
                      stop_at_accuracy=args.stop_at_accuracy or None)
    decay_steps = args.decay_steps
    if args.schedule == "linear" and decay_steps is None:
        if args.steps is None:
            raise ValueError("decay_steps: --schedule linear decays to zero at --decay-steps, expected it (or "
                             "--steps) to be given, got neither")
        decay_steps = args.steps
    optimiser = OptimiserSettings(name=args.optimizer, learning_rate=args.lr, momentum=args.momentum,
                                  clip_norm=args.clip_norm or None, schedule=args.schedule,
                                  warmup=args.warmup, plateau_factor=args.plateau_factor,
                                  plateau_patience=args.plateau_patience, beta2=args.beta2,
                                  decay_steps=decay_steps)
    out = Path(args.out or f"runs/{task or Path(args.data).stem}")
    backend = args.backend or default_backend()
    print(f"training {task or args.data} on {backend}; run folder {out}", file=sys.stderr)
    try:
        with compile_cache_of(backend, args):
            summary = train(out, model, data, run, optimiser, backend, resume=not args.fresh,
                            progress=not args.no_progress, decoding=getattr(args, "decoding", DecodingSettings()))
    except TrainingDiverged as error:
        print(f"error: {error}", file=sys.stderr)
        return 3
    except TrainingInterrupted as stop:
        print(f"interrupted: saved step {stop.step} as {stop.checkpoint}; run the same command again to resume "
              "from it", file=sys.stderr)
        return 130  # 128 + SIGINT, as a shell reports a command stopped by Ctrl-C
    if summary["processes"] > 1 and "test" not in summary:
        print(f"process {process_index()} of {summary['processes']}: trained to step {summary['steps']}; "
              f"process 0 wrote the run folder {out}")
        return 0
    test = summary["test"]
    if test is None:
        print("no test split (--valid-data without --test-data); score one with seq2seq evaluate --data FILE")
    else:
        print(f"test exact match {test['exact_match']:.4f}  token accuracy {test['token_accuracy']:.4f}  "
              f"perplexity {test['perplexity']:.3f}  BLEU {test['bleu']:.1f}  chrF {test['chrf']:.1f}  "
              f"({test['examples']} held-out pairs)")
    if summary["steps_trained"]:
        trained = (f"trained {summary['steps_trained']} steps this time (step {summary['resumed_from']} -> "
                   f"{summary['steps']}) in {summary['train_seconds']:.1f} s of training, "
                   f"{summary['tokens_per_s']:.0f} target tokens/s; {summary['total_seconds']:.0f} s in all")
    else:
        trained = f"trained no steps (re-scored the checkpoint at step {summary['steps']})"
    print(f"{trained}; checkpoint {summary['checkpoint']}; metrics {summary['metrics']}; "
          f"loss curve {summary['loss_curve']}")
    return 0


def load_run(run_dir: str | None, backend: str | None, which: str = "best") -> Translator:
    """The model of --run and --checkpoint: a checkpoint file names its run, so with one --run is optional
    and, given, must be the file's folder (translator.load refuses a file from elsewhere)."""
    if run_dir is None and which in CHECKPOINTS:
        run_dir = DEFAULT_RUN
    return load(run_dir, which, backend)


def add_evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    add_checkpoint_argument(parser)
    parser.add_argument("--split", choices=SPLITS, default="test", help="split of the run's own data")
    parser.add_argument("--data", help="score these pairs instead (TSV, or source side of two aligned files)")
    parser.add_argument("--data-target", help="target side of two aligned files")
    parser.add_argument("--skip-malformed", action="store_true", help="skip malformed lines of --data")
    parser.add_argument("--beam", type=positive_int, default=None, help=BEAM_HELP)
    add_length_penalty_argument(parser)
    parser.add_argument("--backend", choices=BACKENDS, default=None, help="default: jax if installed, else numpy")
    parser.add_argument("--json", action="store_true", help="print JSON")
    add_decoding_arguments(parser)


def add_length_penalty_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--length-penalty", type=float, default=None,
                        help="alpha of beam search's GNMT length normalisation ((5 + |y|) / 6)^alpha (MATH.md "
                             f"(N1); default: the run's, from its recipe, else {DEFAULT_LENGTH_PENALTY})")


def add_checkpoint_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", default=None, help=f"run folder (default: {DEFAULT_RUN}; with --checkpoint "
                                                    "PATH, the file's folder, which --run must then be if given)")
    parser.add_argument("--checkpoint", default="best", metavar="best|last|averaged|PATH",
                        help="best: the run's best.npz, selected on validation (its newest checkpoint where none "
                             "was selected); last: its newest checkpoint; averaged: its averaged.npz (`seq2seq "
                             "average`); or a checkpoint file")


def add_average_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", default=DEFAULT_RUN, help="run folder")
    parser.add_argument("--last", type=positive_int, default=5,
                        help="average the params of the run's newest N checkpoints (train with --keep N or more); "
                             "checkpoints of another run are refused")


def run_average(args) -> int:
    averaged = save_averaged(args.run, args.last)
    steps = averaged.meta["averaged_steps"]
    print(f"averaged the params of steps {', '.join(map(str, steps))} into {averaged.path}; score it with "
          f"`seq2seq evaluate --run {args.run} --checkpoint averaged`")
    return 0


def run_evaluate(args) -> int:
    data = args.split
    if args.data:
        data = read_corpus(args.data, args.data_target, "skip" if args.skip_malformed else "fail").pairs
    translator = load_run(args.run, args.backend, args.checkpoint)
    with compile_cache_of(translator.backend, args):
        scores = translator.score(data, beam=args.beam, length_penalty=args.length_penalty,
                                  progress=not args.no_progress, batch_tokens=args.batch_tokens, **search_options(args))
    if args.json:
        print(json.dumps(scores, indent=1))
    else:
        print(" ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in scores.items()))
    return 0


def add_translate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("text", nargs="*", help="sentences to translate (default: one per line of --input; a blank "
                                                "line gives a blank line)")
    parser.add_argument("--input", "-i", default="-", metavar="FILE",
                        help="translate each line of this UTF-8 file ('-': standard input)")
    parser.add_argument("--output", "-o", default="-", metavar="FILE",
                        help="write the translations here, one line per input line, in input order ('-': standard "
                             "output); written to a temporary file beside it, renamed to FILE once complete, so "
                             "a failed run never leaves a partial FILE")
    add_checkpoint_argument(parser)
    parser.add_argument("--beam", type=positive_int, default=None, help=BEAM_HELP)
    parser.add_argument("--n-best", type=positive_int, default=None, metavar="N",
                        help="the N best hypotheses of beam search (N <= --beam) for each input, best first, one "
                             "per line as 'LINE<TAB>SCORE<TAB>TEXT': LINE the input's line (or argument) number "
                             "from 1, SCORE the length-normalised log-probability; a blank input has none")
    add_length_penalty_argument(parser)
    parser.add_argument("--max-len", type=positive_int, default=None,
                        help="longest output in tokens (default: the run's --max-len)")
    parser.add_argument("--attention-plot", metavar="FILE.png",
                        help="save attention heatmaps (greedy only; .png is added to a name without extension)")
    parser.add_argument("--unseen", choices=UNSEEN, default=None,
                        help="a token unseen in training: drop it (char vocabularies only) or read it as <unk> "
                             "(default: drop for char, unk for word; subwords have none); a sentence with nothing "
                             "left gives an empty line and a warning")
    parser.add_argument("--backend", choices=BACKENDS, default=None, help="default: jax if installed, else numpy")
    add_decoding_arguments(parser)


def add_decoding_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--max-len-a", type=non_negative_float, default=None, metavar="A",
                        help="with --max-len-b: each output's length limit A * (source pieces) + B (fairseq's "
                             "convention; MATH.md (N3)), below --max-len; off by default (changes the search: a "
                             "limit stops a sentence sooner)")
    parser.add_argument("--max-len-b", type=non_negative_int, default=None, metavar="B",
                        help="the constant B of that limit (alone: a limit of B tokens for every sentence)")
    parser.add_argument("--early-stop", action=argparse.BooleanOptionalAction, default=None,
                        help="beam search ends a sentence once --beam hypotheses have finished (fairseq's and "
                             "CTranslate2's rule, MATH.md (N4)): faster, but it may miss a better, longer "
                             "hypothesis that the exact stop (N2) finds (default: the run's, from its recipe, "
                             "else the exact stop)")
    parser.add_argument("--batch-tokens", type=positive_int, default=DEFAULT_BATCH_TOKENS, metavar="N",
                        help="source tokens (padding included) per decoding batch; sentences are decoded longest "
                             "first in batches of similar length, and each output is that of decoding its "
                             "sentence alone")
    parser.add_argument("--no-compile-cache", action="store_true", help=NO_COMPILE_CACHE_HELP)
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress bar (there is one only while stderr is a terminal)")


def search_options(args) -> dict:
    """The decoding options of add_decoding_arguments, as Translator.decode takes them."""
    return dict(max_len_a=args.max_len_a, max_len_b=args.max_len_b, early_stop=args.early_stop)


def compile_cache_of(backend: str, args) -> contextlib.AbstractContextManager:
    """JAX's persistent compilation cache around the work (compile_cache.py), unless --no-compile-cache."""
    return compile_cache(not args.no_compile_cache) if backend == "jax" else contextlib.nullcontext()


def read_texts(args) -> list[str]:
    """The sentences: the arguments, else the lines of --input (a file, or stdin)."""
    if args.text:
        if args.input != "-":
            raise ValueError(f"input: expected sentences as arguments or --input, got both (--input {args.input})")
        texts = []
        for number, text in enumerate(args.text, start=1):
            try:  # an argument's bytes that are not UTF-8 reach us as surrogates (surrogateescape)
                texts.append(os.fsencode(text).decode("utf-8"))
            except UnicodeError as error:
                raise ValueError(f"text: expected UTF-8 text, got argument {number} with bytes that are not "
                                 f"({error.reason} at position {error.start})") from None
        return texts
    if args.input == "-":
        stream = getattr(sys.stdin, "buffer", None)  # bytes, so that a bad one is reported with its line
        raw = stream.read() if stream is not None else sys.stdin.read().encode("utf-8", "surrogatepass")
        argument, where = "text", "on stdin"
    else:
        raw, argument, where = read_file(args.input, "input").data, "input", f"in {args.input}"
    raw = raw.removeprefix(codecs.BOM_UTF8)
    try:
        texts = split_lines(raw.decode("utf-8"))
    except UnicodeDecodeError as error:
        line = raw.count(b"\n", 0, error.start) + 1
        raise ValueError(f"{argument}: expected UTF-8 text {where}, got the invalid byte 0x{raw[error.start]:02x} "
                         f"on line {line}") from None
    if not texts:
        raise ValueError(f"{argument}: expected sentences as arguments or {where}, got none")
    return texts


def output_lines(translations, n_best: int | None):
    """Each translation's text; with n_best, each hypothesis as 'line<TAB>score<TAB>text' (lines from 1)."""
    if n_best is None:
        return [translation.text for translation in translations]
    return [f"{line}\t{hypothesis.score:.6f}\t{hypothesis.text}"
            for line, translation in enumerate(translations, start=1) for hypothesis in translation.hypotheses]


def write_atomically(path: Path, text: str, argument: str) -> None:
    """text into path through a temporary file in its folder, renamed over path once complete and synced: a
    failure leaves the earlier file (or none), never a partial one. What is not a regular file (a FIFO,
    /dev/stdout) cannot be replaced and is written directly."""
    target = Path(os.path.realpath(path))  # a link's file is replaced, not the link
    try:
        if target.exists() and not target.is_file():
            with open(target, "w", encoding="utf-8") as handle:
                handle.write(text)
            return
        with replacing(target, "w", "utf-8") as handle:
            handle.write(text)
    except OSError as error:
        error.add_note(f"writing --{argument} {path}")
        raise


def check_beam_options(args, beam: int) -> None:
    """--attention-plot needs greedy decoding, --n-best a beam at least as wide (beam: --beam, or the run's)."""
    given = f"--beam {beam}" if args.beam is not None else f"the run's beam {beam} (from its recipe)"
    if args.attention_plot and beam > 1:
        raise ValueError(f"attention_plot: expected greedy decoding (--beam 1), got {given}")
    if args.n_best is not None and (beam == 1 or args.n_best > beam):
        raise ValueError(f"n_best: expected at most --beam hypotheses from beam search (--beam 2 or more), got "
                         f"--n-best {args.n_best} with {given}")


def run_translate(args) -> int:
    plot = output = None
    # before any decoding, and before waiting on stdin
    if args.attention_plot:
        plot = check_plot_path(args.attention_plot, "attention_plot")
    if args.max_len is not None:
        check_decode_args(args.max_len)
    if args.output != "-":
        output = Path(args.output)
        if not (output.exists() and not output.is_file() and not output.is_dir() and os.access(output, os.W_OK)):
            output = check_output_file(output, "output")  # all but a writable FIFO or device (/dev/stdout)
    if args.beam is not None:
        check_beam_options(args, args.beam)
    texts = read_texts(args)
    translator = load_run(args.run, args.backend, args.checkpoint)
    beam = args.beam if args.beam is not None else translator.decoding.beam
    if args.beam is None:  # the run's beam, known once it is loaded
        check_beam_options(args, beam)
    if plot is not None and not CONNECTIONS[translator.config.attention].has_weights:
        raise ValueError("attention_plot: the model has attention 'none'; there are no weights to plot")
    with compile_cache_of(translator.backend, args):
        translations = translator.decode(texts, beam=beam, length_penalty=args.length_penalty,
                                         n_best=args.n_best or 1, max_len=args.max_len, unseen=args.unseen,
                                         progress=not args.no_progress, batch_tokens=args.batch_tokens,
                                         **search_options(args))
    lines = output_lines(translations, args.n_best)
    if output is None:
        for line in lines:
            print(line)
    else:
        write_atomically(output, "".join(f"{line}\n" for line in lines), "output")
    if plot is not None:
        items = [(t.source_tokens, t.hypotheses[0].tokens, t.attention) for t in translations if t.hypotheses]
        if items:
            print(f"attention heatmap: {plot_attention(items, plot)}", file=sys.stderr)
        else:
            warnings.warn(f"attention_plot: nothing was translated (every line blank); {plot} not written")
    return 0


def int_at_least(low: int):
    """An argparse type: an int >= low."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an int >= {low}, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"expected an int >= {low}, got {value}")
        return value

    return parse


positive_int, non_negative_int = int_at_least(1), int_at_least(0)


def decay_steps_arg(text: str) -> int | str:
    """--decay-steps: an int >= 1, or fit."""
    if text == FIT:
        return FIT
    try:
        return positive_int(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected an int >= 1 or {FIT!r}, got {text!r}") from None


def non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text}")
    return value


def fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {value}")
    return value
