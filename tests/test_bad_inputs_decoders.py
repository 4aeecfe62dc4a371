"""Damaged compressed pixel data: one clean error, no library traceback above it, nothing read silently.

Real files built here: DICOM series whose middle file is JPEG baseline / JPEG 2000 / JPEG-LS / RLE with pixel data
no decoder reads (pydicom logs each plugin's traceback at ERROR before raising: it must be at debug level, shown
with ``-v``), and ``.nii.gz`` volumes with random bytes written into the gzip stream at several places (an
uncaught ``zlib.error`` before; in the middle of the voxels, random bytes used to be read as voxels silently:
nibabel stops before the stream's CRC).
"""

from __future__ import annotations

import logging
import random
from pathlib import Path

import numpy as np
import pytest

from hf_transfer_seg.errors import DataError, HfTransferSegError
from test_bad_inputs_medical import _dicom_series, _score_images, _target_of
from medical_data import write_nifti


def _dicom_with(syntax_name: str):
    def build(tmp: Path) -> Path:
        from pydicom import uid
        from pydicom.encaps import encapsulate

        syntax = getattr(uid, syntax_name)
        junk = random.Random(syntax_name).randbytes(256)

        def edit(ds, meta):
            meta.TransferSyntaxUID = syntax
            ds.PixelData = encapsulate([junk])
            ds["PixelData"].VR = "OB"

        return _dicom_series(tmp / "series", edit)

    return build


SYNTAXES = ["JPEGBaseline8Bit", "JPEG2000", "JPEG2000Lossless", "JPEGLSLossless", "RLELossless", "JPEGLosslessSV1"]


@pytest.mark.parametrize("syntax", SYNTAXES)
def test_undecodable_dicom_is_one_clean_error_and_the_library_detail_is_debug(syntax, tmp_path, caplog):
    path = _dicom_with(syntax)(tmp_path)
    with caplog.at_level(logging.INFO):
        with pytest.raises(DataError) as info:
            _score_images(_target_of(path))
    message = str(info.value)
    assert path.name in message and "pip install" in message and "re-export" in message and "\n" not in message
    shown = [r for r in caplog.records if r.levelno >= logging.INFO]
    assert not [r for r in shown if r.exc_info or r.name.startswith("pydicom")], [r.getMessage() for r in shown]

    caplog.clear()
    with caplog.at_level(logging.DEBUG):  # -v: the decoder's own traceback is there, at debug level
        with pytest.raises(DataError):
            _score_images(_target_of(path))
    assert any(r.levelno == logging.DEBUG and r.exc_info for r in caplog.records)


def _corrupt(orig: bytes, pos: int, seed: int) -> bytes:
    raw = bytearray(orig)
    raw[pos:pos + 64] = random.Random(seed).randbytes(64)
    return bytes(raw[: len(orig)])


@pytest.fixture(scope="module")
def brain(tmp_path_factory) -> bytes:
    image, _ = write_nifti(tmp_path_factory.mktemp("nifti"))
    return image.read_bytes()


@pytest.mark.parametrize("where", [0.0001, 0.001, 0.002, 0.25, 0.5, 0.75, 0.9999])
def test_random_bytes_in_a_nii_gz_stream_are_a_clean_error(where, brain, tmp_path):
    pos = max(12, int(len(brain) * where))  # after gzip's own 10-byte header
    path = tmp_path / "brain.nii.gz"
    path.write_bytes(_corrupt(brain, pos, seed=pos))
    with pytest.raises(HfTransferSegError) as info:
        _score_images(_target_of(path))
    message = str(info.value)
    assert path.name in message and ("damaged" in message or "truncated" in message) and "re-export" in message


def test_neighbours_of_the_damaged_stream(brain, tmp_path):
    import gzip

    cases = {
        "cut-in-the-middle.nii.gz": brain[: len(brain) // 2],  # EOFError
        "bad-crc.nii.gz": brain[:-8] + bytes(4) + brain[-4:],  # gzip.BadGzipFile: CRC
        "bad-length.nii.gz": brain[:-4] + bytes(4),  # gzip.BadGzipFile: length
        "not-gzip.nii.gz": b"NOTGZIP" + brain[7:],  # gzip.BadGzipFile: magic
        "trailing-bomb.nii.gz": brain + gzip.compress(bytes(8 << 20)),  # a second member after the volume
    }
    for name, data in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(HfTransferSegError) as info:
            _score_images(_target_of(path))
        assert name in str(info.value) and "re-export" in str(info.value), (name, str(info.value))


def test_an_intact_nii_gz_still_reads_the_same_voxels(brain, tmp_path):
    import nibabel as nib

    from hf_transfer_seg.data.sources.volumes import read_nifti

    path = tmp_path / "brain.nii.gz"
    path.write_bytes(brain)
    volume = read_nifti(path)
    expected = np.asarray(nib.load(str(path)).get_fdata(dtype=np.float32))
    assert np.array_equal(volume.array[0], expected)
    assert np.allclose(volume.spacing, nib.load(str(path)).header.get_zooms()[:3])
