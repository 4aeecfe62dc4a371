"""The public interface every target source builds on: samples and targets, masks, label mapping, assembling.

Sources (``data/segmentation.py`` for folders and the embedded set, ``data/sources/hub.py``,
``data/sources/medical.py``...) import these names; the registry (:mod:`hf_transfer_seg.data.registry`)
imports the sources, never the reverse.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image

from hf_transfer_seg.cards.schema import safe_file_key
from hf_transfer_seg.data.images import check_tiff_size, open_image
from hf_transfer_seg.errors import ConfigError, DataError

IMAGE_COLUMNS = ("image", "img", "pixel_values", "input")
MASK_COLUMNS = ("mask", "label", "annotation", "segmentation", "seg", "labels", "segmentation_mask")


@dataclass
class SegSample:
    name: str
    image: torch.Tensor  # float32 [3, H, W] in [0, 1]
    mask: torch.Tensor  # int64 [H, W] in [0, num_classes)
    valid: torch.Tensor | None = None  # bool [H, W]: field of view (pixels outside are not scored)
    case: str | None = None  # the volume (case) a slice comes from; splits never cut a case
    spacing: tuple[float, float] | None = None  # pixel size (rows, columns) in mm, when the source says


@dataclass
class SegTarget:
    key: str
    samples: list[SegSample]
    num_classes: int
    class_names: list[str]
    source: str
    synthetic: bool = False
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    # dataset-level normalisation (data/intensity.py): None while images still hold raw values to fit it on
    intensity: dict[str, Any] | None = None
    resize_longest: int | None = None  # applied after normalisation when images are raw
    volumetric: bool = False

    @property
    def pending(self) -> bool:
        """True while the images hold raw values: :meth:`normalise` fits and applies the intensity range."""
        return self.intensity is None

    def normalise(self, train: "SegTarget | None" = None, fixed: Any = None) -> "SegTarget":
        """Fit the intensity range on ``train``'s images (all images without it), apply it to every image, in place."""
        from hf_transfer_seg.data.intensity import Intensity, fit_percentiles, to_three_channels

        if not self.pending:
            return self
        intensity = fixed if isinstance(fixed, Intensity) else fit_percentiles(
            (s.image for s in (train or self).samples), what=f"the training images of {(train or self).key}"
        )
        for i, sample in enumerate(self.samples):
            sample.image = to_three_channels(intensity.apply(sample.image))
            resized = resize_sample(sample, self.resize_longest)
            sample.image, sample.mask, sample.valid, sample.spacing = resized.image, resized.mask, resized.valid, resized.spacing
        self.intensity = intensity.to_dict()
        return self

    def subset(self, names: list[str]) -> "SegTarget":
        by_name = {s.name: s for s in self.samples}
        return SegTarget(
            self.key, [by_name[n] for n in names], self.num_classes, self.class_names, self.source,
            self.synthetic, self.description, dict(self.extra), self.intensity, self.resize_longest, self.volumetric,
        )

    def info(self) -> dict[str, Any]:
        """Facts about the target worth recording in a card."""
        return {
            "key": self.key,
            "source": self.source,
            "num_classes": self.num_classes,
            "class_names": list(self.class_names),
            "num_images": len(self.samples),
            "synthetic": self.synthetic,
            "description": self.description,
            **({"intensity": self.intensity} if self.intensity else {}),
            **({"volumetric": True, "cases": len({s.case for s in self.samples})} if self.volumetric else {}),
            **({"spacing_mm": True} if any(s.spacing for s in self.samples) else {}),
        }


# ---------------------------------------------------------------------------------------------- masks


def read_mask_array(source: str | Path | Image.Image | np.ndarray) -> np.ndarray:
    """Raw label values of a mask as a 2-D integer array (palette indices kept, grey RGB collapsed)."""
    name = str(source) if isinstance(source, (str, Path)) else "mask"
    try:
        if isinstance(source, np.ndarray):
            array = source
        elif isinstance(source, Image.Image):
            array = _pil_mask(source)
        elif Path(source).suffix.lower() in (".tif", ".tiff"):
            import tifffile

            try:
                check_tiff_size(source)
                array = np.asarray(tifffile.imread(source))
            except DataError:
                raise
            except Exception:  # noqa: BLE001 - fall back on PIL for odd TIFFs
                with open_image(source) as img:
                    array = _pil_mask(img)
        else:
            with open_image(source) as img:
                array = _pil_mask(img)
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read mask {name}: {exc}") from exc
    array = np.asarray(array)
    if array.ndim == 3:
        colour = array[:, :, :1] if array.shape[2] <= 2 else array[:, :, :3]  # drop an alpha channel
        if all(np.array_equal(colour[:, :, 0], colour[:, :, c]) for c in range(1, colour.shape[2])):
            array = colour[:, :, 0]
        else:
            raise DataError(
                f"mask {name} is a colour image; masks must hold one class index per pixel "
                "(a greyscale or palette image). Convert colours to class indices first."
            )
    if array.ndim != 2:
        raise DataError(f"mask {name} has shape {array.shape}; expected a 2-D label image")
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    if np.issubdtype(array.dtype, np.floating):
        if not np.all(np.isfinite(array)) or not np.all(array == np.round(array)):
            raise DataError(f"mask {name} holds non-integer values; masks must hold integer class indices")
    return array.astype(np.int64)


def _pil_mask(img: Image.Image) -> np.ndarray:
    if img.mode in ("P", "L", "1", "I", "I;16", "I;16B", "I;16L", "F"):
        return np.asarray(img)
    if img.mode in ("LA", "PA"):
        return np.asarray(img)[:, :, 0]
    return np.asarray(img.convert("RGB"))


def label_mapping(
    values: set[int], num_classes: int | None, foreground: list[int] | tuple[int, ...] | None = None
) -> tuple[int, dict[int, int]]:
    """(number of classes, raw value -> class index) for the union of raw mask values.

    Binary masks stored as 0/255 (or 0/any single value) map to 0/1. With ``num_classes`` given,
    every value must be a class index (or the binary 0/v case); otherwise it is a :class:`DataError`.
    With ``foreground`` (``--foreground-values``), see :func:`foreground_mapping`.
    """
    values = set(int(v) for v in values)
    if foreground:
        return foreground_mapping(values, foreground, num_classes)
    if num_classes is not None and num_classes < 2:
        raise ConfigError(f"--num-classes must be >= 2 (background + at least one class), got {num_classes}")
    binary_like = 0 in values and len(values) <= 2 or values <= {0, 1}
    if num_classes is None:
        if values <= {0, 1} or (binary_like and len(values) == 2):
            num_classes = 2
        elif min(values) < 0:
            raise DataError(f"mask values {sorted(values)[:10]} include negative numbers; masks must hold class indices >= 0")
        else:
            num_classes = max(values) + 1
            if num_classes > 256 or (num_classes > 32 and len(values) < num_classes / 4):
                raise DataError(
                    f"mask values go up to {max(values)}; that is not a class index set. Masks must hold class "
                    "indices 0..K-1 (or 0/255 for binary masks); pass --num-classes to check them."
                )
    if values <= set(range(num_classes)):
        return num_classes, {v: v for v in values}
    if num_classes == 2 and binary_like:
        return 2, {v: (1 if v else 0) for v in values}
    outside = sorted(v for v in values if v < 0 or v >= num_classes)
    raise DataError(
        f"mask values {outside[:10]} are outside the class set 0..{num_classes - 1}; fix the masks or pass "
        f"the right --num-classes (binary masks may use 0 and one other value such as 255)"
    )


def foreground_mapping(
    values: set[int], foreground: list[int] | tuple[int, ...], num_classes: int | None = None
) -> tuple[int, dict[int, int]]:
    """Name the classes of interest by their raw mask values: ``foreground[i]`` becomes class ``i + 1``,
    every other value background (0). ISBI-2012 stores membranes as 0 and cell interiors as 255:
    ``--foreground-values 0`` makes the membranes the scored class. A listed value that no mask holds
    is a :class:`DataError` (a typo would otherwise train on an empty class)."""
    foreground = [int(v) for v in foreground]
    if len(set(foreground)) != len(foreground):
        raise ConfigError(f"--foreground-values {foreground} lists a value twice; list each class value once")
    missing = [v for v in foreground if v not in values]
    if missing:
        raise DataError(
            f"--foreground-values {missing} not in any mask (the masks hold {sorted(values)[:12]}); "
            "pass values that occur in the masks"
        )
    k = len(foreground) + 1
    if num_classes is not None and num_classes != k:
        raise ConfigError(f"--num-classes {num_classes} disagrees with {len(foreground)} --foreground-values (+ background = {k})")
    index = {v: i + 1 for i, v in enumerate(foreground)}
    return k, {v: index.get(v, 0) for v in values}


def select_classes(target: "SegTarget", foreground: list[int] | tuple[int, ...], class_names: list[str] | None = None) -> "SegTarget":
    """``target`` (masks already class indices, e.g. the embedded MNI152 set) with only ``foreground``'s classes
    kept, renumbered 1..n in that order (:func:`foreground_mapping`), in place."""
    values: set[int] = set()
    for s in target.samples:
        values |= set(torch.unique(s.mask).tolist())
    k, mapping = foreground_mapping(values, foreground)
    old = list(target.class_names)
    for s in target.samples:
        s.mask = apply_mapping(s.mask.numpy(), mapping)
    target.num_classes = k
    target.class_names = class_names_for(k, class_names or ["background"] + [old[int(v)] for v in foreground if int(v) < len(old)])
    return target


def apply_mapping(array: np.ndarray, mapping: dict[int, int]) -> torch.Tensor:
    out = np.zeros(array.shape, dtype=np.int64)
    for raw, label in mapping.items():
        if raw != label:
            out[array == raw] = label
        else:
            out[array == raw] = raw
    return torch.from_numpy(out)


def class_names_for(num_classes: int, names: list[str] | None = None) -> list[str]:
    if names:
        if len(names) != num_classes:
            raise ConfigError(f"{len(names)} class names given for {num_classes} classes")
        return list(names)
    if num_classes == 2:
        return ["background", "foreground"]
    return ["background"] + [f"class_{i}" for i in range(1, num_classes)]


# ------------------------------------------------------------------------------------------ resizing


def resize_sample(sample: SegSample, longest: int | None) -> SegSample:
    if not longest:
        return sample
    h, w = sample.mask.shape
    scale = longest / max(h, w)
    if scale >= 1.0:
        return sample
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    image = torch.nn.functional.interpolate(
        sample.image[None], size=size, mode="bilinear", antialias=True, align_corners=False
    )[0].clamp_(0, 1)

    def nearest(t: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.interpolate(t[None, None].float(), size=size, mode="nearest-exact")[0, 0]

    valid = nearest(sample.valid).bool() if sample.valid is not None else None
    spacing = None
    if sample.spacing is not None:
        spacing = (sample.spacing[0] * h / size[0], sample.spacing[1] * w / size[1])
    return SegSample(sample.name, image, nearest(sample.mask).long(), valid, sample.case, spacing)


# ---------------------------------------------------------------------------------------- assembling


def assemble(
    raw: list[tuple[str, Callable[[], torch.Tensor], Callable[[], np.ndarray], Callable[[], np.ndarray] | None]],
    *,
    num_classes: int | None,
    resize_longest: int | None,
    foreground: list[int] | None = None,
) -> tuple[list[SegSample], int]:
    """Decode (name, image loader, mask loader, fov loader) rows, check them, map labels, resize.
    ``foreground``: raw values of the classes of interest (:func:`foreground_mapping`)."""
    decoded = []
    values: set[int] = set()
    for name, load_img, load_mask, load_fov in raw:
        image = load_img()
        mask = load_mask()
        if tuple(image.shape[1:]) != tuple(mask.shape):
            raise DataError(
                f"image {name} is {image.shape[2]}x{image.shape[1]} (WxH) but its mask is {mask.shape[1]}x{mask.shape[0]}; "
                "image and mask must have the same size (check the pairing or resize the mask)"
            )
        valid = None
        if load_fov is not None:
            fov = load_fov()
            if tuple(fov.shape) != tuple(mask.shape):
                raise DataError(f"field-of-view mask of {name} is {fov.shape[::-1]} but the image is {tuple(mask.shape[::-1])}")
            valid = torch.from_numpy(fov > 0)
        per_image = set(np.unique(mask).tolist())
        if num_classes is not None and not foreground:
            try:
                label_mapping(per_image, num_classes)
            except DataError as exc:
                raise DataError(f"mask of {name}: {exc}") from None
        values |= per_image
        decoded.append((name, image, mask, valid))
    if not decoded:
        raise DataError("the target holds no images")
    k, mapping = label_mapping(values, num_classes, foreground)
    samples = [
        resize_sample(SegSample(name, image.float(), apply_mapping(mask, mapping), valid), resize_longest)
        for name, image, mask, valid in decoded
    ]
    return samples, k


@dataclass
class ImageTarget:
    """A set of target images addressable by index."""

    key: str  # names the target in cards: model-index dataset_name, YAML key, plot file name
    description: str  # one line for cards: what the images are and where they come from
    count: int
    loader: Callable[[int], torch.Tensor] = field(repr=False)
    synthetic: bool = False  # True only when the images were generated rather than acquired
    # (volume, slice index) of each image when the images are slices of volumes: slices of one volume are not
    # independent, so the score's tie test resamples volumes (or blocks of neighbouring slices), not slices
    slices: list[tuple[str, int]] | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return self.count

    def load(self, index: int) -> torch.Tensor:
        """Image ``index`` as ``float32 [3, H, W]`` in [0, 1]."""
        return self.loader(index)

    @property
    def file_key(self) -> str:
        return safe_file_key(self.key)
