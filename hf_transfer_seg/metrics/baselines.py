"""Trivial baselines of a segmentation result: the floor any model must beat on the same images.

A Dice means little alone. On ISBI-2012 the mask value 255 (cell interiors) covers 77 % of the pixels,
so predicting every pixel as that class scores Dice 0.873, more than a trained U-Net at 0.860. Every
result therefore stands beside three constant predictions on the *same* images (and field of view),
accumulated with the same rule as the model's Dice (:mod:`.accumulate`: counts summed over the set):

- ``all_background``: every pixel class 0. Dice 0 for every foreground class present.
- ``all_foreground``: for each foreground class ``c``, every pixel predicted ``c`` (for a binary target:
  every pixel foreground). Dice ``2 n_c / (n_c + N)``, IoU ``n_c / N``.
- ``majority_class``: every pixel the class with the most pixels in these images.

They need only the class counts, so they cost nothing beside the model's evaluation. HD95 and ASD are
not defined for a constant prediction (an empty mask has no boundary; a whole-image mask's only
boundary is the image border), so they are reported as ``None`` with that reason.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

HD95_NOTE = (
    "HD95 and ASD are not defined for these constant predictions (an empty mask has no boundary; a whole-image "
    "mask's boundary is the image border)"
)


def class_counts(references: Sequence[np.ndarray], num_classes: int, valid: Sequence[np.ndarray | None] | None = None) -> np.ndarray:
    """Pixels of each class over the set (inside the field of view when given)."""
    counts = np.zeros(num_classes, dtype=np.int64)
    for i, ref in enumerate(references):
        ref = np.asarray(ref)
        if valid is not None and valid[i] is not None:
            ref = ref[np.asarray(valid[i], bool)]
        counts += np.bincount(ref.reshape(-1).astype(np.int64), minlength=num_classes)[:num_classes]
    return counts


def _constant(counts: np.ndarray, predicted: int, names: list[str]) -> dict[str, Any]:
    """Dice/IoU of predicting class ``predicted`` everywhere, per foreground class and their mean."""
    total = int(counts.sum())
    per_class: dict[str, dict[str, float | None]] = {}
    for c in range(1, len(counts)):
        n = int(counts[c])
        if c == predicted:
            dice, iou = 2 * n / (n + total) if total else None, n / total if total else None
        else:
            dice = iou = 0.0 if n else None  # class absent from both: left out, as in the model's mean
        per_class[names[c]] = {"dice": dice, "iou": iou}
    return {"per_class": per_class, **_means(per_class)}


def _means(per_class: dict[str, dict[str, float | None]]) -> dict[str, float | None]:
    out = {}
    for key in ("dice", "iou"):
        values = [row[key] for row in per_class.values() if row[key] is not None]
        out[f"{key}_mean"] = float(np.mean(values)) if values else None
    return out


def trivial_baselines(
    references: Sequence[np.ndarray], num_classes: int, class_names: Sequence[str] | None = None,
    valid: Sequence[np.ndarray | None] | None = None,
) -> dict[str, Any]:
    """The three constant predictions on these images, the class fractions and the warnings they raise."""
    names = list(class_names or [f"class_{i}" for i in range(num_classes)])
    counts = class_counts(references, num_classes, valid)
    total = max(int(counts.sum()), 1)
    majority = int(np.argmax(counts))
    every_class = {}
    for c in range(1, num_classes):
        row = _constant(counts, c, names)["per_class"][names[c]]
        every_class[names[c]] = row
    out = {
        "class_fraction": {names[c]: float(counts[c] / total) for c in range(num_classes)},
        "all_background": {**_constant(counts, 0, names), "hd95": None},
        "all_foreground": {"per_class": every_class, **_means(every_class), "hd95": None,
                           "what": "each foreground class predicted at every pixel" if num_classes > 2 else "every pixel foreground"},
        "majority_class": {"class": names[majority], **_constant(counts, majority, names), "hd95": None},
        "hd95_note": HD95_NOTE,
    }
    out["warnings"] = majority_warnings(out, names)
    return out


def majority_warnings(baselines: dict[str, Any], names: list[str]) -> list[str]:
    """A warning for each foreground class that covers most of the pixels (its all-foreground Dice is high)."""
    warnings = []
    for name, fraction in baselines["class_fraction"].items():
        if name == names[0] or fraction <= 0.5:
            continue
        dice = baselines["all_foreground"]["per_class"][name]["dice"]
        warnings.append(
            f"foreground class {name!r} covers {fraction:.1%} of the scored pixels, so predicting it everywhere scores "
            f"Dice {dice:.3f}; if the structure of interest is the minority class, name it with --foreground-values "
            "(e.g. 0 for ISBI-2012 membranes)"
        )
    return warnings


BASELINES = ("all_background", "all_foreground", "majority_class")


def best_baseline(baselines: dict[str, Any] | None) -> tuple[str, float | None]:
    """(name, Dice) of the strongest constant prediction, from :func:`trivial_baselines`' output or from the flat
    ``{name: dice}`` a downstream entry stores; ``("none", None)`` when nothing is recorded."""
    options = []
    for key in BASELINES:
        value = (baselines or {}).get(key) if isinstance(baselines, dict) else None
        value = value.get("dice_mean") if isinstance(value, dict) else value
        if isinstance(value, (int, float)) and math.isfinite(float(value)):
            options.append((key, float(value)))
    return max(options, key=lambda kv: kv[1]) if options else ("none", None)


def compare(dice: float | None, baselines: dict[str, Any]) -> list[str]:
    """A warning when the model's Dice does not beat the strongest constant prediction."""
    name, floor = best_baseline(baselines)
    if dice is None or floor is None or not math.isfinite(float(dice)) or dice > floor:
        return []
    return [f"the model's Dice {dice:.4f} does not beat the trivial {name.replace('_', '-')} prediction ({floor:.4f}) on the same images"]


def attach(metrics: dict[str, Any], references: Sequence[np.ndarray], num_classes: int, class_names: Sequence[str] | None = None,
           valid: Sequence[np.ndarray | None] | None = None) -> dict[str, Any]:
    """``metrics`` with ``baselines`` and ``warnings`` (majority foreground, model at or below the floor) added."""
    baselines = trivial_baselines(references, num_classes, class_names, valid)
    metrics["baselines"] = baselines
    metrics["warnings"] = list(metrics.get("warnings") or []) + baselines["warnings"] + compare(metrics.get("dice_mean"), baselines)
    return metrics


def baselines_line(metrics: dict[str, Any]) -> str:
    """One line for terminals and cards: the model's Dice beside the three constant predictions."""
    b = metrics.get("baselines") or {}

    def f(v):
        return "n/a" if v is None else f"{v:.4f}"

    return (
        f"trivial baselines on the same images: all-background Dice {f((b.get('all_background') or {}).get('dice_mean'))}, "
        f"all-foreground {f((b.get('all_foreground') or {}).get('dice_mean'))}, majority class "
        f"({(b.get('majority_class') or {}).get('class')}) {f((b.get('majority_class') or {}).get('dice_mean'))}; "
        "HD95 undefined for constant predictions"
    )
