"""Write label masks as files a viewer opens: palette PNG / TIFF for 2-D images, NIfTI (with the input's affine)
for volumes. Pixel values are class indices (0 = background); PNGs carry a palette so each class shows in a colour.

Shared by the fine-tuning run (its validation predictions) and ``hf-transfer-seg predict``.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

# background first, then colours that read well over grayscale images (the Space's legend uses the same order)
PALETTE = [(0, 0, 0), (255, 64, 64), (0, 200, 255), (255, 200, 0), (120, 255, 80), (220, 80, 255), (255, 140, 0),
           (0, 255, 190), (255, 105, 180)]


def safe_stem(name: str) -> str:
    """A file name stem from an image name (no folders, no odd characters)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(name)).strip("._") or "image"


def _dtype(mask: np.ndarray) -> np.dtype:
    return np.uint8 if int(mask.max(initial=0)) < 256 else np.uint16


def write_png(mask: np.ndarray, path: str | Path) -> Path:
    """A palette PNG (up to 256 classes) whose pixel values are the class indices."""
    from PIL import Image

    path = Path(path)
    mask = np.ascontiguousarray(mask)
    if _dtype(mask) != np.uint8:
        Image.fromarray(mask.astype(np.uint16)).save(path, format="PNG")
        return path
    img = Image.fromarray(mask.astype(np.uint8), mode="L").convert("P")
    img.putpalette([c for rgb in PALETTE for c in rgb] + [0] * (768 - 3 * len(PALETTE)))
    img.save(path, format="PNG")
    return path


def write_tiff(mask: np.ndarray, path: str | Path) -> Path:
    import tifffile

    tifffile.imwrite(str(path), np.ascontiguousarray(mask.astype(_dtype(mask))), compression="zlib")
    return Path(path)


def write_nifti(labels: np.ndarray, affine: np.ndarray, path: str | Path, header=None) -> Path:
    """A label volume on the input's voxel grid: same shape, same affine (sform and qform), integer voxels."""
    import nibabel as nib

    data = np.ascontiguousarray(labels.astype(_dtype(labels)))
    img = nib.Nifti1Image(data, np.asarray(affine, dtype=np.float64), header=header.copy() if header is not None else None)
    img.set_data_dtype(data.dtype)
    img.header.set_slope_inter(1.0, 0.0)
    img.set_sform(np.asarray(affine, dtype=np.float64), code=1)
    img.set_qform(np.asarray(affine, dtype=np.float64), code=1)
    nib.save(img, str(path))
    return Path(path)


def write_mask(mask: np.ndarray, path: str | Path) -> Path:
    """A 2-D mask in the format its suffix names (.png, .tif/.tiff)."""
    suffix = Path(path).suffix.lower()
    if suffix in (".tif", ".tiff"):
        return write_tiff(mask, path)
    return write_png(mask, path)
