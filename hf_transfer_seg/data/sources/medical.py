"""Medical volume targets: one NIfTI file, one DICOM series folder, or an nnU-Net raw / MSD folder.

Labelled (fine-tuning): a NIfTI or DICOM image needs ``--labels LABELS.nii.gz`` on its voxel grid; an
nnU-Net folder brings ``labelsTr``. Unlabelled (scoring): images only.
"""

from __future__ import annotations

from pathlib import Path

from hf_transfer_seg.data.intensity import Intensity
from hf_transfer_seg.data.sources import nnunet
from hf_transfer_seg.data.sources.cases import Case, image_slices, labelled_slices
from hf_transfer_seg.data.sources.volumes import dicom_labels, is_nifti, read_dicom_series, read_nifti, read_nifti_labels
from hf_transfer_seg.errors import ConfigError, DataError


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".nii.gz", ".nii"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def medical_cases(kind: str, path: Path, *, labelled: bool, labels: str | None = None):
    """(cases, key, description, class names or None) of a ``nifti``/``dicom``/``nnunet`` target."""
    if kind == "nnunet":
        meta = nnunet.read_dataset_json(path)
        name = nnunet.dataset_name(path, meta)
        cases = nnunet.cases(path, labelled=labelled, meta=meta)
        channels = ", ".join(nnunet.channel_names(meta))
        return cases, f"nnunet:{name}", f"nnU-Net dataset {name} ({len(cases)} cases, channels: {channels})", nnunet.class_names(meta)
    if labelled and not labels:
        raise ConfigError(
            f"fine-tuning on the {kind} target {path.name} needs its label volume: pass --labels LABELS.nii.gz "
            "(one integer class index per voxel, on the image's voxel grid), or use an nnU-Net folder with labelsTr/"
        )
    if labels and not Path(labels).exists():
        raise DataError(f"--labels {labels} does not exist")
    if kind == "nifti" and path.is_dir():  # one case per file; labels: a folder with the same file names
        files = sorted(p for p in path.iterdir() if p.is_file() and is_nifti(p) and not p.name.startswith("."))
        if labelled and not Path(labels).is_dir():
            raise ConfigError(f"{path.name} is a folder of NIfTI volumes: pass --labels FOLDER holding a label file of the same name for each")
        cases = []
        for f in files:
            label_path = Path(labels) / f.name if labelled else None
            if label_path is not None and not label_path.is_file():
                raise DataError(f"no label volume {label_path} for {f.name}; every volume needs one of the same name")
            cases.append(Case(_stem(f), lambda f=f: read_nifti(f), (lambda volume, lp=label_path: read_nifti_labels(lp)) if labelled else None))
        return cases, f"nifti:{path.name}", f"{len(files)} NIfTI volumes in {path.name}", None
    if kind == "nifti":
        if labelled and Path(labels).is_dir():
            raise ConfigError(f"--labels {labels} is a folder; for the single volume {path.name} pass its label file")
        label_fn = (lambda volume: read_nifti_labels(labels)) if labelled else None
        return [Case(_stem(path), lambda: read_nifti(path), label_fn)], f"nifti:{_stem(path)}", f"NIfTI volume {path.name}", None
    if kind == "dicom":
        label_fn = (lambda volume: dicom_labels(labels, volume.array.shape[1:])) if labelled else None
        return [Case(path.name, lambda: read_dicom_series(path), label_fn)], f"dicom:{path.name}", f"DICOM series {path.name}", None
    raise ValueError(kind)


def labelled_target(kind: str, path: Path, *, labels=None, slice_axis=None, num_classes=None, limit=None,
                    key=None, class_names=None, resize_longest=None, foreground=None):
    from hf_transfer_seg.data.sources.base import SegTarget, apply_mapping, class_names_for, label_mapping

    cases, default_key, description, names = medical_cases(kind, path, labelled=True, labels=labels)
    samples, values = labelled_slices(cases, slice_axis=slice_axis, limit=limit)
    if not samples:
        raise DataError(f"{description}: no slices with an image")
    if foreground:
        names = None  # --foreground-values choose the classes; dataset.json's names describe the raw labels
    if names is not None:
        if num_classes is not None and num_classes != len(names):
            raise ConfigError(f"dataset.json names {len(names)} classes, not --num-classes {num_classes}")
        num_classes = len(names)
    k, mapping = label_mapping(values, num_classes, foreground)
    for sample in samples:
        sample.mask = apply_mapping(sample.mask.numpy(), mapping)
    spacing = samples[0].spacing
    return SegTarget(
        key=key or default_key,
        samples=samples,
        num_classes=k,
        class_names=class_names_for(k, class_names or names),
        source=f"{kind}:{path.name}",
        description=f"{len(samples)} 2-D slices of {description}; pixel spacing kept ({spacing[0]:.3g} x {spacing[1]:.3g} mm in the first)",
        extra={"slice_axis": slice_axis or "axial", "cases": sorted({s.case for s in samples})},
        intensity=None,
        resize_longest=resize_longest,
        volumetric=True,
    )


def image_target(kind: str, path: Path, *, slice_axis=None, limit=None, fixed: Intensity | None = None, synthetic=False):
    from hf_transfer_seg.data.sources.base import ImageTarget

    cases, key, description, _ = medical_cases(kind, path, labelled=False)
    count, load, intensity, slices = image_slices(cases, slice_axis=slice_axis, limit=limit, fixed=fixed)
    return ImageTarget(
        key=key,
        description=f"{count} 2-D slices of {description} ({slice_axis or 'axial'}), intensities: {intensity.source}",
        count=count,
        loader=load,
        synthetic=synthetic,
        slices=slices,
    )
