"""Optional DALI data engine (``pip install -e '.[dali]'``): the fast path's simple training recipe, built with DALI.

NVIDIA DALI (``nvidia-dali-cuda120``, about 0.5 GB of wheels, so an extra and not installed by CI) decodes and
augments in its own thread pool instead of Python loader workers. Same semantics as
:class:`~hf_transfer_seg.data.uint8_transforms.TrainTransformU8` without RandAugment:

- RandomResizedCrop: a crop of ``scale`` x the image area with an aspect ratio in [3/4, 4/3] (log-uniform in both,
  10 attempts, then the whole image: ``decoders.image_random_crop``), resized to ``image_size`` (bilinear);
- horizontal flip with probability ``hflip``;
- uint8 ``[N, 3, size, size]`` batches with the labels of the same ``(file, label)`` list the fast path reads;
  normalisation then runs on the device (``gpu_augment.DevicePrep``), as for the fast path.

``device="cpu"``: libjpeg-turbo decodes only the region of the crop (region-of-interest decode).
``device="mixed"``: nvJPEG (and the A100/H100 hardware JPEG decoder where DALI finds one) decodes on the GPU.
Each process reads its own shard (``shard`` of ``num_shards``: the process index and count), reshuffled each
epoch; the last incomplete batch is dropped, like the fast path's loader.

:class:`EpochLoader` is what ``pretrain --data-path dali`` trains from: the epoch's order is the fast path's
(``EpochSampler``: a pure function of seed and epoch), split into batches the way Accelerate shards the fast
path's loader (process ``p`` of ``W`` takes global batches ``p, p + W, ...``), and one DALI pipeline per epoch
reads that list in order. So an epoch, and a resume at an epoch boundary, see exactly the images and labels the
fast path sees. A mid-epoch resume starts the list at the first batch not yet trained on: the same images as an
uninterrupted run, with fresh crop/flip draws (DALI's random state is not saved). DALI cannot replace an
unreadable image the way the fast path does: it stops the run with one line naming the fix.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import torch

RATIO = (3.0 / 4.0, 4.0 / 3.0)


def available() -> bool:
    try:
        import nvidia.dali  # noqa: F401
    except ImportError:
        return False
    return True


class DaliLoader:
    """Iterates ``(images uint8 [N, 3, S, S], labels int64 [N])`` batches of one shard; ``len`` = batches per epoch."""

    def __init__(self, files: Sequence[tuple[str, int]], *, image_size: int, batch_size: int, device: str = "cpu",
                 workers: int = 2, seed: int = 0, scale: tuple[float, float] = (0.08, 1.0), hflip: float = 0.5,
                 shard: int = 0, num_shards: int = 1, device_id: int | None = None, shuffle: bool = True):
        from nvidia.dali import fn, pipeline_def, types
        from nvidia.dali.plugin.pytorch import DALIGenericIterator, LastBatchPolicy

        if device not in ("cpu", "mixed"):
            raise ValueError(f"DALI decoding device must be 'cpu' or 'mixed', not {device!r}")
        if not 0 <= shard < num_shards:
            raise ValueError(f"shard {shard} is outside 0..{num_shards - 1}")
        if device == "mixed" and device_id is None:
            device_id = torch.cuda.current_device()
        paths, labels = [str(f) for f, _ in files], [int(label) for _, label in files]

        @pipeline_def
        def pipeline():
            jpegs, label = fn.readers.file(files=paths, labels=labels, shard_id=shard, num_shards=num_shards,
                                           random_shuffle=shuffle, seed=seed, name="reader")
            images = fn.decoders.image_random_crop(jpegs, device=device, output_type=types.RGB, random_area=list(scale),
                                                   random_aspect_ratio=list(RATIO), num_attempts=10)
            images = fn.resize(images, resize_x=image_size, resize_y=image_size, interp_type=types.INTERP_LINEAR)
            images = fn.flip(images, horizontal=fn.random.coin_flip(probability=hflip))
            return fn.transpose(images, perm=[2, 0, 1]), label

        pipe = pipeline(batch_size=batch_size, num_threads=max(1, workers), device_id=device_id, seed=seed,
                        prefetch_queue_depth=2)
        pipe.build()
        self._iterator = DALIGenericIterator([pipe], ["images", "labels"], reader_name="reader",
                                             last_batch_policy=LastBatchPolicy.DROP, auto_reset=True)
        self.batch_size = batch_size
        self._batches = pipe.epoch_size("reader") // num_shards // batch_size

    def __len__(self) -> int:
        return self._batches

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for out in self._iterator:
            yield out[0]["images"], out[0]["labels"].reshape(-1).long()


def train_loader(files: Sequence[tuple[str, int]], *, image_size: int, batch_size: int, device: str = "cpu",
                 workers: int = 2, seed: int = 0, **kwargs) -> DaliLoader:
    """The DALI training loader of the simple recipe (see the module's docstring)."""
    return DaliLoader(files, image_size=image_size, batch_size=batch_size, device=device, workers=workers, seed=seed, **kwargs)


class EpochLoader:
    """The pretraining loop's DALI train loader: ``(uint8 images, labels on ``label_device``, [])`` batches of this
    process's shard of each epoch (see the module's docstring); ``len`` = batches per epoch and process."""

    def __init__(self, files: Sequence[tuple[str, int]], *, batch_size: int, seed: int, process_index: int,
                 num_processes: int, label_device, **pipeline):
        self.files, self.batch_size, self.seed = list(files), batch_size, int(seed)
        self.rank, self.world, self.label_device, self.pipeline = process_index, num_processes, label_device, pipeline
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.files) // (self.batch_size * self.world)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def shard(self, start: int = 0) -> list[tuple[str, int]]:
        """This process's files of the current epoch, in training order, from its batch ``start`` on."""
        from hf_transfer_seg.data.classification import EpochSampler

        sampler = EpochSampler(len(self.files), seed=self.seed)
        sampler.set_epoch(self.epoch)
        order, size = list(sampler), self.batch_size
        mine = [order[(k * self.world + self.rank) * size:(k * self.world + self.rank + 1) * size] for k in range(start, len(self))]
        return [self.files[i] for batch in mine for i in batch]

    def __iter__(self):
        return self.from_batch(0)

    def from_batch(self, start: int):
        import numpy as np

        from hf_transfer_seg.errors import DataError

        files = self.shard(start)
        if not files:
            return
        seed = int(np.random.SeedSequence([self.seed, self.epoch, self.rank]).generate_state(1)[0]) % (2**31)
        try:  # the iterator decodes its first batch when it is built
            for images, labels in DaliLoader(files, batch_size=self.batch_size, seed=seed, shuffle=False, **self.pipeline):
                yield images, labels.to(self.label_device, non_blocking=True), []
        except RuntimeError as exc:
            lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
            cause = next((b for a, b in zip(lines, lines[1:]) if a == "encountered:"), lines[0] if lines else "")
            raise DataError(f"DALI could not decode a training image of epoch {self.epoch} ({cause[:300]}); "
                            "--data-path dali does not skip unreadable images: remove the file, or train with "
                            "--data-path fast, which replaces and counts them") from None
