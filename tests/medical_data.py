"""Real medical test data built from the MNI152 template nilearn ships (a real NIfTI volume): NIfTI files,
a short DICOM CT-like series written with pydicom, an nnU-Net raw folder with two cases."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

SLOPE, INTERCEPT = 2.0, -1024.0  # DICOM stored value -> HU


def mni(resolution: int = 2):
    from nilearn import datasets as nd

    return nd.load_mni152_template(resolution=resolution)


def mni_arrays(crop: int = 2):
    """(T1 float32 volume, brain labels 0/1/2, affine), z cropped to the middle slices for speed."""
    img = mni()
    t1 = np.asarray(img.get_fdata(), np.float32)
    labels = np.zeros(t1.shape, np.uint8)
    labels[t1 > 0.35] = 1
    labels[t1 > 0.6] = 2
    return t1, labels, img.affine


def write_nifti(folder: Path, name: str = "brain", zslab=(30, 60)) -> tuple[Path, Path]:
    import nibabel as nib

    t1, labels, affine = mni_arrays()
    z0, z1 = zslab
    affine = affine.copy()
    affine[:3, 3] += affine[:3, 2] * z0
    image_path, label_path = folder / f"{name}.nii.gz", folder / f"{name}_labels.nii.gz"
    nib.save(nib.Nifti1Image((t1[:, :, z0:z1] * 1000).astype(np.int16), affine), image_path)  # MR-like units
    nib.save(nib.Nifti1Image(labels[:, :, z0:z1], affine), label_path)
    return image_path, label_path


def ct_slice(series_uid: str, rows: int, columns: int):
    """One CT slice's dataset (explicit VR little endian) in series ``series_uid``; the caller adds geometry and pixels."""
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.SeriesInstanceUID = "CT", series_uid
    ds.Rows, ds.Columns = rows, columns
    return ds


def write_dicom_series(folder: Path, zs=range(40, 52, 2)) -> tuple[Path, np.ndarray, np.ndarray]:
    """A CT-like series: stored = (HU - INTERCEPT) / SLOPE, files named in reverse order of position.

    Returns (folder, HU volume [slices, rows, columns] in position order, labels on that grid).
    """
    from pydicom.uid import generate_uid

    t1, labels, _ = mni_arrays()
    folder.mkdir(parents=True, exist_ok=True)
    series_uid, study_uid = generate_uid(), generate_uid()
    hu_slices, label_slices = [], []
    zs = list(zs)
    for n, z in enumerate(zs):
        hu = (t1[:, :, z].T * 1200.0 - 1000.0).round()  # rows = y, columns = x; background -1000 HU (air)
        stored = ((hu - INTERCEPT) / SLOPE).astype(np.uint16)
        hu_slices.append(stored.astype(np.float32) * SLOPE + INTERCEPT)
        label_slices.append(labels[:, :, z].T)
        ds = ct_slice(series_uid, *stored.shape)
        ds.StudyInstanceUID = study_uid
        ds.PixelSpacing = [2.0, 2.0]
        ds.SliceThickness = 4.0
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [-98.0, -134.0, -72.0 + 2.0 * z]
        ds.RescaleSlope, ds.RescaleIntercept = SLOPE, INTERCEPT
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.PixelData = stored.tobytes()
        ds.save_as(folder / f"IM{len(zs) - n:04d}.dcm", enforce_file_format=True)
    return folder, np.stack(hu_slices), np.stack(label_slices)


def write_nnunet(root: Path, cases=("brain_001", "brain_002", "brain_003"), ending: str = ".nii.gz") -> Path:
    """nnU-Net v2 raw layout: imagesTr/CASE_0000.nii.gz, labelsTr/CASE.nii.gz, dataset.json; different slabs per case."""
    import nibabel as nib

    t1, labels, affine = mni_arrays()
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    for i, case in enumerate(cases):
        z0 = 30 + 6 * i
        nib.save(nib.Nifti1Image((t1[:, :, z0 : z0 + 10] * 800 + 50 * i).astype(np.float32), affine), root / "imagesTr" / f"{case}_0000{ending}")
        nib.save(nib.Nifti1Image(labels[:, :, z0 : z0 + 10], affine), root / "labelsTr" / f"{case}{ending}")
    (root / "dataset.json").write_text(json.dumps({
        "name": "Dataset042_Brain", "channel_names": {"0": "T1"},
        "labels": {"background": 0, "grey_ish": 1, "white_ish": 2}, "numTraining": len(cases), "file_ending": ending,
    }))
    return root
