"""Turn whatever a visitor uploads into an RGB float image the model can take, or a clear refusal.

Decoding itself is the project's (:mod:`hf_transfer_seg.data.images`: 8/16-bit, float, grayscale,
RGBA, palette, TIFF); this module adds what a public demo needs on top: the size is checked from the
header *before* decoding (a size cap), overly large images are downscaled with a notice, and every
failure becomes a :class:`DataError` whose message says what was wrong and what to upload instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from hf_transfer_seg.data.images import channels_first, read_array, to_rgb_tensor
from hf_transfer_seg.errors import DataError

SUPPORTED = "PNG, JPEG, TIFF, BMP, GIF or WebP"
MIN_SIDE = 16

_MODE_NAMES = {
    "1": "1-bit",
    "L": "8-bit grayscale",
    "LA": "8-bit grayscale + alpha (alpha dropped)",
    "P": "palette",
    "PA": "palette + alpha (alpha dropped)",
    "RGB": "8-bit RGB",
    "RGBA": "8-bit RGBA (alpha dropped)",
    "CMYK": "CMYK",
    "I": "32-bit integer grayscale",
    "I;16": "16-bit grayscale",
    "I;16B": "16-bit grayscale",
    "I;16L": "16-bit grayscale",
    "F": "32-bit float grayscale",
}


@dataclass
class InputImage:
    """A decoded upload: ``tensor`` is ``float32 [3, H, W]`` in [0, 1] at the size the model will see."""

    tensor: torch.Tensor
    original_size: tuple[int, int]  # (width, height) of the file
    description: str  # e.g. "16-bit grayscale PNG, 565×584"
    notices: list[str] = field(default_factory=list)
    raw: torch.Tensor | None = None  # float32 [C, H, W] file values of a non-8-bit file, same size as tensor

    @property
    def size(self) -> tuple[int, int]:
        return int(self.tensor.shape[2]), int(self.tensor.shape[1])

    @property
    def downscaled(self) -> bool:
        return self.size != self.original_size

    def display_rgb(self) -> np.ndarray:
        """The image as ``uint8 [H, W, 3]``, for overlays (browsers cannot show TIFF or 16-bit data)."""
        return (self.tensor.permute(1, 2, 0).numpy() * 255.0 + 0.5).clip(0, 255).astype(np.uint8)


def _probe(path: Path) -> tuple[int, int, str]:
    """(width, height, description) from the file header, without decoding the pixels."""
    name = path.name
    try:
        with Image.open(path) as img:
            width, height = img.size
            kind = _MODE_NAMES.get(img.mode, img.mode)
            frames = getattr(img, "n_frames", 1)
            fmt = img.format or path.suffix.lstrip(".").upper()
    except Image.DecompressionBombError as exc:
        raise DataError(f"{name} is far too large to decode safely ({exc}); upload an image of a few megapixels") from exc
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        if path.suffix.lower() in (".tif", ".tiff"):
            return _probe_tiff(path)
        raise DataError(
            f"{name} is not an image this demo can read; upload a {SUPPORTED} file (2-D, grayscale or colour)"
        ) from None
    if frames > 1:
        kind += f", first of {frames} frames"
    return width, height, f"{kind} {fmt}"


def _probe_tiff(path: Path) -> tuple[int, int, str]:
    try:
        import tifffile

        with tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            shape, dtype = page.shape, page.dtype
    except Exception as exc:  # noqa: BLE001 - any failure means "not a readable TIFF"
        raise DataError(f"{path.name} is not a readable TIFF ({type(exc).__name__}); upload a {SUPPORTED} file") from exc
    height, width = (shape[1], shape[2]) if len(shape) == 3 and shape[0] in (3, 4) else (shape[0], shape[1])
    return int(width), int(height), f"{dtype} TIFF"


def read_input_image(path: str | Path | None, *, max_side: int = 1024, max_pixels: int = 40_000_000) -> InputImage:
    """Decode an uploaded file, refusing what cannot be segmented and downscaling what is too large."""
    if path is None or str(path) == "":
        raise DataError("no image given: upload an image or pick one of the examples")
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path.name} does not exist or is not a file; upload it again")
    if path.stat().st_size == 0:
        raise DataError(f"{path.name} is empty (0 bytes); upload a {SUPPORTED} file")
    width, height, kind = _probe(path)
    if width * height > max_pixels:
        raise DataError(
            f"{path.name} is {width}×{height} ({width * height / 1e6:.1f} megapixels), above this demo's limit of "
            f"{max_pixels / 1e6:g} megapixels; downscale it before uploading"
        )
    if min(width, height) < MIN_SIDE:
        raise DataError(f"{path.name} is {width}×{height}; images need at least {MIN_SIDE} pixels on each side")
    try:
        array = read_array(path)
        tensor = to_rgb_tensor(array)
    except DataError as exc:
        if "third spatial axis" in str(exc):
            raise DataError(f"{path.name} is a volume or multi-page stack ({exc}); upload one 2-D slice") from exc
        raise DataError(f"{path.name} could not be decoded ({exc.__cause__ or exc}); upload a {SUPPORTED} file") from exc
    if tuple(tensor.shape[1:]) != (height, width):
        raise DataError(
            f"{path.name} decodes to an array of shape {tuple(tensor.shape)}, not a single {width}×{height} image "
            "(a volume or multi-page stack?); upload one 2-D slice"
        )
    raw = None
    if array.dtype != np.uint8:  # the model's recorded normalisation applies to the file's own values
        raw = torch.from_numpy(channels_first(array).astype(np.float32))
        raw = raw[:1] if raw.shape[0] == 2 else raw
    image = InputImage(tensor=tensor, original_size=(width, height), description=f"{kind}, {width}×{height}", raw=raw)
    longest = max(width, height)
    if longest > max_side:
        scale = max_side / longest
        new_h, new_w = max(1, round(height * scale)), max(1, round(width * scale))
        image.tensor = torch.nn.functional.interpolate(
            tensor[None], size=(new_h, new_w), mode="bilinear", antialias=True, align_corners=False
        )[0].clamp_(0.0, 1.0)
        if image.raw is not None:
            image.raw = torch.nn.functional.interpolate(
                image.raw[None], size=(new_h, new_w), mode="bilinear", antialias=True, align_corners=False
            )[0]
        image.notices.append(
            f"The image is {width}×{height}; it was downscaled to {new_w}×{new_h} (this demo's limit is {max_side} "
            f"pixels on the longest side), so the overlay and the mask are {new_w}×{new_h}."
        )
    return image
