"""The one size cap of every reader in ``data/``: 2-D images, NIfTI volumes, DICOM series, resizes.

The cap counts *decoded values*, the float32 numbers a reader would hold: a volume's voxels x channels,
a DICOM series' slices x rows x columns, and for 2-D images (always decoded to ``[3, H, W]``) and the
output of a resize, pixels x 3. Default: :data:`DEFAULT_MAX_VOXELS` = 536,870,910 values (2 GiB as
float32), i.e. 178,956,970 pixels for a 2-D image, exactly PIL's own decompression-bomb error threshold,
which the package used before for images (so no image PIL decodes is refused), and e.g. a 512 x 512 x 2048
CT volume. Every reader checks what a file's *header* declares against it before any pixel is decoded or
any gzip stream inflated.

Override: the environment variable ``HF_TRANSFER_SEG_MAX_VOXELS`` (a positive whole number of values),
e.g. ``HF_TRANSFER_SEG_MAX_VOXELS=2000000000`` for a trusted 2-billion-voxel volume and the memory it takes
(4 bytes per value, more while decoding).
"""

from __future__ import annotations

import math
import os
from typing import Iterable

from hf_transfer_seg.errors import ConfigError, DataError

ENV = "HF_TRANSFER_SEG_MAX_VOXELS"
IMAGE_CHANNELS = 3  # a 2-D image is decoded to [3, H, W]: its pixels count three times
DEFAULT_MAX_VOXELS = IMAGE_CHANNELS * 2 * 89_478_485  # 3 x PIL's DecompressionBombError threshold in pixels
BYTES_PER_VOXEL = 4  # float32, how every reader holds decoded values


def max_voxels() -> int:
    """The cap in decoded values: ``HF_TRANSFER_SEG_MAX_VOXELS`` when set, else :data:`DEFAULT_MAX_VOXELS`."""
    text = os.environ.get(ENV, "").strip()
    if not text:
        return DEFAULT_MAX_VOXELS
    try:
        value = int(text.replace("_", ""))
    except ValueError:
        value = 0
    if value <= 0:
        raise ConfigError(f"{ENV}={text!r} is not a positive whole number of voxels; unset it or give e.g. {DEFAULT_MAX_VOXELS}")
    return value


def max_pixels() -> int:
    """The cap for a 2-D image, in pixels (each decoded to :data:`IMAGE_CHANNELS` values)."""
    return max(1, max_voxels() // IMAGE_CHANNELS)


def max_bytes() -> int:
    """The cap in bytes of decoded float32 values (also bounds the gzip stream inflated while reading a volume)."""
    return max_voxels() * BYTES_PER_VOXEL


def count(shape: Iterable[int]) -> int:
    return math.prod(int(s) for s in shape)


def _fix() -> str:
    return (
        f"crop or downsample it first, or, if you trust the file and have the memory, raise the cap with "
        f"{ENV}=N (now {max_voxels():,} values)"
    )


def check_voxels(name: str, shape: Iterable[int], what: str = "voxels") -> None:
    """Refuse ``name`` when its declared ``shape`` (voxels x channels) exceeds the cap; nothing is decoded."""
    shape = tuple(int(s) for s in shape)
    n = count(shape)
    if n > max_voxels():
        dims = " x ".join(str(s) for s in shape)
        raise DataError(f"{name} declares {dims} = {n:,} {what}, more than the {max_voxels():,} read safely; {_fix()}")


def check_pixels(name: str, hw: Iterable[int]) -> None:
    """Refuse a 2-D image of ``hw`` pixels whose decoded ``[3, H, W]`` would exceed the cap."""
    hw = tuple(int(s) for s in hw)
    if count(hw) > max_pixels():
        dims = " x ".join(str(s) for s in hw)
        raise DataError(
            f"{name} declares {dims} = {count(hw):,} pixels, more than the {max_pixels():,} decoded safely (the cap of "
            f"{max_voxels():,} values over 3 channels); {_fix()}"
        )


def check_bytes(name: str, nbytes: int, what: str) -> None:
    """Refuse ``name`` when reading it would inflate more than :func:`max_bytes` (e.g. a gzip stream)."""
    if nbytes > max_bytes():
        raise DataError(
            f"{name}: {what} needs {nbytes:,} bytes, more than the {max_bytes():,} read safely "
            f"({max_voxels():,} values as float32); {_fix()}"
        )


def check_resize(name: str, size_hw: tuple[int, int], out_hw: tuple[int, int]) -> None:
    """Refuse a resize of ``name`` from ``size_hw`` to ``out_hw`` pixels whose ``[3, H, W]`` output would exceed the cap."""
    n = int(out_hw[0]) * int(out_hw[1])
    if n > max_pixels():
        h, w = size_hw
        raise DataError(
            f"{name} is {w}x{h} pixels (WxH); bringing its shorter side to {min(out_hw)} pixels would make a "
            f"{out_hw[1]}x{out_hw[0]} image ({n:,} pixels, more than the {max_pixels():,} allowed): crop it to the "
            f"region of interest (an aspect ratio near the model's square input), or remove it from the target"
        )


FIT_SIZE = 224  # the scoring default: loaders check every image against a resize of its shorter side to this


def fit_shape(hw: tuple[int, int], size: int) -> tuple[int, int]:
    """The (H, W) an ``hw`` image has once its shorter side is resized to ``size`` (before a centre crop)."""
    h, w = int(hw[0]), int(hw[1])
    other = int(size * max(h, w) / max(min(h, w), 1))  # torchvision's rounding of the longer side
    return (size, other) if h <= w else (other, size)


def check_fit(name: str, hw: tuple[int, int], size: int = FIT_SIZE) -> None:
    """Refuse ``name`` when resizing its shorter side to ``size`` would exceed the cap (a 100000 x 1 strip)."""
    check_resize(name, hw, fit_shape(hw, size))
