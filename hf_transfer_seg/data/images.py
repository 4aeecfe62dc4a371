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

from hf_transfer_seg.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".gif", ".bmp", ".webp", ".ppm", ".pgm")

# The one decompression-bomb limit of the package (PIL's own default error threshold, about 179
# megapixels): PIL refuses larger images by itself, and TIFFs read with tifffile are checked against it
# from their header before any pixel is decoded. Every reader in data/ goes through this module.
MAX_IMAGE_PIXELS = 2 * 89_478_485
Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS // 2  # PIL raises DecompressionBombError above twice this


def _too_large(path: str | Path, pixels: int) -> DataError:
    return DataError(
        f"image {path} has {pixels:,} pixels, more than the {MAX_IMAGE_PIXELS:,} that are decoded safely "
        "(a decompression bomb or a whole-slide scan): remove it from the folder or tile it first"
    )


def check_tiff_size(path: str | Path) -> None:
    """Refuse a TIFF whose first series is larger than :data:`MAX_IMAGE_PIXELS`, reading only its header."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        shape = tif.series[0].shape if tif.series else ()
        axes = tif.series[0].axes if tif.series else ""
    pixels = 1
    for size, axis in zip(shape, axes):
        if axis not in "SC":  # samples/channels are not pixels
            pixels *= int(size)
    if pixels > MAX_IMAGE_PIXELS:
        raise _too_large(path, pixels)


@contextlib.contextmanager
def refusing_bombs(what: str) -> Iterator[None]:
    """Turn PIL's DecompressionBombError inside the block (e.g. ``datasets`` decoding a row) into :class:`DataError`."""
    try:
        yield
    except Image.DecompressionBombError as exc:
        raise DataError(f"image {what} is too large to decode safely ({exc}); remove it or tile it first") from None


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
    """Scale integer or float pixel values into [0, 1] as float32."""
    array = np.asarray(array)
    if array.dtype == np.bool_:
        return array.astype(np.float32)
    if np.issubdtype(array.dtype, np.integer):
        info = np.iinfo(array.dtype)
        if array.dtype == np.uint8:
            return array.astype(np.float32) / 255.0
        top = float(array.max()) if array.size else 1.0
        # 16-bit files often use 12 bits or fewer: scale by the container unless values exceed 8 bits only slightly
        scale = float(info.max) if top > 4095 else (4095.0 if top > 255 else 255.0)
        return np.clip(array.astype(np.float32) / scale, 0.0, 1.0)
    array = array.astype(np.float32)
    if not np.isfinite(array).all():
        array = np.nan_to_num(array, nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = float(array.min()), float(array.max())
    if lo >= 0.0 and hi <= 1.0:
        return array
    if hi - lo < 1e-12:
        return np.zeros_like(array)
    return (array - lo) / (hi - lo)


def to_rgb_tensor(array: np.ndarray) -> torch.Tensor:
    """``float32 [3, H, W]`` in [0, 1] from a decoded pixel array of any common layout."""
    array = to_unit_float(array)
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    elif array.ndim == 3:
        if array.shape[0] in (1, 3, 4) and array.shape[2] not in (1, 3, 4):  # channels first
            array = np.moveaxis(array, 0, 2)
        channels = array.shape[2]
        if channels == 1:
            array = np.repeat(array, 3, axis=2)
        elif channels == 2:  # grey + alpha
            array = np.repeat(array[:, :, :1], 3, axis=2)
        elif channels >= 4:
            array = array[:, :, :3]
    else:
        raise DataError(f"expected a 2-D image, got an array of shape {array.shape}")
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))


def load_image(path: str | Path) -> torch.Tensor:
    """Read an image file as ``float32 [3, H, W]`` in [0, 1]."""
    return to_rgb_tensor(read_array(path))
