"""Model forward for the demo and what it shows: class-index masks, overlays with a legend, mask PNGs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

# Background first; then colours that read well over grayscale medical images and over each other.
PALETTE: list[tuple[int, int, int]] = [
    (0, 0, 0),
    (255, 64, 64),
    (0, 200, 255),
    (255, 200, 0),
    (120, 255, 80),
    (220, 80, 255),
    (255, 140, 0),
    (0, 255, 190),
    (255, 105, 180),
]


def class_color(index: int) -> tuple[int, int, int]:
    if index < len(PALETTE):
        return PALETTE[index]
    rng = np.random.default_rng(index)  # stable extra colours for many classes
    return tuple(int(v) for v in rng.integers(64, 256, size=3))  # type: ignore[return-value]


def color_map(class_names: Sequence[str]) -> dict[str, str]:
    """Legend colours ``{class name: "#rrggbb"}`` for every class but the background (index 0)."""
    return {name: "#%02x%02x%02x" % class_color(i) for i, name in enumerate(class_names) if i > 0}


@dataclass
class Segmenter:
    """A segmentation network with its class names, run on whole images.

    ``model`` maps ``[B, 3, H, W]`` images in [0, 1] to logits ``[B, C, H, W]`` and normalises
    internally (as :class:`hf_transfer_seg.models.segmentation.SegmentationModel` does): ``C == 1`` is
    binary (sigmoid > ``threshold``), ``C > 1`` multi-class (argmax). A U-Net is fully convolutional,
    so the image is segmented in one forward at its own scale: padded to a multiple of ``pad_multiple``
    (the encoder downsamples by 32) and the logits cropped back, so the mask has the input's size.
    A model trained on images downscaled to ``resize_longest`` pixels sees inputs downscaled the same
    way, and its logits are upsampled back to the input's size.
    """

    model: torch.nn.Module
    class_names: list[str]
    threshold: float = 0.5
    pad_multiple: int = 32
    resize_longest: int | None = None
    intensity: dict | None = None  # the normalisation recorded at training (data/intensity.py)

    def __post_init__(self) -> None:
        self.model.eval()

    def prepare(self, image: torch.Tensor) -> torch.Tensor:
        """``[3, H, W]`` in [0, 1] -> padded ``[1, 3, H', W']`` batch."""
        x = image[None].float()
        h, w = x.shape[2:]
        m = self.pad_multiple
        pad_h, pad_w = (-h) % m, (-w) % m
        if pad_h or pad_w:
            mode = "reflect" if pad_h < h and pad_w < w else "replicate"
            x = torch.nn.functional.pad(x, (0, pad_w, 0, pad_h), mode=mode)
        return x

    @torch.inference_mode()
    def logits(self, batch: torch.Tensor) -> torch.Tensor:
        return self.model(batch)

    @torch.inference_mode()
    def predict(self, image: torch.Tensor) -> np.ndarray:
        """Class index per pixel, ``uint8 [H, W]``, for an image ``float32 [3, H, W]`` in [0, 1]."""
        from hf_transfer_seg.models.segmentation import at_training_scale

        def logits(x: torch.Tensor) -> torch.Tensor:
            return self.logits(self.prepare(x))[0, :, : x.shape[1], : x.shape[2]]

        logits = at_training_scale(logits, image, self.resize_longest)
        if logits.shape[0] == 1:
            mask = torch.sigmoid(logits[0]) > self.threshold
        else:
            mask = logits.argmax(dim=0)
        return mask.to(torch.uint8).numpy()


def overlay_value(rgb: np.ndarray, mask: np.ndarray, class_names: Sequence[str], *, alpha: float = 0.6):
    """The value of a ``gr.AnnotatedImage``: the image and one translucent layer per foreground class."""
    layers = [((mask == i).astype(np.float32) * alpha, name) for i, name in enumerate(class_names) if i > 0]
    return rgb, layers


def blend(rgb: np.ndarray, mask: np.ndarray, *, alpha: float = 0.6) -> np.ndarray:
    """A flat RGB overlay (for side-by-side comparisons): class colours blended over the image."""
    out = rgb.astype(np.float32)
    for index in np.unique(mask):
        if index == 0:
            continue
        where = mask == index
        out[where] = (1 - alpha) * out[where] + alpha * np.array(class_color(int(index)), dtype=np.float32)
    return out.round().clip(0, 255).astype(np.uint8)


def write_mask_png(mask: np.ndarray, path: str | Path, class_names: Sequence[str]) -> Path:
    """Save a class-index mask as a palette PNG: pixel values are class indices (0 = background),
    and image viewers show each class in its legend colour."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mask = np.ascontiguousarray(mask, dtype=np.uint8)
    img = Image.frombytes("P", (mask.shape[1], mask.shape[0]), mask.tobytes())
    palette = [c for i in range(max(len(class_names), 2)) for c in class_color(i)]
    img.putpalette(palette + [0] * (768 - len(palette)))
    img.save(path, format="PNG", optimize=False)
    return path
