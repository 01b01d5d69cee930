"""The loss curve and attention heatmaps (matplotlib, no display needed)."""
from __future__ import annotations

import warnings
from pathlib import Path

from .run_folder import read_metrics

# Tried in order for each glyph (matplotlib >= 3.6 falls back per character), so CJK, Arabic or
# Devanagari text in an attention plot renders when any such font is installed.
FALLBACK_FONTS = ("DejaVu Sans", "Noto Sans CJK JP", "Noto Sans CJK SC", "Noto Sans", "Noto Sans Arabic",
                  "Noto Sans Devanagari", "WenQuanYi Zen Hei", "Droid Sans Fallback", "Arial Unicode MS")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_loss_curve(metrics_path: str | Path, out_path: str | Path) -> Path:
    """Training loss (and validation exact match, when logged) against step, from the JSONL log."""
    plt = _pyplot()
    records = read_metrics(Path(metrics_path))
    train = [(r["step"], r["loss"]) for r in records if "loss" in r]
    valid = [(r["step"], r["valid_exact_match"]) for r in records if "valid_exact_match" in r]
    fig, ax = plt.subplots(figsize=(7, 4))
    if train:
        ax.plot(*zip(*train), label="training loss", color="tab:blue")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy per token")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    if valid:
        right = ax.twinx()
        right.plot(*zip(*valid), "o-", color="tab:orange", label="valid exact match")
        right.set_ylabel("valid exact match")
        right.set_ylim(0, 1.02)
        right.legend(loc="center right")
    ax.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(out_path, dpi=110)
    plt.close(fig)
    return Path(out_path)


def plot_attention(items, out_path: str | Path) -> Path:
    """items: (source tokens, output tokens, weights [len(output), len(source)]) per sentence; one panel each."""
    plt = _pyplot()
    from matplotlib import font_manager

    installed = {font.name for font in font_manager.fontManager.ttflist}
    families = [name for name in FALLBACK_FONTS if name in installed] or ["sans-serif"]
    items = list(items)[:8]
    fig, axes = plt.subplots(len(items), 1, figsize=(max(4, 0.32 * max(len(s) for s, _, _ in items) + 2),
                                                       sum(0.32 * len(o) + 1.2 for _, o, _ in items)),
                             squeeze=False)
    for ax, (source, output, weights) in zip(axes[:, 0], items):
        ax.imshow(weights, cmap="viridis", aspect="auto", vmin=0, vmax=1)
        ax.set_xticks(range(len(source)), [repr(t)[1:-1] or " " for t in source], fontsize=8, family=families)
        ax.set_yticks(range(len(output)), output, fontsize=8, family=families)
        ax.set_xlabel("source")
        ax.set_ylabel("output")
    with warnings.catch_warnings():
        # A glyph no installed font has is drawn as a box; one warning line per glyph helps nobody.
        warnings.filterwarnings("ignore", message=r"Glyph \d+ .*missing from font", category=UserWarning)
        warnings.filterwarnings("ignore", message=r"findfont", category=UserWarning)
        fig.tight_layout()
        fig.savefig(out_path, dpi=110)
    plt.close(fig)
    return Path(out_path)


def plot_validation_bleu(runs: dict[str, str | Path], out_path: str | Path, anchor: dict | None = None) -> Path:
    """Validation BLEU against wall-clock minutes, one line per run folder (label -> folder); anchor: an optional
    {"label": str, "minutes": [...], "bleu": [...]} drawn dashed, for a reference recipe measured elsewhere."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
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
    fig.tight_layout()
    fig.savefig(out_path, dpi=110)
    plt.close(fig)
    return Path(out_path)
