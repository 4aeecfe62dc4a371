"""The one-sample bootstrap interval of the report (BCa or percentile), computed as ``scipy.stats.bootstrap``
computes it, without importing ``scipy.stats``.

Why not ``scipy.stats.bootstrap`` itself: importing ``scipy.stats`` costs about 0.45 CPU-s on top of pandas
and matplotlib, a fifth of the 2 CPU-s that ``report`` on 36 series may take (issue 25 item 6), and this
interval is the only thing the report needs from it on such a table. The steps below are scipy's
(``scipy/stats/_resampling.py``: the same draws from the same generator, ``_percentile_of_score``, the
jackknife acceleration, quantiles by Hyndman-Fan method 7 as ``scipy.stats.quantile``), with the normal
CDF and its inverse from ``scipy.special`` (a light import); tests/test_report_batched.py checks the
intervals against ``scipy.stats.bootstrap`` itself.
"""

from __future__ import annotations

from typing import Callable

import numpy as np


def bootstrap_interval(statistic: Callable[[np.ndarray], np.ndarray], k: int, *, n_resamples: int, level: float,
                       rng: np.random.Generator, method: str = "BCa",
                       jackknife: Callable[[], np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) of each quantity, like ``scipy.stats.bootstrap((np.arange(k),), statistic, vectorized=True,
    n_resamples=n_resamples, confidence_level=level, method=method, rng=rng)``: ``statistic(idx)`` takes indices
    of the ``k`` units, shape (..., m), and returns the quantities over the last axis, shape (Q, ...).
    ``jackknife()``, when given, returns the leave-one-unit-out statistics (Q, k) in closed form (else the
    statistic of k index sets of k - 1 units: k^2 work per quantity, the cost with a thousand clusters).
    NaN where BCa is undefined (a statistic that does not vary)."""
    from scipy.special import ndtr, ndtri

    units = np.arange(k)
    theta_b = np.atleast_2d(statistic(units[rng.integers(0, k, (n_resamples, k))]))  # (Q, B)
    alpha = (1 - level) / 2
    if method.lower() == "bca":
        theta = np.atleast_1d(statistic(units))[:, None]
        percentile = ((theta_b < theta).sum(axis=-1) + (theta_b <= theta).sum(axis=-1)) / (2 * n_resamples)
        z0 = ndtri(percentile)
        if jackknife is not None:
            theta_i = np.atleast_2d(jackknife())
        else:  # (k, k - 1) index sets, each leaving one unit out
            theta_i = np.atleast_2d(statistic(np.asarray([np.delete(units, j) for j in range(k)])))
        u = (k - 1) * (theta_i.mean(axis=-1, keepdims=True) - theta_i)
        with np.errstate(invalid="ignore", divide="ignore"):
            a = 1 / 6 * ((u ** 3).sum(axis=-1) / k ** 3) / ((u ** 2).sum(axis=-1) / k ** 2) ** (3 / 2)
            z = float(ndtri(alpha))
            low = ndtr(z0 + (z0 + z) / (1 - a * (z0 + z)))
            high = ndtr(z0 + (z0 - z) / (1 - a * (z0 - z)))
    else:
        low, high = np.full(theta_b.shape[0], alpha), np.full(theta_b.shape[0], 1 - alpha)
    ordered = np.sort(theta_b, axis=-1)
    return _quantile(ordered, low), _quantile(ordered, high)


def _quantile(ordered: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Per-row quantile ``p`` of sorted rows, Hyndman-Fan method 7 (linear; NaN for a NaN or out-of-range ``p``)."""
    n = ordered.shape[-1]
    bad = ~((p >= 0) & (p <= 1))
    p = np.where(bad, 0.5, p)
    jg = p * n + (1 - p)
    j = jg // 1 - 1
    g = np.where(j < 0, 0.0, jg % 1)
    lo = np.clip(j, 0, n - 1).astype(np.int64)[:, None]
    hi = np.clip(j + 1, 0, n - 1).astype(np.int64)[:, None]
    out = (1 - g) * np.take_along_axis(ordered, lo, axis=-1)[:, 0] + g * np.take_along_axis(ordered, hi, axis=-1)[:, 0]
    return np.where(bad, np.nan, out)
