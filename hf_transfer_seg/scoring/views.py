"""Colour-jittered views with common random numbers.

The paper's views: torchvision ``ColorJitter(brightness=0.1, contrast=0.05, saturation=0.1, hue=0.05)``,
no geometric augmentation. Here the jitter factors (and the order of the four adjustments, which
``ColorJitter`` also randomises) are drawn from our own seeded generator and applied with
``torchvision.transforms.v2.functional.adjust_*``, so the two views of every image are exactly the
same for every revision scored with the same seed.

``jitter="image"`` draws factors per image (the natural reading of the paper); ``jitter="batch"``
reproduces the reference code, which drew one set of factors per view for a whole batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torchvision.transforms.v2 import functional as TF

from hf_transfer_seg.errors import ConfigError

BRIGHTNESS, CONTRAST, SATURATION, HUE = 0.1, 0.05, 0.1, 0.05
JITTER_MODES = ("image", "batch")


@dataclass
class JitterParams:
    """Factors ``[N, 4]`` (brightness, contrast, saturation, hue) and the order ``[N, 4]`` of the adjustments."""

    factors: torch.Tensor
    order: torch.Tensor

    def __len__(self) -> int:
        return self.factors.shape[0]

    def take(self, index: torch.Tensor) -> "JitterParams":
        return JitterParams(self.factors[index], self.order[index])


def draw_jitter(n: int, generator: torch.Generator) -> JitterParams:
    """``n`` draws of ColorJitter(0.1, 0.05, 0.1, 0.05) parameters from ``generator``."""
    u = torch.rand(n, 4, generator=generator, dtype=torch.float64)
    low = torch.tensor([1 - BRIGHTNESS, 1 - CONTRAST, 1 - SATURATION, -HUE], dtype=torch.float64)
    high = torch.tensor([1 + BRIGHTNESS, 1 + CONTRAST, 1 + SATURATION, HUE], dtype=torch.float64)
    factors = low + u * (high - low)
    order = torch.argsort(torch.rand(n, 4, generator=generator), dim=1)
    return JitterParams(factors, order)


_ADJUST = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)


def apply_jitter(images: torch.Tensor, factors: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """``images`` (``[3, H, W]`` or ``[B, 3, H, W]`` in [0, 1]) with one set of factors applied in ``order``."""
    out = images
    for op in order.tolist():
        out = _ADJUST[op](out, float(factors[op]))
    return out


def make_view(images: torch.Tensor, params: JitterParams, *, mode: str = "image", batch_size: int = 32) -> torch.Tensor:
    """One jittered view of ``images`` ``[M, 3, H, W]``.

    ``mode="image"``: ``params`` has one row per image. ``mode="batch"``: one row per consecutive
    batch of ``batch_size`` images (the reference code's behaviour).
    """
    if mode not in JITTER_MODES:
        raise ConfigError(f"unknown jitter mode {mode!r}; choose one of {', '.join(JITTER_MODES)}")
    out = torch.empty_like(images)
    if mode == "image":
        if len(params) != images.shape[0]:
            raise ValueError(f"{len(params)} jitter draws for {images.shape[0]} images")
        for i in range(images.shape[0]):
            out[i] = apply_jitter(images[i], params.factors[i], params.order[i])
    else:
        for j, start in enumerate(range(0, images.shape[0], batch_size)):
            out[start : start + batch_size] = apply_jitter(images[start : start + batch_size], params.factors[j], params.order[j])
    return out


def compact(view: torch.Tensor) -> torch.Tensor:
    """A view in [0, 1] stored as uint8 (a quarter of the memory; the rounding, 1/510 at most, is what saving the
    jittered image as an 8-bit PNG would do): the later draws of views of a plan are kept this way."""
    return view.mul(255).round_().to(torch.uint8)


def expand(view: torch.Tensor) -> torch.Tensor:
    """A stored view as float in [0, 1] (uint8 views are divided by 255; float views are returned as they are)."""
    return view.float().div_(255) if view.dtype == torch.uint8 else view
