"""Volumes (cases) to 2-D samples: labelled slices for fine-tuning, image slices for scoring.

Slices keep raw values; the target's intensity normalisation is fitted on the training cases and
applied afterwards (:meth:`SegTarget.normalise`), so every slice of every case is scaled the same way.
Empty-label slices: kept between the first and last slice that holds a label (the organ's extent),
dropped outside it, so the training set is not dominated by slices of nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from hf_transfer_seg.data import limits
from hf_transfer_seg.data.intensity import Intensity, fit_percentiles, to_three_channels
from hf_transfer_seg.data.sources.volumes import Volume
from hf_transfer_seg.errors import DataError

FIT_CASES = 8  # cases read to fit the percentile range of an unlabelled target


@dataclass
class Case:
    name: str
    image: Callable[[], Volume]
    labels: Callable[[Volume], np.ndarray] | None = None  # int [A0, A1, A2] on the image's voxel grid


def _evenly(indices: list[int], limit: int | None) -> list[int]:
    if not limit or len(indices) <= limit:
        return indices
    picks = np.linspace(0, len(indices) - 1, limit).round().astype(int)
    return [indices[i] for i in sorted(set(picks.tolist()))]


def labelled_slices(cases: list[Case], *, slice_axis=None, limit: int | None = None):
    """(samples with raw images, raw label values seen, axis used per case)."""
    from hf_transfer_seg.data.sources.base import SegSample

    if not cases:
        raise DataError("the target holds no cases")
    per_case = -(-limit // len(cases)) if limit else None
    samples, values = [], set()
    for case in cases:
        volume = case.image()
        labels = case.labels(volume)
        if tuple(labels.shape) != tuple(volume.array.shape[1:]):
            raise DataError(
                f"case {case.name}: labels {tuple(labels.shape)} and image {tuple(volume.array.shape[1:])} differ in size; "
                "labels must be on the image's voxel grid"
            )
        axis = volume.axis_for(slice_axis)
        n, get, spacing = volume.slices(axis)
        foreground = [i for i in range(n) if np.take(labels, i, axis=axis).any()]
        keep = list(range(foreground[0], foreground[-1] + 1)) if foreground else [
            i for i in range(n) if np.ptp(get(i)) > 0
        ]
        for i in _evenly(keep, per_case):
            mask = np.take(labels, i, axis=axis)
            values |= set(np.unique(mask).tolist())
            samples.append(SegSample(
                f"{case.name}-s{i:04d}", torch.from_numpy(np.ascontiguousarray(get(i), dtype=np.float32)),
                torch.from_numpy(np.ascontiguousarray(mask)), None, case.name, spacing,
            ))
    return samples, values


def image_slices(cases: list[Case], *, slice_axis=None, limit: int | None = None, fixed: Intensity | None = None):
    """(slice count, loader index -> ``float32 [3, H, W]`` in [0, 1], the intensity used, (case, slice) of each
    index) over every case.

    Slices with a constant image are left out. The percentile range (unless ``fixed``) is fitted on up to
    :data:`FIT_CASES` cases spread over the target; labels are never read.
    """
    if not cases:
        raise DataError("the target holds no cases")
    per_case = -(-limit // len(cases)) if limit else None
    index: list[tuple[int, int, int]] = []
    fit_arrays = []
    fit_cases = set(_evenly(list(range(len(cases))), FIT_CASES))
    for c, case in enumerate(cases):
        volume = case.image()
        axis = volume.axis_for(slice_axis)
        n, get, _ = volume.slices(axis)
        keep = _evenly([i for i in range(n) if np.ptp(get(i)) > 0], per_case)
        index += [(c, axis, i) for i in keep]
        if fixed is None and c in fit_cases:
            fit_arrays.append(volume.array)
    if not index:
        raise DataError(
            f"every slice of {', '.join(c.name for c in cases[:3])}{', ...' if len(cases) > 3 else ''} is constant (blank), "
            "so there is nothing to score; check the volumes, or point --target at images with content"
        )
    intensity = fixed or fit_percentiles(fit_arrays)
    cache: dict[int, Volume] = {}

    def load(k: int) -> torch.Tensor:
        c, axis, i = index[k]
        if c not in cache:
            cache.clear()
            cache[c] = cases[c].image()
        image = np.take(cache[c].array, i, axis=axis + 1)
        limits.check_fit(f"slice {i} of {cases[c].name}", image.shape[-2:])
        return to_three_channels(intensity.apply(image))

    return len(index), load, intensity, [(cases[c].name, i) for c, _, i in index]
