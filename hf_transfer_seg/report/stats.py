"""Statistics of the report, all by *cluster* (the independent unit, e.g. a pretraining run).

Series of one pretraining run share its curves (top-1 is identical across them; a robustness score is
identical across frozen/unfrozen pairs), so they are not independent. Every interval here resamples
clusters and every test runs over per-cluster means:

- :func:`cluster_mean_ci`: the mean over series, with a BCa interval (``scipy.stats.bootstrap``'s, computed
  by :mod:`hf_transfer_seg.report.bootstrap` without importing scipy.stats) that resamples *clusters* (the statistic is the pooled mean of the series in the resampled clusters).
  Vectorised over many quantities at once (one call for every predictor of a wide table).
- :func:`cluster_wilcoxon`: ``scipy.stats.wilcoxon`` over the per-cluster means.
- :func:`holm`: ``statsmodels.stats.multitest.multipletests(method="holm")``'s adjustment.
- :func:`signed_rank_interval`: the Wilcoxon signed-rank (Hodges-Lehmann) interval of the per-cluster
  means at any level, used for the multiplicity-corrected (Bonferroni) intervals of the selection
  table. Hand-written (the exact null distribution is a 10-line recursion) because neither scipy nor
  statsmodels offers this interval, and a bootstrap cannot give it: with 6 clusters no resample can leave
  the range of the 6 cluster means, so a "99.9 %" bootstrap interval still excludes 0 whenever all 6
  share a sign (1 table in 32 under pure noise). The signed-rank interval is unbounded when the level
  cannot be reached with that many clusters, which is the honest answer.
- :func:`epoch_partial_columns` / :func:`partial_spearman`: the epoch-controlled Spearman of a series.
  The ranks of the predictor and of Dice are each regressed on a polynomial of degree ``EPOCH_DEGREE``
  (cubic) in log(1 + epoch) within the series, and the residuals are correlated (Pearson). This
  removes any smooth shared trend with training length, saturating ones included; the first-order rank
  partial (pingouin's ``partial_corr(method="spearman")``) removes only a trend linear in the epoch rank
  and gave a false "beyond training length" on saturating curves (a former ``benchmarks/report_epoch_control.py``
  chose this control by simulation). The degree drops so that at least ``EPOCH_RESID_DOF`` residual
  degrees of freedom remain, and never below ``EPOCH_MIN_DEGREE`` (cubic): a series with fewer than
  ``EPOCH_MIN_DEGREE + 1 + EPOCH_RESID_DOF`` checkpoints has no partial (undefined, not a weaker control).
  Hand-written (a least-squares projection, vectorised over predictors) because statsmodels and scipy
  have no rank partial correlation on a basis. A predictor or Dice that is a monotone function of epoch
  within the series has no partial (nothing beyond training length is left to measure).
"""

from __future__ import annotations

import math
import warnings
from typing import Sequence

import numpy as np

from hf_transfer_seg.report.bootstrap import bootstrap_interval

CHUNK = 400  # quantities per vectorised bootstrap call (memory: CHUNK x n_boot x clusters floats)


def clean(value) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def cluster_ids(series: Sequence[str], clusters: dict[str, str] | None) -> np.ndarray:
    """Integer cluster index of each series (each series is its own cluster without a mapping)."""
    labels = [clusters.get(s, s) if clusters else s for s in series]
    _, inverse = np.unique(np.asarray(labels, dtype=object).astype(str), return_inverse=True)
    return inverse


def _cluster_sums(values: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """values (Q, n_series) with NaN for missing -> per-cluster sums and counts (Q, k)."""
    ok = np.isfinite(values)
    q = values.shape[0]
    # one bincount over (row, cluster) bins: linear in the table, no dense series x clusters one-hot
    bins = (np.arange(q)[:, None] * k + np.asarray(ids, dtype=np.intp)[None, :]).ravel()
    sums = np.bincount(bins, weights=np.where(ok, values, 0.0).ravel(), minlength=q * k).reshape(q, k)
    counts = np.bincount(bins, weights=ok.ravel().astype(float), minlength=q * k).reshape(q, k)
    return sums, counts


def cluster_mean_ci(
    values, ids: np.ndarray, *, n_boot: int = 2000, seed: int = 0, level: float = 0.95, min_clusters: int = 2
) -> list[list[float] | None]:
    """For each row of ``values`` (quantities x series, NaN = missing): a BCa interval of the mean over
    series, resampling clusters. None where fewer than ``min_clusters`` clusters have a value (or ``n_boot`` < 1)."""
    values = np.atleast_2d(np.asarray(values, dtype=float))
    out: list[list[float] | None] = [None] * values.shape[0]
    if n_boot < 1 or values.size == 0:
        return out
    k = int(ids.max()) + 1 if len(ids) else 0
    sums, counts = _cluster_sums(values, ids, k)
    present = counts > 0
    n_present = present.sum(axis=1)
    todo = np.nonzero(n_present >= max(2, min_clusters))[0]
    # rows with the same clusters present share one bootstrap call (the common case: all of them)
    patterns: dict[bytes, list[int]] = {}
    for q in todo:
        patterns.setdefault(present[q].tobytes(), []).append(int(q))
    for rows in patterns.values():
        cols = np.nonzero(present[rows[0]])[0]
        for start in range(0, len(rows), CHUNK):
            chunk = rows[start:start + CHUNK]
            s, c = sums[np.ix_(chunk, cols)], counts[np.ix_(chunk, cols)]
            for q, ci in zip(chunk, _bca(s, c, n_boot=n_boot, seed=seed, level=level)):
                out[q] = ci
    return out


def _bca(s: np.ndarray, c: np.ndarray, *, n_boot: int, seed: int, level: float) -> list[list[float]]:
    k = s.shape[1]

    def statistic(idx):
        return s[:, idx].sum(axis=-1) / c[:, idx].sum(axis=-1)

    def leave_one_out():  # the pooled mean without each cluster, in closed form
        return (s.sum(axis=1, keepdims=True) - s) / (c.sum(axis=1, keepdims=True) - c)

    point = s.sum(axis=1) / c.sum(axis=1)
    means = s / c
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lo, hi = bootstrap_interval(statistic, k, n_resamples=n_boot, level=level, rng=np.random.default_rng(seed),
                                    jackknife=leave_one_out)
        if k > 1 and not (np.isfinite(lo) & np.isfinite(hi)).all():
            # BCa is undefined where the statistic does not vary; percentile interval there
            plo, phi = bootstrap_interval(statistic, k, n_resamples=n_boot, level=level, rng=np.random.default_rng(seed),
                                          method="percentile")
            bad = ~(np.isfinite(lo) & np.isfinite(hi))
            lo, hi = np.where(bad, plo, lo), np.where(bad, phi, hi)
    out = []
    for q in range(s.shape[0]):
        if np.ptp(means[q]) == 0:  # every cluster has the same mean: no sampling variation to show
            out.append([float(point[q]), float(point[q])])
        else:
            out.append([float(lo[q]), float(hi[q])])
    return out


def cluster_means(values: Sequence[float | None], ids: np.ndarray) -> np.ndarray:
    """Mean of the (finite) series values in each cluster that has one."""
    v = np.asarray([np.nan if x is None else x for x in values], dtype=float)
    k = int(ids.max()) + 1 if len(ids) else 0
    sums, counts = _cluster_sums(v[None, :], ids, k)
    ok = counts[0] > 0
    return sums[0, ok] / counts[0, ok]


def cluster_wilcoxon(values: Sequence[float | None], ids: np.ndarray, *, alternative: str = "greater") -> float | None:
    """Wilcoxon signed-rank p-value of the per-cluster means against 0 (None without a cluster)."""
    means = cluster_means(values, ids)
    if not len(means):
        return None
    return float(signed_rank_p(means[None, :], alternative=alternative)[0])


EXACT_CLUSTERS = 14  # exact sign-flip distribution up to this many clusters (2**14 orderings)


def signed_rank_p(x: np.ndarray, *, alternative: str = "greater") -> np.ndarray:
    """Wilcoxon signed-rank p-values of each row of ``x`` (rows x clusters, finite) against 0.

    Zeros are split (half their rank to each side, scipy's ``zero_method="zsplit"``), ties get average
    ranks. Up to :data:`EXACT_CLUSTERS` values the p-value is exact over all sign flips (the permutation
    distribution scipy's ``wilcoxon`` falls back to with ties or zeros, where it costs ~70 ms a call:
    minutes for a wide table; here every row of a wide table at once); beyond, scipy's normal approximation."""
    x = np.atleast_2d(np.asarray(x, dtype=float))
    q, k = x.shape
    if k == 0:
        return np.full(q, np.nan)
    if k > EXACT_CLUSTERS:
        from scipy import stats

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return np.asarray([stats.wilcoxon(row, alternative=alternative, zero_method="zsplit", method="approx").pvalue
                               if np.any(row != 0) else 1.0 for row in x])
    ranks = rankdata_columns(np.abs(x).T).T
    nonzero = x != 0
    t_obs = (ranks * (x > 0)).sum(axis=1) + 0.5 * (ranks * ~nonzero).sum(axis=1)
    flips = ((np.arange(2 ** k)[:, None] >> np.arange(k)[None, :]) & 1).astype(float)  # (2^k, k)
    null = (ranks * nonzero) @ flips.T + 0.5 * (ranks * ~nonzero).sum(axis=1, keepdims=True)  # (q, 2^k)
    eps = 1e-9
    greater = (null >= t_obs[:, None] - eps).mean(axis=1)
    less = (null <= t_obs[:, None] + eps).mean(axis=1)
    if alternative == "greater":
        p = greater
    elif alternative == "less":
        p = less
    else:
        p = np.minimum(1.0, 2 * np.minimum(greater, less))
    return np.where(nonzero.any(axis=1), p, 1.0)


def holm(pvalues: dict[str, float]) -> dict[str, float]:
    """Holm step-down adjusted p-values: statsmodels ``multipletests(method="holm")``'s three lines (the i-th
    smallest times m - i, a running maximum, capped at 1), written here because importing statsmodels imports
    scipy.stats (0.45 CPU-s of the report; see :mod:`hf_transfer_seg.report.bootstrap`); tests compare the two."""
    if not pvalues:
        return {}
    names = list(pvalues)
    p = np.asarray([pvalues[n] for n in names], dtype=float)
    order = np.argsort(p)
    adjusted = np.empty_like(p)
    adjusted[order] = np.minimum(1.0, np.maximum.accumulate(p[order] * np.arange(len(p), 0, -1)))
    return {n: float(v) for n, v in zip(names, adjusted)}


def _signed_rank_null(n: int) -> np.ndarray:
    """P(T+ = t) for t = 0..n(n+1)/2 under the null (exact, by recursion over the ranks)."""
    counts = np.zeros(n * (n + 1) // 2 + 1)
    counts[0] = 1.0
    for r in range(1, n + 1):
        counts[r:] = counts[r:] + counts[:-r].copy()
    return counts / counts.sum()


def signed_rank_interval(values: Sequence[float], *, level: float) -> list[float] | None:
    """Hodges-Lehmann interval (inverted Wilcoxon signed-rank test) of the centre of ``values`` at
    ``level``; infinite bounds where so few values cannot reach the level. None for no value."""
    x = np.sort(np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=float))
    n = len(x)
    if n == 0:
        return None
    alpha = 1.0 - level
    walsh = np.sort((x[:, None] + x[None, :])[np.triu_indices(n)] / 2.0)
    m = len(walsh)
    if n <= 60:
        cdf = np.cumsum(_signed_rank_null(n))
        ok = np.nonzero(cdf <= alpha / 2)[0]
        if not len(ok):
            return [-math.inf, math.inf]
        t = int(ok[-1])  # P(T+ <= t) <= alpha/2: cut t Walsh averages from each end, keep the next
    else:  # normal approximation
        from scipy.special import ndtri

        z = ndtri(1 - alpha / 2)
        t = int(math.floor(m / 2 - z * math.sqrt(n * (n + 1) * (2 * n + 1) / 24)))
        if t < 0:
            return [-math.inf, math.inf]
    return [float(walsh[t]), float(walsh[m - 1 - t])]


PANDAS_RANK_SIZE = 200_000  # elements above which rankdata_columns uses pandas' rank


def rankdata_columns(a: np.ndarray) -> np.ndarray:
    """Average ranks of each column (of a 1-D array: of the array), NaN-free input: ``scipy.stats.rankdata(a,
    axis=0)`` (the same numbers: a tie run at sorted positions i..j gets (i + j) / 2 + 1). In numpy because the
    report ranks thousands of small arrays (per predictor, per series), where pandas' ``rank`` costs more per
    call than the ranking (big arrays go to pandas), and without scipy.stats (see :mod:`hf_transfer_seg.report.bootstrap`)."""
    a = np.asarray(a, dtype=float)
    if a.ndim == 1:
        return rankdata_columns(a[:, None])[:, 0]
    if a.size > PANDAS_RANK_SIZE:  # a big array: pandas' rank (the same numbers) sorts faster
        import pandas as pd

        return pd.DataFrame(a).rank(axis=0, method="average").to_numpy(dtype=float)
    n = a.shape[0]
    rows = np.ascontiguousarray(a.T)  # one row per column: sorting along contiguous memory
    order = np.argsort(rows, axis=1, kind="stable")
    s = np.take_along_axis(rows, order, axis=1)
    starts = np.ones(s.shape, dtype=bool)  # first sorted position of a run of ties
    starts[:, 1:] = s[:, 1:] != s[:, :-1]
    ends = np.ones(s.shape, dtype=bool)  # last one
    ends[:, :-1] = starts[:, 1:]
    pos = np.arange(n)[None, :]
    first = np.maximum.accumulate(np.where(starts, pos, 0), axis=1)
    last = np.minimum.accumulate(np.where(ends, pos, n - 1)[:, ::-1], axis=1)[:, ::-1]
    ranks = np.empty_like(s)
    np.put_along_axis(ranks, order, (first + last) / 2.0 + 1.0, axis=1)
    return ranks.T


def paired_columns(y, q: int) -> np.ndarray:
    """``y`` as (n, 1) (one Dice for every column) or (n, Q) (a Dice column per predictor column: several
    series of one length batched side by side)."""
    y = np.asarray(y, dtype=float)
    y = y[:, None] if y.ndim == 1 else y
    if y.shape[1] not in (1, q):
        raise ValueError(f"y has {y.shape[1]} columns for {q} predictor columns")
    return y


def spearman_columns(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman of each column of ``x`` (n, Q) with ``y`` (n,) or with the same column of ``y`` (n, Q); NaN
    where a column or ``y`` is constant (the same value scipy's ``spearmanr`` gives: Pearson of the average ranks)."""
    rx = rankdata_columns(x)
    ry = rankdata_columns(paired_columns(y, rx.shape[1]))
    rx = rx - rx.mean(axis=0)
    ry = ry - ry.mean(axis=0)
    den = np.sqrt((rx ** 2).sum(axis=0) * (ry ** 2).sum(axis=0))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (rx * ry).sum(axis=0) / den
    r[~np.isfinite(r) | (den <= 1e-12)] = np.nan
    return np.clip(r, -1.0, 1.0)


EPOCH_DEGREE = 3  # cubic in log(1 + epoch) (the per-series descriptive partial; the verdict uses report/beyond.py)
EPOCH_BASIS = "log"  # log(1 + epoch); "rank" (the epoch rank) under-controlled saturating curves in that simulation
EPOCH_MIN_DEGREE = 3  # no fallback below the cubic: a quadratic fallback (6 checkpoints) said "predicts" on 22 % of null tables
EPOCH_RESID_DOF = 3  # residual degrees of freedom left after the epoch fit


def epoch_basis(e: np.ndarray, *, degree: int = EPOCH_DEGREE, basis: str = EPOCH_BASIS) -> np.ndarray | None:
    """Orthonormal columns spanning 1, t, ..., t^d with t = log(1 + epoch) (``basis="log"``) or the epoch
    rank (``"rank"``), standardised; d = ``degree`` reduced to leave ``EPOCH_RESID_DOF`` residual degrees of
    freedom. None when even ``EPOCH_MIN_DEGREE`` does not fit (too few checkpoints or distinct epochs)."""
    e = np.asarray(e, dtype=float)
    n = len(e)
    t = rankdata_columns(e) if basis == "rank" else np.log1p(np.maximum(e, 0.0))
    d = min(degree, n - 1 - EPOCH_RESID_DOF, len(np.unique(e)) - 1)
    if d < min(EPOCH_MIN_DEGREE, degree):
        return None
    t = (t - t.mean()) / (t.std() or 1.0)
    q, r = np.linalg.qr(np.vander(t, d + 1, increasing=True))
    if np.min(np.abs(np.diag(r))) < 1e-8:
        return None
    return q


def epoch_partial_columns(x: np.ndarray, y: np.ndarray, e: np.ndarray, *, degree: int = EPOCH_DEGREE,
                          basis: str = EPOCH_BASIS) -> np.ndarray:
    """Epoch-controlled Spearman of each column of ``x`` (n, Q) with ``y`` (n,) or with the same column of
    ``y`` (n, Q): Pearson of the residuals of their ranks after a least-squares fit on :func:`epoch_basis`.
    NaN where undefined (too few checkpoints, or the predictor or Dice is a monotone or fitted function of
    epoch: nothing is left)."""
    x = np.asarray(x, dtype=float)
    q = x.shape[1]
    b = epoch_basis(e, degree=degree, basis=basis)
    if b is None:
        return np.full(q, np.nan)
    rx = rankdata_columns(x)
    ry = rankdata_columns(paired_columns(y, q))
    cx = rx - rx.mean(axis=0)
    cy = ry - ry.mean(axis=0)
    ex = rx - b @ (b.T @ rx)
    ey = ry - b @ (b.T @ ry)
    sx, sy = (ex ** 2).sum(axis=0), (ey ** 2).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (ex * ey).sum(axis=0) / np.sqrt(sx * sy)
    re = rankdata_columns(np.asarray(e, dtype=float))
    re = re - re.mean()
    ss_re = (re ** 2).sum()
    monotone = np.abs(cx.T @ re) >= (1 - 1e-12) * np.sqrt((cx ** 2).sum(axis=0) * ss_re)  # x a monotone function of epoch
    monotone |= np.abs(cy.T @ re) >= (1 - 1e-12) * np.sqrt((cy ** 2).sum(axis=0) * ss_re)  # Dice too: nothing beyond it to predict
    flat = monotone | (sx <= 1e-10 * np.maximum((cx ** 2).sum(axis=0), 1e-300)) | (sy <= 1e-10 * np.maximum((cy ** 2).sum(axis=0), 1e-300))
    r[flat | ~np.isfinite(r)] = np.nan
    return np.clip(r, -1.0, 1.0)


def partial_spearman(x, y, z) -> float | None:
    """Spearman of x and y controlling for a smooth trend in z (:func:`epoch_partial_columns`); None when
    undefined (too few points for the control, or x or y a function of z that the control absorbs)."""
    x, y, z = (np.asarray(v, dtype=float) for v in (x, y, z))
    if np.ptp(x) == 0 or np.ptp(y) == 0 or np.ptp(z) == 0:
        return None
    return clean(epoch_partial_columns(x[:, None], y, z)[0])
