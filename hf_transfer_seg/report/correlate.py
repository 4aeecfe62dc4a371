"""Per-series rank correlations of every predictor with Dice, vectorised over predictors.

For each series (checkpoints with a Dice value) and predictor: Spearman and Kendall tau-b of the predictor
with Dice, and the partial Spearman controlling for a smooth trend in the epoch (ranks residualised on a
within-series cubic in log epoch: :func:`hf_transfer_seg.report.stats.epoch_partial_columns`), over the
checkpoints where the predictor is known. The table is read into one array once; series of the
same checkpoints (length and epochs) with every predictor known are computed together, side by side as
columns of one array (a 1,000,000-row table of 1,000 series is a few array operations, not 1,000 pandas
groups), and a wide table (thousands of predictor columns) likewise:
Spearman is the Pearson correlation of average ranks (what ``scipy.stats.spearmanr`` computes), Kendall
tau-b is the normalised sum of pairwise sign products (what ``scipy.stats.kendalltau`` computes; both are
checked against scipy in the tests). Kept vectorised by hand for speed: one scipy call per predictor and
series was the cost of a 5,000-column table (minutes); this is seconds.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import pandas as pd

from hf_transfer_seg.report.stats import paired_columns, epoch_partial_columns, spearman_columns

PAIRWISE_BUDGET = 4_000_000  # n*n*columns elements per Kendall block
PAIRWISE_MAX_N = 60  # longer series: scipy per column


def kendall_columns(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Kendall tau-b of each column of ``x`` (n, Q) with ``y`` (n,) or with the same column of ``y`` (n, Q);
    NaN where undefined."""
    n, q = x.shape
    out = np.full(q, np.nan)
    if n < 2 or q == 0:
        return out
    y = paired_columns(y, q)
    if n > PAIRWISE_MAX_N:  # long series: scipy's O(n log n) algorithm per column beats the pairwise matrix
        from scipy.stats import kendalltau

        for j in range(q):
            out[j] = kendalltau(x[:, j], y[:, j if y.shape[1] > 1 else 0]).statistic
        return out
    iu = np.triu_indices(n, 1)
    step = max(1, PAIRWISE_BUDGET // (n * n))
    for start in range(0, q, step):
        block = x[:, start:start + step]
        yb = y[:, start:start + step] if y.shape[1] > 1 else y
        sx = np.sign(block[:, None, :] - block[None, :, :])[iu]  # (pairs, Q)
        sy = np.sign(yb[:, None, :] - yb[None, :, :])[iu]  # (pairs, Q) or (pairs, 1)
        num = (sx * sy).sum(axis=0)
        den = np.sqrt((sx ** 2).sum(axis=0) * (sy ** 2).sum(axis=0))
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


BATCH_ELEMENTS = 20_000_000  # checkpoints x columns per batched block of series (memory: a few such float arrays)


def per_series(
    df: pd.DataFrame, predictors: list[str], *, progress: Callable | None = None
) -> tuple[list[str], dict[str, np.ndarray]]:
    """Series names and arrays (n_series, n_predictors): ``spearman``, ``kendall``, ``partial_spearman``
    (NaN where undefined: too few checkpoints for the epoch control, or nothing left after it) and ``n``
    (checkpoints with Dice and the predictor). ``epoch`` may be a predictor (its partial is undefined by
    construction). Series with the same epochs and every predictor known are computed as one block (their
    columns side by side); a predictor missing at some checkpoints of a series is computed on its own."""
    names = sorted(df["series"].astype(str).unique())
    shape = (len(names), len(predictors))
    out = {k: np.full(shape, np.nan) for k in ("spearman", "kendall", "partial_spearman")}
    out["n"] = np.zeros(shape, dtype=int)
    if not predictors:
        return names, out
    q = len(predictors)
    with_partial = np.asarray([p != "epoch" for p in predictors])
    d = df[df["dice"].notna()]
    series, labels = pd.factorize(d["series"].astype(str), sort=True)  # codes in the order of ``names``
    epochs = d["epoch"].to_numpy(dtype=float)
    order = np.lexsort((epochs, series))  # by series, then epoch
    series, epochs = series[order], epochs[order]
    dice = d["dice"].to_numpy(dtype=float)[order]
    cols = [p for p in predictors if p != "epoch"]
    values = np.empty((len(d), q))
    if cols:
        values[:, with_partial] = d[cols].to_numpy(dtype=float, na_value=np.nan)[order]
    values[:, ~with_partial] = epochs[:, None]
    starts = np.flatnonzero(np.r_[True, series[1:] != series[:-1]]) if len(series) else np.zeros(0, dtype=int)
    bounds = np.r_[starts, len(series)]
    position = {name: i for i, name in enumerate(names)}
    row = {s: position[label] for s, label in enumerate(labels)}
    batches: dict[bytes, list[tuple[int, slice]]] = {}  # series with every predictor known, by their epochs
    for a, b in zip(bounds[:-1], bounds[1:]):
        i, rows = row[series[a]], slice(a, b)
        known = np.isfinite(values[rows])
        out["n"][i] = known.sum(axis=0)
        if known.all():
            batches.setdefault(epochs[rows].tobytes(), []).append((i, rows))
            continue
        full = known.all(axis=0)
        _store(out, [i], np.nonzero(full)[0], values[rows][:, full], dice[rows], epochs[rows], with_partial[full])
        for j in np.nonzero(~full)[0]:  # a predictor missing at some checkpoints of this series
            m = known[:, j]
            _store(out, [i], [j], values[rows][m, j:j + 1], dice[rows][m], epochs[rows][m], with_partial[j:j + 1])
        if progress:
            progress(1)
    everything = np.arange(q)
    for members in batches.values():
        n = members[0][1].stop - members[0][1].start
        step = max(1, BATCH_ELEMENTS // max(1, n * q))
        for start in range(0, len(members), step):
            chunk = members[start:start + step]
            x = np.concatenate([values[rows] for _, rows in chunk], axis=1)  # (n, len(chunk) * q)
            y = np.repeat(np.column_stack([dice[rows] for _, rows in chunk]), q, axis=1)
            _store(out, [i for i, _ in chunk], everything, x, y, epochs[chunk[0][1]], np.tile(with_partial, len(chunk)))
            if progress:
                progress(len(chunk))
    return names, out


def _store(out: dict[str, np.ndarray], series: list[int], columns, x: np.ndarray, y: np.ndarray, e: np.ndarray,
           with_partial: np.ndarray) -> None:
    """Correlations of the block ``x`` (its columns: ``columns`` of each of ``series`` in turn) into ``out``."""
    if x.shape[1] == 0:
        return
    rho, tau, partial = _block(x, y, e, with_partial)
    k = len(columns)
    for s, i in enumerate(series):
        part = slice(s * k, (s + 1) * k)
        out["spearman"][i, columns], out["kendall"][i, columns], out["partial_spearman"][i, columns] = rho[part], tau[part], partial[part]
