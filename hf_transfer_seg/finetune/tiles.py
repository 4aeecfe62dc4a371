"""Large images: random crops for training, sliding windows stitched back for evaluation."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
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


def _starts(length: int, window: int, stride: int) -> list[int]:
    if length <= window:
        return [0]
    starts = list(range(0, length - window, stride)) + [length - window]
    return sorted(set(starts))


@torch.no_grad()
def sliding_window_probs(
    model: torch.nn.Module, image: torch.Tensor, window: int, *, overlap: float = 0.5, batch_size: int = 16
) -> torch.Tensor:
    """Softmax probabilities ``[K, H, W]`` of a ``[3, H, W]`` image, from overlapping windows averaged.

    The image is padded (zeros) to at least ``window`` on each side and cropped back afterwards.
    """
    device = next(model.parameters()).device
    _, h, w = image.shape
    ph, pw = max(h, window), max(w, window)
    padded = F.pad(image, (0, pw - w, 0, ph - h)) if (ph, pw) != (h, w) else image
    stride = max(1, int(math.floor(window * (1.0 - overlap))))
    boxes = [(y, x) for y in _starts(ph, window, stride) for x in _starts(pw, window, stride)]
    total = None
    count = torch.zeros(1, ph, pw, device=device)
    for i in range(0, len(boxes), batch_size):
        chunk = boxes[i : i + batch_size]
        batch = torch.stack([padded[:, y : y + window, x : x + window] for y, x in chunk]).to(device)
        probs = model(batch).float().softmax(dim=1)
        if total is None:
            total = torch.zeros(probs.shape[1], ph, pw, device=device)
        for (y, x), p in zip(chunk, probs):
            total[:, y : y + window, x : x + window] += p
            count[:, y : y + window, x : x + window] += 1
    return (total / count)[:, :h, :w].cpu()
