"""``--dataset digits``: scikit-learn's bundled handwritten digits, a small *real* labelled set (no download).

1,797 greyscale 8x8 images of the digits 0-9 (UCI "Optical Recognition of Handwritten Digits", shipped
inside scikit-learn as ``sklearn.datasets.load_digits``). Upscaled (bilinear) to the training size and
repeated to 3 channels. The split is fixed whatever the training seed: a stratified 300-image validation
set drawn with seed 0, the remaining 1,497 for training (``train_size`` / ``val_size`` cap them).
Small enough for a CPU demo in which an encoder visibly learns: chance is 10 % top-1.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from hf_transfer_seg.errors import DataError

DIGITS = "digits"
VAL_PER_CLASS = 30
SOURCE = "scikit-learn load_digits (UCI optical recognition of handwritten digits; 1,797 real 8x8 images, 10 classes)"


def _split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:  # pragma: no cover - scikit-learn is a dependency
        raise DataError("--dataset digits needs scikit-learn (pip install scikit-learn)") from exc
    digits = load_digits()
    images = (digits.images / 16.0 * 255.0).round().astype(np.uint8)
    labels = digits.target.astype(np.int64)
    rng = np.random.default_rng(0)
    val = np.sort(np.concatenate([rng.permutation(np.nonzero(labels == c)[0])[:VAL_PER_CLASS] for c in range(10)]))
    train = np.setdiff1d(np.arange(len(labels)), val)
    return images[train], labels[train], images[val], labels[val]


def digits_datasets(map_dataset_cls, *, image_size: int, train_transform, val_transform, seed: int = 0,
                    train_size: int | None = None, val_size: int | None = None):
    """(train, val, class names) as ``map_dataset_cls`` subclasses (the loader's seeded-transform base)."""

    class Digits(map_dataset_cls):
        def __init__(self, images, labels, **kwargs):
            super().__init__(**kwargs)
            self.images, self.labels = images, labels
            self.class_names = [str(c) for c in range(10)]

        def __len__(self) -> int:
            return len(self.labels)

        def _describe(self, index: int) -> str:
            return f"digits image {index}"

        def _load(self, index: int):
            image = Image.fromarray(self.images[index], mode="L").resize((image_size, image_size), Image.BILINEAR)
            return image.convert("RGB"), int(self.labels[index])

    tx, ty, vx, vy = _split()
    if train_size:
        tx, ty = tx[:train_size], ty[:train_size]
    if val_size:
        keep = np.random.default_rng(0).permutation(len(vy))[:val_size]
        vx, vy = vx[np.sort(keep)], vy[np.sort(keep)]
    train = Digits(tx, ty, transform=train_transform, seed=seed)
    val = Digits(vx, vy, transform=val_transform, seed=seed)
    return train, val, train.class_names
