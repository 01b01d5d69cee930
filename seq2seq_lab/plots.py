"""The loss curve and attention heatmaps (matplotlib's Agg renderer, no display needed)."""
from __future__ import annotations

import functools
import os
import warnings
from pathlib import Path

from .run_folder import read_metrics

# Tried in order for each glyph (matplotlib >= 3.6 falls back per character), so CJK, Arabic or
# Devanagari text in an attention plot renders when any such font is installed.
FALLBACK_FONTS = ("DejaVu Sans", "Noto Sans CJK JP", "Noto Sans CJK SC", "Noto Sans", "Noto Sans Arabic",
                  "Noto Sans Devanagari", "WenQuanYi Zen Hei", "Droid Sans Fallback", "Arial Unicode MS")

# Marks with no ink of their own or missing from common fonts, and what to draw instead (the first that a font
# in use has): a space, sentencepiece's word-start mark, the word tokenizer's joiner (vocab.JOINER).
STAND_INS = {" ": ("\u2423", "\u00b7", "_"), "\u2581": ("\u2581", "_"), "\uffed": ("\uffed", "\u25aa", "+")}


def check_output_file(path: str | Path, argument: str) -> Path:
    """path as a file that can be written: not a folder, in an existing writable folder. Checked before long work,
    so that a typo costs nothing; a ValueError names the argument."""
    text = str(path)
    path = Path(path).expanduser()
    if text.endswith(os.sep) or path.is_dir():
        raise ValueError(f"{argument}: expected a file, got the folder {text}")
    folder = path.absolute().parent
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"{argument}: expected a file in a writable folder, got {text} "
                         f"({folder} {'is not writable' if folder.is_dir() else 'does not exist'})")
    if path.exists() and not os.access(path, os.W_OK):
        raise ValueError(f"{argument}: expected a writable file, got {text} (permission denied)")
    return path


@functools.cache
def _writable_formats() -> tuple[str, ...]:
    from matplotlib.figure import Figure

    return tuple(sorted(Figure().canvas.get_supported_filetypes()))


def check_plot_path(path: str | Path, argument: str = "attention_plot") -> Path:
    """The file a plot will be written to: path, with '.png' added when it has no extension (as matplotlib
    does when saving). Refuses what matplotlib cannot write or the file system will not take, before any work."""
    path = check_output_file(path, argument)
    extension = os.path.splitext(path.name)[1]
    if not extension:
        return check_output_file(path.with_name(f"{path.name}.png"), argument)
    if extension[1:].lower() not in _writable_formats():
        raise ValueError(f"{argument}: expected a file name ending in one of "
                         f"{', '.join('.' + f for f in _writable_formats())}, got {path}")
    return path


def _figure(**options):
    from matplotlib.figure import Figure

    # constrained layout keeps the colorbar, the outside legend and long tick labels inside the canvas
    return Figure(layout="constrained", **options)


def loss_curve_figure(records: list[dict], title: str):
    """Training loss (and validation exact match, when logged) against step; one legend, below the axes."""
    train = [(r["step"], r["loss"]) for r in records if "loss" in r]
    valid = [(r["step"], r["valid_exact_match"]) for r in records if "valid_exact_match" in r]
    fig = _figure(figsize=(7, 4.4))
    ax = fig.subplots()
    if train:
        ax.plot(*zip(*train), label="training loss", color="tab:blue")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy per token")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.set_title(title)
    if valid:
        right = ax.twinx()
        right.plot(*zip(*valid), "o-", color="tab:orange", label="valid exact match")
        right.set_ylabel("valid exact match")
        right.set_ylim(0, 1.02)
    # one legend for both axes, outside them, so that it covers no line
    handles = [line for axes in fig.axes for line in axes.get_lines() if not line.get_label().startswith("_")]
    if handles:
        fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), frameon=False)
    return fig


def plot_loss_curve(metrics_path: str | Path, out_path: str | Path) -> Path:
    """The loss curve of the run whose JSONL log is metrics_path, titled with the run folder's name."""
    out_path = check_plot_path(out_path, "loss_curve")
    metrics_path = Path(metrics_path)
    fig = loss_curve_figure(read_metrics(metrics_path), f"run {metrics_path.absolute().parent.name}")
    fig.savefig(out_path, dpi=110)
    return out_path


@functools.cache
def _font_families() -> tuple[tuple[str, ...], frozenset[int]]:
    """The installed FALLBACK_FONTS, and the code points that at least one of them draws."""
    from matplotlib import font_manager
    from matplotlib.ft2font import FT2Font

    installed = {font.name for font in font_manager.fontManager.ttflist}
    families = tuple(name for name in FALLBACK_FONTS if name in installed)
    if not families:  # whatever matplotlib falls back to; its glyphs are the ones to check
        families = (font_manager.FontProperties(family="sans-serif").get_name(),)
    covered = set()
    for name in families:
        file = font_manager.findfont(font_manager.FontProperties(family=name), fallback_to_default=False)
        covered.update(FT2Font(file).get_charmap())
    return families, frozenset(covered)


def token_label(token: str, covered: frozenset[int]) -> str:
    """token as a tick label that shows every character: a space as a visible mark, a character no font in use
    has as its stand-in or its escape (\\u65e5), never an empty box; an invisible one (tab, no-break space) as its
    escape."""
    if not token:
        return "''"
    shown = []
    for ch in token:
        stand_in = next((s for s in STAND_INS.get(ch, ()) if ord(s) in covered), None)
        if stand_in:
            shown.append(stand_in)
        elif ch.isprintable() and ord(ch) in covered:
            shown.append(ch)
        else:
            shown.append(ch.encode("unicode_escape").decode("ascii"))
    return "".join(shown)


def attention_figure(items):
    """items: (source tokens, output tokens, weights [len(output), len(source)]) per sentence; one panel each
    (the first 8), one colour scale."""
    families, covered = _font_families()
    panels = [([token_label(t, covered) for t in source], [token_label(t, covered) for t in output], weights)
              for source, output, weights in list(items)[:8]]
    # source labels longer than 3 characters would overlap side by side: such a panel draws them vertically
    rotated = [max(len(label) for label in source) > 3 for source, _, _ in panels]
    fig = _figure(figsize=(max(4.0, 0.32 * max(len(s) for s, _, _ in panels) + 3),
                           sum(0.32 * len(o) + 1.2 + 0.07 * max(map(len, s)) * r
                               for (s, o, _), r in zip(panels, rotated))))
    axes = fig.subplots(len(panels), 1, squeeze=False)[:, 0]
    for ax, (source, output, weights), vertical in zip(axes, panels, rotated):
        image = ax.imshow(weights, cmap="viridis", aspect="auto", vmin=0, vmax=1)
        ax.set_xticks(range(len(source)), source, fontsize=8, family=list(families), rotation=90 if vertical else 0)
        ax.set_yticks(range(len(output)), output, fontsize=8, family=list(families))
        ax.set_xlabel("source")
        ax.set_ylabel("output")
    fig.colorbar(image, ax=list(axes), label="attention weight")
    return fig


def plot_attention(items, out_path: str | Path) -> Path:
    """The attention heatmaps of items (see attention_figure) in out_path; returns the file written."""
    out_path = check_plot_path(out_path)
    fig = attention_figure(items)
    with warnings.catch_warnings():
        # token_label leaves no glyph without a font; a findfont line for an uninstalled fallback helps nobody
        warnings.filterwarnings("ignore", message=r"findfont", category=UserWarning)
        fig.savefig(out_path, dpi=110)
    return out_path


def plot_validation_bleu(runs: dict[str, str | Path], out_path: str | Path, anchor: dict | None = None) -> Path:
    """Validation BLEU against wall-clock minutes, one line per run folder (label -> folder); anchor: an optional
    {"label": str, "minutes": [...], "bleu": [...]} drawn dashed, for a reference recipe measured elsewhere."""
    out_path = check_plot_path(out_path, "out_path")
    fig = _figure(figsize=(7, 4.5))
    ax = fig.subplots()
    for label, folder in runs.items():
        records = [r for r in read_metrics(Path(folder) / "metrics.jsonl") if "valid_bleu" in r and "elapsed_s" in r]
        if not records:
            raise ValueError(f"runs: expected validation records with valid_bleu in {folder}/metrics.jsonl, got none")
        ax.plot([r["elapsed_s"] / 60 for r in records], [r["valid_bleu"] for r in records], "o-", label=label,
                markersize=3)
    if anchor:
        ax.plot(anchor["minutes"], anchor["bleu"], "s--", color="gray", label=anchor["label"])
    ax.set(xlabel="wall-clock minutes (training and validation)", ylabel="validation BLEU (greedy)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.savefig(out_path, dpi=110)
    return out_path
