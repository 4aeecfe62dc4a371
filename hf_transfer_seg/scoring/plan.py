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
