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
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from hf_transfer_seg.cards.dataset_ref import local_name
from hf_transfer_seg.data.images import is_image_file, load_image, to_rgb_tensor
from hf_transfer_seg.data.intensity import UNIT8
from hf_transfer_seg.data.sources.base import (  # noqa: F401 - re-exported: SegSample, SegTarget... are imported from here
    IMAGE_COLUMNS, MASK_COLUMNS, SegSample, SegTarget, apply_mapping, assemble, class_names_for, label_mapping,
    read_mask_array, resize_sample,
)
from hf_transfer_seg.errors import ConfigError, DataError

log = logging.getLogger(__name__)

EMBEDDED_TARGETS = ("mni152-tissue", "mni152-wm")
IMAGE_DIRS = ("images", "image", "imgs", "img")
MASK_DIRS = ("masks", "labels", "label", "1st_manual", "manual", "annotations", "groundtruth", "gt", "segmentations")
FOV_DIRS = ("mask", "fov", "roi")  # DRIVE calls its field-of-view folder "mask"


# the shared interface now lives in data/sources/base.py; the former private names stay for old callers
_apply_mapping, _assemble, _resize = apply_mapping, assemble, resize_sample


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
    foreground: list[int] | None = None,
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
    samples, k = assemble(raw, num_classes=num_classes, resize_longest=None if raw_values else resize_longest, foreground=foreground)
    return SegTarget(
        key=key or folder_key(root),
        samples=samples,
        num_classes=k,
        class_names=class_names_for(k, class_names),
        source=f"folder:{local_name(root)}",  # never the absolute path: cards are public
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
        samples.append(resize_sample(sample, resize_longest))
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
