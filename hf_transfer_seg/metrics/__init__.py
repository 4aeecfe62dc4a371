"""Segmentation metrics: the accumulator (:mod:`.accumulate`) and the ``evaluate`` metric module shipped with
the package (``metrics/segmentation``), loaded offline by path with :func:`load_metric`.

The accumulator's names are imported on first use (PEP 562): :mod:`.baselines` needs no torch, and the report
reads the trivial floor from cards through it without importing torch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

SEGMENTATION = Path(__file__).resolve().parent / "segmentation"

__all__ = [
    "SEGMENTATION", "SegmentationMetrics", "average_surface_distance", "compute_segmentation", "confusion_matrix", "hd95", "load_metric",
    "surface_distances",
]
_ACCUMULATE = {"SegmentationMetrics", "average_surface_distance", "compute_segmentation", "confusion_matrix", "hd95", "surface_distances"}


def __getattr__(name: str) -> Any:
    if name in _ACCUMULATE:
        from hf_transfer_seg.metrics import accumulate

        return getattr(accumulate, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def load_metric(name: str = "segmentation", **kwargs):
    """``evaluate.load`` of a metric module of this package, from its path (no Hub access); in a command-line
    process evaluate is imported without its evaluator's libraries (``_lazy.import_lean``)."""
    from hf_transfer_seg._lazy import EVALUATE_UNUSED, import_lean

    evaluate = import_lean("evaluate", EVALUATE_UNUSED)

    return evaluate.load(str(Path(__file__).resolve().parent / name), **kwargs)
