"""Intensity normalisation fixed per dataset, never per image.

One :class:`Intensity` maps raw pixel values (HU for CT, scanner units for MR, 16-bit counts, ...) to
[0, 1] by clipping to ``[lo, hi]`` per channel and scaling linearly. How ``lo``/``hi`` are chosen:

- ``percentile`` (default for MR and generic non-8-bit data): the 0.5 and 99.5 percentiles of every
  value of the *training* cases, per channel, as nnU-Net does for non-CT data;
- ``window``: a CT window ``W,L`` (width, level in HU) or a named one (:data:`CT_WINDOWS`):
  ``lo = L - W/2``, ``hi = L + W/2``;
- ``range``: an explicit ``LO,HI`` given by the user;
- ``unit8``: 8-bit images divided by 255 (photographs, PNG masks' images).

The chosen normalisation is a small dict (:meth:`Intensity.to_dict`) recorded in the fine-tuned model's
config; inference (:func:`hf_transfer_seg.models` loaders, the Space) applies the same one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np
import torch

from hf_transfer_seg.errors import ConfigError, DataError

# name -> (width, level) in HU
CT_WINDOWS: dict[str, tuple[float, float]] = {
    "soft-tissue": (400.0, 40.0),
    "lung": (1500.0, -600.0),
    "bone": (1800.0, 400.0),
    "bone-wide": (2500.0, 480.0),
    "brain": (80.0, 40.0),
}
PERCENTILES = (0.5, 99.5)
_MAX_VALUES_PER_CASE = 200_000  # percentiles are estimated from an evenly strided subset of each case


@dataclass
class Intensity:
    mode: str  # "percentile" | "window" | "range" | "unit8"
    lo: list[float]
    hi: list[float]
    source: str = ""  # how lo/hi were obtained, for cards

    def to_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "lo": [float(v) for v in self.lo], "hi": [float(v) for v in self.hi], "source": self.source}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> "Intensity | None":
        if not data:
            return None
        lo, hi = data["lo"], data["hi"]
        lo = [float(v) for v in (lo if isinstance(lo, (list, tuple)) else [lo])]
        hi = [float(v) for v in (hi if isinstance(hi, (list, tuple)) else [hi])]
        return cls(str(data.get("mode", "range")), lo, hi, str(data.get("source", "")))

    def apply(self, array: np.ndarray | torch.Tensor) -> torch.Tensor:
        """``float32 [C, H, W]`` in [0, 1] from raw values ``[C, H, W]`` (or ``[H, W]``)."""
        x = torch.as_tensor(np.asarray(array) if not isinstance(array, torch.Tensor) else array).float()
        if x.ndim == 2:
            x = x[None]
        channels = x.shape[0]
        lo = torch.tensor(_per_channel(self.lo, channels), dtype=torch.float32)[:, None, None]
        hi = torch.tensor(_per_channel(self.hi, channels), dtype=torch.float32)[:, None, None]
        x = torch.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
        return ((x - lo) / (hi - lo).clamp_min(1e-6)).clamp_(0.0, 1.0)


def _per_channel(values: Sequence[float], channels: int) -> list[float]:
    if len(values) == channels:
        return list(values)
    if len(values) == 1:
        return list(values) * channels
    raise DataError(f"the recorded intensity normalisation has {len(values)} channels but the image has {channels}")


def window(spec: str) -> Intensity:
    """A CT window: a name from :data:`CT_WINDOWS` or ``W,L`` (width, level in HU)."""
    text = str(spec).strip().lower()
    if text in CT_WINDOWS:
        width, level = CT_WINDOWS[text]
        source = f"CT window {text} (W {width:g}, L {level:g} HU)"
    else:
        try:
            width, level = (float(v) for v in text.split(","))
        except ValueError:
            raise ConfigError(
                f"--window {spec!r} is not a window; use one of {', '.join(CT_WINDOWS)} or WIDTH,LEVEL in HU (e.g. 400,40)"
            ) from None
        if width <= 0:
            raise ConfigError(f"--window width must be > 0, got {width:g}")
        source = f"CT window W {width:g}, L {level:g} HU"
    return Intensity("window", [level - width / 2], [level + width / 2], source)


def fixed_range(spec: str | Sequence[float]) -> Intensity:
    """An explicit ``LO,HI`` range."""
    try:
        lo, hi = (float(v) for v in (spec.split(",") if isinstance(spec, str) else spec))
    except ValueError:
        raise ConfigError(f"--intensity-range {spec!r} must be two numbers LO,HI (e.g. 0,4095)") from None
    if not hi > lo:
        raise ConfigError(f"--intensity-range needs HI > LO, got {lo:g},{hi:g}")
    return Intensity("range", [lo], [hi], f"fixed range {lo:g}..{hi:g}")


def from_options(window_spec: str | None = None, intensity_range: str | None = None) -> Intensity | None:
    """The user's explicit choice (``--window`` or ``--intensity-range``), or None (fit from the data)."""
    if window_spec and intensity_range:
        raise ConfigError("pass either --window or --intensity-range, not both")
    if window_spec:
        return window(window_spec)
    if intensity_range:
        return fixed_range(intensity_range)
    return None


def constant_error(what: str, value: float) -> DataError:
    """The one message for an image set without contrast (every value the same), shared by every reader."""
    return DataError(
        f"{what} are constant: every value is {value:g}, so there is nothing to score or learn (blank or "
        "wrongly exported images, e.g. a 16-bit export that lost its data); check the files, or point --target at images "
        "with content"
    )


def _finite_range(array: np.ndarray | torch.Tensor) -> tuple[float, float] | None:
    a = np.asarray(array)
    if a.dtype.kind == "f":
        a = a[np.isfinite(a)]
    return (float(a.min()), float(a.max())) if a.size else None


def constant_value(arrays: Iterable[np.ndarray | torch.Tensor]) -> float | None:
    """The single value every finite element of ``arrays`` holds, or None when they vary (or hold nothing finite)."""
    lo = hi = None
    for array in arrays:
        r = _finite_range(array)
        if r is None:
            continue
        lo, hi = (r if lo is None else (min(lo, r[0]), max(hi, r[1])))
        if hi > lo:
            return None
    return lo


def fit_percentiles(
    arrays: Iterable[np.ndarray | torch.Tensor], percentiles: tuple[float, float] = PERCENTILES,
    what: str = "the training images",
) -> Intensity:
    """nnU-Net-style clipping range: the percentiles of all values of ``arrays`` (``[C, ...]`` each), per channel.

    A set whose values are all one (``what`` names it in the error) is refused, as slices of volumes are.
    """
    pooled: list[list[np.ndarray]] = []
    lo_all = hi_all = None  # range of every finite value, not just of the strided subset
    for array in arrays:
        a = np.asarray(array, dtype=np.float32)
        if lo_all is None or hi_all == lo_all:
            r = _finite_range(a)
            if r is not None:
                lo_all, hi_all = r if lo_all is None else (min(lo_all, r[0]), max(hi_all, r[1]))
        if a.ndim == 2:
            a = a[None]
        a = a.reshape(a.shape[0], -1)
        step = max(1, a.shape[1] // _MAX_VALUES_PER_CASE)
        while len(pooled) < a.shape[0]:
            pooled.append([])
        for c in range(a.shape[0]):
            values = a[c, ::step]
            pooled[c].append(values[np.isfinite(values)])
    if not pooled:
        raise DataError("no images to fit the intensity normalisation on")
    if lo_all is not None and hi_all == lo_all:
        raise constant_error(what, lo_all)
    lo, hi = [], []
    for chunks in pooled:
        values = np.concatenate(chunks)
        if values.size == 0:
            raise DataError("every value of the training images is NaN or infinite")
        a, b = np.percentile(values, percentiles)
        if not b > a:
            b = a + 1.0
        lo.append(float(a))
        hi.append(float(b))
    return Intensity("percentile", lo, hi, f"{percentiles[0]:g}-{percentiles[1]:g} percentiles of the training cases")


UNIT8 = Intensity("unit8", [0.0], [255.0], "8-bit values / 255")


def to_three_channels(image: torch.Tensor) -> torch.Tensor:
    """``[3, H, W]`` from a normalised ``[C, H, W]`` (C = 1..4): grey repeated, 2 channels plus their mean, 4 -> first 3."""
    c = image.shape[0]
    if c == 1:
        return image.expand(3, -1, -1).contiguous()
    if c == 2:
        return torch.cat([image, image.mean(0, keepdim=True)])
    if c in (3, 4):
        return image[:3].contiguous()
    raise DataError(
        f"an image with {c} channels cannot feed a 3-channel encoder; select at most 4 channels (e.g. the modalities "
        "you need) before passing the data"
    )


def model_input(image01: torch.Tensor, raw: torch.Tensor | np.ndarray | None, recorded: dict | None) -> torch.Tensor:
    """The ``[3, H, W]`` input a fine-tuned model expects, applying the normalisation recorded at training.

    ``raw`` holds the file's own values (HU, 16-bit counts...) when it is not an 8-bit file; 8-bit files are
    display images whose values are already windowed, so they stay ``/ 255`` (``image01``).
    """
    intensity = Intensity.from_dict(recorded)
    if intensity is None or intensity.mode == "unit8" or raw is None:
        return image01
    return to_three_channels(intensity.apply(raw))
