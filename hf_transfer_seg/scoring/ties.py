"""Which revisions are statistically tied with the best score? A paired comparison on per-image values.

Every revision is scored on the same images, the same two colour-jittered views and the same negatives
(common random numbers: :mod:`hf_transfer_seg.scoring.plan`), so the per-image values of two
revisions are *paired*: image i contributes ``v_r[i] - v_best[i]``. A revision is tied with the best
when the percentile bootstrap interval (over images, resampled together) of the mean paired difference
includes 0. Pairing removes the image-to-image spread that the per-revision intervals carry, so two
revisions whose intervals overlap can still differ, and two close means can still be tied.

Only revisions scored with the same plan (target, images, seed, image size: ``plan_key``) are paired;
for any other the tie is unknown (None).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

LEVEL = 0.95
RESAMPLES = 2000


def plan_key(target_key: str, num_images: int, seed: int, image_size: int) -> str:
    return f"{target_key}|n={num_images}|seed={seed}|size={image_size}"


def paired_difference(values: Sequence[float], best: Sequence[float], *, resamples: int = RESAMPLES, seed: int = 0,
                      level: float = LEVEL) -> dict[str, float]:
    """Mean of ``values - best`` over images and its paired percentile bootstrap interval."""
    d = np.asarray(values, float) - np.asarray(best, float)
    if d.shape != np.asarray(best).shape or d.ndim != 1 or len(d) < 2:
        raise ValueError("paired values need the same images (equal-length lists of at least 2)")
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, len(d), size=(resamples, len(d)))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    return {"mean": float(d.mean()), "ci_low": float(lo), "ci_high": float(hi)}


def ties_with_best(rows: list[dict[str, Any]], best: dict[str, Any] | None, per_image: dict[str, dict[str, Any]], *,
                   resamples: int = RESAMPLES, seed: int = 0) -> dict[str, dict[str, Any]]:
    """For each row's revision: ``{"tied": bool | None, "difference": {...} | None}`` against ``best``.

    ``per_image[revision] = {"plan": plan_key, "values": [...]}``. The best itself is tied (difference 0).
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
        elif not ref or not mine or mine.get("plan") != ref.get("plan") or len(mine["values"]) != len(ref["values"]):
            out[rev] = {"tied": None, "difference": None}
        else:
            diff = paired_difference(mine["values"], ref["values"], resamples=resamples, seed=seed)
            out[rev] = {"tied": bool(diff["ci_low"] <= 0.0 <= diff["ci_high"]), "difference": diff}
    return out


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
