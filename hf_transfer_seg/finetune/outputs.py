"""What a fine-tune leaves in ``--output-dir``: the model, ``metrics.json`` and the validation predictions with
their per-case metrics in one ``validation/summary.json`` (the layout of nnU-Net's ``summary.json``:
``metric_per_case``, ``mean`` per class, ``foreground_mean``; here also the trivial ``baselines``).

Per-case values are each image's own; ``mean`` and ``foreground_mean`` are the set's values accumulated over every
pixel (the paper's rule, :mod:`hf_transfer_seg.metrics.accumulate`), not the mean of the per-case values.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hf_transfer_seg.data.mask_files import safe_stem, write_png

_NAMES = {"dice": "Dice", "iou": "IoU", "hd95": "HD95", "asd": "ASD", "n_ref": "n_ref", "n_pred": "n_pred"}


def _renamed(row: dict[str, Any]) -> dict[str, Any]:
    return {_NAMES[k]: v for k, v in row.items() if k in _NAMES}


def validation_summary(result, prediction_files: list[str] | None = None) -> dict[str, Any]:
    """nnU-Net-style summary of the last validation: per case, per class, the foreground mean and the baselines."""
    m = result.metrics
    cases = []
    for i, case in enumerate(result.per_case):
        entry = {k: v for k, v in case.items() if k != "metrics"}
        if prediction_files:
            entry["prediction_file"] = prediction_files[i]
        entry["metrics"] = {name: _renamed(row) for name, row in case["metrics"].items()}
        cases.append(entry)
    return {
        "foreground_mean": {"Dice": m.get("dice_mean"), "IoU": m.get("iou_mean"), "HD95": m.get("hd95_mean"), "ASD": m.get("asd_mean")},
        "mean": {name: _renamed(row) for name, row in (m.get("per_class") or {}).items()},
        "metric_per_case": cases,
        "baselines": m.get("baselines"),
        "warnings": m.get("warnings") or [],
        "distance_unit": m.get("distance_unit") or m.get("hd95_unit"),
        "class_names": list(result.target.get("class_names") or []),
        "notes": "mean/foreground_mean: counts summed over every validation pixel, then one value per class (the "
                 "paper's rule); metric_per_case: each image's own values. HD95/ASD only where both masks are non-empty. "
                 "Predictions are at the evaluated size (after --resize-longest).",
    }


def write_outputs(output_dir: str | Path, result, summary: dict[str, Any]) -> Path:
    """Model, ``metrics.json``, ``validation/predictions/*.png`` and ``validation/summary.json`` under ``output_dir``."""
    from hf_transfer_seg.models.segmentation import save_segmentation_model

    out = Path(output_dir)
    save_segmentation_model(result.model, out / "model")
    folder = out / "validation" / "predictions"
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for case, pred in zip(result.per_case, result.predictions):
        name = f"{safe_stem(case['image'])}.png"
        write_png(pred, folder / name)
        files.append(f"predictions/{name}")
    (out / "validation" / "summary.json").write_text(json.dumps(validation_summary(result, files or None), indent=2, default=str))
    (out / "metrics.json").write_text(json.dumps(summary, indent=2, default=str))
    return out
