"""Image decoding to uint8 tensors: libjpeg-turbo through torchvision, PIL as the fallback.

``decode_uint8(source)`` returns an RGB ``uint8`` tensor (3, H, W) from a path, bytes, a ``datasets`` image
dict (``{"bytes", "path"}``, read undecoded), a NumPy array or a PIL image. JPEG bytes go to
``torchvision.io.decode_jpeg`` (libjpeg-turbo; grey and CMYK JPEGs are converted to RGB by it); every other
format, and any JPEG it refuses, is opened with PIL (``to_pil``), which raises for corrupt files so the dataset
skips and counts them as before.

Reduced-size decoding: libjpeg can decode at 1/2, 1/4 or 1/8 scale while it inverts the DCT (PIL's
``draft``). ``decode_uint8(source, box=..., out_size=...)`` uses it when the crop box, scaled down, still holds
at least ``out_size`` pixels in both directions, i.e. when the final resize is a downscale by 2x or more anyway.
torchvision 0.29's ``decode_jpeg`` has no such size hint, so the scaled decode goes through PIL; on ImageNet
photographs (median 500x375) at 224 px the recipe's crops (80-100 % of the area) almost never allow it, on
larger images it does (``benchmarks/data_throughput.py`` measures both).
"""

from __future__ import annotations

import io
import os
from typing import Any

import numpy as np
import torch

JPEG_MAGIC = b"\xff\xd8\xff"
DCT_SCALES = (8, 4, 2)


def read_bytes(source: Any) -> bytes | None:
    """The encoded bytes of a path or a ``datasets`` image dict; None for decoded inputs (arrays, PIL images)."""
    if isinstance(source, dict):
        data = source.get("bytes")
        if data is not None:
            return bytes(data)
        source = source.get("path")
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source)
    if isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as handle:
            return handle.read()
    return None


def is_jpeg(data: bytes) -> bool:
    return data[:3] == JPEG_MAGIC


_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a JPEG's start-of-frame segment (a few marker hops, no decoding); PIL if unusual."""
    pos, n = 2, len(data)
    try:
        while pos + 9 < n:
            if data[pos] != 0xFF:
                break
            marker = data[pos + 1]
            if marker == 0xFF:  # fill byte
                pos += 1
                continue
            if marker in _SOF:
                height, width = int.from_bytes(data[pos + 5 : pos + 7], "big"), int.from_bytes(data[pos + 7 : pos + 9], "big")
                if width and height:
                    return width, height
                break
            if 0xD0 <= marker <= 0xD9 or marker == 0x01:  # markers without a length
                pos += 2
                continue
            pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
    except IndexError:
        pass
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as img:
            return img.size
    except Exception:  # noqa: BLE001 - the decoder will report the problem
        return None


def _from_pil(img) -> torch.Tensor:
    from hf_transfer_seg.data.classification import to_pil

    array = np.asarray(to_pil(img))
    return torch.from_numpy(array.copy()).permute(2, 0, 1)


def array_to_uint8(array: np.ndarray) -> torch.Tensor:
    """An (H, W, 3) or (H, W) uint8 array as a (3, H, W) tensor."""
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    array = array[..., :3]
    if not (array.flags.writeable and array.flags.c_contiguous):
        array = np.array(array)  # PIL's buffers are read-only
    return torch.from_numpy(array).permute(2, 0, 1)


def dct_scale(box_hw: tuple[int, int], out_size: int) -> int:
    """The largest libjpeg scale denominator (8, 4, 2 or 1) keeping the crop at least ``out_size`` on both sides."""
    h, w = box_hw
    for scale in DCT_SCALES:
        if h // scale >= out_size and w // scale >= out_size:
            return scale
    return 1


def decode_uint8(
    source: Any, *, scale: int = 1, size: tuple[int, int] | None = None
) -> tuple[torch.Tensor, int]:
    """Decode ``source`` to RGB uint8 (3, H, W); returns (tensor, scale actually applied).

    ``scale`` > 1 asks for a JPEG decoded at 1/scale resolution (PIL draft); ``size`` is the full-resolution
    (width, height) if known. Raises for unreadable data (the callers skip and count the sample).
    """
    from PIL import Image

    if isinstance(source, np.ndarray):
        return array_to_uint8(source), 1
    if isinstance(source, Image.Image):
        return _from_pil(source), 1
    data = read_bytes(source)
    if data is None:
        raise TypeError(f"cannot decode an image from {type(source).__name__}")
    if is_jpeg(data):
        if scale > 1:
            with Image.open(io.BytesIO(data)) as img:
                full_w, full_h = size or img.size
                img.draft("RGB", (max(1, full_w // scale), max(1, full_h // scale)))  # PIL: the largest scale <= this
                applied = round(full_w / img.size[0])
                if img.mode == "RGB":
                    img.load()
                    return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1), applied
                return _from_pil(img), applied
        from torchvision.io import ImageReadMode, decode_jpeg

        try:
            return decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB), 1
        except RuntimeError:
            pass  # truncated, or a JPEG variant libjpeg-turbo refuses: PIL decides (and raises if corrupt)
    with Image.open(io.BytesIO(data)) as img:
        return _from_pil(img), 1
