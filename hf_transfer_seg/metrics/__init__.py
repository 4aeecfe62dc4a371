"""``evaluate`` metric modules shipped with the package (loaded offline by path, see :func:`load_metric`)."""

from __future__ import annotations

from pathlib import Path

SEGMENTATION = Path(__file__).resolve().parent / "segmentation"


def load_metric(name: str = "segmentation", **kwargs):
    """``evaluate.load`` of a metric module of this package, from its path (no Hub access)."""
    import evaluate

    return evaluate.load(str(Path(__file__).resolve().parent / name), **kwargs)
