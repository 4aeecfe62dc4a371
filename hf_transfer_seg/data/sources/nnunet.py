"""nnU-Net raw / Medical Segmentation Decathlon folders.

nnU-Net v2: ``dataset.json`` (``channel_names``, ``labels`` name -> index, ``file_ending``), images
``imagesTr/CASE_XXXX<file_ending>`` (one file per channel XXXX), labels ``labelsTr/CASE<file_ending>``.
MSD / nnU-Net v1: ``dataset.json`` with ``modality`` and ``labels`` index -> name and a ``training``
list; one image file per case, modalities along the 4th axis. Scoring reads ``imagesTr`` (and
``imagesTs``) only, never ``labelsTr``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from hf_transfer_seg.data.sources.cases import Case
from hf_transfer_seg.data.sources.volumes import Volume, is_nifti, read_nifti, read_nifti_labels
from hf_transfer_seg.errors import DataError


def is_nnunet_folder(path: Path) -> bool:
    return (path / "dataset.json").is_file() and (path / "imagesTr").is_dir()


def read_dataset_json(root: Path) -> dict[str, Any]:
    try:
        meta = json.loads((root / "dataset.json").read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read {root / 'dataset.json'}: {exc}") from exc
    if not isinstance(meta, dict) or "labels" not in meta:
        raise DataError(f"{root / 'dataset.json'} has no 'labels'; an nnU-Net dataset.json maps label names to indices")
    return meta


def class_names(meta: dict[str, Any]) -> list[str]:
    """Class names by index from ``labels`` (v2: name -> index; MSD: index -> name)."""
    labels = meta["labels"]
    pairs = []
    for k, v in labels.items():
        if isinstance(v, (list, tuple)):
            raise DataError(f"dataset.json label {k!r} is a region (list of labels); region-based training is not supported")
        index, name = (int(v), str(k)) if str(k).lstrip("-").isdigit() is False else (int(k), str(v))
        pairs.append((index, name))
    pairs.sort()
    if [i for i, _ in pairs] != list(range(len(pairs))):
        raise DataError(f"dataset.json labels {dict(labels)} are not the indices 0..K-1")
    return [name for _, name in pairs]


def channel_names(meta: dict[str, Any]) -> list[str]:
    names = meta.get("channel_names") or meta.get("modality") or {"0": "image"}
    return [str(names[k]) for k in sorted(names, key=lambda k: int(k))]


def _read_image(path: Path) -> Volume:
    if is_nifti(path):
        return read_nifti(path)
    from hf_transfer_seg.data.images import channels_first, read_array

    array = channels_first(read_array(path), str(path)).astype(np.float32)  # 2-D nnU-Net data: [C, H, W]
    return Volume(array[:, :, :, None], (1.0, 1.0, 1.0), np.eye(3)[[1, 0, 2]])


def _read_labels(path: Path) -> np.ndarray:
    if is_nifti(path):
        return read_nifti_labels(path)
    from hf_transfer_seg.data.segmentation import read_mask_array

    return read_mask_array(path)[:, :, None]


def cases(root: Path, *, labelled: bool, meta: dict[str, Any] | None = None) -> list[Case]:
    """The training cases (``imagesTr``; with ``labelled``, each paired with its ``labelsTr`` file)."""
    meta = meta or read_dataset_json(root)
    ending = str(meta.get("file_ending") or ".nii.gz")
    n_channels = len(channel_names(meta))
    images = root / "imagesTr"
    files = sorted(p for p in images.iterdir() if p.is_file() and p.name.endswith(ending) and not p.name.startswith("."))
    if not files:
        raise DataError(f"{images} holds no files ending in {ending!r} (dataset.json file_ending)")
    by_case: dict[str, dict[int, Path]] = {}
    channel_re = re.compile(r"^(.*)_(\d{4})$")
    for p in files:
        stem = p.name[: -len(ending)]
        m = channel_re.match(stem)
        if m:
            by_case.setdefault(m.group(1), {})[int(m.group(2))] = p
        else:  # MSD: one file per case, modalities inside
            by_case.setdefault(stem, {})[-1] = p
    out = []
    for name, channels in sorted(by_case.items()):
        if -1 not in channels and sorted(channels) != list(range(n_channels)):
            raise DataError(
                f"case {name} has channel files {sorted(channels)} in {images}; dataset.json names {n_channels} "
                f"channel(s), so expected {', '.join(f'{name}_{c:04d}{ending}' for c in range(n_channels))}"
            )
        paths = [channels[-1]] if -1 in channels else [channels[c] for c in range(n_channels)]
        label_path = root / "labelsTr" / f"{name}{ending}"
        if labelled and not label_path.is_file():
            raise DataError(f"case {name} has no label file {label_path}; every imagesTr case needs labelsTr/{name}{ending}")

        def image(paths=paths) -> Volume:
            volumes = [_read_image(p) for p in paths]
            first = volumes[0]
            if any(v.array.shape[1:] != first.array.shape[1:] for v in volumes):
                raise DataError(f"the channel files {[p.name for p in paths]} differ in size")
            return Volume(np.concatenate([v.array for v in volumes]), first.spacing, first.directions)

        out.append(Case(name, image, (lambda volume, label_path=label_path: _read_labels(label_path)) if labelled else None))
    return out


def dataset_name(root: Path, meta: dict[str, Any]) -> str:
    return str(meta.get("name") or root.name)
