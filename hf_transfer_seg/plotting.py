"""Figures for cards (score vs epoch, Dice vs epoch, model rankings): one way to make them and turn them into PNG.

Matplotlib's object API with the Agg canvas, not ``pyplot``: no global figure state, so cards can be drawn from
worker threads (the pretraining publisher, concurrent scorers) and no GUI backend is ever touched.
"""

from __future__ import annotations

import io


def new_figure(figsize: tuple[float, float], dpi: int = 100):
    """(figure, axes) on an Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=dpi)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot(1, 1, 1)


def png_bytes(fig, dpi: int | None = None) -> bytes:
    """The figure laid out tightly, as PNG bytes."""
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi or fig.dpi)
    return buffer.getvalue()


def paired_difference_axes(ax, labels: list, rows: list[dict], *, best: str, horizontal: bool = False) -> None:
    """Draw each row's paired difference to the best (``{"mean", "ci_low", "ci_high"}`` or None) with its interval,
    a zero line and the best at 0: the picture the tie verdict is read from (never unpaired intervals side by side).

    ``labels``: the position of each row (epochs, or model names when ``horizontal``)."""
    pos = list(range(len(rows))) if horizontal else [float(x) for x in labels]
    for p, row, label in zip(pos, rows, labels):
        d = row.get("difference")
        if row.get("is_best"):
            xy = (0.0, p) if horizontal else (p, 0.0)
            ax.plot(*xy, marker="*", markersize=14, color="tab:red", linestyle="none")
            continue
        if not d:
            continue
        err = [[max(0.0, d["mean"] - d["ci_low"])], [max(0.0, d["ci_high"] - d["mean"])]]
        color = "tab:orange" if row.get("tied") else "tab:blue"
        if horizontal:
            ax.errorbar(d["mean"], p, xerr=err, fmt="o", capsize=3, color=color)
        else:
            ax.errorbar(p, d["mean"], yerr=err, fmt="o", capsize=3, color=color)
    (ax.axvline if horizontal else ax.axhline)(0.0, color="tab:red", linewidth=1, linestyle="--")
    if horizontal:
        ax.set_yticks(pos, [str(x) for x in labels], fontsize=8)
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], marker="*", color="tab:red", linestyle="none", markersize=10, label=f"best: {best}"),
               Line2D([], [], marker="o", color="tab:orange", linestyle="none", label="tied (interval reaches 0)"),
               Line2D([], [], marker="o", color="tab:blue", linestyle="none", label="worse (interval above 0)")]
    ax.legend(handles=handles, loc="best", fontsize=7)
    ax.grid(alpha=0.3)
