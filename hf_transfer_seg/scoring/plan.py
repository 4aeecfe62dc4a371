"""Everything random about a score, drawn once from one seed and reused for every revision.

From ``torch.Generator().manual_seed(seed)``, in this order: the subset of target images (a random
``num_images`` of them), the negative derangement over that subset, the jitter parameters of view 1
and view 2, and the bootstrap resampling weights. The images are then fed in the order that walks
the derangement's cycles (see ``grid.py``). Scoring several revisions with one plan is the common
random numbers design: differences between revisions are not differences between random views.

Both views are kept in memory as float32 (``2 x M x 3 x S x S``: 300 MB for 256 images at 224 px), so
jitter runs once per score, not once per revision; only the per-checkpoint normalisation is redone.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from hf_transfer_seg.data.unlabelled import ImageTarget, fit_to_size
from hf_transfer_seg.errors import ConfigError, DataError
from hf_transfer_seg.scoring.grid import bootstrap_weights
from hf_transfer_seg.scoring.robustness import cycle_order, derangement
from hf_transfer_seg.scoring.views import JITTER_MODES, draw_jitter, make_view

log = logging.getLogger(__name__)

MIN_IMAGES = 4


@dataclass
class ScoringPlan:
    target_key: str
    target_description: str
    target_synthetic: bool
    seed: int
    image_size: int
    jitter: str
    image_indices: list[int]  # target indices, in feeding order
    negative: torch.Tensor  # [M]: feeding position of each position's negative
    view1: torch.Tensor  # [M, 3, S, S] in [0, 1], feeding order
    view2: torch.Tensor
    weights: torch.Tensor  # [resamples, M] bootstrap weights

    @property
    def num_images(self) -> int:
        return len(self.image_indices)

    def facts(self) -> dict:
        """What a card records about how the score was computed."""
        return {"num_images": self.num_images, "seed": self.seed, "image_size": self.image_size}


def check_images(images: torch.Tensor, target: ImageTarget, indices: list[int]) -> None:
    """Refuse inputs that would be scored as if they were the checkpoint's doing.

    NaN/Inf pixels (e.g. a window or intensity range that is not finite) would make every encoder's features
    NaN and be recorded as "diverged training or broken weights" in a good checkpoint's card; images that are
    all one value (e.g. an intensity range that maps every pixel to 0) give every checkpoint the same
    uninformative score. Both are the input's fault: a DataError naming the target and the fix, before any
    checkpoint is touched.
    """
    flat = images.reshape(images.shape[0], -1)
    bad = (~torch.isfinite(flat)).any(dim=1)
    if bad.any():
        first = int(bad.nonzero()[0])
        raise DataError(
            f"{int(bad.sum())} of {len(indices)} image(s) of target {target.key} hold NaN/Inf values after intensity "
            f"normalisation (first: image {indices[first]}); check --window / --intensity-range (finite numbers, "
            "HI > LO) and the image files. Nothing was scored and no card was written."
        )
    spread = flat.amax(dim=1) - flat.amin(dim=1)
    constant = spread <= 1e-6
    if constant.all():
        raise DataError(
            f"all {len(indices)} image(s) of target {target.key} are constant (one value per image) after intensity "
            "normalisation, so every checkpoint would get the same meaningless score; check --window / "
            "--intensity-range (a range far wider than the data maps every pixel to one value) and the image files. "
            "Nothing was scored and no card was written."
        )
    if constant.any():
        log.warning("%d of %d image(s) of target %s are constant (blank) after intensity normalisation; they carry "
                    "no signal for the score", int(constant.sum()), len(indices), target.key)


def build_plan(
    target: ImageTarget,
    *,
    num_images: int = 256,
    seed: int = 0,
    image_size: int = 224,
    jitter: str = "image",
    jitter_batch_size: int = 32,
    resamples: int = 1000,
    progress: bool = True,
) -> ScoringPlan:
    """Draw the plan of a score (see the module docstring) and build both views of every image."""
    if jitter not in JITTER_MODES:
        raise ConfigError(f"unknown --jitter {jitter!r}; choose one of {', '.join(JITTER_MODES)}")
    if image_size < 16:
        raise ConfigError(f"--image-size must be at least 16 pixels, got {image_size}")
    if num_images < MIN_IMAGES:
        raise DataError(f"--num-images {num_images} is too few: the score needs at least {MIN_IMAGES} images")
    if len(target) < MIN_IMAGES:
        raise DataError(
            f"target {target.key} has {len(target)} image(s) but the score needs at least {MIN_IMAGES}; "
            "add images to the folder or dataset, or choose another --target"
        )
    m = min(int(num_images), len(target))
    if m < num_images:
        log.warning("target %s has %d images; scoring with all of them instead of %d", target.key, m, num_images)
    g = torch.Generator().manual_seed(int(seed))
    subset = torch.randperm(len(target), generator=g)[:m]
    neg = derangement(m, g)
    params1, params2 = draw_jitter(m, g), draw_jitter(m, g)
    order = cycle_order(neg)
    position = torch.empty_like(order)
    position[order] = torch.arange(m)
    negative = position[neg[order]]  # feeding position -> feeding position of its negative
    weights = bootstrap_weights(m, g, resamples)
    if jitter == "batch":  # one draw per view per batch of the feeding order (reference code)
        nb = math.ceil(m / jitter_batch_size)
        params1, params2 = draw_jitter(nb, g), draw_jitter(nb, g)
    else:
        params1, params2 = params1.take(order), params2.take(order)

    indices = subset[order].tolist()
    images = torch.empty(m, 3, image_size, image_size)
    for i, index in enumerate(tqdm(indices, desc=f"load {target.key}", unit="img", disable=not progress, leave=False)):
        images[i] = fit_to_size(target.load(index), image_size)
    check_images(images, target, indices)
    view1 = make_view(images, params1, mode=jitter, batch_size=jitter_batch_size)
    view2 = make_view(images, params2, mode=jitter, batch_size=jitter_batch_size)
    return ScoringPlan(
        target_key=target.key,
        target_description=target.description,
        target_synthetic=target.synthetic,
        seed=int(seed),
        image_size=image_size,
        jitter=jitter,
        image_indices=indices,
        negative=negative,
        view1=view1,
        view2=view2,
        weights=weights,
    )
