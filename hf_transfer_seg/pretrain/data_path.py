"""The pretraining data path: datasets, loaders and the per-batch device step, for ``--data-path fast|legacy|dali``.

``fast`` (default): loader workers decode JPEGs with libjpeg-turbo (reduced-size when the crop allows),
crop/flip (and run timm's RandAugment for the advanced recipe) on uint8, and send pinned uint8 batches;
normalisation and timm's RandomErasing run batched on the accelerator (``data.gpu_augment.DevicePrep``),
Mixup/CutMix stays in the loop as before. The recipe's parameters are read from timm's own transform
(``recipes.train_transform``), so both paths apply the same recipe. ``--decode gpu`` decodes with nvJPEG.
``legacy``: timm's PIL transforms + float tensors from the workers, as before this module existed.
``dali`` (an extra): the simple recipe's training batches from ``data.dali.EpochLoader`` (region-of-interest
decode on CPU; with ``--decode gpu`` DALI's ``mixed`` nvJPEG decoder), same files, labels, epoch order and
per-process split as the fast path, normalised on the device by the same step; validation keeps the fast path.
It reads image files, so it needs a local ImageNet-style folder.
"""

from __future__ import annotations

import copy
import functools
import os

import torch

from hf_transfer_seg.data.classification import EpochSampler, build_classification_data, collate
from hf_transfer_seg.errors import ConfigError
from hf_transfer_seg.pretrain import recipes
from hf_transfer_seg.pretrain.config import PretrainConfig


def _timm_parts(timm_transform) -> dict:
    """RandomResizedCrop scale, flip probability, RandAugment and RandomErasing settings of a timm Compose."""
    from timm.data.auto_augment import RandAugment
    from timm.data.random_erasing import RandomErasing
    from timm.data.transforms import RandomResizedCropAndInterpolation
    from torchvision.transforms import RandomHorizontalFlip

    parts: dict = {"hflip": 0.0, "rand_augment": None, "erasing": None}
    for t in timm_transform.transforms:
        if isinstance(t, RandomResizedCropAndInterpolation):
            parts["scale"], parts["ratio"] = tuple(t.scale), tuple(t.ratio)
        elif isinstance(t, RandomHorizontalFlip):
            parts["hflip"] = float(t.p)
        elif isinstance(t, RandAugment):
            parts["rand_augment"] = t
        elif isinstance(t, RandomErasing):
            parts["erasing"] = {"re_prob": t.probability, "re_mode": t.mode, "re_count": t.max_count}
    if "scale" not in parts or parts["ratio"] != (3.0 / 4.0, 4.0 / 3.0):
        raise RuntimeError(f"unexpected training transform for the fast data path: {timm_transform}")
    return parts


def transforms(config: PretrainConfig):
    """(train transform, val transform) for the configured data path."""
    legacy_train = recipes.train_transform(config)
    if config.data_path == "legacy":
        return legacy_train, recipes.val_transform(config)
    from hf_transfer_seg.data.gpu_augment import EncodingTrainTransform
    from hf_transfer_seg.data.uint8_transforms import TrainTransformU8, ValTransformU8

    parts = _timm_parts(legacy_train)
    cls = EncodingTrainTransform if config.decode == "gpu" else TrainTransformU8
    train = cls(config.image_size, scale=parts["scale"], hflip=parts["hflip"], rand_augment=parts["rand_augment"])
    return train, ValTransformU8(config.image_size, crop_pct=recipes.CROP_PCT)


def build_data(config: PretrainConfig, accelerator):
    if config.decode == "gpu" and accelerator.device.type != "cuda":
        raise ConfigError(f"--decode gpu needs a CUDA device; this process runs on {accelerator.device}. Use --decode cpu")
    train_tf, val_tf = transforms(config)
    return build_classification_data(
        config.dataset,
        image_size=config.image_size,
        train_transform=train_tf,
        val_transform=val_tf,
        seed=config.seed,
        num_classes=config.num_classes,
        train_size=config.train_size,
        val_size=config.val_size,
        config_name=config.dataset_config,
        train_split=config.train_split,
        val_split=config.val_split,
        image_column=config.image_column,
        label_column=config.label_column,
        streaming=config.streaming,
        process_index=accelerator.process_index,
        num_processes=accelerator.num_processes,
    )


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def default_workers(config: PretrainConfig, num_processes: int) -> int:
    """Loader workers per process: the cores available to this process (the legacy path keeps min(8, cores - 1))."""
    local = int(os.environ.get("LOCAL_WORLD_SIZE") or num_processes or 1)
    per_process = available_cores() // max(1, local)
    if config.data_path == "legacy":
        return min(8, max(0, (os.cpu_count() or 1) // num_processes - 1))
    return max(1, per_process)


def build_loaders(config: PretrainConfig, data, micro: int, accelerator):
    """(train loader, val loader, batches per epoch when streaming else None)."""
    workers = config.num_workers if config.num_workers is not None else default_workers(config, accelerator.num_processes)
    if config.data_path == "dali":
        return _dali_train(config, data, micro, workers, accelerator), _val_loader(data, micro, workers), None
    train_collate = collate
    if config.decode == "gpu":
        from hf_transfer_seg.data.gpu_augment import collate_encoded

        train_collate = functools.partial(collate_encoded, size=config.image_size)
    common = dict(num_workers=workers, pin_memory=torch.cuda.is_available(), persistent_workers=workers > 0)
    if workers > 0:
        common["prefetch_factor"] = 4
    if data.streaming:
        if not data.train_size:
            raise ConfigError("--streaming needs the size of the train split: the dataset does not say; pass --train-size")
        train = torch.utils.data.DataLoader(data.train, batch_size=micro, drop_last=True, collate_fn=train_collate, **common)
        per_process = data.train_size // (micro * accelerator.num_processes)
        batches = per_process - per_process % config.grad_accum
        return train, _val_loader(data, micro, workers), batches
    sampler = EpochSampler(len(data.train), seed=config.seed)
    train = torch.utils.data.DataLoader(
        data.train, batch_size=micro, sampler=sampler, drop_last=True, collate_fn=train_collate, **common
    )
    return train, _val_loader(data, micro, workers), None


def _val_loader(data, micro: int, workers: int):
    """The validation loader (every data path): uint8 (fast, dali) or float (legacy) batches in a fixed order."""
    if data.val is None:
        return None
    extra = {"prefetch_factor": 4} if workers > 0 else {}
    return torch.utils.data.DataLoader(data.val, batch_size=micro, shuffle=False, num_workers=workers, collate_fn=collate,
                                       pin_memory=torch.cuda.is_available(), **extra)


def _dali_train(config: PretrainConfig, data, micro: int, workers: int, accelerator):
    """``--data-path dali``: this process's DALI training loader (see ``data.dali``)."""
    from hf_transfer_seg.data.dali import EpochLoader

    files = getattr(data.train, "files", None)
    if data.streaming or data.kind != "folder" or files is None:
        raise ConfigError(f"--data-path dali reads image files and needs a local ImageNet-style folder "
                          f"(train/<class>/*), not a {data.kind} dataset ({data.dataset_id}); use --data-path fast")
    parts = _timm_parts(recipes.train_transform(config))
    gpu = config.decode == "gpu"
    return EpochLoader(
        files, batch_size=micro, seed=config.seed, process_index=accelerator.process_index,
        num_processes=accelerator.num_processes, label_device=accelerator.device, image_size=config.image_size,
        device="mixed" if gpu else "cpu", device_id=accelerator.device.index if gpu else None, workers=workers,
        scale=parts["scale"], hflip=parts["hflip"],
    )


def batch_prep(config: PretrainConfig, device):
    """The per-batch device step of the fast path (None for legacy: its batches arrive normalised)."""
    if config.data_path == "legacy":
        return None
    from hf_transfer_seg.data.gpu_augment import DevicePrep

    mean, std = config.mean_std
    parts = _timm_parts(recipes.train_transform(config))
    return DevicePrep(mean, std, device, channels_last=config.channels_last, erasing=parts["erasing"])


class PreparedLoader:
    """Iterates a (validation) loader yielding device-normalised float batches; no augmentation."""

    def __init__(self, loader, prep):
        self.loader, self.prep = loader, copy.copy(prep)
        self.prep.erasing = None

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for images, labels, skipped in self.loader:
            yield self.prep(images), labels, skipped


def prepared_val(loader, prep):
    return PreparedLoader(loader, prep) if loader is not None and prep is not None else loader
