"""Hostile medical and 2-D files: each ends in a clean DataError/ConfigError that names the file and the fix,
within bounded memory (issue 19.9, 19.8, 20.7).

Every input is a real file built here with nibabel, pydicom, PIL or gzip. The bombs are cheap to build (a
header that claims a huge size, a multi-member gzip of one repeated 1 MiB block) but a reader that trusted them
would allocate gigabytes; ``tracemalloc`` (numpy and Python buffers are traced) bounds what each case may take.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from hf_transfer_seg.errors import HfTransferSegError
from medical_data import ct_slice

ROOT = Path(__file__).resolve().parents[1]
PEAK_LIMIT = 256 * 2**20  # no hostile case may trace more than this much memory


# ------------------------------------------------------------------------------------------- builders


def _nifti(path: Path, array: np.ndarray, affine=None) -> Path:
    import nibabel as nib

    nib.save(nib.Nifti1Image(array, np.eye(4) if affine is None else affine), path)
    return path


def _volume(shape=(12, 10, 6), seed=0) -> np.ndarray:
    return np.random.default_rng(seed).normal(100.0, 20.0, shape).astype(np.float32)


def _header_bytes(shape, dtype, vox_offset: float = 352.0) -> bytes:
    import nibabel as nib

    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(dtype)
    header["vox_offset"] = vox_offset
    return header.binaryblock + b"\0\0\0\0"  # the 4 extension bytes of a single-file .nii


def _gzip_of_zeros(header: bytes, total: int) -> bytes:
    """A multi-member gzip: the header, then one 1 MiB block of zeros compressed once and repeated."""
    block = gzip.compress(b"\0" * 2**20, compresslevel=9)
    return gzip.compress(header) + block * (total // 2**20)


def nifti_truncated(tmp: Path) -> Path:
    path = _nifti(tmp / "cut.nii", _volume())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def nifti_gz_truncated(tmp: Path) -> Path:
    path = _nifti(tmp / "cut.nii.gz", _volume())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def nifti_header_only(tmp: Path) -> Path:
    path = tmp / "header_only.nii"
    path.write_bytes(_header_bytes((64, 64, 64), np.float32))
    return path


def nifti_30000_cubed(tmp: Path) -> Path:
    path = tmp / "huge.nii"
    path.write_bytes(_header_bytes((30000, 30000, 30000), np.float32) + b"\0" * 4096)
    return path


def nifti_rgb24(tmp: Path) -> Path:
    rgb = np.zeros((8, 8, 4), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    return _nifti(tmp / "colour.nii.gz", rgb)


def nifti_gzip_bomb(tmp: Path) -> Path:
    """~1 MiB on disk, 1 GiB once decompressed; the header says so (1024^3 uint8)."""
    path = tmp / "bomb.nii.gz"
    path.write_bytes(_gzip_of_zeros(_header_bytes((1024, 1024, 1024), np.uint8), 2**30))
    return path


def nifti_offset_bomb(tmp: Path) -> Path:
    """A small volume placed 1 GiB into the decompressed stream (vox_offset): reading it inflates 1 GiB."""
    path = tmp / "offset.nii.gz"
    path.write_bytes(_gzip_of_zeros(_header_bytes((8, 8, 8), np.uint8, vox_offset=float(2**30)), 2**30 + 2**20))
    return path


def nifti_nan(tmp: Path) -> Path:
    array = _volume()
    array[3, 4, 2] = np.nan
    return _nifti(tmp / "nan.nii.gz", array)


def nifti_inf(tmp: Path) -> Path:
    array = _volume()
    array[1, 1, 1] = np.inf
    return _nifti(tmp / "inf.nii.gz", array)


def nifti_two_channels(tmp: Path) -> Path:
    return _nifti(tmp / "two_channel.nii.gz", np.stack([_volume(), _volume(seed=1)], axis=-1))


def _dicom_series(folder: Path, edit=None, n: int = 3, rows: int = 16, columns: int = 16) -> Path:
    """A tiny CT series; ``edit(ds, meta)`` changes the middle file, which is returned."""
    from pydicom.uid import generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    series = generate_uid()
    rng = np.random.default_rng(0)
    edited = None
    for i in range(n):
        ds = ct_slice(series, rows, columns)
        meta = ds.file_meta
        ds.PixelSpacing = [1.0, 1.0]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [0.0, 0.0, 2.0 * i]
        ds.RescaleSlope, ds.RescaleIntercept = 1.0, -1024.0
        ds.InstanceNumber = i + 1
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.PixelData = rng.integers(0, 2000, (rows, columns)).astype(np.uint16).tobytes()
        path = folder / f"IM{i:04d}.dcm"
        if i == n // 2 and edit is not None:
            from pydicom import config

            with config.disable_value_validation():
                edit(ds, meta)
                ds.save_as(path, enforce_file_format=True)
            edited = path
        else:
            ds.save_as(path, enforce_file_format=True)
    return edited or folder


def dicom_compressed(tmp: Path) -> Path:
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEG2000Lossless

    def edit(ds, meta):
        meta.TransferSyntaxUID = JPEG2000Lossless
        ds.PixelData = encapsulate([b"\xff\x4f\xff\x51" + b"\0" * 64])
        ds["PixelData"].VR = "OB"

    return _dicom_series(tmp / "series", edit)


def _set(keyword, value):
    def edit(ds, meta):
        setattr(ds, keyword, value)

    return edit


def _patched(path: Path, old: bytes, new: bytes) -> Path:
    """Replace a value's bytes in a written file (pydicom refuses to write non-numbers into DS elements)."""
    assert len(old) == len(new)
    data = path.read_bytes()
    assert data.count(old) == 1, old
    path.write_bytes(data.replace(old, new))
    return path


def dicom_slope_text(tmp: Path) -> Path:
    return _patched(_dicom_series(tmp / "series", _set("RescaleSlope", "1.25")), b"1.25", b"abc ")


def dicom_position_short(tmp: Path) -> Path:
    return _dicom_series(tmp / "series", _set("ImagePositionPatient", [0.0, 1.0]))


def dicom_position_text(tmp: Path) -> Path:
    path = _dicom_series(tmp / "series", _set("ImagePositionPatient", ["7.5", "1", "2"]))
    return _patched(path, b"7.5\\1\\2 ", b"x  \\1\\2 ")


def dicom_orientation_bad(tmp: Path) -> Path:
    return _dicom_series(tmp / "series", _set("ImageOrientationPatient", [1, 0, 0, 1, 0, 0]))  # rows = columns


def dicom_orientation_short(tmp: Path) -> Path:
    return _dicom_series(tmp / "series", _set("ImageOrientationPatient", [1, 0, 0]))


def dicom_spacing_bad(tmp: Path) -> Path:
    return _patched(_dicom_series(tmp / "series", _set("PixelSpacing", [0.0, 1.5])), b"0.0\\1.5 ", b"0\\nan   ")


def dicom_short_pixels(tmp: Path) -> Path:
    def edit(ds, meta):
        ds.PixelData = ds.PixelData[:100]

    return _dicom_series(tmp / "series", edit)


def dicom_rows_zero(tmp: Path) -> Path:
    return _dicom_series(tmp / "series", _set("Rows", 0))


def dicom_huge_header(tmp: Path) -> Path:
    def edit(ds, meta):  # claims 60000 x 60000 pixels per slice; carries 512 bytes
        ds.Rows, ds.Columns = 60000, 60000
        ds.PixelData = b"\0" * 512

    return _dicom_series(tmp / "series", edit)


def dicom_truncated(tmp: Path) -> Path:
    path = _dicom_series(tmp / "series", lambda ds, meta: None)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    return path


def _nnunet(root: Path, meta_edit=None, *, dataset_json=True, channels=1, msd_channels=None) -> Path:
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    for case in ("case_001", "case_002"):
        if msd_channels:
            _nifti(root / "imagesTr" / f"{case}.nii.gz", np.stack([_volume(seed=c) for c in range(msd_channels)], -1))
        else:
            for c in range(channels):
                _nifti(root / "imagesTr" / f"{case}_{c:04d}.nii.gz", _volume(seed=c))
        _nifti(root / "labelsTr" / f"{case}.nii.gz", (_volume() > 100).astype(np.uint8))
    meta = {"name": "Dataset001_Test", "channel_names": {"0": "CT"}, "labels": {"background": 0, "organ": 1},
            "file_ending": ".nii.gz", "numTraining": 2}
    if meta_edit:
        meta_edit(meta)
    if dataset_json:
        (root / "dataset.json").write_text(json.dumps(meta))
    return root / "dataset.json" if dataset_json else root


def nnunet_label_float(tmp: Path) -> Path:
    return _nnunet(tmp / "ds", lambda m: m["labels"].update(organ=1.5))


def nnunet_label_text(tmp: Path) -> Path:
    return _nnunet(tmp / "ds", lambda m: m["labels"].update(organ="one"))


def nnunet_label_dict(tmp: Path) -> Path:
    return _nnunet(tmp / "ds", lambda m: m["labels"].update(organ={"index": 1}))


def nnunet_channel_keys(tmp: Path) -> Path:
    return _nnunet(tmp / "ds", lambda m: m.update(channel_names={"zero": "CT"}))


def nnunet_channel_list(tmp: Path) -> Path:
    return _nnunet(tmp / "ds", lambda m: m.update(channel_names=["CT"]))


def nnunet_no_dataset_json(tmp: Path) -> Path:
    return _nnunet(tmp / "ds", dataset_json=False)


def nnunet_msd_channels_mismatch(tmp: Path) -> Path:
    """MSD layout: two modalities along the 4th axis, dataset.json names one."""
    _nnunet(tmp / "ds", msd_channels=2)
    return tmp / "ds" / "imagesTr" / "case_001.nii.gz"


def png_100000x1(tmp: Path) -> Path:
    from PIL import Image

    folder = tmp / "strip"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(folder / f"ok{i}.png")
    Image.fromarray(np.arange(100_000, dtype=np.uint32).astype(np.uint8)[None]).save(folder / "strip.png")
    return folder / "strip.png"


def png16_constant(tmp: Path) -> Path:
    from PIL import Image

    folder = tmp / "flat"
    folder.mkdir()
    for i in range(4):
        Image.fromarray(np.full((24, 24), 1234, np.uint16)).save(folder / f"flat{i}.png")
    return folder


def png16_constant_labelled(tmp: Path) -> Path:
    from PIL import Image

    for sub in ("images", "masks"):
        (tmp / "seg" / sub).mkdir(parents=True)
    for i in range(4):
        Image.fromarray(np.full((24, 24), 777, np.uint16)).save(tmp / "seg" / "images" / f"{i}.png")
        mask = np.zeros((24, 24), np.uint8)
        mask[4:12, 4:12] = 1
        Image.fromarray(mask).save(tmp / "seg" / "masks" / f"{i}.png")
    return tmp / "seg"


# ------------------------------------------------------------------------------------- running a case


def _target_of(path: Path) -> Path:
    """The --target a user would pass for the hostile file ``path``."""
    if path.suffix == ".dcm":
        return path.parent
    if path.name == "dataset.json":
        return path.parent
    if path.parent.name == "imagesTr":
        return path.parent.parent
    if path.suffix == ".png":
        return path.parent
    return path


def _score_images(target: Path) -> None:
    """What ``score`` does with a target: create it, then bring every image to the model's size."""
    from hf_transfer_seg.data.registry import create_target
    from hf_transfer_seg.data.unlabelled import fit_to_size

    images = create_target(str(target), labelled=False)
    for i in range(len(images)):
        fit_to_size(images.load(i), 64)


def _finetune_images(target: Path) -> None:
    from hf_transfer_seg.data.registry import load_target

    load_target(str(target)).normalise()


# (builder, words the message must hold besides the file's name: the problem and the fix)
CASES = {
    "nifti-truncated": (nifti_truncated, ["truncated", "re-export"]),
    "nifti-gz-truncated": (nifti_gz_truncated, ["truncated", "re-export"]),
    "nifti-header-only": (nifti_header_only, ["truncated", "re-export"]),
    "nifti-30000-cubed": (nifti_30000_cubed, ["voxels", "HF_TRANSFER_SEG_MAX_VOXELS"]),
    "nifti-rgb24": (nifti_rgb24, ["RGB", "convert"]),
    "nifti-gzip-bomb": (nifti_gzip_bomb, ["voxels", "HF_TRANSFER_SEG_MAX_VOXELS"]),
    "nifti-offset-bomb": (nifti_offset_bomb, ["vox_offset", "re-export"]),
    "nifti-nan": (nifti_nan, ["NaN", "replace"]),
    "nifti-inf": (nifti_inf, ["inf", "replace"]),
    "nifti-4d-two-channels": (nifti_two_channels, ["2 volumes", "nnU-Net"]),
    "dicom-compressed-no-decoder": (dicom_compressed, ["JPEG 2000", "pip install"]),
    "dicom-slope-abc": (dicom_slope_text, ["RescaleSlope", "abc"]),
    "dicom-position-2-values": (dicom_position_short, ["ImagePositionPatient", "3 numbers"]),
    "dicom-position-text": (dicom_position_text, ["ImagePositionPatient", "3 numbers"]),
    "dicom-orientation-parallel": (dicom_orientation_bad, ["ImageOrientationPatient", "perpendicular"]),
    "dicom-orientation-3-values": (dicom_orientation_short, ["ImageOrientationPatient", "6 numbers"]),
    "dicom-spacing-zero-nan": (dicom_spacing_bad, ["PixelSpacing", "2 numbers"]),
    "dicom-short-pixeldata": (dicom_short_pixels, ["PixelData", "re-export"]),
    "dicom-rows-zero": (dicom_rows_zero, ["Rows", "re-export"]),
    "dicom-60000-squared": (dicom_huge_header, ["pixels", "HF_TRANSFER_SEG_MAX_VOXELS"]),
    "dicom-truncated": (dicom_truncated, ["re-export"]),
    "nnunet-label-float": (nnunet_label_float, ["organ", "integer"]),
    "nnunet-label-text": (nnunet_label_text, ["organ", "integer"]),
    "nnunet-label-dict": (nnunet_label_dict, ["organ", "integer"]),
    "nnunet-channel-key-text": (nnunet_channel_keys, ["channel_names", "\"0\""]),
    "nnunet-channel-names-list": (nnunet_channel_list, ["channel_names", "\"0\""]),
    "nnunet-no-dataset-json": (nnunet_no_dataset_json, ["dataset.json", "imagesTr", "channel_names"]),
    "nnunet-msd-2-channels-1-named": (nnunet_msd_channels_mismatch, ["2 volumes", "channel_names"]),
    "png-100000x1": (png_100000x1, ["100000", "crop"]),
    "png16-constant-set": (png16_constant, ["constant", "1234"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_hostile_file_is_a_clean_error_naming_the_file_and_the_fix(case, tmp_path):
    build, words = CASES[case]
    path = build(tmp_path)
    tracemalloc.start()
    try:
        with pytest.raises(HfTransferSegError) as info:
            _score_images(_target_of(path))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    message = str(info.value)
    assert path.name in message, message
    for word in words:
        assert word in message, (word, message)
    assert "Traceback" not in message
    assert peak < PEAK_LIMIT, f"{case} traced {peak / 2**20:.0f} MiB"


def _label_edit(edit):
    def build(tmp: Path) -> Path:
        _nnunet(tmp / "ds")
        path = tmp / "ds" / "labelsTr" / "case_002.nii.gz"
        edit(path)
        return path

    return build


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:200])


def _nan_labels(path: Path) -> None:
    labels = (_volume() > 100).astype(np.float32)
    labels[0, 0, 0] = np.nan
    _nifti(path, labels)


def _two_channel_labels(path: Path) -> None:
    _nifti(path, np.stack([(_volume() > 100).astype(np.uint8)] * 2, -1))


@pytest.mark.parametrize("edit, words", [
    (_truncate, ["truncated", "re-export"]),
    (_nan_labels, ["NaN", "replace"]),
    (_two_channel_labels, ["2 volumes"]),
], ids=["truncated", "nan", "two-channels"])
def test_hostile_label_volumes_are_clean_errors_when_fine_tuning(edit, words, tmp_path):
    """The labelled path reads labelsTr with the same checked reader."""
    path = _label_edit(edit)(tmp_path)
    with pytest.raises(HfTransferSegError) as info:
        _finetune_images(tmp_path / "ds")
    message = str(info.value)
    assert path.name in message and all(w in message for w in words), message


def test_a_constant_labelled_16_bit_set_is_refused_before_training(tmp_path):
    """19.8: the fine-tuning path refuses a constant image set the way the volume path does."""
    with pytest.raises(HfTransferSegError, match="constant") as info:
        _finetune_images(png16_constant_labelled(tmp_path))
    assert "777" in str(info.value)


def test_a_constant_16_bit_set_is_refused_with_a_fixed_range_too(tmp_path):
    """With --intensity-range / --window there is no range to fit; the constant set is still refused."""
    from hf_transfer_seg.data.registry import resolve_target

    folder = png16_constant(tmp_path)
    for options in ({"intensity_range": "0,4095"}, {"window": "400,40"}):
        with pytest.raises(HfTransferSegError, match="constant: every value is 1234"):
            resolve_target(str(folder), **options)


def test_the_voxel_cap_is_one_setting_shared_by_every_reader(tmp_path, monkeypatch):
    """Lowering HF_TRANSFER_SEG_MAX_VOXELS refuses an ordinary volume, DICOM series and PNG alike; unset, they load."""
    from PIL import Image

    volume = _nifti(tmp_path / "ok.nii.gz", _volume())  # 12 x 10 x 6 = 720 voxels
    series = _dicom_series(tmp_path / "series")  # 3 x 16 x 16 = 768
    (tmp_path / "png").mkdir()
    for i in range(2):
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (40, 40), dtype=np.uint8)).save(tmp_path / "png" / f"{i}.png")
    for target in (volume, series, tmp_path / "png"):
        _score_images(target)
    monkeypatch.setenv("HF_TRANSFER_SEG_MAX_VOXELS", "500")
    for target, name in ((volume, "ok.nii.gz"), (series, "series"), (tmp_path / "png", "0.png")):
        with pytest.raises(HfTransferSegError, match="HF_TRANSFER_SEG_MAX_VOXELS") as info:
            _score_images(target)
        assert name in str(info.value)
    monkeypatch.setenv("HF_TRANSFER_SEG_MAX_VOXELS", "lots")
    with pytest.raises(HfTransferSegError, match="HF_TRANSFER_SEG_MAX_VOXELS"):
        _score_images(volume)


def test_multi_channel_volumes_load_when_dataset_json_names_the_channels(tmp_path):
    """The explicit way to use 4-D files: an MSD folder whose dataset.json names both modalities."""
    from hf_transfer_seg.data.registry import create_target

    _nnunet(tmp_path / "ds", lambda m: m.update(channel_names={"0": "T1", "1": "T2"}), msd_channels=2)
    target = create_target(str(tmp_path / "ds"), labelled=False)
    assert "T1, T2" in target.description and target.load(0).shape[0] == 3


def test_score_cli_on_hostile_medical_targets_exits_2_without_traceback(hub_endpoint, repo_id, tmp_path):
    """The real CLI in a subprocess: a NIfTI bomb and an nnU-Net folder without dataset.json end with exit 2."""
    from huggingface_hub import HfApi

    HfApi().create_repo(repo_id, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_ENDPOINT": hub_endpoint}
    for build in (nifti_gzip_bomb, nnunet_no_dataset_json):
        where = tmp_path / build.__name__
        where.mkdir()
        target = _target_of(build(where))
        done = subprocess.run(
            [sys.executable, "-m", "hf_transfer_seg", "score", "--repo-id", repo_id, "--target", str(target),
             "--dry-run", "--no-progress", "--device", "cpu"],
            capture_output=True, text=True, env=env, timeout=300,
        )
        assert done.returncode == 2, done.stderr
        assert "Traceback" not in done.stderr and done.stderr.strip().startswith("error:"), done.stderr
