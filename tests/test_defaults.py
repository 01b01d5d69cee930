"""One source for each default: the command line's defaults are the settings dataclasses' (and the decoding
library's), never typed twice."""
import dataclasses

from seq2seq_lab.backends import OptimiserSettings
from seq2seq_lab.cli import build_parser
from seq2seq_lab.data import DataSettings
from seq2seq_lab.evaluate import DEFAULT_BATCH_TOKENS
from seq2seq_lab.recipes import DecodingSettings
from seq2seq_lab.training import ModelOptions, RunSettings
from seq2seq_ref.decode import DEFAULT_LENGTH_PENALTY

# a dataclass field the train command names otherwise: field -> option dest
RENAMED = {"num_layers": "layers", "num_heads": "heads", "name": "optimizer", "learning_rate": "lr"}
# fields whose command-line default is None because it is derived from other options (help says from what)
DERIVED = {"embed_dim", "bidirectional", "attention", "steps", "decay_steps", "select_by", "task", "clip_norm",
           "stop_at_accuracy", "on_error"}


def test_train_defaults_are_the_settings_dataclasses_defaults():
    args = vars(build_parser().commands["train"].parse_args([]))
    compared = 0
    for settings in (DataSettings, ModelOptions, RunSettings, OptimiserSettings):
        for field in dataclasses.fields(settings):
            dest = RENAMED.get(field.name, field.name)
            if dest not in args or field.name in DERIVED:
                continue
            assert args[dest] == field.default, f"--{dest.replace('_', '-')}: {args[dest]!r} != " \
                                                f"{settings.__name__}.{field.name} = {field.default!r}"
            compared += 1
    assert compared >= 30


def test_decoding_defaults_are_the_libraries():
    assert DecodingSettings().length_penalty == DEFAULT_LENGTH_PENALTY
    for name in ("translate", "evaluate"):
        args = build_parser().commands[name].parse_args([] if name == "evaluate" else ["x"])
        assert args.batch_tokens == DEFAULT_BATCH_TOKENS
        # None: the run's stored settings (DecodingSettings), so the defaults live in one place
        assert args.beam is None and args.length_penalty is None and args.early_stop is None
