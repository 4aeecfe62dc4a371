"""Per-series rank correlations of every predictor with Dice, vectorised over predictors.

For each series (checkpoints with a Dice value) and predictor: Spearman and Kendall tau-b of the predictor
with Dice, and the partial Spearman controlling for a smooth trend in the epoch (ranks residualised on a
within-series cubic in log epoch: :func:`hf_transfer_seg.report.stats.epoch_partial_columns`), over the
checkpoints where the predictor is known. A wide table (thousands of predictor columns) is computed a
series at a time with array operations:
Spearman is the Pearson correlation of average ranks (what ``scipy.stats.spearmanr`` computes), Kendall
tau-b is the normalised sum of pairwise sign products (what ``scipy.stats.kendalltau`` computes; both are
checked against scipy in the tests). Kept vectorised by hand for speed: one scipy call per predictor and
series was the cost of a 5,000-column table (minutes); this is seconds.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import pandas as pd
from scipy import stats

from hf_transfer_seg.report.stats import epoch_partial_columns, spearman_columns

PAIRWISE_BUDGET = 4_000_000  # n*n*columns elements per Kendall block
PAIRWISE_MAX_N = 60  # longer series: scipy per column


def kendall_columns(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Kendall tau-b of each column of ``x`` (n, Q) with ``y`` (n,); NaN where undefined."""
    n, q = x.shape
    out = np.full(q, np.nan)
    if n < 2 or q == 0:
        return out
    if n > PAIRWISE_MAX_N:  # long series: scipy's O(n log n) algorithm per column beats the pairwise matrix
        for j in range(q):
            out[j] = stats.kendalltau(x[:, j], y).statistic
        return out
    iu = np.triu_indices(n, 1)
    sy = np.sign(y[:, None] - y[None, :])[iu]
    step = max(1, PAIRWISE_BUDGET // (n * n))
    for start in range(0, q, step):
        block = x[:, start:start + step]
        sx = np.sign(block[:, None, :] - block[None, :, :])[iu]  # (pairs, Q)
        num = (sx * sy[:, None]).sum(axis=0)
        den = np.sqrt((sx ** 2).sum(axis=0) * (sy ** 2).sum())
        with np.errstate(invalid="ignore", divide="ignore"):
            out[start:start + step] = np.where(den > 0, num / den, np.nan)
    return out


def _block(x: np.ndarray, y: np.ndarray, e: np.ndarray, with_partial: np.ndarray) -> tuple[np.ndarray, ...]:
    n = len(y)
    q = x.shape[1]
    if n < 3:
        nan = np.full(q, np.nan)
        return nan, nan.copy(), nan.copy()
    rho = spearman_columns(x, y)
    tau = kendall_columns(x, y)
    partial = epoch_partial_columns(x, y, e)
    partial[~with_partial] = np.nan
    return rho, tau, partial


def per_series(
    df: pd.DataFrame, predictors: list[str], *, progress: Callable | None = None
) -> tuple[list[str], dict[str, np.ndarray]]:
    """Series names and arrays (n_series, n_predictors): ``spearman``, ``kendall``, ``partial_spearman``
    (NaN where undefined: too few checkpoints for the epoch control, or nothing left after it) and ``n``
    (checkpoints with Dice and the predictor). ``epoch`` may be a predictor (its partial is undefined by
    construction)."""
    names = sorted(df["series"].astype(str).unique())
    shape = (len(names), len(predictors))
    out = {k: np.full(shape, np.nan) for k in ("spearman", "kendall", "partial_spearman")}
    out["n"] = np.zeros(shape, dtype=int)
    if not predictors:
        return names, out
    with_partial = np.asarray([p != "epoch" for p in predictors])
    cols = [p for p in predictors if p != "epoch"]
    for i, (name, group) in enumerate(df[df["dice"].notna()].groupby("series", sort=True)):
        i = names.index(str(name))
        g = group.sort_values("epoch")
        y, e = g["dice"].to_numpy(float), g["epoch"].to_numpy(float)
        values = np.column_stack([g[p].to_numpy(float) if p != "epoch" else e for p in predictors]) if cols else e[:, None]
        known = np.isfinite(values)
        full = known.all(axis=0)
        out["n"][i] = known.sum(axis=0)
        if full.any():
            idx = np.nonzero(full)[0]
            rho, tau, partial = _block(values[:, idx], y, e, with_partial[idx])
            out["spearman"][i, idx], out["kendall"][i, idx], out["partial_spearman"][i, idx] = rho, tau, partial
        for j in np.nonzero(~full)[0]:  # a predictor missing at some checkpoints of this series
            m = known[:, j]
            rho, tau, partial = _block(values[m, j:j + 1], y[m], e[m], with_partial[j:j + 1])
            out["spearman"][i, j], out["kendall"][i, j], out["partial_spearman"][i, j] = rho[0], tau[0], partial[0]
        if progress:
            progress(1)
    return names, out
