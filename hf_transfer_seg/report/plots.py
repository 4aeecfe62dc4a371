"""Report plots (matplotlib, Agg): predictor vs epoch, Dice vs epoch, predictor vs Dice."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

MAX_SERIES = 50  # series drawn in a plot (the first ones by name)
MAX_LABELS = 200  # points labelled with their epoch/model


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _epoch_axis(ax, df: pd.DataFrame) -> None:
    if df["epoch"].max() > 20 * max(df["epoch"][df["epoch"] > 0].min() if (df["epoch"] > 0).any() else 1, 1):
        ax.set_xscale("symlog", linthresh=1.0)  # checkpoint schedules are roughly geometric, and start at 0
    ax.set_xlabel("pretraining epoch")
    ax.grid(alpha=0.3)


def _save(plt, fig, ax, df: pd.DataFrame, path: Path) -> Path:
    """Legend (when the series are few enough to read), tight layout, PNG at ``path``."""
    if df["series"].nunique() <= 12:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_predictor_vs_epoch(df: pd.DataFrame, predictor: str, path: Path) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, group in df.groupby("series"):
        g = group[["epoch", predictor]].dropna().sort_values("epoch")
        ax.plot(g["epoch"], g[predictor], marker="o", label=str(name))
    _epoch_axis(ax, df)
    ax.set_ylabel(predictor)
    ax.set_title(f"{predictor} along pretraining")
    return _save(plt, fig, ax, df, path)


def plot_dice_vs_epoch(df: pd.DataFrame, path: Path) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, group in df.groupby("series"):
        g = group.dropna(subset=["dice"]).sort_values("epoch")
        err = g["dice_std"] if "dice_std" in g and g["dice_std"].notna().any() else None
        ax.errorbar(g["epoch"], g["dice"], yerr=err, marker="o", capsize=3, label=str(name))
    _epoch_axis(ax, df)
    ax.set_ylabel("Dice (validation)")
    ax.set_title("Downstream Dice along pretraining")
    return _save(plt, fig, ax, df, path)


def plot_predictor_vs_dice(df: pd.DataFrame, predictor: str, path: Path, *, spearman: float | None = None, annotate: str = "epoch") -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 4))
    few = df[["dice", predictor]].dropna().shape[0] <= MAX_LABELS  # labels on every point only where readable
    for name, group in df.groupby("series"):
        cols = ["dice", predictor] + ([annotate] if annotate in group else [])
        g = group[cols].dropna(subset=["dice", predictor])
        ax.scatter(g[predictor], g["dice"], label=str(name), s=12 if few else 2)
        if few and annotate in g:
            for x, y, label in zip(g[predictor], g["dice"], g[annotate]):
                ax.annotate(f"{label:g}" if isinstance(label, (int, float)) else str(label), (x, y), fontsize=6, alpha=0.7)
    ax.set_xlabel(predictor)
    ax.set_ylabel("Dice (validation)")
    title = f"{predictor} vs Dice"
    if spearman is not None:
        title += f" (mean Spearman {spearman:+.2f})"
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    return _save(plt, fig, ax, df, path)


def make_plots(df: pd.DataFrame, predictor: str | None, output: Path, *, spearman: float | None = None, epochs: bool = True) -> dict[str, str]:
    """The three report plots in ``output`` (only predictor vs Dice for a model zoo: ``epochs=False``);
    returns name -> file name. A table with more than ``MAX_SERIES`` series plots the first of them."""
    output.mkdir(parents=True, exist_ok=True)
    names = sorted(df["series"].unique())
    if len(names) > MAX_SERIES:
        df = df[df["series"].isin(names[:MAX_SERIES])]
    if not epochs:
        return {"score_vs_dice": plot_predictor_vs_dice(df, predictor, output / "score_vs_dice.png", spearman=spearman,
                                                        annotate="model").name} if predictor else {}
    plots = {"dice_vs_epoch": plot_dice_vs_epoch(df, output / "dice_vs_epoch.png").name}
    if predictor:
        plots["score_vs_epoch"] = plot_predictor_vs_epoch(df, predictor, output / "score_vs_epoch.png").name
        plots["score_vs_dice"] = plot_predictor_vs_dice(df, predictor, output / "score_vs_dice.png", spearman=spearman).name
    return plots
