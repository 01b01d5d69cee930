"""The `seq2seq` command."""
from __future__ import annotations

import argparse
import os
import sys
import warnings
from importlib.metadata import PackageNotFoundError, version

from . import bench_cli, gradcheck_cli, run_cli


class HelpFormatter(argparse.HelpFormatter):
    """Every option's default in --help (None and off-switches have none worth showing)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if ("%(default)" in text or not action.option_strings or action.default in (None, False)
                or action.default is argparse.SUPPRESS):
            return text
        return f"{text} (default: %(default)s)"


class Parser(argparse.ArgumentParser):
    """Bad options get one `error:` line, as every other bad input does, not argparse's usage block."""

    def error(self, message):
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


def package_version() -> str:
    try:
        return version("seq2seq-lab")
    except PackageNotFoundError:
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="seq2seq", description="Encoder-decoder (LSTM, GRU, Transformer; attention or not): "
                                                "NumPy reference, JAX twin, tools.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    commands = parser.add_subparsers(dest="command", required=True)
    for name, help_text, add, run in [
        ("train", "train (or resume) a model on a built-in task or a parallel corpus",
         run_cli.add_train_arguments, run_cli.run_train),
        ("evaluate", "score a trained model: exact match, token accuracy, perplexity, BLEU, chrF",
         run_cli.add_evaluate_arguments, run_cli.run_evaluate),
        ("translate", "translate sentences with a trained model", run_cli.add_translate_arguments,
         run_cli.run_translate),
        ("average", "average the params of a run's newest checkpoints into averaged.npz",
         run_cli.add_average_arguments, run_cli.run_average),
        ("gradcheck", "verify the hand-written gradients per tensor", gradcheck_cli.add_arguments, gradcheck_cli.run),
        ("bench", "time a training step and greedy decoding on numpy, jax and torch", bench_cli.add_arguments,
         bench_cli.run),
    ]:
        command = commands.add_parser(name, help=help_text, description=help_text, formatter_class=HelpFormatter)
        add(command)
        command.set_defaults(handler=run)
    return parser


def _one_line(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"warning: {message}", file=sys.stderr if file is None else file)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    with warnings.catch_warnings():
        warnings.showwarning = _one_line  # a user sees the message, not our source line
        try:
            return args.handler(args)
        except ValueError as error:  # bad input: one clear line, no traceback
            print(f"error: {error}", file=sys.stderr)
            return 2
        except MemoryError as error:
            print(f"error: out of memory ({type(error).__name__}: {error or 'no detail'}); lower --batch-size "
                  "or --max-len", file=sys.stderr)
            return 2
        except BrokenPipeError:
            # The reader went away (`| head`): stop quietly as Unix tools do; flushing at exit must not fail too.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 141  # 128 + SIGPIPE, what a shell reports for a tool killed by the signal


if __name__ == "__main__":
    sys.exit(main())
