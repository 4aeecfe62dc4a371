"""Paired tie analysis on common random views: is a model's score distinguishable from the best one's?

All models are scored on the same images, views and negatives, so their per-image robustness values
are paired. For each model the per-image difference to the best (lowest-mean) model is resampled with
the plan's bootstrap weights (the same resamples for every pair); when the interval of the mean
difference reaches 0 the two cannot be told apart on these images: "tied with the best".
Small and self-contained on purpose, so that a shared paired analysis can replace it.
"""

from __future__ import annotations

import torch


def paired_ties(values: dict[str, torch.Tensor], weights: torch.Tensor, level: float = 0.95) -> dict[str, dict]:
    """Per name: ``rank`` (1 = lowest mean), ``diff`` to the best, its interval and ``tie`` (best / tied / worse)."""
    if not values:
        return {}
    means = {name: float(v.double().mean()) for name, v in values.items()}
    order = sorted(means, key=means.get)
    best = order[0]
    alpha = (1.0 - level) / 2
    q = torch.tensor([alpha, 1.0 - alpha], dtype=torch.float64)
    out = {}
    for rank, name in enumerate(order, start=1):
        diff = values[name].double() - values[best].double()
        boot = weights.double() @ diff
        low, high = (float(x) for x in torch.quantile(boot, q))
        tie = "best" if name == best else ("tied" if low <= 0.0 else "worse")
        out[name] = {"rank": rank, "diff": float(diff.mean()), "diff_low": low, "diff_high": high, "tie": tie}
    return out
