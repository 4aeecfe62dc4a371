"""The recipes' per-image transforms on uint8 tensors: decode, RandomResizedCrop, flip (and timm's RandAugment).

These replace timm's PIL transforms + ``ToTensor`` + ``Normalize`` in the loader workers; normalisation and
random erasing move to the accelerator (``gpu_augment.DevicePrep``). The random draws are timm's, in timm's
order, from the same generators: RandomResizedCrop draws its box with Python's ``random`` exactly as
``timm.data.transforms.RandomResizedCropAndInterpolation.get_params`` does, the flip draws ``torch.rand(1)`` as
torchvision's ``RandomHorizontalFlip`` does, RandAugment is timm's own transform object (PIL-based: the 224 px
crop is handed to it as a PIL image and read back). With the same per-sample seed a sample therefore gets the
same box, flip and RandAugment ops as on the legacy path; only the resampling differs (torchvision's
antialiased bilinear on tensors vs PIL's bilinear), and with reduced-size JPEG decoding part of the
downscale happens in libjpeg's DCT.

A transform here takes the undecoded source (path, bytes, image dict, array) because the decode itself depends
on the crop; ``decodes = True`` tells the dataset to call it inside its skip-unreadable loop.
"""

from __future__ import annotations

import math
import random
from typing import Any, Callable

import numpy as np
import torch

from hf_transfer_seg.data.decode import array_to_uint8, dct_scale, decode_uint8, is_jpeg, jpeg_size, read_bytes

RATIO = (3.0 / 4.0, 4.0 / 3.0)


def rrc_params(width: int, height: int, scale: tuple[float, float], ratio: tuple[float, float] = RATIO):
    """timm's RandomResizedCropAndInterpolation.get_params (same draws, same order): (top, left, h, w)."""
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = random.uniform(*scale) * area
        aspect = math.exp(random.uniform(*log_ratio))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if w <= width and h <= height:
            return random.randint(0, height - h), random.randint(0, width - w), h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def _size_of(source: Any) -> tuple[Any, tuple[int, int] | None]:
    """(source for the decoder, (width, height) if known without decoding)."""
    if isinstance(source, np.ndarray):
        return source, (source.shape[1], source.shape[0])
    data = read_bytes(source)
    if data is None:  # PIL image
        return source, getattr(source, "size", None)
    return data, jpeg_size(data) if is_jpeg(data) else None


def decode_box(source: Any, plan: Callable[[int, int], tuple[int, int, int, int]], out_size: int, reduce: bool = True):
    """Decode ``source`` and plan a crop box on its full-resolution size; decode at 1/2-1/8 scale when the box allows.

    Returns (uint8 image, (top, left, h, w) in that image's pixels).
    """
    source, size = _size_of(source)
    if size is None:
        image, _ = decode_uint8(source)
        return image, plan(image.shape[2], image.shape[1])
    box = plan(*size)
    scale = dct_scale(box[2:], out_size) if reduce and isinstance(source, bytes) else 1
    image, applied = decode_uint8(source, scale=scale, size=size)
    if (image.shape[2], image.shape[1]) != tuple(size) and applied == 1:
        box = plan(image.shape[2], image.shape[1])  # header lied (rare): plan on what was decoded
    elif applied > 1:
        top, left, h, w = box
        H, W = image.shape[1:]
        top, left = min(top // applied, H - 1), min(left // applied, W - 1)
        box = (top, left, max(1, min(h // applied, H - top)), max(1, min(w // applied, W - left)))
    return image, box


def resized_crop(image: torch.Tensor, box, size: int) -> torch.Tensor:
    from torchvision.transforms.v2 import InterpolationMode
    from torchvision.transforms.v2 import functional as F

    top, left, h, w = box
    return F.resized_crop(image, top, left, h, w, [size, size], interpolation=InterpolationMode.BILINEAR, antialias=True)


class TrainTransformU8:
    """RandomResizedCrop(scale) + horizontal flip [+ timm RandAugment] -> uint8 (3, size, size)."""

    decodes = True

    def __init__(self, size: int, scale=(0.8, 1.0), hflip: float = 0.5, rand_augment=None, reduce: bool = True):
        self.size, self.scale, self.hflip = int(size), tuple(scale), float(hflip)
        self.rand_augment, self.reduce = rand_augment, reduce

    def plan(self, width: int, height: int):
        return rrc_params(width, height, self.scale)

    def __call__(self, source: Any) -> torch.Tensor:
        image, box = decode_box(source, self.plan, self.size, self.reduce)
        out = resized_crop(image, box, self.size)
        if self.hflip > 0 and torch.rand(1) < self.hflip:
            out = out.flip(-1)
        if self.rand_augment is not None:
            from PIL import Image

            pil = Image.fromarray(out.permute(1, 2, 0).contiguous().numpy())  # contiguous: no tobytes() copy in PIL
            out = array_to_uint8(np.asarray(self.rand_augment(pil)))
        return out.contiguous()


class ValTransformU8:
    """Resize the shorter side to ``size`` (crop_pct 1.0) + centre crop -> uint8 (3, size, size), as timm's eval."""

    decodes = True

    def __init__(self, size: int, crop_pct: float = 1.0, reduce: bool = True):
        self.size, self.scale_size, self.reduce = int(size), math.floor(size / crop_pct), reduce

    def plan(self, width: int, height: int):
        return 0, 0, height, width

    def __call__(self, source: Any) -> torch.Tensor:
        from torchvision.transforms.v2 import InterpolationMode
        from torchvision.transforms.v2 import functional as F

        image, _ = decode_box(source, self.plan, self.scale_size, self.reduce)
        image = F.resize(image, [self.scale_size], interpolation=InterpolationMode.BILINEAR, antialias=True)
        return F.center_crop(image, [self.size, self.size]).contiguous()


def find_rand_augment(timm_transform) -> Any:
    """The RandAugment object inside a timm ``create_transform`` Compose (None when there is none)."""
    from timm.data.auto_augment import RandAugment

    for t in getattr(timm_transform, "transforms", []):
        if isinstance(t, RandAugment):
            return t
    return None
