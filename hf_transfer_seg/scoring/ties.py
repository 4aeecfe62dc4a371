"""Which revisions are statistically tied with the best score? A paired comparison on per-image values.

Every revision is scored on the same images, the same colour-jittered views and the same negatives
(common random numbers: :mod:`hf_transfer_seg.scoring.plan`), so the per-image values of two
revisions are *paired*: image i contributes ``v_r[i] - v_best[i]``. Pairing removes the image-to-image
spread that the per-revision intervals carry, so two revisions whose intervals overlap can still differ,
and two close means can still be tied.

The verdict must not depend on the dice roll of one score, so the interval covers both sources of chance:

- **the views**: a plan draws ``view_draws`` independent sets of views and negatives (``--view-draws``); the
  score of an image is its mean over the draws, and the bootstrap resamples the draws of each image too
  (a two-level bootstrap: units, then draws within each image);
- **the dependence of slices**: slices of one volume are not independent images. The bootstrap resamples
  *units*: each 2-D image is a unit; slices are grouped by volume when the target has at least
  :data:`MIN_VOLUMES` volumes, else into blocks of ``ceil(n ** (1/3))`` neighbouring slices of a volume (the
  usual block length of a block bootstrap), so one brain's 59 slices count as about 15 units, not 59.

A revision is tied with the best when the percentile interval of the mean paired difference includes 0.
Only revisions scored with the same plan (target, images, seed, image size, draws: ``plan_key``) are
paired; for any other the tie is unknown (None).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

LEVEL = 0.95
RESAMPLES = 2000
MIN_VOLUMES = 8  # fewer volumes than this: resample blocks of neighbouring slices instead of whole volumes


def plan_key(target_key: str, num_images: int, seed: int, image_size: int, view_draws: int = 1) -> str:
    key = f"{target_key}|n={num_images}|seed={seed}|size={image_size}"
    return key if view_draws == 1 else f"{key}|draws={view_draws}"


def resampling_units(slices: Sequence[tuple[str, int]] | None, n: int) -> tuple[list[int], str]:
    """A unit id per image (images of one unit are resampled together) and one line saying what a unit is.

    ``slices`` holds the (volume, slice index) of each image, or None when the images are independent 2-D images.
    """
    if slices is None:
        return list(range(n)), "images"
    if len(slices) != n:
        raise ValueError(f"{len(slices)} slice ids for {n} images")
    volumes = sorted({str(v) for v, _ in slices})
    if len(volumes) >= MIN_VOLUMES:
        ids = {v: i for i, v in enumerate(volumes)}
        return [ids[str(v)] for v, _ in slices], f"{len(volumes)} volumes (slices of one volume resampled together)"
    units = [0] * n
    count = 0
    for volume in volumes:
        mine = sorted((i for i, (v, _) in enumerate(slices) if str(v) == volume), key=lambda i: slices[i][1])
        block = max(1, math.ceil(len(mine) ** (1 / 3)))
        for rank, i in enumerate(mine):
            units[i] = count + rank // block
        count += -(-len(mine) // block)
    return units, (f"{count} blocks of neighbouring slices of {len(volumes)} volume(s) (fewer than {MIN_VOLUMES} "
                   "volumes: slices of one volume are not independent)")


def _as_draws(values: Sequence[float] | Sequence[Sequence[float]]) -> np.ndarray:
    a = np.asarray(values, float)
    return a[None, :] if a.ndim == 1 else a


def paired_difference(values, best, *, units: Sequence[int] | None = None, resamples: int = RESAMPLES, seed: int = 0,
                      level: float = LEVEL) -> dict[str, float]:
    """Mean of ``values - best`` and its paired percentile bootstrap interval.

    ``values`` and ``best`` are ``[M]`` (one draw of views) or ``[K, M]`` (K draws of views and negatives of the
    same M images). The bootstrap resamples units (``units``: an id per image, default every image its own unit)
    and, with K > 1, the K draws of every image.
    """
    v, b = _as_draws(values), _as_draws(best)
    if v.shape != b.shape or v.ndim != 2 or v.shape[1] < 2:
        raise ValueError("paired values need the same images and draws (equal shapes, at least 2 images)")
    d = v - b  # [K, M]
    k, m = d.shape
    unit_ids = np.unique(np.asarray(units if units is not None else np.arange(m)), return_inverse=True)[1].reshape(-1)
    if len(unit_ids) != m:
        raise ValueError(f"{len(unit_ids)} unit ids for {m} images")
    rng = np.random.default_rng(seed)
    if k > 1:  # views inside the resampling: each resample takes K draws (with replacement) of every image
        picks = rng.integers(0, k, size=(resamples, k, m))
        per_image = np.take_along_axis(np.broadcast_to(d, (resamples, k, m)), picks, axis=1).mean(axis=1)  # [R, M]
    else:
        per_image = np.broadcast_to(d[0], (resamples, m))
    n_units = int(unit_ids.max()) + 1
    sums = per_image @ np.eye(n_units)[unit_ids]  # [R, units]: per-unit sums of the resampled per-image differences
    sizes = np.bincount(unit_ids, minlength=n_units).astype(float)
    chosen = rng.integers(0, n_units, size=(resamples, n_units))
    means = np.take_along_axis(sums, chosen, axis=1).sum(axis=1) / sizes[chosen].sum(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    return {"mean": float(d.mean()), "ci_low": float(lo), "ci_high": float(hi)}


def ties_with_best(rows: list[dict[str, Any]], best: dict[str, Any] | None, per_image: dict[str, dict[str, Any]], *,
                   resamples: int = RESAMPLES, seed: int = 0) -> dict[str, dict[str, Any]]:
    """For each row's revision: ``{"tied": bool | None, "difference": {...} | None}`` against ``best``.

    ``per_image[revision] = {"plan": plan_key, "values": [...], "draws": [[...], ...], "units": [...]}`` (``draws`` and
    ``units`` are optional: older files hold the values of one draw). The best itself is tied (difference 0).
    """
    out: dict[str, dict[str, Any]] = {}
    ref = per_image.get(best["revision"]) if best else None
    for row in rows:
        rev = row["revision"]
        mine = per_image.get(rev)
        if best is None or row.get("score") is None:
            out[rev] = {"tied": None, "difference": None}
        elif rev == best["revision"]:
            out[rev] = {"tied": True, "difference": None}
        elif not ref or not mine or mine.get("plan") != ref.get("plan") or np.shape(_draws_of(mine)) != np.shape(_draws_of(ref)):
            out[rev] = {"tied": None, "difference": None}
        else:
            diff = paired_difference(_draws_of(mine), _draws_of(ref), units=ref.get("units"), resamples=resamples, seed=seed)
            out[rev] = {"tied": bool(diff["ci_low"] <= 0.0 <= diff["ci_high"]), "difference": diff}
    return out


def _draws_of(entry: dict[str, Any]) -> list:
    return entry.get("draws") or entry["values"]


def pick(rows: list[dict[str, Any]], prefer: str = "lowest") -> dict[str, Any] | None:
    """The revision to call best: the lowest score (``lowest``), or the earliest revision tied with it
    (``earliest-tied``). Rows carry ``tied_with_best`` from :func:`ties_with_best`."""
    ok = [r for r in rows if r.get("status", "ok") == "ok" and r.get("score") is not None]
    if not ok:
        return None
    lowest = min(ok, key=lambda r: (r["score"], float(r.get("epoch") or 0)))
    if prefer == "lowest":
        return lowest
    if prefer == "earliest-tied":
        tied = [r for r in ok if r.get("tied_with_best")] or [lowest]
        return min(tied, key=lambda r: float(r.get("epoch") or 0))
    raise ValueError(f"prefer must be 'lowest' or 'earliest-tied', got {prefer!r}")
