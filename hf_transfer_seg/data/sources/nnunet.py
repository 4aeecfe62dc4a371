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


EXAMPLE_JSON = '{"channel_names": {"0": "CT"}, "labels": {"background": 0, "organ": 1}, "numTraining": N, "file_ending": ".nii.gz"}'


def read_dataset_json(root: Path) -> dict[str, Any]:
    """``dataset.json`` of an nnU-Net raw / MSD folder, its ``labels``, ``channel_names`` and ``file_ending`` checked."""
    path = root / "dataset.json"
    if not path.is_file():
        raise DataError(
            f"{root} has imagesTr/ but no dataset.json; an nnU-Net raw folder needs one naming channel_names, labels and "
            f"file_ending, e.g. {EXAMPLE_JSON}. Write it, or pass a single volume (.nii.gz) or a folder of volumes instead"
        )
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read {path}: {exc}; it must be a JSON object such as {EXAMPLE_JSON}") from exc
    if not isinstance(meta, dict) or "labels" not in meta:
        raise DataError(f"{path} has no 'labels'; an nnU-Net dataset.json maps label names to indices, e.g. {EXAMPLE_JSON}")
    class_names(meta, path)
    channel_names(meta, path)
    if not isinstance(meta.get("file_ending", ".nii.gz"), str):
        raise DataError(f"{path}: file_ending {meta['file_ending']!r} must be a string such as \".nii.gz\"")
    return meta


def _index(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None


def class_names(meta: dict[str, Any], path: Path | str = "dataset.json") -> list[str]:
    """Class names by index from ``labels`` (v2: name -> index; MSD: index -> name)."""
    labels = meta["labels"]
    if not isinstance(labels, dict) or not labels:
        raise DataError(f"{path}: labels must be an object mapping each name to an integer index, e.g. {EXAMPLE_JSON}")
    msd = all(_index(k) is not None for k in labels) and all(isinstance(v, str) for v in labels.values())
    pairs = []
    for k, v in labels.items():
        if isinstance(v, (list, tuple)):
            raise DataError(f"{path}: label {k!r} is a region (list of labels); region-based training is not supported")
        index, name = (_index(k), str(v)) if msd else (_index(v), str(k))
        if index is None:
            raise DataError(
                f"{path}: label {k!r} has the index {v!r}; every label must map its name to an integer index "
                f"(nnU-Net v2: {{\"background\": 0, \"{k}\": 1}}; MSD: {{\"0\": \"background\", \"1\": \"{k}\"}})"
            )
        pairs.append((index, name))
    pairs.sort()
    if [i for i, _ in pairs] != list(range(len(pairs))):
        raise DataError(f"{path}: labels {dict(labels)} are not the indices 0..K-1")
    return [name for _, name in pairs]


def channel_names(meta: dict[str, Any], path: Path | str = "dataset.json") -> list[str]:
    key = "channel_names" if "channel_names" in meta else "modality"
    names = meta.get(key) or {"0": "image"}
    fix = f'{key} must be an object whose keys are the channel indices as strings, e.g. {{"0": "CT"}} or {{"0": "T1", "1": "T2"}}'
    if not isinstance(names, dict):
        raise DataError(f"{path}: {key} is {names!r}; {fix}")
    indices = [_index(k) for k in names]
    if None in indices or sorted(indices) != list(range(len(indices))):
        raise DataError(f"{path}: {key} has the keys {list(names)}; {fix} (0..C-1)")
    return [str(names[k]) for k in sorted(names, key=lambda k: int(k))]


def _read_image(path: Path, channels: int | None = None) -> Volume:
    if is_nifti(path):
        return read_nifti(path, channels)
    from hf_transfer_seg.data.images import channels_first, read_array

    array = channels_first(read_array(path), str(path)).astype(np.float32)  # 2-D nnU-Net data: [C, H, W]
    return Volume(array[:, :, :, None], (1.0, 1.0, 1.0), np.eye(3)[[1, 0, 2]])


def _read_labels(path: Path) -> np.ndarray:
    if is_nifti(path):
        return read_nifti_labels(path)
    from hf_transfer_seg.data.sources.base import read_mask_array

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

        def image(paths=paths, msd=-1 in channels) -> Volume:
            volumes = [_read_image(p, n_channels if msd else None) for p in paths]
            first = volumes[0]
            if any(v.array.shape[1:] != first.array.shape[1:] for v in volumes):
                raise DataError(f"the channel files {[p.name for p in paths]} differ in size")
            return Volume(np.concatenate([v.array for v in volumes]), first.spacing, first.directions)

        out.append(Case(name, image, (lambda volume, label_path=label_path: _read_labels(label_path)) if labelled else None))
    return out


def dataset_name(root: Path, meta: dict[str, Any]) -> str:
    return str(meta.get("name") or root.name)
