"""Batch work on the accelerator: uint8 -> normalised float, timm's RandomErasing, and nvJPEG batch decoding.

``DevicePrep`` does what timm's ``PrefetchLoader`` does to a batch (``x.float().sub_(255 * mean).div_(255 * std)``
then ``RandomErasing(device=...)`` on the whole batch), without its CUDA-stream loop: Accelerate's prepared
loader already copies pinned batches with ``non_blocking`` and its ``skip_first_batches``/``set_epoch`` are what
resume relies on, so only the per-batch arithmetic is taken over. The erasing object is timm's
(``timm.data.random_erasing.RandomErasing``, per-sample decisions on a 4-D batch, ``pixel`` mode), drawing from
the main process's generators (saved and restored on resume, like Mixup's).

``--decode gpu``: the workers read the file bytes, plan the crop and flip on the header's size (the same draws as
on the CPU path) and send the bytes; ``GpuDecoder`` decodes the whole batch with
``torchvision.io.decode_jpeg(list, device='cuda')`` (nvJPEG), then crops, resizes and flips each image on the GPU.
Images the workers could not hand over as JPEG (other formats, RandAugment) arrive decoded and are used as they
are. The simple recipe only: RandAugment is PIL-based and runs in the workers after the crop.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import torch

from hf_transfer_seg.data.decode import is_jpeg, jpeg_size, read_bytes
from hf_transfer_seg.data.uint8_transforms import TrainTransformU8, rrc_params

log = logging.getLogger(__name__)


class DevicePrep:
    """uint8 (N, 3, H, W) on the device -> float32 normalised [+ channels_last] [+ timm RandomErasing]."""

    def __init__(self, mean, std, device, *, channels_last: bool = False, erasing: dict | None = None):
        self.device = torch.device(device)
        self.mean = torch.tensor([255.0 * m for m in mean], device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor([255.0 * s for s in std], device=self.device).view(1, 3, 1, 1)
        self.channels_last = channels_last
        self.erasing = None
        if erasing and erasing.get("re_prob", 0) > 0:
            from timm.data.random_erasing import RandomErasing

            self.erasing = RandomErasing(
                erasing["re_prob"], mode=erasing.get("re_mode", "pixel"), max_count=erasing.get("re_count", 1),
                device=self.device,
            )
        self.decoder = GpuDecoder(self.device) if self.device.type == "cuda" else None

    def __call__(self, images) -> torch.Tensor:
        if isinstance(images, EncodedBatch):
            if self.decoder is None:
                raise RuntimeError("an encoded batch reached a device without a JPEG decoder (--decode gpu needs CUDA)")
            images = self.decoder(images)
        images = images.to(self.device, non_blocking=True)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        x = images.float().sub_(self.mean).div_(self.std)
        if self.erasing is not None:
            x = self.erasing(x)
        return x

    def take_skipped(self) -> list:
        return self.decoder.take_skipped() if self.decoder is not None else []


# ---------------------------------------------------------------------------------------------- GPU decode


@dataclass
class EncodedSample:
    """What a worker sends for GPU decoding: the JPEG bytes and the planned box/flip, or a decoded fallback."""

    data: torch.Tensor | None  # uint8 1-D (the file) or None
    box: tuple[int, int, int, int] | None
    flip: bool
    decoded: torch.Tensor | None = None  # uint8 (3, size, size) when the worker had to decode


@dataclass
class EncodedBatch:
    """A batch of ``EncodedSample`` (no ``.to``: Accelerate and pin_memory hand it over untouched)."""

    samples: list[EncodedSample] = field(default_factory=list)
    size: int = 224

    def __len__(self) -> int:
        return len(self.samples)


class EncodingTrainTransform(TrainTransformU8):
    """The train transform for ``--decode gpu``: plans box and flip on the header size, defers decoding."""

    def __call__(self, source: Any) -> EncodedSample:
        data = read_bytes(source)
        size = jpeg_size(data) if data is not None and is_jpeg(data) else None
        if size is None:  # not a JPEG (or no header): decode here, same draws
            return EncodedSample(None, None, False, decoded=super().__call__(source))
        box = rrc_params(size[0], size[1], self.scale)
        flip = bool(self.hflip > 0 and torch.rand(1) < self.hflip)
        return EncodedSample(torch.frombuffer(bytearray(data), dtype=torch.uint8), box, flip)


def collate_encoded(batch: list[tuple[Any, int, int]], size: int):
    labels = torch.tensor([b[1] for b in batch], dtype=torch.long)
    return EncodedBatch([b[0] for b in batch], size), labels, [b[2] for b in batch if b[2] >= 0]


class GpuDecoder:
    """nvJPEG batch decode + per-image crop/resize/flip on the GPU; per-image CPU fallback for failures."""

    def __init__(self, device):
        self.device = torch.device(device)
        self.failures = 0  # images nvJPEG refused (decoded on the CPU instead)
        self.skipped: list[int] = []
        self.unreadable_total = 0

    def _cpu(self, sample: EncodedSample, size: int) -> torch.Tensor:
        from hf_transfer_seg.data.decode import decode_uint8
        from hf_transfer_seg.data.uint8_transforms import resized_crop

        image, _ = decode_uint8(bytes(sample.data.numpy()))
        out = resized_crop(image, sample.box, size)
        return out.flip(-1) if sample.flip else out

    def __call__(self, batch: EncodedBatch) -> torch.Tensor:
        from torchvision.io import ImageReadMode, decode_jpeg

        from hf_transfer_seg.data.uint8_transforms import resized_crop

        size = batch.size
        todo = [i for i, s in enumerate(batch.samples) if s.decoded is None]
        decoded: dict[int, torch.Tensor] = {}
        if todo:
            datas = [batch.samples[i].data for i in todo]
            try:
                images = decode_jpeg(datas, mode=ImageReadMode.RGB, device=self.device)
            except RuntimeError:  # one bad image fails the batch call: decode one by one
                images = []
                for data in datas:
                    try:
                        images.append(decode_jpeg(data, mode=ImageReadMode.RGB, device=self.device))
                    except RuntimeError:
                        images.append(None)
            for i, image in zip(todo, images):
                sample = batch.samples[i]
                if image is None:
                    self.failures += 1
                    try:
                        decoded[i] = self._cpu(sample, size).to(self.device)  # PIL decides
                    except Exception as exc:  # noqa: BLE001 - corrupt: replaced below, reported and counted
                        log.warning("skipping unreadable image (batch position %d, GPU decode): %s", i, exc)
                        self.skipped.append(self.unreadable_total + len(self.skipped))
                    continue
                out = resized_crop(image, sample.box, size)
                decoded[i] = out.flip(-1) if sample.flip else out
        for i, sample in enumerate(batch.samples):
            if sample.decoded is not None:
                decoded[i] = sample.decoded.to(self.device, non_blocking=True)
        if not decoded:
            raise RuntimeError(f"no image of a batch of {len(batch)} could be decoded")
        first = next(iter(decoded.values()))
        # an unreadable image is replaced by a readable one of the same batch (the batch keeps its size)
        return torch.stack([decoded.get(i, first) for i in range(len(batch))])

    def take_skipped(self) -> list:
        """Keys of the images found unreadable since the last call (for the run's skipped-image count)."""
        taken, self.skipped = self.skipped, []
        self.unreadable_total += len(taken)
        return [("gpu-decode", k) for k in taken]
