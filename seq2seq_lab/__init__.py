"""seq2seq-lab's application layer: the `seq2seq` command line over both backends, and its Python API:

    import seq2seq_lab

    translator = seq2seq_lab.load("runs/dates")
    translator.translate("march 3rd, 2016")
    translator.score("test")

(seq2seq_lab.translator documents it.)
"""

__all__ = ["DEFAULT_LENGTH_PENALTY", "Hypothesis", "Translation", "Translator", "load"]


def __getattr__(name: str):
    # Imported on first use, so that `import seq2seq_lab.vocab` and the like stay light.
    if name in __all__:
        from . import translator

        return getattr(translator, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
