"""Hub dataset targets with an image and a mask column: ``Image`` columns (one 2-D image per row) or
``Nifti`` columns (one volume per row, each row a case sliced along ``--slice-axis``)."""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

from hf_transfer_seg.data.images import refusing_bombs, to_rgb_tensor
from hf_transfer_seg.data.intensity import UNIT8
from hf_transfer_seg.data.segmentation import hub_key
from hf_transfer_seg.data.sources.base import (
    IMAGE_COLUMNS, MASK_COLUMNS, SegTarget, apply_mapping, assemble, class_names_for, label_mapping, read_mask_array,
)
from hf_transfer_seg.errors import DataError



def load_hub_target(
    dataset_id: str,
    *,
    split: str = "train",
    revision: str | None = None,
    image_column: str | None = None,
    mask_column: str | None = None,
    num_classes: int | None = None,
    resize_longest: int | None = None,
    limit: int | None = None,
    key: str | None = None,
    class_names: list[str] | None = None,
    slice_axis: str | None = None,
    foreground: list[int] | None = None,
) -> SegTarget:
    """A Hub dataset (or anything :func:`datasets.load_dataset` accepts) with an image and a mask column.

    ``Nifti`` columns hold one volume per row: rows are cases, sliced along ``slice_axis``.
    """
    import datasets

    try:
        ds = datasets.load_dataset(dataset_id, split=split, revision=revision)
    except Exception as exc:  # noqa: BLE001 - say which dataset and how to fix
        from hf_transfer_seg.redact import redact

        raise DataError(
            f"cannot load dataset {dataset_id!r} (split {split!r}): {redact(exc)}. Check the id, the split "
            "(--split) and HF_ENDPOINT/HF_TOKEN; a local folder target needs images/ and masks/ subfolders."
        ) from exc
    columns = list(ds.column_names)
    image_column = image_column or next((c for c in IMAGE_COLUMNS if c in columns), None)
    mask_column = mask_column or next((c for c in MASK_COLUMNS if c in columns), None)
    for role, col in (("image", image_column), ("mask", mask_column)):
        if col is None or col not in columns:
            raise DataError(
                f"dataset {dataset_id} has no {role} column (columns: {', '.join(columns)}); pass --{role}-column"
            )
    if _is_nifti_feature(ds.features.get(image_column)):
        return _hub_volume_target(
            ds, dataset_id, split, image_column, mask_column, num_classes=num_classes, limit=limit, key=key,
            class_names=class_names, slice_axis=slice_axis, resize_longest=resize_longest, revision=revision,
            foreground=foreground,
        )
    if limit:
        ds = ds.select(range(min(limit, len(ds))))

    def image_of(value: Any) -> torch.Tensor:
        if isinstance(value, Image.Image):
            value = np.asarray(value.convert("RGB") if value.mode in ("P", "CMYK", "YCbCr") else value)
        return to_rgb_tensor(np.asarray(value))

    raw = []
    with refusing_bombs(f"in {dataset_id}"):  # datasets decodes every image here
        rows = list(ds)
    for i, row in enumerate(rows):
        name = str(row.get("name") or row.get("file_name") or row.get("id") or f"{i:05d}")
        raw.append((name, (lambda v=row[image_column]: image_of(v)), (lambda v=row[mask_column]: read_mask_array(np.asarray(v) if not isinstance(v, Image.Image) else v)), None))
    samples, k = assemble(raw, num_classes=num_classes, resize_longest=resize_longest, foreground=foreground)
    names = class_names
    if names is None and not foreground:
        feature = ds.features.get(mask_column)
        names = list(getattr(feature, "names", None) or []) or None
        if names is not None and len(names) != k:
            names = None
    return SegTarget(
        key=key or hub_key(dataset_id, split),
        intensity=UNIT8.to_dict(),
        samples=samples,
        num_classes=k,
        class_names=class_names_for(k, names),
        source=f"hub-dataset:{dataset_id}" + (f"@{revision}" if revision else ""),
        synthetic=False,
        description=f"{len(samples)} rows of {dataset_id} (split {split}), columns {image_column}/{mask_column}",
        extra={"dataset_id": dataset_id, "split": split, "revision": revision},
    )


def _is_nifti_feature(feature: Any) -> bool:
    return type(feature).__name__ == "Nifti"


def _hub_volume_target(ds, dataset_id, split, image_column, mask_column, *, num_classes, limit, key, class_names,
                       slice_axis, resize_longest, revision, foreground=None) -> SegTarget:
    """Rows of NIfTI volumes (image and mask columns) as cases of a volumetric target."""
    from hf_transfer_seg.data.sources.cases import Case, labelled_slices
    from hf_transfer_seg.data.sources.volumes import integer_labels, nibabel_volume

    def case(i: int) -> Case:
        def image():
            return nibabel_volume(ds[i][image_column], f"{dataset_id} row {i} {image_column}")

        def labels(volume):
            return integer_labels(nibabel_volume(ds[i][mask_column], f"{dataset_id} row {i} {mask_column}").array[0], f"row {i}")

        return Case(f"row{i:05d}", image, labels)

    samples, values = labelled_slices([case(i) for i in range(len(ds))], slice_axis=slice_axis, limit=limit)
    k, mapping = label_mapping(values, num_classes, foreground)
    for sample in samples:
        sample.mask = apply_mapping(sample.mask.numpy(), mapping)
    return SegTarget(
        key=key or hub_key(dataset_id, split), samples=samples, num_classes=k, class_names=class_names_for(k, class_names),
        source=f"hub-dataset:{dataset_id}" + (f"@{revision}" if revision else ""),
        description=f"{len(samples)} 2-D slices of the {len(ds)} NIfTI volumes of {dataset_id} (split {split})",
        extra={"dataset_id": dataset_id, "split": split, "revision": revision}, intensity=None,
        resize_longest=resize_longest, volumetric=True,
    )
