"""Segmentation metrics on a validation set: MONAI's definitions, the paper's accumulation rules.

Per-image values are computed by ``monai.metrics`` itself (imported on first use: it takes seconds), so
they are MONAI's numbers exactly, on 2-D images and 3-D volumes, with anisotropic spacing:

- Dice and IoU of one image: ``monai.metrics.compute_dice`` / ``compute_iou`` (2TP / (2TP + FP + FN),
  TP / (TP + FP + FN)). **Accumulation (the paper's rule, "Downstream recipe"):** true/false positives and
  negatives are summed over every pixel of every image of the set, then Dice and IoU are taken once per
  class. This equals ``compute_dice`` on the whole set treated as one volume, not MONAI's ``DiceMetric``
  default (the mean of per-image values). ``dice_mean``/``iou_mean`` average the foreground classes
  (background left out; for a binary target they are the foreground Dice/IoU).
- HD95 of one image and class: ``monai.metrics.compute_hausdorff_distance(percentile=95, spacing=...)``:
  the 95th percentile of the distances from the prediction's edge to the reference's edge, the same the
  other way, and the larger of the two (MONAI's symmetric percentile Hausdorff distance; edges by binary
  erosion, euclidean distances in mm when a spacing is given). **Accumulation (the paper's rule):** per
  image, averaged over the images where both the prediction and the reference of that class are
  non-empty (``hd95_images`` counts them); in mm when every image has a spacing (``hd95_mm``), else in
  pixels (``hd95_px``).
- Average surface distance (ASD) of one image and class:
  ``monai.metrics.compute_average_surface_distance(symmetric=True, spacing=...)``, the mean over both
  edges of the distance to the other edge; averaged over images like HD95 (``asd_mean``, same unit).
- Per-volume Dice (``dice_per_volume``, ``dice_volume_mean``) for slices of volumes: each case's own
  accumulated Dice, beside the Dice accumulated over every slice of the set.

The fine-tuning loop computes them through the ``evaluate`` metric module shipped in
``hf_transfer_seg/metrics/segmentation`` (loaded offline by path), which runs this class.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Sequence

import numpy as np
import torch


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int, valid: torch.Tensor | None = None) -> torch.Tensor:
    """``[K, K]`` counts, rows = reference class, columns = predicted class."""
    pred = pred.reshape(-1).long()
    target = target.reshape(-1).long()
    if valid is not None:
        keep = valid.reshape(-1).bool()
        pred, target = pred[keep], target[keep]
    return torch.bincount(target * num_classes + pred, minlength=num_classes**2).reshape(num_classes, num_classes)


def _batch(masks: Sequence[np.ndarray]) -> torch.Tensor:
    """Boolean masks of one image as MONAI's ``[B=1, C, *spatial]`` float batch."""
    return torch.as_tensor(np.stack([np.asarray(m, bool) for m in masks])[None], dtype=torch.float32)


def surface_distances(pred_masks: Sequence[np.ndarray], target_masks: Sequence[np.ndarray],
                      spacing: Sequence[float] | None = None) -> tuple[list[float], list[float]]:
    """HD95 and symmetric ASD of each pair of boolean masks (one image, one pair per class), by ``monai.metrics``.

    A pair where either mask is empty gives NaN for both (MONAI gives NaN or inf there, with a warning;
    the paper leaves such images out of the average).
    """
    pairs = [(np.asarray(p, bool), np.asarray(t, bool)) for p, t in zip(pred_masks, target_masks)]
    both = [i for i, (p, t) in enumerate(pairs) if p.any() and t.any()]
    hd, asd = [math.nan] * len(pairs), [math.nan] * len(pairs)
    if not both:
        return hd, asd
    from hf_transfer_seg._lazy import MONAI_UNUSED, import_lean

    monai_metrics = import_lean("monai.metrics", MONAI_UNUSED)
    y_pred, y = _batch([pairs[i][0] for i in both]), _batch([pairs[i][1] for i in both])
    spacing = None if spacing is None else [float(s) for s in spacing]
    with warnings.catch_warnings():  # no empty masks reach MONAI; keep its other warnings out of the log too
        warnings.simplefilter("ignore")
        h = monai_metrics.compute_hausdorff_distance(y_pred, y, include_background=True, percentile=95, spacing=spacing)
        a = monai_metrics.compute_average_surface_distance(y_pred, y, include_background=True, symmetric=True, spacing=spacing)
    for j, i in enumerate(both):
        hd[i], asd[i] = float(h[0, j]), float(a[0, j])
    return hd, asd


def hd95(pred: np.ndarray, target: np.ndarray, spacing: Sequence[float] | None = None) -> float:
    """MONAI's HD95 of two boolean masks (2-D or 3-D; ``spacing`` per axis, in mm), NaN if either is empty."""
    return surface_distances([pred], [target], spacing)[0][0]


def average_surface_distance(pred: np.ndarray, target: np.ndarray, spacing: Sequence[float] | None = None) -> float:
    """MONAI's symmetric average surface distance of two boolean masks, NaN if either is empty."""
    return surface_distances([pred], [target], spacing)[1][0]


class SegmentationMetrics:
    """Accumulates a validation set image by image; :meth:`compute` returns the summary."""

    def __init__(self, num_classes: int, class_names: list[str] | None = None):
        self.num_classes = num_classes
        self.class_names = list(class_names or [f"class_{i}" for i in range(num_classes)])
        self.confusion = torch.zeros(num_classes, num_classes, dtype=torch.long)
        self.hd95: list[list[float]] = [[] for _ in range(num_classes)]
        self.asd: list[list[float]] = [[] for _ in range(num_classes)]
        self.num_images = 0
        self.spaced_images = 0  # images with a known pixel spacing (HD95 in mm when every image has one)
        self.volumes: dict[str, torch.Tensor] = {}  # case -> its own confusion matrix (per-volume Dice)
        self.per_image: list[dict[str, dict[str, Any]]] = []  # each image's own values per foreground class

    def update(
        self, pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None,
        spacing: Sequence[float] | None = None, case: str | None = None,
    ) -> None:
        """Add one image: ``pred`` and ``target`` are ``[H, W]`` (or ``[D, H, W]``) class maps, ``valid`` an optional
        field of view, ``spacing`` the pixel size per axis in mm when known, ``case`` the volume a slice belongs to."""
        if pred.shape != target.shape:
            raise ValueError(f"prediction {tuple(pred.shape)} and reference {tuple(target.shape)} differ in size")
        if spacing is not None and len(spacing) != pred.ndim:
            raise ValueError(f"spacing {tuple(spacing)} has {len(spacing)} values for a {pred.ndim}-D image; give one per axis")
        pred, target = pred.cpu(), target.cpu()
        valid = valid.cpu().bool() if valid is not None else None
        cm = confusion_matrix(pred, target, self.num_classes, valid)
        self.confusion += cm
        if case is not None:
            self.volumes[case] = self.volumes.get(case, torch.zeros_like(cm)) + cm
        p, t = pred.numpy(), target.numpy()
        v = valid.numpy() if valid is not None else np.ones(p.shape, bool)
        if spacing is not None:
            self.spaced_images += 1
        classes = range(1, self.num_classes)
        hd, asd = surface_distances([(p == c) & v for c in classes], [(t == c) & v for c in classes], spacing)
        for c, h, a in zip(classes, hd, asd):
            if not math.isnan(h):
                self.hd95[c].append(h)
                self.asd[c].append(a)
        own = _scores_of(cm)
        self.per_image.append({
            self.class_names[c]: {**own[c], "hd95": None if math.isnan(h) else h, "asd": None if math.isnan(a) else a,
                                  "n_ref": int(cm[c].sum()), "n_pred": int(cm[:, c].sum())}
            for c, h, a in zip(classes, hd, asd)
        })
        self.num_images += 1

    def compute(self) -> dict[str, Any]:
        cm = self.confusion.double()
        tp = cm.diag()
        fp = cm.sum(0) - tp
        fn = cm.sum(1) - tp
        dice = torch.where(2 * tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn).clamp_min(1), torch.nan)
        iou = torch.where(tp + fp + fn > 0, tp / (tp + fp + fn).clamp_min(1), torch.nan)
        fg = range(1, self.num_classes)
        per_class = {}
        for c in range(self.num_classes):
            per_class[self.class_names[c]] = {
                "dice": _num(dice[c]),
                "iou": _num(iou[c]),
                "hd95": _num(np.mean(self.hd95[c])) if self.hd95[c] else None,
                "hd95_images": len(self.hd95[c]),
                "asd": _num(np.mean(self.asd[c])) if self.asd[c] else None,
            }
        fg_dice = [float(dice[c]) for c in fg if not math.isnan(float(dice[c]))]
        fg_iou = [float(iou[c]) for c in fg if not math.isnan(float(iou[c]))]
        fg_hd = [float(np.mean(self.hd95[c])) for c in fg if self.hd95[c]]
        fg_asd = [float(np.mean(self.asd[c])) for c in fg if self.asd[c]]
        if 0 < self.spaced_images < self.num_images:
            raise ValueError("some images have a pixel spacing and some do not; HD95 would mix mm and pixels")
        unit = "mm" if self.num_images and self.spaced_images == self.num_images else "px"
        hd95_mean = float(np.mean(fg_hd)) if fg_hd else None
        out_volumes = {}
        if self.volumes:
            per_volume = {case: _dice_of(cm) for case, cm in sorted(self.volumes.items())}
            means = [float(np.mean(d)) for d in per_volume.values() if d]
            out_volumes = {
                "dice_per_volume": {case: (float(np.mean(d)) if d else None) for case, d in per_volume.items()},
                "dice_volume_mean": float(np.mean(means)) if means else None,
                "num_volumes": len(per_volume),
            }
        return {
            "dice_mean": float(np.mean(fg_dice)) if fg_dice else None,
            "iou_mean": float(np.mean(fg_iou)) if fg_iou else None,
            "hd95_mean": hd95_mean,
            "hd95_unit": unit,
            f"hd95_{unit}": hd95_mean,
            "asd_mean": float(np.mean(fg_asd)) if fg_asd else None,
            **out_volumes,
            "pixel_accuracy": float(tp.sum() / cm.sum().clamp_min(1)),
            "per_class": per_class,
            "num_images": self.num_images,
            "metric_per_case": self.per_image,  # in update order; callers name the images (nnU-Net's summary.json)
        }


def _scores_of(cm: torch.Tensor) -> list[dict[str, float | None]]:
    """Dice and IoU of every class of one confusion matrix (None where the class is absent from both sides)."""
    cm = cm.double()
    tp = cm.diag()
    fp, fn = cm.sum(0) - tp, cm.sum(1) - tp
    return [
        {"dice": float(2 * tp[c] / (2 * tp[c] + fp[c] + fn[c])) if 2 * tp[c] + fp[c] + fn[c] > 0 else None,
         "iou": float(tp[c] / (tp[c] + fp[c] + fn[c])) if tp[c] + fp[c] + fn[c] > 0 else None}
        for c in range(cm.shape[0])
    ]


def compute_segmentation(predictions, references, num_classes: int, class_names=None, valid=None, spacing=None,
                         cases=None) -> dict[str, Any]:
    """The summary of a validation set from lists of class maps (the arguments of the ``evaluate`` module's
    ``compute``; its ``_compute`` is this function). The fine-tuning loop calls it directly: importing
    ``evaluate`` (with ``datasets``, pandas and pyarrow) costs a fine-tune process about 2 CPU-seconds."""
    metrics = SegmentationMetrics(num_classes, class_names)
    for i, (pred, ref) in enumerate(zip(predictions, references)):
        metrics.update(
            torch.as_tensor(np.asarray(pred)), torch.as_tensor(np.asarray(ref)),
            torch.as_tensor(np.asarray(valid[i], bool)) if valid is not None and valid[i] is not None else None,
            tuple(spacing[i]) if spacing is not None and spacing[i] is not None else None,
            cases[i] if cases is not None else None,
        )
    return metrics.compute()


def _dice_of(cm: torch.Tensor) -> list[float]:
    """Foreground Dice per class of one confusion matrix (classes absent from both sides left out)."""
    cm = cm.double()
    tp = cm.diag()
    fp, fn = cm.sum(0) - tp, cm.sum(1) - tp
    return [float(2 * tp[c] / (2 * tp[c] + fp[c] + fn[c])) for c in range(1, cm.shape[0]) if 2 * tp[c] + fp[c] + fn[c] > 0]


def _num(value: Any) -> float | None:
    value = float(value)
    return None if math.isnan(value) else value
