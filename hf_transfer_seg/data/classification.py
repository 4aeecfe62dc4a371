"""Image classification sets for pretraining: synthetic, a local ImageNet-style folder, or a ``datasets`` dataset.

Every sample is ``(image_tensor, label, skipped)`` where ``skipped`` is -1, or the index of an unreadable
image that was replaced by the next readable one (so batches keep their size and no process falls out of
step with the others). Augmentation randomness is a pure function of (seed, epoch, index): a run resumed
mid-epoch, or run with a different number of loader workers, sees the same augmented images.

- ``synthetic``: a deterministic generated N-class set (the offline default); every card says so.
- a folder ``root/train/<class>/*`` and ``root/val/<class>/*`` (ImageNet layout);
- a folder written by ``datasets.save_to_disk``, or a Hub dataset id loaded with ``datasets.load_dataset``
  (image and label columns detected from the features, or named), ``streaming=True`` for ImageNet scale.
"""

from __future__ import annotations

import contextlib
import io
import logging
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from PIL import Image

from hf_transfer_seg.data.images import is_image_file, open_image, to_rgb_tensor
from hf_transfer_seg.errors import DataError

log = logging.getLogger(__name__)

SYNTHETIC = "synthetic"
IMAGE_COLUMN_NAMES = ("image", "img", "jpg", "jpeg", "png", "webp", "pixel_values", "picture")
LABEL_COLUMN_NAMES = ("label", "labels", "cls", "class", "target", "fine_label", "category")
VAL_SPLIT_NAMES = ("validation", "val", "valid", "test")
_MAX_REPLACEMENTS = 64

Transform = Callable[[Image.Image], torch.Tensor]


@dataclass
class ClassificationData:
    """Train/validation datasets and what the card needs to say about them."""

    train: torch.utils.data.Dataset
    val: torch.utils.data.Dataset | None
    num_classes: int
    class_names: list[str] | None
    dataset_id: str  # "synthetic", a Hub dataset id, or a local path
    kind: str  # "synthetic" | "folder" | "disk" | "hub"
    synthetic: bool = False
    streaming: bool = False
    train_size: int | None = None  # None when unknown (streaming without split info)
    notes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------- decoding


def to_pil(source: Any) -> Image.Image:
    """An RGB PIL image from a path, bytes, a ``datasets`` image dict or a PIL image (any bit depth)."""
    if isinstance(source, dict):
        source = source.get("bytes") or source.get("path")
    if isinstance(source, (bytes, bytearray)):
        source = io.BytesIO(source)
    img = source if isinstance(source, Image.Image) else open_image(source)
    img.load()  # truncated or corrupt files fail here, not later inside a transform
    if img.mode == "RGB":
        return img
    if img.mode in ("L", "LA", "RGBA", "P", "PA", "CMYK", "YCbCr", "1"):
        return img.convert("RGB")
    # 16-bit, 32-bit integer or float images: scale to [0, 1] the way the rest of the project does
    array = (to_rgb_tensor(np.asarray(img)).permute(1, 2, 0).numpy() * 255.0).round().astype(np.uint8)
    return Image.fromarray(array, mode="RGB")


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    # CPU generator only: torch.manual_seed would also queue lazy CUDA/XPU/MTIA seeding, each recording a
    # stack trace when those devices are not initialised (a third of a millisecond per image)
    torch.default_generator.manual_seed(seed)


@contextlib.contextmanager
def _seeded(seed: int):
    """Run a block with Python, NumPy and torch CPU generators seeded.

    In a loader worker nothing else draws from them, so they are only seeded (cheap); in the main process
    (``num_workers=0``) their state is restored afterwards, so the caller's randomness is left alone.
    """
    if torch.utils.data.get_worker_info() is not None:
        _seed_all(seed)
        yield
        return
    py_state, np_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        _seed_all(seed)
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


def _sample_seed(seed: int, epoch: int, index: int) -> int:
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1)[0])


# ---------------------------------------------------------------------------------------------- datasets


class _MapDataset(torch.utils.data.Dataset):
    """Shared logic: seeded transforms, corrupt images replaced by the next readable one and reported."""

    def __init__(self, transform: Transform | None = None, seed: int = 0):
        self.transform = transform
        self.seed = int(seed)
        # shared with loader workers (also persistent ones): set_epoch in the main process reaches them
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()
        self._warned: set[int] = set()

    def set_epoch(self, epoch: int) -> None:
        self._epoch.fill_(int(epoch))

    def _source(self, index: int) -> tuple[Any, int]:
        """The undecoded image (path, bytes, image dict or array) and its label.

        A subclass that only implements ``_load`` (PIL images, e.g. the digits set) hands over its PIL image:
        the uint8 transforms accept those too.
        """
        if type(self)._load is _MapDataset._load:
            raise NotImplementedError(f"{type(self).__name__} implements neither _source nor _load")
        return self._load(index)

    def _load(self, index: int) -> tuple[Image.Image, int]:
        source, label = self._source(index)
        return to_pil(source), label

    def _describe(self, index: int) -> str:
        return f"sample {index}"

    def __getitem__(self, index: int):
        n = len(self)
        skipped = -1
        decodes = getattr(self.transform, "decodes", False)  # uint8 transforms decode (a failure = unreadable)
        for offset in range(min(n, _MAX_REPLACEMENTS)):
            current = (index + offset) % n
            try:
                if decodes:
                    source, label = self._source(current)
                    with _seeded(_sample_seed(self.seed, int(self._epoch), index)):
                        image = self.transform(source)
                else:
                    image, label = self._load(current)
                break
            except Exception as exc:  # noqa: BLE001 - any decoding failure: skip the image, never crash
                if skipped < 0:
                    skipped = current
                if current not in self._warned:
                    self._warned.add(current)
                    log.warning("skipping unreadable image %s: %s", self._describe(current), exc)
        else:
            raise DataError(
                f"{min(n, _MAX_REPLACEMENTS)} consecutive images starting at {self._describe(index)} cannot be "
                "read; check the dataset files"
            )
        if self.transform is not None and not decodes:
            with _seeded(_sample_seed(self.seed, int(self._epoch), index)):
                image = self.transform(image)
        return image, int(label), skipped


class SyntheticClassification(_MapDataset):
    """Deterministic generated images: class = frequency of concentric rings; centre, phase, colours, noise random.

    Image ``i`` is always the same (a function of seed, split and i), label ``i % num_classes``. The class cue
    survives flips and the recipe's crops only approximately (a crop rescales the frequency by up to ~12%), so
    neighbouring classes overlap and accuracy rises over several epochs rather than at once.
    """

    def __init__(self, size: int, num_classes: int, image_size: int, split: str = "train", **kwargs):
        super().__init__(**kwargs)
        if num_classes < 2:
            raise DataError("the synthetic dataset needs --num-classes >= 2")
        self.size, self.num_classes, self.image_size = int(size), int(num_classes), int(image_size)
        self.split_id = {"train": 0, "val": 1}[split]
        self.class_names = [f"synthetic_{c}" for c in range(self.num_classes)]

    def __len__(self) -> int:
        return self.size

    def _load(self, index: int) -> tuple[Image.Image, int]:
        array, label = self._source(index)
        return Image.fromarray(array, mode="RGB"), label

    def _source(self, index: int) -> tuple[np.ndarray, int]:
        label = index % self.num_classes
        rng = np.random.default_rng([self.seed, self.split_id, index])
        s = self.image_size
        yy, xx = np.mgrid[0:s, 0:s].astype(np.float32) / s
        cy, cx = rng.uniform(0.25, 0.75, size=2)
        radius = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2)
        freq = 2.0 + 6.0 * label / (self.num_classes - 1)  # ring cycles per image width
        rings = (0.5 + 0.5 * np.sin(2 * np.pi * freq * radius + rng.uniform(0, 2 * np.pi)))[..., None]
        hue = rng.uniform() + np.array([0.0, 1 / 3, 2 / 3], dtype=np.float32)
        colour = 0.5 + 0.4 * np.cos(2 * np.pi * hue)
        background = rng.uniform(0.1, 0.6, size=3)
        image = rings * colour + (1 - rings) * background + rng.normal(0, 0.1, size=(s, s, 3))
        return (np.clip(image, 0, 1) * 255).astype(np.uint8), label


class FolderClassification(_MapDataset):
    """Images listed from ``<split>/<class>/*`` (class names sorted, as ImageNet folders are)."""

    def __init__(self, files: Sequence[tuple[str, int]], class_names: list[str], **kwargs):
        super().__init__(**kwargs)
        self.files, self.class_names = list(files), class_names

    def __len__(self) -> int:
        return len(self.files)

    def _describe(self, index: int) -> str:
        return self.files[index][0]

    def _source(self, index: int) -> tuple[str, int]:
        return self.files[index]


class HFClassification(_MapDataset):
    """A map-style ``datasets.Dataset`` with its image column read undecoded (corrupt images are skipped)."""

    def __init__(self, dataset, image_column: str, label_column: str, **kwargs):
        super().__init__(**kwargs)
        self.dataset, self.image_column, self.label_column = dataset, image_column, label_column

    def __len__(self) -> int:
        return len(self.dataset)

    def _source(self, index: int) -> tuple[Any, int]:
        row = self.dataset[int(index)]
        return row[self.image_column], int(row[self.label_column])


class HFStreamingClassification(torch.utils.data.IterableDataset):
    """A streaming ``datasets.IterableDataset`` (already split by node); corrupt images are dropped and counted."""

    def __init__(self, dataset, image_column: str, label_column: str, transform: Transform | None, seed: int = 0):
        self.dataset, self.image_column, self.label_column = dataset, image_column, label_column
        self.transform, self.seed = transform, int(seed)
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()

    def set_epoch(self, epoch: int) -> None:
        self._epoch.fill_(int(epoch))
        self.dataset.set_epoch(int(epoch))

    def __iter__(self) -> Iterator[tuple[torch.Tensor, int, int]]:
        epoch = int(self._epoch)
        info = torch.utils.data.get_worker_info()
        worker = info.id if info else 0
        skipped = -1
        decodes = getattr(self.transform, "decodes", False)  # uint8 transforms decode the bytes themselves
        for position, row in enumerate(self.dataset):
            try:
                if decodes:
                    with _seeded(_sample_seed(self.seed, epoch, position * 1024 + worker)):
                        image = self.transform(row[self.image_column])
                else:
                    image = to_pil(row[self.image_column])
            except Exception as exc:  # noqa: BLE001 - skip and report with the next sample
                log.warning("skipping unreadable streamed image #%d: %s", position, exc)
                skipped = position
                continue
            if self.transform is not None and not decodes:
                with _seeded(_sample_seed(self.seed, epoch, position * 1024 + worker)):
                    image = self.transform(image)
            yield image, int(row[self.label_column]), skipped
            skipped = -1


def collate(batch: list[tuple[torch.Tensor, int, int]]) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """Stack images and labels; the skipped indices stay a Python list (reading them never syncs a GPU)."""
    images = torch.stack([b[0] for b in batch])
    labels = torch.tensor([b[1] for b in batch], dtype=torch.long)
    return images, labels, [b[2] for b in batch if b[2] >= 0]


# ---------------------------------------------------------------------------------------------- building


def _scan_folder(split_dir: Path, class_names: list[str] | None = None) -> tuple[list[tuple[str, int]], list[str]]:
    classes = sorted(p.name for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        loose = [p.name for p in split_dir.iterdir() if is_image_file(p)][:3]
        hint = f" (found loose images such as {loose}: put each in a folder named after its class)" if loose else ""
        raise DataError(
            f"{split_dir} has no class folders{hint}; expected the ImageNet layout "
            f"{split_dir.parent}/train/<class>/<image> and {split_dir.parent}/val/<class>/<image>"
        )
    names = class_names or classes
    index = {name: i for i, name in enumerate(names)}
    unknown = [c for c in classes if c not in index]
    if unknown:
        raise DataError(
            f"{split_dir} has class folders not present in train/: {unknown[:5]}; val/ must use the train class names"
        )
    files = [
        (str(path), index[cls])
        for cls in classes
        for path in sorted((split_dir / cls).rglob("*"))
        if path.is_file() and is_image_file(path)
    ]
    if not files:
        raise DataError(f"no image files under {split_dir}/<class>/ (suffixes: png, jpg, jpeg, tif, ...)")
    return files, names


def _cap(items: list, limit: int | None, seed: int) -> list:
    if limit is None or limit >= len(items):
        return items
    keep = np.random.default_rng(seed).permutation(len(items))[:limit]
    return [items[i] for i in sorted(keep)]


def _folder_data(root: Path, *, train_tf, val_tf, seed, train_size, val_size) -> ClassificationData:
    train_dir = root / "train"
    if not train_dir.is_dir():
        raise DataError(
            f"{root} is not an ImageNet-style folder: it has no train/ subfolder. Expected "
            f"{root}/train/<class>/<image> and {root}/val/<class>/<image>, a folder saved with "
            "datasets' save_to_disk, or a Hub dataset id"
        )
    train_files, names = _scan_folder(train_dir)
    notes = []
    val_dir = next((root / n for n in ("val", "validation") if (root / n).is_dir()), None)
    if val_dir is not None:
        val_files, _ = _scan_folder(val_dir, names)
    else:  # hold out a deterministic 2% (at least one image) of train
        order = np.random.default_rng(seed).permutation(len(train_files))
        n_val = max(1, len(train_files) // 50)
        held = set(order[:n_val].tolist())
        val_files = [f for i, f in enumerate(train_files) if i in held]
        train_files = [f for i, f in enumerate(train_files) if i not in held]
        notes.append(f"no val/ folder: {n_val} train images held out for validation")
    train_files = _cap(train_files, train_size, seed)
    val_files = _cap(val_files, val_size, seed + 1)
    return ClassificationData(
        train=FolderClassification(train_files, names, transform=train_tf, seed=seed),
        val=FolderClassification(val_files, names, transform=val_tf, seed=seed),
        num_classes=len(names),
        class_names=names,
        dataset_id=str(root),
        kind="folder",
        train_size=len(train_files),
        notes=notes,
    )


def detect_columns(features, image_column: str | None, label_column: str | None, where: str) -> tuple[str, str]:
    """Image and label column names: the ones given, else by feature type, else by common names."""
    from datasets import ClassLabel
    from datasets import Image as ImageFeature

    columns = list(features)
    for given, flag in ((image_column, "--image-column"), (label_column, "--label-column")):
        if given is not None and given not in columns:
            raise DataError(f"{where} has no column {given!r} ({flag}); its columns are {columns}")
    image = image_column or next((c for c in columns if isinstance(features[c], ImageFeature)), None)
    image = image or next((c for c in columns if c.lower() in IMAGE_COLUMN_NAMES), None)
    if image is None:
        raise DataError(f"{where} has no image column (columns: {columns}); name it with --image-column")
    label = label_column or next((c for c in columns if isinstance(features[c], ClassLabel)), None)
    label = label or next((c for c in columns if c.lower() in LABEL_COLUMN_NAMES and c != image), None)
    if label is None:
        raise DataError(
            f"{where} has no label column (columns: {columns}); pretraining needs class labels. Name the "
            "column with --label-column, or use a dataset with labels (an imagefolder with one folder per class)"
        )
    return image, label


def _class_info(features, label_column: str, num_classes: int | None, where: str) -> tuple[int, list[str] | None]:
    from datasets import ClassLabel

    feature = features[label_column]
    if isinstance(feature, ClassLabel):
        if num_classes is not None and num_classes != feature.num_classes:
            raise DataError(f"{where} has {feature.num_classes} classes but --num-classes is {num_classes}")
        return feature.num_classes, list(feature.names)
    if num_classes is None:
        raise DataError(
            f"the label column {label_column!r} of {where} is not a ClassLabel; pass --num-classes so the "
            "classifier head has the right size"
        )
    return num_classes, None


def _pick_split(splits: Sequence[str], wanted: str | None, names: Sequence[str], where: str, role: str) -> str | None:
    if wanted is not None:
        if wanted not in splits:
            raise DataError(f"{where} has no split {wanted!r} ({role}); its splits are {list(splits)}")
        return wanted
    return next((s for s in names if s in splits), None)


def _hf_data(
    dataset: str,
    *,
    config_name,
    train_split,
    val_split,
    image_column,
    label_column,
    num_classes,
    streaming,
    train_tf,
    val_tf,
    seed,
    train_size,
    val_size,
    process_index,
    num_processes,
) -> ClassificationData:
    import datasets

    local = Path(dataset)
    kind = "hub"
    if local.is_dir() and ((local / "dataset_dict.json").is_file() or (local / "state.json").is_file()):
        loaded = datasets.load_from_disk(str(local))
        kind = "disk"
        if streaming:
            raise DataError(f"{dataset} is a dataset saved on disk; drop --streaming (it is read lazily already)")
    else:
        try:
            loaded = datasets.load_dataset(dataset, config_name, streaming=streaming)
        except FileNotFoundError as exc:
            raise DataError(
                f"dataset {dataset!r} not found: it is not 'synthetic', not a local folder and not a Hub dataset "
                f"id ({exc})"
            ) from exc
    if not isinstance(loaded, (datasets.DatasetDict, datasets.IterableDatasetDict)):
        loaded = {train_split or "train": loaded}
    splits = list(loaded)
    train_name = _pick_split(splits, train_split or "train", (), dataset, "--train-split")
    val_name = _pick_split(splits, val_split, VAL_SPLIT_NAMES, dataset, "--val-split")
    train_ds = loaded[train_name]
    features = train_ds.features
    if features is None:
        raise DataError(f"{dataset} does not declare its features; name the columns and use a non-streaming load")
    image_col, label_col = detect_columns(features, image_column, label_column, f"dataset {dataset!r}")
    n_classes, names = _class_info(features, label_col, num_classes, f"dataset {dataset!r}")
    undecoded = datasets.Image(decode=False)
    val_ds = loaded[val_name] if val_name else None
    notes = []
    if val_ds is None:
        notes.append(f"{dataset} has no validation split: validation accuracy is not measured")
    common = dict(image_column=image_col, label_column=label_col, seed=seed)
    if streaming:
        from datasets.distributed import split_dataset_by_node

        total = None
        info = getattr(train_ds, "info", None)
        if info is not None and info.splits and train_name in info.splits:
            total = info.splits[train_name].num_examples or None
        if train_size is not None:
            train_ds, total = train_ds.take(train_size), min(train_size, total or train_size)
        train_ds = split_dataset_by_node(
            train_ds.cast_column(image_col, undecoded).shuffle(seed=seed, buffer_size=10_000),
            rank=process_index,
            world_size=num_processes,
        )
        train = HFStreamingClassification(train_ds, transform=train_tf, **common)
        val = None
        if val_ds is not None:
            val_ds = val_ds.cast_column(image_col, undecoded)
            if val_size is not None:
                val_ds = val_ds.take(val_size)
            val_ds = split_dataset_by_node(val_ds, rank=process_index, world_size=num_processes)
            val = HFStreamingClassification(val_ds, transform=val_tf, **common)
        return ClassificationData(train, val, n_classes, names, dataset, kind, streaming=True, train_size=total, notes=notes)
    train_ds = train_ds.cast_column(image_col, undecoded)
    if train_size is not None and train_size < len(train_ds):
        train_ds = train_ds.shuffle(seed=seed).select(range(train_size))
    train = HFClassification(train_ds, transform=train_tf, **common)
    val = None
    if val_ds is not None:
        val_ds = val_ds.cast_column(image_col, undecoded)
        if val_size is not None and val_size < len(val_ds):
            val_ds = val_ds.shuffle(seed=seed + 1).select(range(val_size))
        val = HFClassification(val_ds, transform=val_tf, **common)
    return ClassificationData(train, val, n_classes, names, dataset, kind, train_size=len(train_ds), notes=notes)


def build_classification_data(
    dataset: str = SYNTHETIC,
    *,
    image_size: int,
    train_transform: Transform | None,
    val_transform: Transform | None,
    seed: int = 0,
    num_classes: int | None = None,
    train_size: int | None = None,
    val_size: int | None = None,
    config_name: str | None = None,
    train_split: str | None = None,
    val_split: str | None = None,
    image_column: str | None = None,
    label_column: str | None = None,
    streaming: bool = False,
    process_index: int = 0,
    num_processes: int = 1,
) -> ClassificationData:
    """Resolve ``dataset`` (``synthetic``, a folder, a saved dataset or a Hub id) into train/val datasets."""
    if dataset == SYNTHETIC:
        n_classes = num_classes or 10
        train_n = train_size or 2560
        val_n = val_size or max(256, 2 * n_classes)
        common = dict(num_classes=n_classes, image_size=image_size, seed=seed)
        train = SyntheticClassification(train_n, split="train", transform=train_transform, **common)
        val = SyntheticClassification(val_n, split="val", transform=val_transform, **common)
        return ClassificationData(
            train, val, n_classes, train.class_names, SYNTHETIC, "synthetic", synthetic=True, train_size=train_n
        )
    if dataset == "digits":  # scikit-learn's bundled real digits (hf_transfer_seg.data.digits)
        from hf_transfer_seg.data.digits import DIGITS, digits_datasets

        train, val, names = digits_datasets(_MapDataset, image_size=image_size, train_transform=train_transform,
                                            val_transform=val_transform, seed=seed, train_size=train_size, val_size=val_size)
        return ClassificationData(train, val, 10, names, DIGITS, "bundled", synthetic=False, train_size=len(train))
    local = Path(dataset).expanduser()
    saved = local.is_dir() and ((local / "dataset_dict.json").is_file() or (local / "state.json").is_file())
    if local.is_dir() and not saved:
        if streaming:
            raise DataError(f"{dataset} is a local folder; drop --streaming (folders are read lazily already)")
        data = _folder_data(
            local, train_tf=train_transform, val_tf=val_transform, seed=seed, train_size=train_size, val_size=val_size
        )
        if num_classes is not None and num_classes != data.num_classes:
            raise DataError(f"{dataset} has {data.num_classes} class folders but --num-classes is {num_classes}")
        return data
    if local.exists() and not local.is_dir():
        raise DataError(f"--dataset {dataset} is a file; give a folder (train/<class>/...), a saved dataset or a Hub id")
    return _hf_data(
        dataset,
        config_name=config_name,
        train_split=train_split,
        val_split=val_split,
        image_column=image_column,
        label_column=label_column,
        num_classes=num_classes,
        streaming=streaming,
        train_tf=train_transform,
        val_tf=val_transform,
        seed=seed,
        train_size=train_size,
        val_size=val_size,
        process_index=process_index,
        num_processes=num_processes,
    )


class EpochSampler(torch.utils.data.Sampler):
    """A shuffle that is a pure function of (seed, epoch): every process draws the same order, resume included."""

    def __init__(self, size: int, seed: int = 0):
        self.size, self.seed, self.epoch = int(size), int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self):
        generator = torch.Generator().manual_seed(_sample_seed(self.seed, self.epoch, -1 % (2**31)))
        return iter(torch.randperm(self.size, generator=generator).tolist())

    def __len__(self) -> int:
        return self.size
