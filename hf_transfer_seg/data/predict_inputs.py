"""The inputs of ``hf-transfer-seg predict``: 2-D images and volumes with the geometry their masks must keep.

A folder may hold 2-D images (PNG, TIFF, JPEG... as :data:`hf_transfer_seg.data.images.IMAGE_SUFFIXES`),
NIfTI volumes (``.nii``/``.nii.gz``) and sub-folders that each hold one DICOM series. Every entry is
classified before anything is read; an entry of another kind is refused with its name.

Geometry: a 2-D mask has the image's height and width and its format (TIFF in, TIFF out; PNG for the rest);
a NIfTI mask has the input's voxel grid and affine; a DICOM series becomes a NIfTI mask whose affine is built
from the series' own orientation, spacing and first slice position (DICOM's LPS turned into NIfTI's RAS).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hf_transfer_seg.data.images import IMAGE_SUFFIXES
from hf_transfer_seg.errors import DataError

VOLUME_KINDS = ("nifti", "dicom")


@dataclass(frozen=True)
class PredictInput:
    kind: str  # "image", "nifti" or "dicom"
    path: Path
    output_name: str  # file name of its mask in the output folder

    @property
    def volumetric(self) -> bool:
        return self.kind in VOLUME_KINDS


def _nifti_stem(path: Path) -> str:
    name = path.name
    return name[: -len(".nii.gz")] if name.lower().endswith(".nii.gz") else path.stem


def classify(path: Path) -> PredictInput:
    """The kind of one input (file or series folder) and its mask's file name; a :class:`DataError` for anything else."""
    from hf_transfer_seg.data.sources.volumes import is_nifti, looks_like_dicom_folder

    if path.is_dir():
        if looks_like_dicom_folder(path):
            return PredictInput("dicom", path, f"{path.name}.nii.gz")
        raise DataError(f"predict input {path.name}/ is a folder without a DICOM series; pass images, NIfTI files or one folder per DICOM series")
    if is_nifti(path):
        return PredictInput("nifti", path, f"{_nifti_stem(path)}.nii.gz")
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return PredictInput("image", path, f"{path.stem}{'.tif' if suffix in ('.tif', '.tiff') else '.png'}")
    if suffix == ".dcm":
        raise DataError(f"predict input {path.name} is a single DICOM file; put each series in its own folder inside the input folder")
    raise DataError(
        f"predict input {path.name} is not a 2-D image ({', '.join(s.lstrip('.') for s in IMAGE_SUFFIXES)}), a NIfTI "
        "volume or a DICOM series folder; remove it from the input folder"
    )


def find_inputs(source: str | Path) -> list[PredictInput]:
    """Every input of a folder (or the single file given), classified, with unique output names."""
    source = Path(source).expanduser()
    if not source.exists():
        raise DataError(f"predict input {source} does not exist; pass a folder of images or volumes")
    if source.is_file():
        entries = [source]
    elif (inputs := [p for p in sorted(source.iterdir()) if not p.name.startswith(".")]) and _is_series(source):
        entries = [source]  # the folder itself is one DICOM series
    else:
        entries = inputs
    found = [classify(p) for p in entries]
    if not found:
        raise DataError(f"predict input folder {source} is empty; put the images or volumes to segment in it")
    names: dict[str, str] = {}
    for item in found:
        if item.output_name in names:
            raise DataError(f"{item.path.name} and {names[item.output_name]} would both be written as {item.output_name}; rename one")
        names[item.output_name] = item.path.name
    return found


def _is_series(folder: Path) -> bool:
    from hf_transfer_seg.data.sources.volumes import looks_like_dicom_folder

    return looks_like_dicom_folder(folder)


@dataclass
class VolumeInput:
    volume: object  # hf_transfer_seg.data.sources.volumes.Volume (raw values, [C, A0, A1, A2])
    affine: np.ndarray  # voxel -> RAS mm of the mask to write
    header: object | None = None  # the NIfTI input's header, kept for the mask


def read_volume(item: PredictInput) -> VolumeInput:
    """A NIfTI volume with its own affine, or a DICOM series with the affine of its geometry."""
    from hf_transfer_seg.data.sources import volumes

    if item.kind == "nifti":
        import nibabel as nib

        volume = volumes.read_nifti(item.path)
        img = nib.load(str(item.path))
        return VolumeInput(volume, np.asarray(img.affine, dtype=np.float64), img.header)
    volume = volumes.read_dicom_series(item.path)
    return VolumeInput(volume, dicom_affine(item.path, volume))


def dicom_affine(folder: Path, volume) -> np.ndarray:
    """NIfTI (RAS) affine of a series read by :func:`~hf_transfer_seg.data.sources.volumes.read_dicom_series`:
    columns are the array axes' patient directions times their spacing, the origin the first slice's position."""
    from hf_transfer_seg.data.sources.volumes import dicom_files, dicom_numbers

    normal = np.asarray(volume.directions[0], dtype=np.float64)
    positions = []
    for path, ds in dicom_files(folder):
        position = dicom_numbers(ds, "ImagePositionPatient", 3, path)
        if position is not None:
            positions.append(np.asarray(position, dtype=np.float64))
    if not positions:
        raise DataError(f"DICOM series {folder.name} has no ImagePositionPatient; its mask's position cannot be written")
    origin = min(positions, key=lambda p: float(np.dot(p, normal)))
    affine = np.eye(4)
    for axis in range(3):
        affine[:3, axis] = np.asarray(volume.directions[axis], dtype=np.float64) * float(volume.spacing[axis])
    affine[:3, 3] = origin
    affine[:2, :] *= -1  # LPS (DICOM) -> RAS (NIfTI)
    return affine
