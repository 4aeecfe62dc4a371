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
