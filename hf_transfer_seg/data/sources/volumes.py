"""3-D volumes (NIfTI via nibabel, DICOM series via pydicom) and their 2-D slices.

A :class:`Volume` holds raw values ``float32 [C, A0, A1, A2]`` (HU for CT, RescaleSlope/Intercept
applied), the voxel spacing in mm per axis and the patient direction of each axis, so that
``--slice-axis axial`` picks the axis the affine (or the DICOM orientation) says is head-feet.
"""

from __future__ import annotations

import logging
import math
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from hf_transfer_seg.errors import ConfigError, DataError

log = logging.getLogger(__name__)

NIFTI_SUFFIXES = (".nii", ".nii.gz")
# vox_offset sanity bound: header extensions (e.g. dcm2niix's DICOM headers) take kilobytes; a file whose voxels
# start further in than this and than their own size is refused instead of inflating a gzip stream up to there
MAX_HEADER_BYTES = 64 * 2**20
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


def _reexport(name: str) -> str:
    return f"{name} is truncated or damaged: copy it again, or re-export it from the tool that wrote it"


def check_nifti_header(header, name: str, *, file_size: int | None = None) -> None:
    """Refuse what a NIfTI header declares before any voxel is read: colour or complex voxels, more voxels
    than the shared cap (:mod:`~hf_transfer_seg.data.limits`), data placed beyond what is read safely, and
    (``file_size`` of an uncompressed file) data that the file is too short to hold."""
    from hf_transfer_seg.data import limits

    try:
        shape = tuple(int(s) for s in header.get_data_shape())
        dtype = np.dtype(header.get_data_dtype())
        offset = int(header.get_data_offset())
    except Exception as exc:  # noqa: BLE001 - nibabel raises several types for nonsense headers
        raise DataError(f"NIfTI header of {name} is unreadable ({exc}); {_reexport(name)}") from None
    if dtype.fields is not None or dtype.kind in "cV":
        raise DataError(
            f"{name} holds {'RGB colour' if dtype.fields else dtype.name} voxels (NIfTI datatype {header.get_value_label('datatype')}); "
            "convert it to one grey value per voxel (or save each colour channel as its own volume, as the channels of an "
            "nnU-Net folder) first"
        )
    if not shape or min(shape) < 1:
        raise DataError(f"{name} declares the shape {shape}, which holds no voxel; {_reexport(name)}")
    limits.check_voxels(f"NIfTI file {name}", shape)
    data_bytes = limits.count(shape) * dtype.itemsize
    if offset > max(MAX_HEADER_BYTES, data_bytes):
        raise DataError(
            f"{name}: its header puts the voxel data {offset:,} bytes into the file (vox_offset), after more header "
            f"extensions than the {MAX_HEADER_BYTES:,} bytes (or the voxel data's own size) a NIfTI file carries; the "
            "header is corrupt or hostile: re-export the volume"
        )
    limits.check_bytes(name, offset + data_bytes, f"reading vox_offset {offset:,} + {data_bytes:,} bytes of voxel data")
    if file_size is not None and file_size < offset + data_bytes:
        raise DataError(
            f"{name} has {file_size:,} bytes but its header declares {data_bytes:,} bytes of voxels from byte {offset:,}: "
            f"{_reexport(name)}"
        )


def _finite(data: np.ndarray, name: str) -> None:
    if data.dtype.kind == "f" and not np.isfinite(data).all():
        nan = int(np.isnan(data).sum())
        inf = int(data.size - nan - np.isfinite(data).sum())
        first = tuple(int(i) for i in np.argwhere(~np.isfinite(data))[0])
        raise DataError(
            f"{name} holds {nan:,} NaN and {inf:,} inf voxels (the first at index {first}); replace them with a real value "
            "(e.g. the background: numpy.nan_to_num(data, nan=bg, posinf=bg, neginf=bg)) and save the volume again"
        )


def nibabel_volume(img, name: str, channels: int | None = None) -> Volume:
    """A :class:`Volume` from a nibabel image, header checked before the voxels are read.

    A 4th axis holds channels: exactly ``channels`` of them (an MSD file whose ``dataset.json`` names them),
    or, with ``channels=None``, a single one; anything else is refused, never silently used.
    """
    check_nifti_header(img.header, name)
    try:
        data = np.asarray(img.get_fdata(dtype=np.float32))
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - truncated data: OSError, EOFError, zlib.error, ValueError...
        raise DataError(f"cannot read the voxels of {name} ({type(exc).__name__}: {exc}); {_reexport(name)}") from None
    _finite(data, name)
    while data.ndim > 4 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim == 2:
        data = data[:, :, None]
    if data.ndim == 4:  # MSD stores modalities along a 4th axis
        data = np.moveaxis(data, 3, 0)
    elif data.ndim == 3:
        data = data[None]
    else:
        raise DataError(f"{name} has {data.ndim} dimensions {data.shape}; expected a 3-D volume (or 3-D + channels)")
    expected = channels or 1
    if data.shape[0] != expected:
        if channels is None:
            fix = (
                "a single-volume target takes one: extract the volume you mean into its own file (nibabel: "
                "img.slicer[..., k]), or put the files in an nnU-Net/MSD folder whose dataset.json names each channel"
            )
        else:
            fix = (
                f"but dataset.json names {channels} channel(s) (channel_names / modality): list every channel there, "
                "or extract the ones you mean"
            )
        raise DataError(f"{name} holds {data.shape[0]} volumes along its 4th axis (channels or time points); {fix}")
    if data.shape[0] > 4:
        raise DataError(
            f"{name} holds {data.shape[0]} volumes along its 4th axis (time series or >4 channels); extract the "
            "volume(s) you mean (at most 4 channels) into their own NIfTI file"
        )
    zooms = tuple(float(z) for z in img.header.get_zooms()[:3]) + (1.0,) * max(0, 3 - len(img.header.get_zooms()[:3]))
    affine = np.asarray(img.affine, dtype=np.float64)
    directions = affine[:3, :3].T / np.maximum(np.linalg.norm(affine[:3, :3].T, axis=1, keepdims=True), 1e-9)
    return Volume(np.ascontiguousarray(data), zooms[:3], directions)


_nibabel_volume = nibabel_volume  # the former private name


def read_nifti_header(path: str | Path):
    """The header of a ``.nii``/``.nii.gz`` file from its first 544 bytes (decompressing no more), checked."""
    import gzip
    import io

    import nibabel as nib

    path = Path(path)
    try:
        with (gzip.open if str(path).lower().endswith(".gz") else open)(path, "rb") as fh:
            head = fh.read(544)
    except (OSError, EOFError, zlib.error) as exc:  # BadGzipFile is an OSError; random bytes give zlib.error
        raise DataError(f"cannot read NIfTI file {path} ({_kind(exc)}: {exc}); {_reexport(path.name)}") from None
    klass = None
    for order in ("<", ">"):
        size = int(np.frombuffer(head[:4], dtype=f"{order}i4")[0]) if len(head) >= 4 else 0
        klass = {348: nib.Nifti1Header, 540: nib.Nifti2Header}.get(size)
        if klass is not None:
            break
    if klass is None or len(head) < klass.sizeof_hdr:
        raise DataError(
            f"{path} does not start with a NIfTI-1 or NIfTI-2 header ({len(head)} bytes read); {_reexport(path.name)} as .nii/.nii.gz"
        )
    try:
        header = klass.from_fileobj(io.BytesIO(head[: klass.sizeof_hdr]), check=False)
    except Exception as exc:  # noqa: BLE001
        raise DataError(f"NIfTI header of {path} is unreadable ({exc}); {_reexport(path.name)}") from None
    gz = str(path).lower().endswith(".gz")
    check_nifti_header(header, str(path), file_size=None if gz else path.stat().st_size)
    return header


def _kind(exc: BaseException) -> str:
    return "zlib.error" if isinstance(exc, zlib.error) else type(exc).__name__


GZIP_SLACK_BYTES = 1 << 20  # what a .nii.gz may hold after the voxel data its header declares


def _inflate(path: Path, header) -> bytes:
    """The whole decompressed stream of a ``.nii.gz``, read to its end so that gzip checks its CRC and length
    (nibabel stops after the voxels: random bytes in the middle of the stream were read as voxels, silently), and
    never more than the header declares (+ :data:`GZIP_SLACK_BYTES`)."""
    import gzip

    from hf_transfer_seg.data import limits

    declared = int(header.get_data_offset()) + limits.count(header.get_data_shape()) * np.dtype(header.get_data_dtype()).itemsize
    limit = max(declared, 348) + GZIP_SLACK_BYTES
    out = bytearray()
    try:
        with gzip.open(path, "rb") as fh:
            while chunk := fh.read(min(1 << 24, limit + 1 - len(out))):
                out += chunk
                if len(out) > limit:
                    raise DataError(
                        f"{path.name} decompresses to more than the {declared:,} bytes its header declares (+ "
                        f"{GZIP_SLACK_BYTES:,}); the file is damaged or hostile: {_reexport(path.name)}"
                    )
    except (OSError, EOFError, zlib.error) as exc:  # BadGzipFile (CRC, length, magic) is an OSError
        raise DataError(
            f"{path.name} is damaged: its gzip stream does not decompress ({_kind(exc)}: {exc}); {_reexport(path.name)}"
        ) from None
    return bytes(out)


def read_nifti(path: str | Path, channels: int | None = None) -> Volume:
    """A NIfTI volume; its header is checked (size cap, dtype, truncation) before nibabel reads or inflates the
    data, and a ``.nii.gz`` is inflated whole first (:func:`_inflate`: a damaged stream is refused, never read)."""
    import nibabel as nib

    path = Path(path)
    header = read_nifti_header(path)  # the gzip stream is inflated no further than the header declares
    try:
        if path.name.lower().endswith(".gz"):
            klass = nib.Nifti2Image if isinstance(header, nib.Nifti2Header) else nib.Nifti1Image
            img = klass.from_bytes(_inflate(path, header))
        else:
            img = nib.load(str(path))
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - nibabel raises several types for bad files
        raise DataError(f"cannot read NIfTI file {path}: {exc}; {_reexport(path.name)}") from None
    return nibabel_volume(img, str(path), channels)


def read_nifti_labels(path: str | Path) -> np.ndarray:
    volume = read_nifti(path)
    if volume.array.shape[0] != 1:
        raise DataError(f"label volume {path} has {volume.array.shape[0]} channels; a label map has one")
    return integer_labels(volume.array[0], str(path))


def integer_labels(array: np.ndarray, name: str) -> np.ndarray:
    if not np.all(np.isfinite(array)) or not np.all(array == np.round(array)):
        raise DataError(f"label volume {name} holds non-integer values; labels must be integer class indices")
    return array.astype(np.int64)


_integer_labels = integer_labels  # the former private name


# ---------------------------------------------------------------------------------------------- DICOM


def _dcmread(path: Path, *, headers_only: bool, looks_dicom: bool = True):
    """pydicom's dataset of ``path`` (without pixel data when ``headers_only``); None for a non-DICOM file."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(path, stop_before_pixels=headers_only, force=looks_dicom and path.suffix.lower() == ".dcm")
    except (InvalidDicomError, OSError, ValueError, EOFError, KeyError, TypeError, AttributeError) as exc:
        if looks_dicom:
            raise DataError(f"cannot read DICOM file {path} ({type(exc).__name__}: {exc}); {_reexport(path.name)}, or remove it from the folder") from None
        return None


def dicom_files(folder: Path) -> list:
    """(path, headers) of the DICOM images below ``folder``, read without their pixel data.

    A file that looks like DICOM (``.dcm`` or the ``DICM`` preamble) but cannot be read is an error naming it;
    other files, and DICOM files without an image (DICOMDIR, reports), are skipped.
    """
    out = []
    for path in sorted(folder.rglob("*")):
        if not path.is_file() or path.name.startswith("."):
            continue
        ds = _dcmread(path, headers_only=True, looks_dicom=path.suffix.lower() == ".dcm" or _has_dicm_preamble(path))
        if ds is not None and "Rows" in ds and "Columns" in ds:
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


def _raw_text(ds, keyword: str) -> str:
    try:
        value = ds.get_item(keyword).value
    except Exception:  # noqa: BLE001
        return "?"
    if isinstance(value, bytes):
        return value.decode("latin-1").strip()
    return str(value)


def dicom_numbers(ds, keyword: str, n: int, path: Path, default=None) -> list[float] | None:
    """``n`` finite numbers from the tag ``keyword`` of ``ds`` (``default`` when absent); a clean error otherwise."""
    if keyword not in ds:
        return default
    try:
        value = ds[keyword].value
        values = list(value) if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue" else [value]
        numbers = [float(v) for v in values]
    except (ValueError, TypeError, OverflowError):
        numbers = None
    if numbers is None or len(numbers) != n or not all(math.isfinite(v) for v in numbers):
        raw = _raw_text(ds, keyword)
        raise DataError(
            f"DICOM file {path}: {keyword} is {raw!r}, not {n} number{'s' if n > 1 else ''}; fix the tag (e.g. with "
            f"pydicom) or re-export the series from the scanner or PACS"
        )
    return numbers


def _unit(v: np.ndarray) -> np.ndarray | None:
    norm = float(np.linalg.norm(v))
    return v / norm if norm > 1e-6 else None


def _geometry(ds, path: Path) -> tuple[np.ndarray, np.ndarray, tuple[float, float]]:
    """(row direction, column direction, (row, column) spacing) of one file, checked."""
    orientation = np.asarray(dicom_numbers(ds, "ImageOrientationPatient", 6, path, [1, 0, 0, 0, 1, 0]), np.float64)
    row_dir, col_dir = _unit(orientation[:3]), _unit(orientation[3:])
    if row_dir is None or col_dir is None or abs(float(np.dot(row_dir, col_dir))) > 1e-3:
        raise DataError(
            f"DICOM file {path}: ImageOrientationPatient {orientation.tolist()} does not give two perpendicular "
            "directions (rows, columns); fix the tag or re-export the series"
        )
    spacing = dicom_numbers(ds, "PixelSpacing", 2, path, [1.0, 1.0])
    if min(spacing) <= 0:
        raise DataError(f"DICOM file {path}: PixelSpacing {spacing} must be two positive numbers (mm); fix the tag or re-export the series")
    return row_dir, col_dir, (spacing[0], spacing[1])


def _pixel_count(ds, path: Path) -> tuple[int, int]:
    from hf_transfer_seg.data import limits

    size = []
    for keyword in ("Rows", "Columns"):
        try:
            value = int(ds[keyword].value) if keyword in ds else 0
        except (ValueError, TypeError):
            value = 0
        if value < 1:
            raise DataError(f"DICOM file {path}: {keyword} is {_raw_text(ds, keyword)!r}; an image needs at least one row and column: {_reexport(path.name)}")
        size.append(value)
    frames = dicom_numbers(ds, "NumberOfFrames", 1, path, [1])[0]
    if frames != 1:
        raise DataError(f"DICOM file {path} holds {frames:g} frames; multi-frame files are not supported: export one file per slice")
    limits.check_voxels(f"DICOM file {path}", size, "pixels")
    return size[0], size[1]


def _decode(ds, path: Path, rows: int, columns: int) -> np.ndarray:
    """The stored pixel values of one file, after checking the PixelData length and the transfer syntax."""
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    compressed = bool(syntax is not None and syntax.is_compressed)
    if not compressed:
        try:
            bits = int(ds.BitsAllocated)
            samples = int(getattr(ds, "SamplesPerPixel", 1) or 1)
        except (AttributeError, ValueError, TypeError):
            raise DataError(f"DICOM file {path} has no valid BitsAllocated/SamplesPerPixel: {_reexport(path.name)}") from None
        need = rows * columns * samples * max(1, bits // 8)
        have = len(ds.PixelData or b"")
        if have < need:
            raise DataError(
                f"DICOM file {path} holds {have:,} bytes of PixelData where its header ({rows} Rows x {columns} Columns x "
                f"{bits} bits) needs {need:,}: {_reexport(path.name)}"
            )
    _decoder_tracebacks_at_debug()
    try:
        return np.asarray(ds.pixel_array, dtype=np.float32)
    except Exception as exc:  # noqa: BLE001 - pydicom's decoders raise RuntimeError, NotImplementedError, ValueError...
        log.debug("pydicom could not decode %s", path, exc_info=True)
        said = "; ".join(line.strip() for line in str(exc).strip().splitlines() if line.strip()).replace(":;", ":")[:400]
        said = said or type(exc).__name__
        if compressed:
            raise DataError(
                f"DICOM file {path} is compressed ({syntax.name}) and no installed decoder reads it ({said}); "
                "pip install pylibjpeg pylibjpeg-openjpeg pylibjpeg-libjpeg (or python-gdcm), or decompress the series "
                "first (gdcmconv --raw, dcmtk dcmdjpeg); if a decoder is installed, the file's pixel data is damaged: "
                f"{_reexport(path.name)}"
            ) from None
        raise DataError(f"cannot decode the pixels of DICOM file {path} ({said}); {_reexport(path.name)}") from None


class _AtDebug(logging.Filter):
    """Moves a record to DEBUG: shown with ``-v``, not above the one-line error that names the same failure."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger().isEnabledFor(logging.DEBUG)  # the logger's level check has already passed it


# pydicom logs each decoder plugin's failure with its traceback (LOGGER.exception) before raising; the reader
# raises one DataError naming the file, the syntax and each plugin's message, so the library's own report of the
# same failure belongs at debug level.
PYDICOM_DECODER_LOGGERS = ("pydicom.pixels.decoders.base", "pydicom.pixels.decoders")


def _decoder_tracebacks_at_debug() -> None:
    for name in PYDICOM_DECODER_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _AtDebug) for f in logger.filters):
            logger.addFilter(_AtDebug())


def read_dicom_series(folder: str | Path) -> Volume:
    """One DICOM series as a volume ``[1, slices, rows, columns]``, ordered by ImagePositionPatient, in HU for CT.

    Every tag used is checked before any pixel is decoded; the series must fit the shared size cap.
    """
    from hf_transfer_seg.data import limits

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
    first_path, first = items[0]
    row_dir, col_dir, (row_spacing, col_spacing) = _geometry(first, first_path)
    normal = np.cross(row_dir, col_dir)
    positions, sizes = [], {}
    for path, ds in items:
        rows_dir, cols_dir, _ = _geometry(ds, path)
        if abs(float(np.dot(rows_dir, row_dir))) < 0.999 or abs(float(np.dot(cols_dir, col_dir))) < 0.999:
            raise DataError(f"DICOM file {path} is oriented differently from {first_path.name}; the folder mixes acquisitions")
        position = dicom_numbers(ds, "ImagePositionPatient", 3, path)
        if position is None:
            raise DataError(f"DICOM file {path} has no ImagePositionPatient; slices cannot be ordered")
        positions.append(float(np.dot(np.asarray(position, dtype=np.float64), normal)))
        sizes[path] = _pixel_count(ds, path)
    if len(set(sizes.values())) != 1:
        raise DataError(f"{folder}: DICOM slices differ in size {sorted(set(sizes.values()))}")
    limits.check_voxels(f"DICOM series {folder}", (len(items), *sizes[first_path]))
    order = np.argsort(positions, kind="stable")
    positions = [positions[i] for i in order]
    items = [items[i] for i in order]
    if len(set(np.round(positions, 4))) != len(positions):
        raise DataError(f"{folder}: several DICOM files share a slice position; the folder mixes acquisitions")
    slices = []
    for path, ds in items:
        ds = _dcmread(path, headers_only=False)  # one file's pixel data at a time, once every header passed
        if "PixelData" not in ds:
            raise DataError(f"DICOM file {path} has no PixelData: {_reexport(path.name)}")
        slope = dicom_numbers(ds, "RescaleSlope", 1, path, [1.0])[0] or 1.0
        intercept = dicom_numbers(ds, "RescaleIntercept", 1, path, [0.0])[0]
        pixels = _decode(ds, path, *sizes[path])
        if pixels.ndim != 2:
            raise DataError(f"DICOM file {path} holds a {pixels.ndim}-D pixel array; multi-frame and colour files are not supported")
        slices.append(pixels * slope + intercept)
    if len(positions) > 1:
        gap = float(np.median(np.diff(positions)))
    else:
        gap = (dicom_numbers(first, "SliceThickness", 1, first_path, [1.0])[0]) or 1.0
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
