"""The `seq2seq` command."""
from __future__ import annotations

import argparse
import sys

from . import bench_cli, gradcheck_cli, run_cli


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="seq2seq", description="LSTM encoder-decoder: reference, JAX, tools.")
    commands = parser.add_subparsers(dest="command", required=True)
    for name, help_text, add, run in [
        ("train", "train (or resume) a model on a built-in task or a parallel corpus",
         run_cli.add_train_arguments, run_cli.run_train),
        ("evaluate", "score a trained model: exact match, token accuracy, perplexity, BLEU, chrF",
         run_cli.add_evaluate_arguments, run_cli.run_evaluate),
        ("translate", "translate sentences with a trained model", run_cli.add_translate_arguments,
         run_cli.run_translate),
        ("gradcheck", "verify the hand-written gradients per tensor", gradcheck_cli.add_arguments, gradcheck_cli.run),
        ("bench", "time a training step and greedy decoding on numpy, jax and torch", bench_cli.add_arguments,
         bench_cli.run),
    ]:
        command = commands.add_parser(name, help=help_text, description=help_text)
        add(command)
        command.set_defaults(handler=run)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except ValueError as error:  # bad input: one clear line, no traceback
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
