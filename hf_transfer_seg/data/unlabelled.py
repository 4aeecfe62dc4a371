"""Unlabelled image targets for the robustness score: a Hub dataset, a local folder, or a built-in default.

``resolve_target(spec)`` accepts

- ``mni152-tissue`` / ``mni152-wm``: the images of the embedded segmentation targets (MNI152 template
  slices shipped with nilearn), under the same key the fine-tuning results use;
- ``skimage-retina``: the CC0 fundus photograph ``retina.jpg`` shipped inside scikit-image (no
  fetching), tiled into overlapping 224-pixel patches at two scales, keeping patches that lie
  mostly inside the field of view;
- a local folder: every image file below it (recursive; folders named like masks or manual
  annotations are skipped, e.g. DRIVE's ``1st_manual`` and ``mask``);
- a Hub dataset id (``org/name`` or ``hf-dataset:org/name``): its image column (masks ignored), loaded
  with ``datasets``.

Images are decoded by :mod:`hf_transfer_seg.data.images` (8/16-bit, float, grayscale to 3 channels)
and brought to ``size x size`` by :func:`fit_to_size` (shorter side resized, centre crop).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import torch

from hf_transfer_seg.data import limits
from hf_transfer_seg.data.sources.base import ImageTarget  # noqa: F401 - re-exported: scoring imports it from here
from hf_transfer_seg.data.images import is_image_file, load_image, refusing_bombs, to_rgb_tensor
from hf_transfer_seg.errors import DataError

log = logging.getLogger(__name__)

BUILTIN_RETINA = "skimage-retina"
TILE = 224
# Sub-folders whose images are annotations, not target images.
MASK_DIR_NAMES = {
    "mask", "masks", "label", "labels", "annotation", "annotations", "gt", "groundtruth", "ground_truth",
    "1st_manual", "2nd_manual", "manual", "segmentation", "segmentations", "targets",
}  # fmt: skip
_MASK_COLUMN_RE = re.compile(r"mask|label|annotation|segment|gt|target", re.IGNORECASE)


def check_fit(image: torch.Tensor | np.ndarray, name: str, size: int = TILE) -> None:
    """Refuse (naming ``name``) an image whose resize to ``size`` on its shorter side would exceed the shared cap."""
    limits.check_fit(name, tuple(image.shape[-2:]), size)


def fit_to_size(image: torch.Tensor, size: int, name: str = "an image") -> torch.Tensor:
    """Resize the shorter side to ``size`` (antialiased bilinear) and centre-crop to ``size x size``.

    The resize's output is bounded by the shared cap (:mod:`~hf_transfer_seg.data.limits`): a 100000 x 1 strip
    is refused instead of asking for tens of GB.
    """
    from torchvision.transforms.v2 import functional as TF

    if image.shape[-2:] != (size, size):
        check_fit(image, name, size)
        image = TF.resize(image, [size], antialias=True)
        image = TF.center_crop(image, [size, size])
    return image.clamp_(0.0, 1.0)


def retina_path() -> Path:
    """Path of scikit-image's shipped ``retina.jpg`` (CC0 1.0, Häggström 2014)."""
    import skimage.data

    path = Path(skimage.data.__file__).resolve().parent / "retina.jpg"
    if not path.is_file():
        raise DataError(
            f"the built-in target {BUILTIN_RETINA!r} needs scikit-image's bundled retina.jpg, which this "
            f"installation lacks ({path}); install scikit-image>=0.24 from PyPI or pass --target FOLDER"
        )
    return path


def retina_tiles(tile: int = TILE, min_inside: float = 0.6) -> tuple[np.ndarray, list[tuple[int, int, int]]]:
    """The retina photograph and its tiles ``(scale, top, left)``: stride tile/2 at full and half size."""
    from PIL import Image

    with Image.open(retina_path()) as img:
        full = np.asarray(img.convert("RGB"))
        half = np.asarray(img.convert("RGB").resize((img.width // 2, img.height // 2), Image.BICUBIC))
    tiles = []
    for scale, array in ((1, full), (2, half)):
        inside = array.max(axis=2) > 20  # the dark surround of a fundus photograph is ~0
        h, w = inside.shape
        tops = sorted(set(list(range(0, h - tile + 1, tile // 2)) + [h - tile]))
        lefts = sorted(set(list(range(0, w - tile + 1, tile // 2)) + [w - tile]))
        for top in tops:
            for left in lefts:
                if inside[top : top + tile, left : left + tile].mean() >= min_inside:
                    tiles.append((scale, top, left))
    return (full, half), tiles  # type: ignore[return-value]


def builtin_retina() -> ImageTarget:
    (full, half), tiles = retina_tiles()
    arrays = {1: full, 2: half}

    def load(index: int) -> torch.Tensor:
        scale, top, left = tiles[index]
        return to_rgb_tensor(arrays[scale][top : top + TILE, left : left + TILE])

    return ImageTarget(
        key=BUILTIN_RETINA,
        description=(
            f"real fundus photograph (scikit-image retina.jpg, CC0 1.0, Häggström 2014), "
            f"{len(tiles)} overlapping {TILE}-pixel tiles at full and half scale"
        ),
        count=len(tiles),
        loader=load,
    )


def embedded_images(name: str) -> ImageTarget:
    """The images (masks ignored) of an embedded segmentation target, e.g. ``mni152-tissue`` slices."""
    from hf_transfer_seg.data.segmentation import load_mni152_target

    seg = load_mni152_target(name)
    images = [sample.image for sample in seg.samples]
    return ImageTarget(
        key=seg.key, description=seg.description, count=len(images), loader=lambda i: images[i], synthetic=seg.synthetic,
        slices=[(s.case or seg.key, i) for i, s in enumerate(seg.samples)],  # slices of one template volume, in order
    )


def list_image_files(folder: Path) -> list[Path]:
    """Image files below ``folder`` in a stable order, skipping hidden and mask/annotation folders."""
    files = []
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).parts
        if any(part.startswith(".") or part.lower() in MASK_DIR_NAMES for part in rel[:-1]):
            continue
        if path.is_file() and is_image_file(path):
            files.append(path)
    return files


def folder_images(folder: Path, synthetic: bool = False, fixed=None) -> ImageTarget:
    """Every image below ``folder``; 16-bit/float images share one range (``fixed``, else fitted percentiles)."""
    from hf_transfer_seg.data.images import channels_first, read_array
    from hf_transfer_seg.data.intensity import constant_error, constant_value, fit_percentiles, to_three_channels

    files = list_image_files(folder)
    if not files:
        from hf_transfer_seg.data.sources.volumes import NIFTI_SUFFIXES

        volumes = [p for p in folder.rglob("*") if p.name.lower().endswith(NIFTI_SUFFIXES)][:3]
        if volumes:
            raise DataError(
                f"no 2-D image files below {folder}, but NIfTI volumes such as {volumes[0].relative_to(folder)}: pass the "
                "folder that holds the volumes themselves, one volume file, or an nnU-Net folder (imagesTr/ + dataset.json)"
            )
        raise DataError(
            f"no image files found below {folder} (looked recursively for {', '.join(('png', 'jpg', 'tif', 'gif', '...'))}, "
            f"skipping folders named {', '.join(sorted(MASK_DIR_NAMES)[:4])}...); point --target at the folder of images"
        )
    parts = folder.resolve().parts
    key = "local:" + "/".join(parts[-2:])
    kind = "synthetic" if synthetic else "real"
    def checked(i: int, image: torch.Tensor) -> torch.Tensor:
        check_fit(image, f"image {files[i]}")
        return image

    target = ImageTarget(
        key=key,
        description=f"{len(files)} {kind} images from the local folder {'/'.join(parts[-2:])}",
        count=len(files),
        loader=lambda i: checked(i, load_image(files[i])),
        synthetic=synthetic,
    )
    if fixed is None and read_array(files[0]).dtype == np.uint8:
        return target  # 8-bit images: / 255, no dataset range to fit
    # one range for the whole folder, from up to 32 images spread over it; a constant set is refused either way
    picks = sorted(set(np.linspace(0, len(files) - 1, min(32, len(files))).round().astype(int).tolist()))
    what = f"the {len(picks)} images sampled from {folder}" if len(picks) < len(files) else f"the {len(files)} images of {folder}"
    if fixed is None:
        fixed = fit_percentiles((channels_first(read_array(files[i]), str(files[i])) for i in picks), what=what)
    else:
        single = constant_value(read_array(files[i]) for i in picks)
        if single is not None:
            raise constant_error(what, single)
    target.loader = lambda i: checked(i, to_three_channels(fixed.apply(channels_first(read_array(files[i]), str(files[i])).astype(np.float32))))
    target.description += f", intensities: {fixed.source}"
    return target


def _pick_image_column(features, requested: str | None, dataset_id: str) -> str:
    from datasets import Image as ImageFeature

    image_columns = [
        name for name, feature in features.items() if isinstance(feature, ImageFeature) or type(feature).__name__ == "Nifti"
    ]
    if requested:
        if requested not in features:
            raise DataError(f"dataset {dataset_id} has no column {requested!r}; its columns: {', '.join(features)}")
        return requested
    candidates = [c for c in image_columns if not _MASK_COLUMN_RE.search(c)] or image_columns
    if not candidates:
        raise DataError(
            f"dataset {dataset_id} has no image column (columns: {', '.join(features)}); "
            "pass --image-column NAME or use a folder of images"
        )
    return candidates[0]


def hub_images(dataset_id: str, split: str, image_column: str | None, synthetic: bool, slice_axis=None, fixed=None) -> ImageTarget:
    import datasets

    try:
        ds = datasets.load_dataset(dataset_id, split=split)
    except Exception as exc:  # noqa: BLE001 - the datasets library raises many types
        from hf_transfer_seg.redact import redact

        raise DataError(
            f"--target {dataset_id!r} is not a local folder and could not be loaded as a Hub dataset "
            f"(split {split!r}): {redact(exc)}. Pass an existing folder of images, a dataset id you can read, "
            f"or {BUILTIN_RETINA!r} for the built-in offline target"
        ) from exc
    column = _pick_image_column(ds.features, image_column, dataset_id)
    ds = ds.select_columns([column])
    if type(ds.features[column]).__name__ == "Nifti":
        return hub_volumes(ds, dataset_id, split, column, synthetic, slice_axis, fixed)

    def load(index: int) -> torch.Tensor:
        with refusing_bombs(f"row {index} of {dataset_id}"):
            value = ds[int(index)][column]
        if hasattr(value, "convert") and getattr(value, "mode", "") in ("P", "CMYK", "YCbCr", "LAB", "HSV"):
            value = value.convert("RGB")
        image = to_rgb_tensor(np.asarray(value))
        check_fit(image, f"row {index} of {dataset_id}")
        return image

    return ImageTarget(
        key=dataset_id if split == "train" else f"{dataset_id}:{split}",
        description=f"{len(ds)} {'synthetic' if synthetic else 'real'} images from Hub dataset {dataset_id} (split {split}, column {column})",
        count=len(ds),
        loader=load,
        synthetic=synthetic,
    )


def hub_volumes(ds, dataset_id, split, column, synthetic, slice_axis, fixed) -> ImageTarget:
    """A Hub dataset whose image column holds NIfTI volumes: every row a case, sliced along ``slice_axis``."""
    from hf_transfer_seg.data.sources.cases import Case, image_slices
    from hf_transfer_seg.data.sources.volumes import nibabel_volume

    cases = [Case(f"row{i:05d}", lambda i=i: nibabel_volume(ds[i][column], f"{dataset_id} row {i}")) for i in range(len(ds))]
    count, load, intensity, slices = image_slices(cases, slice_axis=slice_axis, fixed=fixed)
    return ImageTarget(
        key=dataset_id if split == "train" else f"{dataset_id}:{split}",
        description=f"{count} 2-D slices of {len(ds)} NIfTI volumes from Hub dataset {dataset_id} (split {split}, column {column}), intensities: {intensity.source}",
        count=count,
        loader=load,
        synthetic=synthetic,
        slices=slices,
    )


# the former private names, for old callers
_builtin_retina, _embedded_segmentation, _folder, _hub_dataset = builtin_retina, embedded_images, folder_images, hub_images


