"""Decode any image a user may bring into float RGB in [0, 1].

Handles 8- and 16-bit PNG/TIFF, float TIFF, grayscale (repeated to 3 channels), RGBA (alpha
dropped), palette GIFs, and numpy arrays. Everything downstream sees ``float32 [3, H, W]``.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from hf_transfer_seg.data import limits
from hf_transfer_seg.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".gif", ".bmp", ".webp", ".ppm", ".pgm")

# The one size cap of the package lives in data/limits.py (decoded values; for a 2-D image 3 per pixel, so
# 178,956,970 pixels by default: PIL's own decompression-bomb error threshold; override HF_TRANSFER_SEG_MAX_VOXELS).
# PIL refuses larger images by itself (its threshold is kept in step with the cap), TIFFs read with tifffile are
# checked from their header.
MAX_IMAGE_PIXELS = limits.DEFAULT_MAX_VOXELS // limits.IMAGE_CHANNELS  # the default; limits.max_pixels() is the one in force


def _sync_pil_cap() -> None:
    Image.MAX_IMAGE_PIXELS = max(1, limits.max_pixels() // 2)  # PIL raises DecompressionBombError above twice this


_sync_pil_cap()


def check_tiff_size(path: str | Path) -> None:
    """Refuse a TIFF whose first series is larger than the cap (:mod:`~hf_transfer_seg.data.limits`), reading only its header."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        shape = tif.series[0].shape if tif.series else ()
        axes = tif.series[0].axes if tif.series else ""
    limits.check_pixels(f"image {path}", [int(s) for s, a in zip(shape, axes) if a not in "SC"])  # samples/channels are not pixels


@contextlib.contextmanager
def refusing_bombs(what: str) -> Iterator[None]:
    """Turn PIL's DecompressionBombError inside the block (e.g. ``datasets`` decoding a row) into :class:`DataError`."""
    previous = Image.MAX_IMAGE_PIXELS
    _sync_pil_cap()  # the cap in force now (HF_TRANSFER_SEG_MAX_VOXELS may have changed since import) ...
    try:
        yield
    except Image.DecompressionBombError as exc:
        raise DataError(
            f"image {what} is too large to decode safely ({exc}); remove it or tile it first, or raise the cap with "
            f"{limits.ENV}=N (now {limits.max_voxels():,} values, {limits.max_pixels():,} pixels) if you trust it"
        ) from None
    finally:
        Image.MAX_IMAGE_PIXELS = previous  # ... and only inside this block: PIL's global is left as it was


def open_image(source) -> Image.Image:
    """``PIL.Image.open`` with decompression bombs turned into :class:`DataError` (use as a context manager)."""
    with refusing_bombs(str(source) if isinstance(source, (str, Path)) else "in memory"):
        return Image.open(source)


def is_image_file(path: str | Path) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES and not Path(path).name.startswith(".")


def read_array(path: str | Path) -> np.ndarray:
    """The raw pixel array of an image file (H x W or H x W x C), keeping its bit depth."""
    path = Path(path)
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            import tifffile

            try:
                check_tiff_size(path)
                return np.asarray(tifffile.imread(path))
            except DataError:
                raise
            except Exception:  # noqa: BLE001 - some TIFFs are only readable by PIL
                pass
        with open_image(path) as img:
            if img.mode == "P":
                img = img.convert("RGBA" if "transparency" in img.info else "RGB")
            return np.asarray(img)
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DataError(f"cannot read image {path}: {exc}") from exc


def to_unit_float(array: np.ndarray) -> np.ndarray:
    """Scale integer or float pixel values into [0, 1] as float32, by a rule fixed per data type.

    8-bit: / 255. Other integers: / the container's maximum (65535 for uint16), the same for every
    image, so two files with the same content load the same whatever their maximum. Floats already in
    [0, 1] are kept; other float images have no fixed scale and are min-max scaled (pass a dataset-level
    :class:`~hf_transfer_seg.data.intensity.Intensity` instead, as the target sources do).
    """
    array = np.asarray(array)
    if array.dtype == np.bool_:
        return array.astype(np.float32)
    if np.issubdtype(array.dtype, np.integer):
        if array.dtype == np.uint8:
            return array.astype(np.float32) / 255.0
        info = np.iinfo(array.dtype)
        return np.clip((array.astype(np.float32) - max(info.min, 0)) / float(info.max), 0.0, 1.0)
    array = array.astype(np.float32)
    if not np.isfinite(array).all():
        array = np.nan_to_num(array, nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = float(array.min()), float(array.max())
    if lo >= 0.0 and hi <= 1.0:
        return array
    if hi - lo < 1e-12:
        return np.zeros_like(array)
    return (array - lo) / (hi - lo)


def channels_first(array: np.ndarray, name: str = "image") -> np.ndarray:
    """A 2-D image as ``[C, H, W]`` (C <= 4), keeping values; a volume or >4 channels is an error naming the fix."""
    array = np.asarray(array)
    if array.ndim == 2:
        return array[None]
    if array.ndim == 3:
        if array.shape[2] <= 4 and array.shape[0] > 4:
            return np.moveaxis(array, 2, 0)
        if array.shape[0] <= 4 and array.shape[2] > 4:
            return array
        if array.shape[2] <= 4:  # both small: channels last is the usual layout of PNG/TIFF readers
            return np.moveaxis(array, 2, 0)
    raise DataError(
        f"{name} has shape {tuple(array.shape)}: more than 4 channels or a third spatial axis where a 2-D image is "
        "expected. Pass a volume as a NIfTI file or a DICOM series (sliced along --slice-axis), or split the stack "
        "into 2-D image files (at most 4 channels each)"
    )


def to_rgb_tensor(array: np.ndarray, name: str = "image") -> torch.Tensor:
    """``float32 [3, H, W]`` in [0, 1] from a decoded pixel array of any common 2-D layout."""
    array = channels_first(np.asarray(array), name)
    if array.shape[0] == 2:  # grey + alpha
        array = array[:1]
    array = to_unit_float(array)
    if array.shape[0] == 1:
        array = np.repeat(array, 3, axis=0)
    elif array.shape[0] >= 4:
        array = array[:3]
    return torch.from_numpy(np.ascontiguousarray(array))


def load_image(path: str | Path) -> torch.Tensor:
    """Read an image file as ``float32 [3, H, W]`` in [0, 1]."""
    return to_rgb_tensor(read_array(path), str(path))
