"""Large images: random crops for training (sliding windows for evaluation: :mod:`hf_transfer_seg.models.segmentation`)."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from hf_transfer_seg.data.segmentation import SegSample


def crops_per_image(samples: list[SegSample], crop: int) -> int:
    """About one crop per crop-sized area of the average image (at least one)."""
    if not samples:
        return 1
    area = sum(s.mask.numel() for s in samples) / len(samples)
    return max(1, round(area / (crop * crop)))


class RandomCropDataset(Dataset):
    """``crops`` random ``size`` x ``size`` crops of every image per epoch, with flips/rot90 (torchvision v2).

    Images smaller than the crop are padded (zeros, background label).
    """

    def __init__(self, samples: list[SegSample], size: int, *, crops: int = 1, augment: bool = True):
        from torchvision.transforms import v2

        self.samples = samples
        self.crops = max(1, int(crops))
        ops = [v2.RandomCrop(size, pad_if_needed=True, fill=0)]
        if augment:
            ops += [v2.RandomHorizontalFlip(), v2.RandomVerticalFlip(), _RandomRot90()]
        self.transform = v2.Compose(ops)

    def __len__(self) -> int:
        return len(self.samples) * self.crops

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        from torchvision import tv_tensors

        sample = self.samples[index % len(self.samples)]
        image, mask = self.transform(tv_tensors.Image(sample.image), tv_tensors.Mask(sample.mask))
        return image.as_subclass(torch.Tensor).contiguous(), mask.as_subclass(torch.Tensor).contiguous()


class _RandomRot90(torch.nn.Module):
    """Rotate image and mask together by a random multiple of 90 degrees."""

    def forward(self, image, mask):
        k = int(torch.randint(0, 4, ()).item())
        if k == 0:
            return image, mask
        return torch.rot90(image, k, (-2, -1)), torch.rot90(mask, k, (-2, -1))
