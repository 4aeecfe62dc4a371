"""Everything random about a score, drawn once from one seed and reused for every revision.

From ``torch.Generator().manual_seed(seed)``, in this order: the subset of target images (a random
``num_images`` of them), the negative derangement over that subset, the jitter parameters of view 1
and view 2, the bootstrap resampling weights, then ``view_draws - 1`` further draws of negatives and
both views of the same images (each revision's per-image value is its mean over the draws; the tie
test resamples the draws too: :mod:`hf_transfer_seg.scoring.ties`). The images are then fed in the order that walks
the derangement's cycles (see ``grid.py``). Scoring several revisions with one plan is the common
random numbers design: differences between revisions are not differences between random views.

Both views are kept in memory, as float32 for the first draw (``2 x M x 3 x S x S``: 300 MB for 256 images at
224 px) and as uint8 for the later draws (75 MB each), so jitter runs once per score, not once per revision;
only the per-checkpoint normalisation is redone.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from hf_transfer_seg.cards.schema import MAX_VIEW_DRAWS, VIEW_DRAWS
from hf_transfer_seg.data.unlabelled import ImageTarget, fit_to_size
from hf_transfer_seg.errors import ConfigError, DataError
from hf_transfer_seg.scoring.grid import bootstrap_weights
from hf_transfer_seg.scoring.robustness import cycle_order, derangement
from hf_transfer_seg.scoring.ties import plan_key, resampling_units
from hf_transfer_seg.scoring.views import JITTER_MODES, compact, draw_jitter, expand, make_view

log = logging.getLogger(__name__)

MIN_IMAGES = 4
# The default resolution of `score` and `rank`, chosen from the target, never from a model's pretraining size: the
# median shorter side of the target's images, rounded down to a multiple of 32 (the stride of the deepest stage of
# most encoders) and bounded to [MIN_SIDE, MAX_SIDE]: 64 px keeps a stride-32 encoder's deepest map at 2 x 2 or
# more; 224 px is the size ImageNet encoders are trained at and bounds the cost of large images (a 512 px
# micrograph or a 565 px fundus photograph is scored at 224 px).
MIN_SIDE, MAX_SIDE = 64, 224
SIZE_PROBE_IMAGES = 16


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
    # further independent draws of views and negatives of the same images (``view_draws - 1`` plans, each fed in
    # its own cycle order); ``common`` maps a draw's feeding position to the first draw's (None: the first draw)
    draws: list["ScoringPlan"] = field(default_factory=list, repr=False)
    common: torch.Tensor | None = field(default=None, repr=False)
    units: list[int] | None = None  # resampling unit of each image (first draw's order): see ties.resampling_units
    units_text: str = "images"
    size_source: str = "--image-size"

    @property
    def num_images(self) -> int:
        return len(self.image_indices)

    @property
    def view_draws(self) -> int:
        return 1 + len(self.draws)

    def all_draws(self) -> list["ScoringPlan"]:
        return [self, *self.draws]

    def facts(self) -> dict:
        """What a card records about how the score was computed."""
        facts = {"num_images": self.num_images, "seed": self.seed, "image_size": self.image_size}
        return facts if self.view_draws == 1 else {**facts, "view_draws": self.view_draws}

    def key(self) -> str:
        """The plan's identity for pairing revisions (:func:`~hf_transfer_seg.scoring.ties.plan_key`)."""
        return plan_key(self.target_key, self.num_images, self.seed, self.image_size, self.view_draws)

    def resized(self, side: int, resize) -> "ScoringPlan":
        """This plan (and its draws) with both views passed through ``resize`` (a model's own input size)."""
        if side == self.image_size:
            return self
        again = (lambda v: compact(resize(expand(v)))) if self.view1.dtype == torch.uint8 else resize  # noqa: E731
        out = dataclasses.replace(self, view1=again(self.view1), view2=again(self.view2), image_size=side)
        out.draws = [d.resized(side, resize) for d in self.draws]
        return out


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


def default_image_size(target: ImageTarget) -> tuple[int, str]:
    """The resolution ``score`` and ``rank`` use without ``--image-size``, and the sentence saying why.

    The median shorter side of up to :data:`SIZE_PROBE_IMAGES` images spread over the target, rounded down to a
    multiple of 32 and bounded to [:data:`MIN_SIDE`, :data:`MAX_SIDE`] (see there)."""
    n = len(target)
    picks = sorted({round(i * (n - 1) / max(1, SIZE_PROBE_IMAGES - 1)) for i in range(min(n, SIZE_PROBE_IMAGES))})
    sides = sorted(min(target.load(i).shape[-2:]) for i in picks)
    median = sides[len(sides) // 2]
    side = int(min(MAX_SIDE, max(MIN_SIDE, median // 32 * 32)))
    return side, (f"chosen from the target: its median shorter side {median} px, rounded down to a multiple of 32 and "
                  f"bounded to {MIN_SIDE}-{MAX_SIDE} px (--image-size overrides)")


def _draw(images: torch.Tensor, indices: list[int], g: torch.Generator, jitter: str, jitter_batch_size: int):
    """One more independent draw of negatives and both views of ``images`` (first draw's order): its feeding
    order (first-draw positions), negatives (feeding positions) and views."""
    m = images.shape[0]
    neg = derangement(m, g)
    order = cycle_order(neg)
    position = torch.empty_like(order)
    position[order] = torch.arange(m)
    if jitter == "batch":
        nb = math.ceil(m / jitter_batch_size)
        params1, params2 = draw_jitter(nb, g), draw_jitter(nb, g)
    else:
        params1, params2 = draw_jitter(m, g).take(order), draw_jitter(m, g).take(order)
    mine = images[order]
    view1 = compact(make_view(mine, params1, mode=jitter, batch_size=jitter_batch_size))
    view2 = compact(make_view(mine, params2, mode=jitter, batch_size=jitter_batch_size))
    return order, position[neg[order]], [indices[j] for j in order.tolist()], view1, view2


def build_plan(
    target: ImageTarget,
    *,
    num_images: int = 256,
    seed: int = 0,
    image_size: int | None = None,
    jitter: str = "image",
    jitter_batch_size: int = 32,
    resamples: int = 1000,
    progress: bool = True,
    view_draws: int = VIEW_DRAWS,
) -> ScoringPlan:
    """Draw the plan of a score (see the module docstring) and build both views of every image.

    ``image_size`` None: :func:`default_image_size` of the target. ``view_draws``: independent draws of views and
    negatives of the same images (the first is the single-draw plan of earlier versions, bit for bit)."""
    if jitter not in JITTER_MODES:
        raise ConfigError(f"unknown --jitter {jitter!r}; choose one of {', '.join(JITTER_MODES)}")
    if image_size is not None and image_size < 16:
        raise ConfigError(f"--image-size must be at least 16 pixels, got {image_size}")
    if not 1 <= int(view_draws) <= MAX_VIEW_DRAWS:
        raise ConfigError(f"--view-draws must be between 1 and {MAX_VIEW_DRAWS}, got {view_draws}")
    if num_images < MIN_IMAGES:
        raise DataError(f"--num-images {num_images} is too few: the score needs at least {MIN_IMAGES} images")
    if len(target) < MIN_IMAGES:
        raise DataError(
            f"target {target.key} has {len(target)} image(s) but the score needs at least {MIN_IMAGES}; "
            "add images to the folder or dataset, or choose another --target"
        )
    size_source = "--image-size"
    if image_size is None:
        image_size, size_source = default_image_size(target)
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
    units, units_text = resampling_units(None if target.slices is None else [target.slices[i] for i in indices], m)
    common = dict(target_key=target.key, target_description=target.description, target_synthetic=target.synthetic,
                  seed=int(seed), image_size=image_size, jitter=jitter, weights=weights)
    draws = []
    for _ in range(int(view_draws) - 1):  # drawn after everything above, so the first draw never changes
        order_k, negative_k, indices_k, view1_k, view2_k = _draw(images, indices, g, jitter, jitter_batch_size)
        draws.append(ScoringPlan(**common, image_indices=indices_k, negative=negative_k, view1=view1_k, view2=view2_k,
                                 common=order_k))
    return ScoringPlan(**common, image_indices=indices, negative=negative, view1=view1, view2=view2, draws=draws,
                       units=units, units_text=units_text, size_source=size_source)
