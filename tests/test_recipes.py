"""Recipes (recipes/*.toml): training options and decoding settings from a file, under the command line's flags."""
from pathlib import Path

import pytest

from seq2seq_lab.cli import build_parser, main
from seq2seq_lab.recipes import DecodingSettings, read_recipe
from seq2seq_lab.run_cli import with_recipe
from seq2seq_lab.translator import load

RECIPES = sorted((Path(__file__).resolve().parents[1] / "recipes").glob("*.toml"))


def train_parser():
    return build_parser().commands["train"]


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda path: path.stem)
def test_every_shipped_recipe_reads_as_train_options(recipe):
    defaults, decoding = read_recipe(recipe, train_parser())
    assert defaults and isinstance(decoding, DecodingSettings)
    args = with_recipe(train_parser(), ["--recipe", str(recipe)])
    assert all(getattr(args, dest) == value for dest, value in defaults.items())


def test_a_flag_overrides_the_recipe_and_the_rest_comes_from_it():
    recipe = next(path for path in RECIPES if path.stem == "de-en-transformer")
    args = with_recipe(train_parser(), ["--recipe", str(recipe), "--lr", "5e-4", "--no-progress"])
    assert args.lr == 5e-4 and args.hidden_dim == 256 and args.schedule == "linear" and args.shared_vocab is True
    assert args.decoding == DecodingSettings(beam=5, length_penalty=1.4)
    assert args.pack == 64 and args.decay_steps == "fit" and args.max_minutes == 30  # its end fitted to the time


@pytest.mark.parametrize("text,message", [
    ("[model]\nhiden-dim = 8\n", "unknown key 'hiden-dim' in [model] of"),
    ("[decoding]\nbeams = 2\n", "unknown key 'beams' in [decoding] of"),
    ("[model]\nencoder = 'rnn'\n", "encoder: expected one of"),
    ("[training]\nsteps = 'many'\n", "steps: expected an int, got 'many'"),
    ("[training]\nwarmup = 0\n", "warmup: expected an int >= 1, got 0"),
    ("[training]\ndecay-steps = 'fits'\n", "decay-steps: expected an int >= 1 or 'fit', got 'fits'"),
    ("[data]\nshared-vocab = 1\n", "shared-vocab: expected true or false"),
    ("[decoding]\nbeam = 0\n", "beam: expected an int >= 1"),
    ("[decoding]\nearly-stop = 'yes'\n", "early_stop: expected True or False"),
    ("[model\n", "expected a TOML file"),
])
def test_a_bad_recipe_is_one_error_naming_the_key_and_the_file(tmp_path, capsys, text, message):
    recipe = tmp_path / "bad.toml"
    recipe.write_text(text)
    assert main(["train", "--recipe", str(recipe), "--out", str(tmp_path / "run")]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: recipe: ") and message in error and str(recipe) in error
    assert not (tmp_path / "run").exists()


def test_a_run_keeps_its_recipes_decoding_settings_for_translate(tmp_path, capsys):
    recipe = tmp_path / "tiny.toml"
    recipe.write_text('[data]\ntask = "dates"\ntrain-size = 64\n[model]\nhidden-dim = 8\nembed-dim = 8\n'
                      '[training]\nsteps = 2\nbatch-size = 16\neval-every = 2\neval-examples = 8\nbackend = "numpy"\n'
                      '[decoding]\nbeam = 3\nlength-penalty = 1.0\nearly-stop = true\n')
    run = tmp_path / "run"
    assert main(["train", "--recipe", str(recipe), "--out", str(run), "--no-progress"]) == 0
    translator = load(run, "last", "numpy")
    assert translator.decoding == DecodingSettings(beam=3, length_penalty=1.0, early_stop=True)
    stored = translator.translate("3/3/16", n_best=3)  # the run's beam 3: three hypotheses
    assert len(stored) == 3 and stored == translator.translate("3/3/16", beam=3, length_penalty=1.0,
                                                                early_stop=True, n_best=3)
    capsys.readouterr()
    assert main(["translate", "--run", str(run), "--checkpoint", "last", "--n-best", "3", "3/3/16"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 3
    assert main(["translate", "--run", str(run), "--checkpoint", "last", "--beam", "1", "--n-best", "3",
                 "3/3/16"]) == 2  # the command line's beam wins
    assert "--n-best 3 with --beam 1" in capsys.readouterr().err
