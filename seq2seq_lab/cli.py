"""The `seq2seq` command."""
from __future__ import annotations

import argparse
import sys

from . import gradcheck_cli


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="seq2seq", description="LSTM encoder-decoder: reference, JAX, tools.")
    commands = parser.add_subparsers(dest="command", required=True)
    gradcheck = commands.add_parser("gradcheck", help="verify the hand-written gradients per tensor")
    gradcheck_cli.add_arguments(gradcheck)
    gradcheck.set_defaults(run=gradcheck_cli.run)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
