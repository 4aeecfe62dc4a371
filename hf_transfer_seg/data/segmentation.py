"""Segmentation targets: images with label masks, from a folder, a Hub dataset or the embedded MNI152 set.

Every target becomes a :class:`SegTarget`: a list of samples (``float32 [3, H, W]`` image in [0, 1],
``int64 [H, W]`` label map, optional boolean field-of-view map), the number of classes and their
names, a key (``target_key``) under which results are recorded in cards, and whether it is synthetic.

Problems are found here, before any training: an image without a mask, image and mask of different
sizes, mask values outside the class set, a split that leaves no validation image.

Target specs understood by :func:`load_target`:

- ``mni152-tissue`` (3 classes: background / grey matter / white matter) and ``mni152-wm`` (binary:
  white matter): axial slices of the MNI152 2009a template that nilearn ships inside its package
  (real anatomy: the average of 152 T1 scans; no download).
- a local folder: ``images/`` with a mask folder matched by file name (``masks/x.png`` for
  ``images/x.png``), or the DRIVE layout (``images/21_training.tif`` <-> ``1st_manual/21_manual1.gif``,
  field of view ``mask/21_training_mask.gif``): files are matched by exact stem, else by the first
  token of the stem, else by the first number in it.
- anything else (``owner/name``, optionally ``hf-dataset:owner/name``): a Hub dataset with an image
  column and a mask column, loaded with :func:`datasets.load_dataset`.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image

from hf_transfer_seg.data.images import check_tiff_size, is_image_file, load_image, open_image, to_rgb_tensor
from hf_transfer_seg.data.intensity import UNIT8
from hf_transfer_seg.errors import ConfigError, DataError

log = logging.getLogger(__name__)

EMBEDDED_TARGETS = ("mni152-tissue", "mni152-wm")
IMAGE_DIRS = ("images", "image", "imgs", "img")
MASK_DIRS = ("masks", "labels", "label", "1st_manual", "manual", "annotations", "groundtruth", "gt", "segmentations")
FOV_DIRS = ("mask", "fov", "roi")  # DRIVE calls its field-of-view folder "mask"
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
            resized = _resize(sample, self.resize_longest)
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


def label_mapping(values: set[int], num_classes: int | None) -> tuple[int, dict[int, int]]:
    """(number of classes, raw value -> class index) for the union of raw mask values.

    Binary masks stored as 0/255 (or 0/any single value) map to 0/1. With ``num_classes`` given,
    every value must be a class index (or the binary 0/v case); otherwise it is a :class:`DataError`.
    """
    values = set(int(v) for v in values)
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


def _apply_mapping(array: np.ndarray, mapping: dict[int, int]) -> torch.Tensor:
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


def _resize(sample: SegSample, longest: int | None) -> SegSample:
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


def _assemble(
    raw: list[tuple[str, Callable[[], torch.Tensor], Callable[[], np.ndarray], Callable[[], np.ndarray] | None]],
    *,
    num_classes: int | None,
    resize_longest: int | None,
) -> tuple[list[SegSample], int]:
    """Decode (name, image loader, mask loader, fov loader) rows, check them, map labels, resize."""
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
        if num_classes is not None:
            try:
                label_mapping(per_image, num_classes)
            except DataError as exc:
                raise DataError(f"mask of {name}: {exc}") from None
        values |= per_image
        decoded.append((name, image, mask, valid))
    if not decoded:
        raise DataError("the target holds no images")
    k, mapping = label_mapping(values, num_classes)
    samples = [
        _resize(SegSample(name, image.float(), _apply_mapping(mask, mapping), valid), resize_longest)
        for name, image, mask, valid in decoded
    ]
    return samples, k


# ------------------------------------------------------------------------------------- folder target


def _key_functions() -> list[tuple[str, Callable[[str], str | None]]]:
    def exact(stem: str) -> str:
        return stem.lower()

    def first_token(stem: str) -> str:
        return re.split(r"[_\-.\s]+", stem.lower())[0]

    def first_number(stem: str) -> str | None:
        match = re.search(r"\d+", stem)
        return str(int(match.group())) if match else None

    return [("exact file stem", exact), ("first token of the stem", first_token), ("first number in the stem", first_number)]


def match_files(images: list[Path], masks: list[Path]) -> tuple[dict[Path, Path], str]:
    """Pair every image with a mask by file name: the strategy that pairs most images wins."""
    best: tuple[dict[Path, Path], str] = ({}, "exact file stem")
    for label, key in _key_functions():
        image_keys = [key(p.stem) for p in images]
        mask_keys = [key(p.stem) for p in masks]
        if None in image_keys or len(set(image_keys)) != len(image_keys):
            continue
        by_key: dict[str, Path] = {}
        ambiguous = set()
        for k, p in zip(mask_keys, masks):
            if k is None:
                continue
            if k in by_key:
                ambiguous.add(k)
            by_key[k] = p
        pairs = {img: by_key[k] for img, k in zip(images, image_keys) if k in by_key and k not in ambiguous}
        if len(pairs) > len(best[0]):
            best = (pairs, label)
        if len(pairs) == len(images):
            break
    return best


def _list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and is_image_file(p))


def find_folder_layout(
    root: Path, *, mask_dir: str | None = None, fov_dir: str | None = None
) -> tuple[Path, Path, Path | None]:
    """(images folder, masks folder, field-of-view folder or None) of a target folder."""
    image_dir = next((root / d for d in IMAGE_DIRS if (root / d).is_dir()), None)
    if image_dir is None:
        raise DataError(
            f"{root} has no images folder (looked for {', '.join(IMAGE_DIRS)}); expected images/ beside a masks/ "
            "folder (or the DRIVE layout images/ + 1st_manual/)"
        )
    if mask_dir:
        masks = root / mask_dir if not Path(mask_dir).is_absolute() else Path(mask_dir)
        if not masks.is_dir():
            raise DataError(f"mask folder {masks} does not exist")
    else:
        masks = next((root / d for d in MASK_DIRS if (root / d).is_dir()), None)
        if masks is None and (root / "mask").is_dir():
            masks = root / "mask"  # the simple layout with a singular name
        if masks is None:
            raise DataError(
                f"{root} has no mask folder (looked for {', '.join(MASK_DIRS)}); put the label masks in "
                f"{root / 'masks'} with the same file names as the images, or pass --mask-dir"
            )
    if fov_dir:
        fov = root / fov_dir if not Path(fov_dir).is_absolute() else Path(fov_dir)
        if not fov.is_dir():
            raise DataError(f"field-of-view folder {fov} does not exist")
    else:
        fov = next((root / d for d in FOV_DIRS if (root / d).is_dir() and (root / d) != masks), None)
    return image_dir, masks, fov


def load_folder_target(
    root: str | Path,
    *,
    num_classes: int | None = None,
    resize_longest: int | None = None,
    mask_dir: str | None = None,
    fov_dir: str | None = None,
    limit: int | None = None,
    key: str | None = None,
    class_names: list[str] | None = None,
) -> SegTarget:
    root = Path(root)
    image_dir, masks_dir, fov = find_folder_layout(root, mask_dir=mask_dir, fov_dir=fov_dir)
    images = _list_images(image_dir)
    if not images:
        raise DataError(f"no image files in {image_dir}")
    masks = _list_images(masks_dir)
    pairs, strategy = match_files(images, masks)
    missing = [p.name for p in images if p not in pairs]
    if missing:
        raise DataError(
            f"no mask in {masks_dir} for {len(missing)} of {len(images)} images ({', '.join(missing[:5])}"
            f"{', ...' if len(missing) > 5 else ''}); masks are matched by file name (same stem, or the same "
            "leading token/number as in DRIVE's 21_training.tif <-> 21_manual1.gif). Add the masks or remove those images."
        )
    fov_pairs: dict[Path, Path] = {}
    if fov is not None:
        fov_pairs, _ = match_files(images, _list_images(fov))
        if len(fov_pairs) != len(images):
            log.warning("field-of-view masks found for %d of %d images in %s; ignoring them", len(fov_pairs), len(images), fov)
            fov_pairs = {}
    log.info("target %s: %d images paired with masks by %s", root, len(images), strategy)
    if limit:
        images = images[:limit]
    from hf_transfer_seg.data.images import channels_first, read_array

    raw_values = read_array(images[0]).dtype != np.uint8  # 16-bit / float data: one range for the whole dataset

    def load(p: Path) -> torch.Tensor:
        array = read_array(p)
        if (array.dtype != np.uint8) != raw_values:
            raise DataError(
                f"{p.name} is {array.dtype} but {images[0].name} is {read_array(images[0]).dtype}; a target's images "
                "must share one bit depth so that one intensity range fits them all (convert them first)"
            )
        if not raw_values:
            return load_image(p)
        return torch.from_numpy(channels_first(array, str(p)).astype(np.float32))

    raw = [
        (
            p.stem,
            (lambda p=p: load(p)),
            (lambda p=p: read_mask_array(pairs[p])),
            (lambda p=p: read_mask_array(fov_pairs[p])) if fov_pairs else None,
        )
        for p in images
    ]
    samples, k = _assemble(raw, num_classes=num_classes, resize_longest=None if raw_values else resize_longest)
    return SegTarget(
        key=key or folder_key(root),
        samples=samples,
        num_classes=k,
        class_names=class_names_for(k, class_names),
        source=f"folder:{root.resolve()}",
        synthetic=False,
        description=f"{len(samples)} images from {root.name}/{image_dir.name} with masks from {masks_dir.name}"
        + (f" and field of view from {fov.name}" if fov_pairs else ""),
        extra={"pairing": strategy, "field_of_view": bool(fov_pairs)},
        intensity=None if raw_values else UNIT8.to_dict(),
        resize_longest=resize_longest if raw_values else None,
    )


def folder_key(root: str | Path) -> str:
    """Target key of a local folder: ``local:<parent>/<name>``, the key the robustness scorer records for it."""
    parts = Path(root).resolve().parts
    return "local:" + "/".join(parts[-2:])


def hub_key(dataset_id: str, split: str = "train") -> str:
    """Target key of a Hub dataset (as the robustness scorer records it): the id, ``:split`` unless train."""
    return dataset_id if split == "train" else f"{dataset_id}:{split}"


# ------------------------------------------------------------------------------------- MNI152 target


def load_mni152_target(
    variant: str = "mni152-tissue",
    *,
    step: int = 2,
    threshold: float = 0.5,
    min_brain_fraction: float = 0.25,
    resize_longest: int | None = None,
    limit: int | None = None,
) -> SegTarget:
    """Axial slices of nilearn's MNI152 2009a template with thresholded grey/white-matter maps.

    Labels: a pixel is grey (white) matter when that probability is >= ``threshold`` and not below the
    other; everything else is background. Slices are taken every ``step`` mm where brain tissue covers at
    least ``min_brain_fraction`` of the largest slice's tissue area. The files ship inside the nilearn
    package, so nothing is downloaded.
    """
    if variant not in EMBEDDED_TARGETS:
        raise ConfigError(f"unknown embedded target {variant!r}; choose one of {', '.join(EMBEDDED_TARGETS)}")
    from nilearn import datasets as nd

    t1 = np.asarray(nd.load_mni152_template(resolution=1).get_fdata(), dtype=np.float32)
    gm = np.asarray(nd.load_mni152_gm_template(resolution=1).get_fdata(), dtype=np.float32)
    wm = np.asarray(nd.load_mni152_wm_template(resolution=1).get_fdata(), dtype=np.float32)
    grey = (gm >= threshold) & (gm >= wm)
    white = (wm >= threshold) & (wm > gm)
    tissue_area = (grey | white).sum(axis=(0, 1))
    zs = [z for z in range(0, t1.shape[2], step) if tissue_area[z] >= min_brain_fraction * tissue_area.max()]
    if limit:
        zs = zs[:: max(1, len(zs) // limit)][:limit]
    t1_range = (float(t1.min()), float(t1.max()))  # one range for the whole template volume
    t1 = (t1 - t1_range[0]) / max(t1_range[1] - t1_range[0], 1e-6)
    samples = []
    for z in zs:
        # (x, y) voxel axes -> image rows = anterior at the top, columns = left-right
        image = np.rot90(t1[:, :, z]).copy()
        labels = np.zeros(image.shape, dtype=np.int64)
        if variant == "mni152-tissue":
            labels[np.rot90(grey[:, :, z])] = 1
            labels[np.rot90(white[:, :, z])] = 2
        else:
            labels[np.rot90(white[:, :, z])] = 1
        sample = SegSample(f"mni152-z{z:03d}", to_rgb_tensor(image), torch.from_numpy(labels))
        samples.append(_resize(sample, resize_longest))
    names = ["background", "grey_matter", "white_matter"] if variant == "mni152-tissue" else ["background", "white_matter"]
    return SegTarget(
        key=variant,
        samples=samples,
        num_classes=len(names),
        class_names=names,
        source="embedded:nilearn/MNI152NLin2009aSym",
        synthetic=False,
        description=(
            f"{len(samples)} axial slices (every {step} mm) of the MNI152 2009a symmetric T1 template shipped with "
            f"nilearn; labels from its grey/white-matter probability maps thresholded at {threshold}. Real anatomy "
            "(an average of 152 adult brains), not synthetic; adjacent slices are correlated."
        ),
        extra={"step_mm": step, "threshold": threshold, "slices": zs},
        intensity={"mode": "range", "lo": [t1_range[0]], "hi": [t1_range[1]], "source": "min-max of the template volume"},
    )


# --------------------------------------------------------------------------------------- dispatching


def load_target(spec: str, **options: Any) -> SegTarget:
    """A labelled target from a ``--target`` spec, through the registry (:mod:`hf_transfer_seg.data.registry`).

    Options: num_classes, resize_longest, mask_dir, fov_dir, split, revision, image_column, mask_column, limit,
    key, class_names, slice_axis, labels. Raw-valued targets come back pending normalisation.
    """
    from hf_transfer_seg.data.registry import create_target

    return create_target(spec, labelled=True, **options)


def split_groups(target: SegTarget, slabs: int = 5) -> tuple[dict[str, str], str]:
    """(sample name -> split unit, what a unit is): the case of volumetric samples, else the image itself.

    A single volume is cut into ``slabs`` contiguous blocks of slices, so validation slices are never
    neighbours of training slices except at one border.
    """
    cases = {s.name: s.case for s in target.samples}
    if not any(cases.values()):
        return {name: name for name in cases}, "image"
    if len(set(cases.values())) > 1:
        return {name: str(case) for name, case in cases.items()}, "case"
    names = [s.name for s in target.samples]  # in slice order
    per = max(1, -(-len(names) // slabs))
    return {name: f"slab{i // per}" for i, name in enumerate(names)}, "slab of contiguous slices (single volume)"


def split_target(target: SegTarget, *, val_fraction: float = 0.2, seed: int = 0) -> tuple[SegTarget, SegTarget, dict[str, Any]]:
    """Seeded train/validation split by case (volume) when samples come from volumes, else by image.

    Returns (train, val, record of the split); the record lists the cases of each side too.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ConfigError(f"--val-fraction must be between 0 and 1, got {val_fraction}")
    names = sorted(s.name for s in target.samples)
    if len(set(names)) != len(names):
        raise DataError(f"target {target.key} has duplicate image names; names must be unique to record the split")
    groups, unit = split_groups(target)
    units = sorted(set(groups.values()))
    n_val = int(round(len(units) * val_fraction))
    if n_val < 1 or n_val >= len(units):
        raise DataError(
            f"splitting {len(units)} {unit}s with --val-fraction {val_fraction} leaves "
            f"{'no validation' if n_val < 1 else 'no training'} {unit}s; add data or change --val-fraction"
        )
    order = np.random.default_rng(seed).permutation(len(units))
    val_units = {units[i] for i in order[:n_val]}
    val_names = sorted(n for n in names if groups[n] in val_units)
    train_names = sorted(n for n in names if groups[n] not in val_units)
    record = {"seed": seed, "val_fraction": val_fraction, "train": train_names, "val": val_names}
    if unit != "image":
        record.update(by=unit, train_units=sorted(set(units) - val_units), val_units=sorted(val_units))
    return target.subset(train_names), target.subset(val_names), record
