"""Segmentation metrics on a validation set, as the paper computes them.

- Dice and IoU (Jaccard) *accumulated over the whole set*: true/false positives and negatives are
  summed over every pixel of every image, then Dice = 2TP / (2TP + FP + FN), IoU = TP / (TP + FP + FN),
  per class. ``dice_mean``/``iou_mean`` average the foreground classes (background is left out;
  for a binary target they are the foreground Dice/IoU).
- HD95 per image and class: the 95th percentile of the symmetric surface distances, in mm when every
  image has a pixel spacing (``hd95_mm``; volumes keep theirs), else in pixels (``hd95_px``), averaged
  over the images where both the prediction and the reference of that class are non-empty.
- Per-volume Dice (``dice_per_volume``, ``dice_volume_mean``) for slices of volumes: each case's own
  accumulated Dice, beside the Dice accumulated over every slice of the set.

The fine-tuning loop computes them through the ``evaluate`` metric module shipped in
``hf_transfer_seg/metrics/segmentation`` (loaded offline by path), which runs this class.

"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from scipy import ndimage


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int, valid: torch.Tensor | None = None) -> torch.Tensor:
    """``[K, K]`` counts, rows = reference class, columns = predicted class."""
    pred = pred.reshape(-1).long()
    target = target.reshape(-1).long()
    if valid is not None:
        keep = valid.reshape(-1).bool()
        pred, target = pred[keep], target[keep]
    return torch.bincount(target * num_classes + pred, minlength=num_classes**2).reshape(num_classes, num_classes)


def _surface(mask: np.ndarray) -> np.ndarray:
    return mask & ~ndimage.binary_erosion(mask, structure=ndimage.generate_binary_structure(2, 1), border_value=0)


def hd95(pred: np.ndarray, target: np.ndarray, spacing: tuple[float, float] = (1.0, 1.0)) -> float:
    """95th percentile symmetric surface distance between two non-empty boolean masks (NaN if one is empty)."""
    pred, target = np.asarray(pred, bool), np.asarray(target, bool)
    if not pred.any() or not target.any():
        return math.nan
    sp, st = _surface(pred), _surface(target)
    to_target = ndimage.distance_transform_edt(~st, sampling=spacing)
    to_pred = ndimage.distance_transform_edt(~sp, sampling=spacing)
    distances = np.concatenate([to_target[sp], to_pred[st]])
    return float(np.percentile(distances, 95))


class SegmentationMetrics:
    """Accumulates a validation set image by image; :meth:`compute` returns the summary."""

    def __init__(self, num_classes: int, class_names: list[str] | None = None):
        self.num_classes = num_classes
        self.class_names = list(class_names or [f"class_{i}" for i in range(num_classes)])
        self.confusion = torch.zeros(num_classes, num_classes, dtype=torch.long)
        self.hd95: list[list[float]] = [[] for _ in range(num_classes)]
        self.num_images = 0
        self.spaced_images = 0  # images with a known pixel spacing (HD95 in mm when every image has one)
        self.volumes: dict[str, torch.Tensor] = {}  # case -> its own confusion matrix (per-volume Dice)

    def update(
        self, pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None,
        spacing: tuple[float, float] | None = None, case: str | None = None,
    ) -> None:
        """Add one image: ``pred`` and ``target`` are ``[H, W]`` class maps, ``valid`` an optional field of view,
        ``spacing`` the pixel size (rows, columns) in mm when known, ``case`` the volume a slice belongs to."""
        if pred.shape != target.shape:
            raise ValueError(f"prediction {tuple(pred.shape)} and reference {tuple(target.shape)} differ in size")
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
        sampling = tuple(float(x) for x in spacing) if spacing is not None else (1.0, 1.0)
        for c in range(1, self.num_classes):
            value = hd95((p == c) & v, (t == c) & v, sampling)
            if not math.isnan(value):
                self.hd95[c].append(value)
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
            }
        fg_dice = [float(dice[c]) for c in fg if not math.isnan(float(dice[c]))]
        fg_iou = [float(iou[c]) for c in fg if not math.isnan(float(iou[c]))]
        fg_hd = [float(np.mean(self.hd95[c])) for c in fg if self.hd95[c]]
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
            **out_volumes,
            "pixel_accuracy": float(tp.sum() / cm.sum().clamp_min(1)),
            "per_class": per_class,
            "num_images": self.num_images,
        }


def _dice_of(cm: torch.Tensor) -> list[float]:
    """Foreground Dice per class of one confusion matrix (classes absent from both sides left out)."""
    cm = cm.double()
    tp = cm.diag()
    fp, fn = cm.sum(0) - tp, cm.sum(1) - tp
    return [float(2 * tp[c] / (2 * tp[c] + fp[c] + fn[c])) for c in range(1, cm.shape[0]) if 2 * tp[c] + fp[c] + fn[c] > 0]


def _num(value: Any) -> float | None:
    value = float(value)
    return None if math.isnan(value) else value
