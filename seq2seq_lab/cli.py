"""The `seq2seq` command."""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
import warnings
from importlib.metadata import PackageNotFoundError, version

from . import bench_cli, export, gradcheck_cli, run_cli, serve


class HelpFormatter(argparse.HelpFormatter):
    """Every option's default in --help (None and flags have none worth showing)."""

    def _get_help_string(self, action):
        text = action.help or ""
        # identity, not `in (None, False)`: 0 == False, and a default of 0 (--seed) is worth showing
        if ("%(default)" in text or not action.option_strings or action.nargs == 0 or action.default is None
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
    parser.commands = {}
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
        ("export", "write a Transformer run as a CTranslate2 model folder", export.add_arguments, export.run),
        ("serve", "serve a trained model over HTTP: a translation API and a page", serve.add_arguments, serve.run),
    ]:
        command = commands.add_parser(name, help=help_text, description=help_text, formatter_class=HelpFormatter)
        add(command)
        command.set_defaults(handler=run)
        parser.commands[name] = command
    return parser


def _one_line(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"warning: {message}", file=sys.stderr if file is None else file)


def describe_os_error(error: OSError) -> str:
    """One line for an OSError: what was being done (a note added where it happened), the path, the reason."""
    doing = "; ".join(getattr(error, "__notes__", [])) or "reading or writing a file"
    paths = " -> ".join(str(p) for p in (error.filename, error.filename2) if p is not None)
    return f"{error.strerror or error}{f': {paths}' if paths else ''} ({doing})"


WRITING_STDOUT = "writing standard output"
EX_IOERR = 74  # sysexits.h: an input/output error; 1 stays gradcheck's "a check failed", 2 is bad input


@contextlib.contextmanager
def writing_stdout():
    """Marks an OSError raised while printing results as a failure to write standard output."""
    try:
        yield
    except OSError as error:
        if not isinstance(error, BrokenPipeError):
            error.add_note(WRITING_STDOUT)
        raise


class ResultStream:
    """Standard output whose failed writes say that they were writes of the results (`> /dev/full`)."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text):
        with writing_stdout():
            return self.stream.write(text)

    def flush(self):
        with writing_stdout():
            return self.stream.flush()

    def __getattr__(self, name):
        return getattr(self.stream, name)


# What to lower when a command runs out of memory: each command's own options
MEMORY_ADVICE = {"train": "lower --batch-size or --max-len", "evaluate": "lower --beam, or score fewer pairs",
                 "translate": "lower --beam or --max-len, or translate fewer or shorter sentences at a time",
                 "bench": "use a smaller --config, --batch or --length", "gradcheck": "check fewer combinations"}


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if sys.stdout is None or sys.stdout.closed:  # `>&-`: every result would be lost while the command succeeded
        print("error: standard output is closed; redirect it to a file or /dev/null", file=sys.stderr)
        return 2
    stdout, sys.stdout = sys.stdout, ResultStream(sys.stdout)
    try:
        return _run(args, parser, sys.argv[1:] if argv is None else list(argv))
    finally:
        sys.stdout = stdout


def _run(args, parser, argv) -> int:
    with warnings.catch_warnings():
        warnings.showwarning = _one_line  # a user sees the message, not our source line
        try:
            if getattr(args, "recipe", None):  # its values become the defaults, under the command line's flags
                args = run_cli.with_recipe(parser.commands[args.command], argv[argv.index(args.command) + 1:])
            status = args.handler(args)
            sys.stdout.flush()  # here, not at exit, so that a failed write (`> /dev/full`) is reported
            return status
        except ValueError as error:  # bad input: one clear line, no traceback
            print(f"error: {error}", file=sys.stderr)
            return 2
        except MemoryError as error:
            print(f"error: out of memory ({type(error).__name__}: {error or 'no detail'}); "
                  f"{MEMORY_ADVICE.get(args.command, 'use smaller inputs')}", file=sys.stderr)
            return 2
        except BrokenPipeError:
            # The reader went away (`| head`): stop quietly as Unix tools do; flushing at exit must not fail too.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 141  # 128 + SIGPIPE, what a shell reports for a tool killed by the signal
        except OSError as error:  # a full disk, a read-only folder, /dev/full: the environment, not the input
            print(f"error: {describe_os_error(error)}", file=sys.stderr)
            if WRITING_STDOUT in getattr(error, "__notes__", []):
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # the exit's flush must not fail too
            return EX_IOERR
        except KeyboardInterrupt:
            print("error: interrupted (Ctrl-C)", file=sys.stderr)
            return 130  # 128 + SIGINT, as a shell reports it


if __name__ == "__main__":
    sys.exit(main())
