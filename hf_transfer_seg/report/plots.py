"""Report plots (matplotlib, Agg): predictor vs epoch, Dice vs epoch, predictor vs Dice.

Drawn with matplotlib's object API (``Figure`` + the Agg canvas), not pyplot: no pyplot import, no figure
manager, and fixed margins instead of ``tight_layout`` (which renders every figure once more); beyond the
series a legend can name, every series' curve goes into one ``LineCollection`` and one scatter (the same
picture, half the drawing cost). On the authors' 36 series that cuts the plots' CPU time to about a third
(``benchmarks/report_scale.py``); ``report --no-plots`` skips them and matplotlib's import altogether.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

MAX_SERIES = 50  # series drawn in a plot (the first ones by name)
MAX_LABELS = 200  # points labelled with their epoch/model
LEGEND_SERIES = 12  # up to this many series: one artist each, a legend and seed error bars; beyond, one collection
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
    ax.autoscale_view()  # after the scale: a collection's limits are otherwise fixed in the linear scale


def _save(fig, ax, df: pd.DataFrame, path: Path) -> Path:
    """Legend (when the series are few enough to read), fixed margins, PNG at ``path``."""
    if df["series"].nunique() <= LEGEND_SERIES:
        ax.legend(fontsize=7)
    fig.subplots_adjust(**MARGINS)
    fig.savefig(path, dpi=110)
    return path


def _curves(ax, df: pd.DataFrame, y: str) -> None:
    """``y`` along epochs, one line with markers per series: one artist per series where a legend names
    them, else one LineCollection and one scatter in the default colour cycle."""
    groups = [(str(n), g[["epoch", y]].dropna().sort_values("epoch")) for n, g in df.groupby("series")]
    if len(groups) <= LEGEND_SERIES:
        for name, g in groups:
            ax.plot(g["epoch"], g[y], marker="o", label=name)
        return
    from matplotlib.collections import LineCollection

    lines = [g.to_numpy(float) for _, g in groups]
    colors = [f"C{i % 10}" for i in range(len(lines))]
    ax.add_collection(LineCollection(lines, colors=colors))
    points = np.concatenate(lines)
    ax.scatter(points[:, 0], points[:, 1], c=np.repeat(colors, [len(v) for v in lines]), s=20, zorder=3)


def plot_predictor_vs_epoch(df: pd.DataFrame, predictor: str, path: Path) -> Path:
    fig, ax = _figure((6, 4))
    _curves(ax, df, predictor)
    _epoch_axis(ax, df)
    ax.set_ylabel(predictor)
    ax.set_title(f"{predictor} along pretraining")
    return _save(fig, ax, df, path)


def plot_dice_vs_epoch(df: pd.DataFrame, path: Path) -> Path:
    fig, ax = _figure((6, 4))
    if "dice_std" in df and df["dice_std"].notna().any() and df["series"].nunique() <= LEGEND_SERIES:
        for name, group in df.groupby("series"):
            g = group.dropna(subset=["dice"]).sort_values("epoch")
            ax.errorbar(g["epoch"], g["dice"], yerr=g["dice_std"], marker="o", capsize=3, label=str(name))
    else:
        _curves(ax, df, "dice")
    _epoch_axis(ax, df)
    ax.set_ylabel("Dice (validation)")
    ax.set_title("Downstream Dice along pretraining")
    return _save(fig, ax, df, path)


def plot_predictor_vs_dice(df: pd.DataFrame, predictor: str, path: Path, *, spearman: float | None = None, annotate: str = "epoch") -> Path:
    fig, ax = _figure((5, 4))
    few = df[["dice", predictor]].dropna().shape[0] <= MAX_LABELS  # labels on every point only where readable
    if not few and df["series"].nunique() > LEGEND_SERIES:  # one scatter, coloured by series
        g = df[["series", "dice", predictor]].dropna(subset=["dice", predictor])
        codes = pd.factorize(g["series"], sort=True)[0]
        ax.scatter(g[predictor], g["dice"], c=[f"C{i % 10}" for i in codes], s=2)
    else:
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
