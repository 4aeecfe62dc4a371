"""One registry of target sources: a ``--target`` spec is parsed once, then its source builds the data.

Modelled on timm's ``create_dataset`` + reader factory: :func:`parse_target_spec` decides the kind
(optionally forced by a ``kind:`` prefix), :func:`create_target` (or :func:`load_target` /
:func:`resolve_target`) asks that kind's source for labelled samples (fine-tuning, a
:class:`~hf_transfer_seg.data.sources.base.SegTarget`) or unlabelled images (scoring, an
:class:`~hf_transfer_seg.data.sources.base.ImageTarget`).

Dependencies run one way: the registry imports the sources; the sources build on the public names of
``data/sources/base.py`` (plus ``images``, ``intensity``, ``limits``) and never import the registry.

==========  ================================================  ==================================
kind        spec                                              source
==========  ================================================  ==================================
builtin     ``mni152-tissue``, ``mni152-wm``, ``skimage-retina``  data/segmentation.py, unlabelled.py
nnunet      folder with ``dataset.json`` + ``imagesTr/``      data/sources/nnunet.py
nifti       ``*.nii`` / ``*.nii.gz`` file or a folder of them  data/sources/volumes.py
dicom       folder of one DICOM series                        data/sources/volumes.py
folder      folder of PNG/TIFF/JPEG (``images/`` + ``masks/``)  data/segmentation.py, unlabelled.py
hub         ``owner/name`` or ``hf-dataset:owner/name``       Image or Nifti columns
==========  ================================================  ==================================
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hf_transfer_seg.errors import ConfigError, DataError

KINDS = ("builtin", "nnunet", "nifti", "dicom", "folder", "hub")
BUILTINS = ("mni152-tissue", "mni152-wm", "skimage-retina")
_HUB_ID_RE = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+\Z")


@dataclass(frozen=True)
class TargetSpec:
    kind: str
    location: str  # builtin name, filesystem path or Hub dataset id

    def __str__(self) -> str:
        return f"{self.kind}:{self.location}"

    @property
    def path(self) -> Path:
        return Path(self.location).expanduser()


def parse_target_spec(spec: str | TargetSpec) -> TargetSpec:
    """The kind and location of a ``--target`` value; a clear error when it names nothing usable."""
    if isinstance(spec, TargetSpec):
        return spec
    text = str(spec or "").strip()
    if not text:
        raise ConfigError("no target given; pass --target mni152-tissue, a folder, a NIfTI file, a DICOM folder or a Hub dataset id")
    prefix, _, rest = text.partition(":")
    if prefix == "hf-dataset":
        prefix = "hub"
    if prefix in KINDS and rest:
        if prefix == "builtin" and rest not in BUILTINS:
            raise ConfigError(f"unknown built-in target {rest!r}; choose one of {', '.join(BUILTINS)}")
        if prefix not in ("builtin", "hub") and not Path(rest).expanduser().exists():
            raise DataError(f"--target {text}: {rest} does not exist")
        return TargetSpec(prefix, rest)
    if text in BUILTINS:
        return TargetSpec("builtin", text)
    path = Path(text).expanduser()
    if path.exists():
        from hf_transfer_seg.data.sources.nnunet import is_nnunet_folder
        from hf_transfer_seg.data.sources.volumes import is_nifti, looks_like_dicom_folder

        if path.is_file():
            if is_nifti(path):
                return TargetSpec("nifti", text)
            if path.suffix.lower() == ".dcm":
                raise DataError(f"--target {text} is one DICOM file; pass the folder that holds the whole series")
            raise DataError(
                f"--target {text} is a file; pass a NIfTI volume (.nii/.nii.gz), a folder of images, a DICOM series "
                "folder or an nnU-Net dataset folder"
            )
        if is_nnunet_folder(path):
            return TargetSpec("nnunet", text)
        if (path / "imagesTr").is_dir():
            from hf_transfer_seg.data.sources.nnunet import read_dataset_json

            read_dataset_json(path)  # says what is missing and how to write it
        if looks_like_dicom_folder(path):
            return TargetSpec("dicom", text)
        if any(is_nifti(p) for p in path.iterdir()) and not (path / "images").is_dir():
            return TargetSpec("nifti", text)  # a folder of NIfTI volumes: one case each
        return TargetSpec("folder", text)
    if not _HUB_ID_RE.match(text) or text.startswith((".", "/", "~")):
        raise DataError(
            f"--target {text!r} is neither an existing file or folder nor a Hub dataset id (owner/name); check the "
            f"path, or use one of the built-in offline targets {', '.join(BUILTINS)}"
        )
    return TargetSpec("hub", text)


def fixed_intensity(window: str | None = None, intensity_range: str | None = None):
    from hf_transfer_seg.data import intensity

    return intensity.from_options(window, intensity_range)


def create_target(spec: str | TargetSpec, *, labelled: bool, **options: Any):
    """A labelled :class:`SegTarget` (``labelled=True``) or an unlabelled :class:`ImageTarget` from ``spec``.

    Labelled volumetric and raw-valued targets come back with their images un-normalised
    (``target.pending``): the caller splits them by case and calls ``target.normalise(train, fixed)``.
    """
    parsed = parse_target_spec(spec)
    return (_labelled if labelled else _unlabelled)(parsed, **options)


def load_target(spec: str | TargetSpec, **options: Any):
    """A labelled target (:class:`~hf_transfer_seg.data.sources.base.SegTarget`) from a ``--target`` spec.

    Options: num_classes, resize_longest, mask_dir, fov_dir, split, revision, image_column, mask_column, limit,
    key, class_names, slice_axis, labels, foreground_values (raw mask values of the classes of interest). Raw-valued targets come back pending normalisation.
    """
    return create_target(spec, labelled=True, **options)


def resolve_target(spec: str | TargetSpec, *, split: str = "train", image_column: str | None = None, synthetic: bool = False, **options):
    """The unlabelled images (:class:`~hf_transfer_seg.data.sources.base.ImageTarget`) of a ``--target`` spec.

    Options: slice_axis, window, intensity_range, limit (volumes); labels are never read.
    """
    return create_target(spec, labelled=False, split=split, image_column=image_column, synthetic=synthetic, **options)


def _labelled(
    spec: TargetSpec, *, num_classes=None, resize_longest=None, mask_dir=None, fov_dir=None, split="train",
    revision=None, image_column=None, mask_column=None, limit=None, key=None, class_names=None, slice_axis=None,
    labels=None, foreground_values=None, **_ignored,
):
    from hf_transfer_seg.data import segmentation as seg

    foreground = list(foreground_values) if foreground_values else None
    if spec.kind == "builtin":
        if spec.location not in seg.EMBEDDED_TARGETS:
            raise ConfigError(f"{spec.location} has no labels; fine-tune on {' or '.join(seg.EMBEDDED_TARGETS)}, a folder or a dataset")
        target = seg.load_mni152_target(spec.location, resize_longest=resize_longest, limit=limit)
        if foreground:
            from hf_transfer_seg.data.sources.base import select_classes

            select_classes(target, foreground, class_names)
        elif class_names:
            from hf_transfer_seg.data.sources.base import class_names_for

            target.class_names = class_names_for(target.num_classes, class_names)
        if num_classes is not None and num_classes != target.num_classes:
            raise ConfigError(f"{spec.location} has {target.num_classes} classes, not {num_classes}")
        if key:
            target.key = key
        return target
    if spec.kind in ("nifti", "dicom", "nnunet"):
        from hf_transfer_seg.data.sources.medical import labelled_target

        return labelled_target(
            spec.kind, spec.path, labels=labels, slice_axis=slice_axis, num_classes=num_classes, limit=limit, key=key,
            class_names=class_names, resize_longest=resize_longest, foreground=foreground,
        )
    if spec.kind == "folder":
        return seg.load_folder_target(
            spec.path, num_classes=num_classes, resize_longest=resize_longest, mask_dir=mask_dir, fov_dir=fov_dir,
            limit=limit, key=key, class_names=class_names, foreground=foreground,
        )
    from hf_transfer_seg.data.sources.hub import load_hub_target

    return load_hub_target(
        spec.location, split=split, revision=revision, image_column=image_column, mask_column=mask_column,
        num_classes=num_classes, resize_longest=resize_longest, limit=limit, key=key, class_names=class_names,
        slice_axis=slice_axis, foreground=foreground,
    )


def _unlabelled(
    spec: TargetSpec, *, split="train", image_column=None, synthetic=False, slice_axis=None, window=None,
    intensity_range=None, limit=None, **_ignored,
):
    from hf_transfer_seg.data import unlabelled

    fixed = fixed_intensity(window, intensity_range)
    if spec.kind == "builtin":
        if spec.location == unlabelled.BUILTIN_RETINA:
            return unlabelled.builtin_retina()
        return unlabelled.embedded_images(spec.location)
    if spec.kind in ("nifti", "dicom", "nnunet"):
        from hf_transfer_seg.data.sources.medical import image_target

        return image_target(spec.kind, spec.path, slice_axis=slice_axis, limit=limit, fixed=fixed, synthetic=synthetic)
    if spec.kind == "folder":
        return unlabelled.folder_images(spec.path, synthetic, fixed=fixed)
    return unlabelled.hub_images(spec.location, split, image_column, synthetic, slice_axis=slice_axis, fixed=fixed)
