"""3-D volumes (NIfTI via nibabel, DICOM series via pydicom) and their 2-D slices.

A :class:`Volume` holds raw values ``float32 [C, A0, A1, A2]`` (HU for CT, RescaleSlope/Intercept
applied), the voxel spacing in mm per axis and the patient direction of each axis, so that
``--slice-axis axial`` picks the axis the affine (or the DICOM orientation) says is head-feet.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from hf_transfer_seg.errors import ConfigError, DataError

log = logging.getLogger(__name__)

NIFTI_SUFFIXES = (".nii", ".nii.gz")
PLANES = {"sagittal": 0, "coronal": 1, "axial": 2}  # patient axis (x: left-right, y: front-back, z: head-feet)


@dataclass
class Volume:
    array: np.ndarray  # float32 [C, A0, A1, A2], raw values
    spacing: tuple[float, float, float]  # mm per voxel along A0, A1, A2
    directions: np.ndarray  # [3, 3]: row i = patient direction of axis Ai

    def axis_for(self, slice_axis: str | int | None) -> int:
        """The array axis (0..2) to slice along: a plane name or an axis number; default axial."""
        if slice_axis is None or str(slice_axis).strip() == "":
            slice_axis = "axial"
        text = str(slice_axis).strip().lower()
        if text in ("0", "1", "2"):
            return int(text)
        if text not in PLANES:
            raise ConfigError(f"--slice-axis {slice_axis!r}: use axial, coronal, sagittal or an array axis 0, 1, 2")
        return int(np.argmax(np.abs(self.directions[:, PLANES[text]])))

    def slices(self, axis: int) -> tuple[int, Callable[[int], np.ndarray], tuple[float, float]]:
        """(number of slices, slice i -> ``[C, H, W]``, in-plane spacing (rows, columns) in mm)."""
        rest = [a for a in range(3) if a != axis]
        spacing = (float(self.spacing[rest[0]]), float(self.spacing[rest[1]]))
        return self.array.shape[axis + 1], (lambda i: np.take(self.array, i, axis=axis + 1)), spacing


def is_nifti(path: str | Path) -> bool:
    return str(path).lower().endswith(NIFTI_SUFFIXES)


def _nibabel_volume(img, name: str) -> Volume:
    data = np.asarray(img.get_fdata(dtype=np.float32))
    if data.ndim == 2:
        data = data[:, :, None]
    if data.ndim == 4:  # MSD stores modalities along a 4th axis
        data = np.moveaxis(data, 3, 0)
    elif data.ndim == 3:
        data = data[None]
    else:
        raise DataError(f"{name} has {data.ndim} dimensions {data.shape}; expected a 3-D volume (or 3-D + channels)")
    if data.shape[0] > 4:
        raise DataError(
            f"{name} holds {data.shape[0]} volumes along its 4th axis (time series or >4 channels); extract the "
            "volume(s) you mean (at most 4 channels) into their own NIfTI file"
        )
    zooms = tuple(float(z) for z in img.header.get_zooms()[:3]) + (1.0,) * max(0, 3 - len(img.header.get_zooms()[:3]))
    affine = np.asarray(img.affine, dtype=np.float64)
    directions = affine[:3, :3].T / np.maximum(np.linalg.norm(affine[:3, :3].T, axis=1, keepdims=True), 1e-9)
    return Volume(np.ascontiguousarray(data), zooms[:3], directions)


def read_nifti(path: str | Path) -> Volume:
    import nibabel as nib

    try:
        img = nib.load(str(path))
    except Exception as exc:  # noqa: BLE001 - nibabel raises several types for bad files
        raise DataError(f"cannot read NIfTI file {path}: {exc}") from exc
    return _nibabel_volume(img, str(path))


def read_nifti_labels(path: str | Path) -> np.ndarray:
    volume = read_nifti(path)
    if volume.array.shape[0] != 1:
        raise DataError(f"label volume {path} has {volume.array.shape[0]} channels; a label map has one")
    return _integer_labels(volume.array[0], str(path))


def _integer_labels(array: np.ndarray, name: str) -> np.ndarray:
    if not np.all(np.isfinite(array)) or not np.all(array == np.round(array)):
        raise DataError(f"label volume {name} holds non-integer values; labels must be integer class indices")
    return array.astype(np.int64)


# ---------------------------------------------------------------------------------------------- DICOM


def dicom_files(folder: Path) -> list:
    """The readable DICOM datasets with pixel data below ``folder``."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    out = []
    for path in sorted(folder.rglob("*")):
        if not path.is_file() or path.name.startswith("."):
            continue
        try:
            ds = pydicom.dcmread(path)
        except (InvalidDicomError, OSError, ValueError):
            continue
        if "PixelData" in ds:
            out.append((path, ds))
    return out


def looks_like_dicom_folder(folder: Path) -> bool:
    for path in sorted(folder.iterdir())[:20]:
        if path.is_file() and (path.suffix.lower() == ".dcm" or _has_dicm_preamble(path)):
            return True
    return False


def _has_dicm_preamble(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(132)[128:] == b"DICM"
    except OSError:
        return False


def read_dicom_series(folder: str | Path) -> Volume:
    """One DICOM series as a volume ``[1, slices, rows, columns]``, ordered by ImagePositionPatient, in HU for CT."""
    folder = Path(folder)
    found = dicom_files(folder)
    if not found:
        raise DataError(f"no DICOM images found below {folder}; point --target at the folder holding one series")
    series: dict[str, list] = {}
    for path, ds in found:
        series.setdefault(str(getattr(ds, "SeriesInstanceUID", "")), []).append((path, ds))
    if len(series) > 1:
        sizes = ", ".join(f"{uid[-12:]} ({len(v)} files)" for uid, v in series.items())
        raise DataError(
            f"{folder} holds {len(series)} DICOM series ({sizes}); put each series in its own folder and pass that folder"
        )
    items = next(iter(series.values()))
    first = items[0][1]
    orientation = np.asarray(getattr(first, "ImageOrientationPatient", [1, 0, 0, 0, 1, 0]), dtype=np.float64)
    row_dir, col_dir = orientation[:3], orientation[3:]
    normal = np.cross(row_dir, col_dir)
    positions = []
    for path, ds in items:
        if not hasattr(ds, "ImagePositionPatient"):
            raise DataError(f"DICOM file {path} has no ImagePositionPatient; slices cannot be ordered")
        positions.append(float(np.dot(np.asarray(ds.ImagePositionPatient, dtype=np.float64), normal)))
    order = np.argsort(positions, kind="stable")
    positions = [positions[i] for i in order]
    items = [items[i] for i in order]
    if len(set(np.round(positions, 4))) != len(positions):
        raise DataError(f"{folder}: several DICOM files share a slice position; the folder mixes acquisitions")
    slices = []
    for path, ds in items:
        pixels = np.asarray(ds.pixel_array, dtype=np.float32)
        if pixels.ndim != 2:
            raise DataError(f"DICOM file {path} holds a {pixels.ndim}-D pixel array; multi-frame files are not supported")
        slope = float(getattr(ds, "RescaleSlope", 1.0) or 1.0)
        intercept = float(getattr(ds, "RescaleIntercept", 0.0) or 0.0)
        slices.append(pixels * slope + intercept)
    shapes = {s.shape for s in slices}
    if len(shapes) != 1:
        raise DataError(f"{folder}: DICOM slices differ in size {sorted(shapes)}")
    row_spacing, col_spacing = (float(v) for v in getattr(first, "PixelSpacing", [1.0, 1.0]))
    if len(positions) > 1:
        gap = float(np.median(np.diff(positions)))
    else:
        gap = float(getattr(first, "SliceThickness", 1.0) or 1.0)
    array = np.stack(slices)[None]
    # axis 0 runs along the normal, axis 1 (rows) along the column direction, axis 2 (columns) along the row direction
    directions = np.stack([normal, col_dir, row_dir])
    return Volume(np.ascontiguousarray(array), (abs(gap), row_spacing, col_spacing), directions)


def dicom_labels(path: str | Path, shape: tuple[int, int, int]) -> np.ndarray:
    """A NIfTI label volume for a DICOM series: voxel order (slices, rows, columns) or its reverse (NIfTI's usual)."""
    labels = read_nifti_labels(path)
    if labels.shape == tuple(shape):
        return labels
    if labels.shape == tuple(shape[::-1]):
        return np.ascontiguousarray(labels.transpose(2, 1, 0))
    raise DataError(
        f"label volume {path} has shape {labels.shape} but the DICOM series is {tuple(shape)} (slices, rows, columns); "
        "the labels must be on the series' voxel grid"
    )


def spacing_text(spacing: tuple[float, ...]) -> str:
    return " x ".join(f"{s:.3g}" for s in spacing) + " mm"


def is_finite_spacing(spacing) -> bool:
    return spacing is not None and all(isinstance(s, (int, float)) and math.isfinite(s) and s > 0 for s in spacing)
