"""Report plots (matplotlib, Agg): predictor vs epoch, Dice vs epoch, predictor vs Dice.

Drawn with matplotlib's object API (``Figure`` + the Agg canvas), not pyplot: no pyplot import, no figure
manager, and fixed margins instead of ``tight_layout`` (which renders every figure once more). That halves
the plots' CPU time on the authors' 36 series (``benchmarks/report_scale.py --cpu``); ``report --no-plots``
skips them and matplotlib's import altogether.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

MAX_SERIES = 50  # series drawn in a plot (the first ones by name)
MAX_LABELS = 200  # points labelled with their epoch/model
MAX_ERRORBAR_SERIES = 12  # seed error bars where they can be read (and a third of the plots' cost on 36 series)
MARGINS = {"left": 0.16, "right": 0.97, "bottom": 0.13, "top": 0.9}  # fixed: room for tick labels and a title


def _figure(figsize: tuple[float, float]):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def _epoch_axis(ax, df: pd.DataFrame) -> None:
    if df["epoch"].max() > 20 * max(df["epoch"][df["epoch"] > 0].min() if (df["epoch"] > 0).any() else 1, 1):
        ax.set_xscale("symlog", linthresh=1.0)  # checkpoint schedules are roughly geometric, and start at 0
    ax.set_xlabel("pretraining epoch")
    ax.grid(alpha=0.3)


def _save(fig, ax, df: pd.DataFrame, path: Path) -> Path:
    """Legend (when the series are few enough to read), fixed margins, PNG at ``path``."""
    if df["series"].nunique() <= 12:
        ax.legend(fontsize=7)
    fig.subplots_adjust(**MARGINS)
    fig.savefig(path, dpi=110)
    return path


def plot_predictor_vs_epoch(df: pd.DataFrame, predictor: str, path: Path) -> Path:
    fig, ax = _figure((6, 4))
    for name, group in df.groupby("series"):
        g = group[["epoch", predictor]].dropna().sort_values("epoch")
        ax.plot(g["epoch"], g[predictor], marker="o", label=str(name))
    _epoch_axis(ax, df)
    ax.set_ylabel(predictor)
    ax.set_title(f"{predictor} along pretraining")
    return _save(fig, ax, df, path)


def plot_dice_vs_epoch(df: pd.DataFrame, path: Path) -> Path:
    fig, ax = _figure((6, 4))
    bars = "dice_std" in df and df["dice_std"].notna().any() and df["series"].nunique() <= MAX_ERRORBAR_SERIES
    for name, group in df.groupby("series"):
        g = group.dropna(subset=["dice"]).sort_values("epoch")
        if bars:
            ax.errorbar(g["epoch"], g["dice"], yerr=g["dice_std"], marker="o", capsize=3, label=str(name))
        else:
            ax.plot(g["epoch"], g["dice"], marker="o", label=str(name))
    _epoch_axis(ax, df)
    ax.set_ylabel("Dice (validation)")
    ax.set_title("Downstream Dice along pretraining")
    return _save(fig, ax, df, path)


def plot_predictor_vs_dice(df: pd.DataFrame, predictor: str, path: Path, *, spearman: float | None = None, annotate: str = "epoch") -> Path:
    fig, ax = _figure((5, 4))
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
    return _save(fig, ax, df, path)


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
