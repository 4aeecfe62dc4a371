"""Segmentation metrics as an ``evaluate`` metric, with MONAI's definitions (``monai.metrics`` computes every
per-image value) and the paper's accumulation rules:

- Dice and IoU (Jaccard): MONAI's ``compute_dice`` / ``compute_iou`` definition, **accumulated over the whole
  validation set** (true/false positives and negatives summed over every pixel, then one value per class;
  the paper's rule), which is ``compute_dice`` of the set taken as one volume, not the mean of per-image values.
- HD95: MONAI's ``compute_hausdorff_distance(percentile=95, spacing=...)`` per image (the larger of the two
  directed 95th percentiles of edge distances), **averaged over the images where both masks are non-empty**
  (the paper's rule); in mm when every image has a spacing, else in pixels.
- Average surface distance: MONAI's ``compute_average_surface_distance(symmetric=True, spacing=...)`` per
  image, averaged like HD95 (no rule in the paper; same rule as HD95).
- Per-volume Dice for slices of volumes.

Load it offline from the package: ``evaluate.load(str(hf_transfer_seg.metrics.SEGMENTATION))``.
Inputs per image: ``predictions`` and ``references`` (``[H, W]`` or ``[D, H, W]`` class maps), optional ``valid`` (field of
view), ``spacing`` (pixel size per axis in mm) and ``case`` (the volume of a slice). The
computation is :class:`hf_transfer_seg.metrics.accumulate.SegmentationMetrics`.
"""

from __future__ import annotations

import datasets
import evaluate

_DESCRIPTION = __doc__
_KWARGS = """
Args:
    predictions: list of [H, W] integer class maps (3-D volumes: use SegmentationMetrics directly).
    references: list of integer class maps of the same sizes.
    num_classes: number of classes including background.
    class_names: optional names, one per class.
    valid: optional list of [H, W] boolean field-of-view maps (pixels outside are not scored).
    spacing: optional list of pixel sizes in mm, one per axis; HD95 and ASD are in mm when every image has one.
    cases: optional list of volume names; gives per-volume Dice.
Returns:
    dice_mean, iou_mean, hd95_mean with hd95_unit and hd95_mm or hd95_px, asd_mean, pixel_accuracy, per_class,
    num_images, and for cases dice_per_volume, dice_volume_mean, num_volumes.
"""


class Segmentation(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS,
            features=datasets.Features({
                "predictions": datasets.Sequence(datasets.Sequence(datasets.Value("int32"))),
                "references": datasets.Sequence(datasets.Sequence(datasets.Value("int32"))),
            }),
        )

    def _compute(self, predictions, references, num_classes: int, class_names=None, valid=None, spacing=None, cases=None):
        from hf_transfer_seg.metrics.accumulate import compute_segmentation

        return compute_segmentation(predictions, references, num_classes, class_names, valid, spacing, cases)
