"""Does a predictor add anything beyond training length? A fixed-effects model with wild cluster bootstrap,
and a placebo self-check on the user's own table.

The model (fixed effects with unit-specific trends, the panel-data standard for "x explains y beyond the
trend"):

    rank_s(Dice)_{s,e} = beta * rank_s(x)_{s,e} + sum_k a_{s,k} t_e^k + gamma_{d(s), e} + u_{s,e},  t = log(1 + epoch)

Ranks are taken within each series and standardised (scale-free, one weight per series, the Spearman
flavour of the rest of the report). ``a_{s,k}`` (k = 0..3) is each series' own cubic trend in log epoch
(its degree drops so that ``TREND_RESID_DOF`` points are left beyond it: 9 checkpoints, cubic; 6, a line),
which absorbs a saturating curve of any rate; ``gamma_{d,e}`` is a dataset x epoch effect (``d`` from a
``dataset``/``target`` column, else one per epoch), which absorbs what the series of a dataset share at a
checkpoint whatever its shape. The effect reported is the partial correlation of the residuals; its test is
a one-sided wild cluster bootstrap of the cluster-robust (CR1) t statistic, restricted under beta = 0 (WCR,
Cameron, Gelbach & Miller 2008) with Webb's six-point weights (Webb 2014; few clusters), clusters =
pretraining runs. The bootstrap uses the closed form of Roodman et al. (2019, "fast and wild"): every draw's
coefficient and cluster scores are linear in the G weights, so all predictors and all placebo columns of a
table run in one array operation. The fixed effects are partialled out in two stages (FWL), so nothing
larger than a cells x cells matrix is decomposed.

Choices made by simulation (``benchmarks/report_calibration.py``, authors' structure, 100 tables per
scenario): ranks and the series' cubic trend. Measured: the bootstrap's p < 0.05 rate under each null family
(run curve + run-level noise SD 0.01-0.1, per-series noise, -log epoch) 2-6 % (MC SE about 2 %); "predicts"
0 of 100 in each (with the floor and the placebo check); power 100 % at a partial of -0.53 and 84 % at -0.38. Without the series' own trend (dataset x epoch only, or a line) a column carrying
Dice's within-series deviation (former cubic partial about -0.55) got a partial of only about -0.25 to -0.3:
a series' own saturating shape stayed in Dice's residual.

Written here on numpy rather than with ``wildboottest``/``pyfixest``: those fit one formula per call (pyfixest
also pulls in polars/numba and a JIT start), and the placebo self-check needs ~200 fits per predictor; here
the 200 fits are one einsum. The t statistic and the effect are checked against statsmodels (dummy-variable
OLS with cluster-robust covariance) in tests/test_report_verdicts.py.

No test below ``MIN_CLUSTERS`` clusters.

The placebo self-check (:func:`placebo_rate`): for a predictor, ``PLACEBOS`` columns that carry nothing
beyond training length by construction but look like it: half are the predictor's own run shape (each
run's mean curve fitted by a quadratic in log(1 + epoch)) plus noise at the table's two levels (run x
epoch, and series within run, with the predictor's own SDs there); half are -log(1 + epoch) in the
predictor's declared direction plus the same noise. Each goes through the same test; the rate at which
they would be called "predicts" is reported, and the real predictor may be called "predicts" only when
that rate is at most ``PLACEBO_MAX`` (the test is calibrated on the data in front of it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import numpy as np
import pandas as pd

from hf_transfer_seg.report.stats import rankdata_columns

if TYPE_CHECKING:
    from scipy import sparse

MIN_CLUSTERS = 5  # no test, no interval from fewer clusters
DRAWS = 999  # wild bootstrap draws
PLACEBOS = 200
PLACEBO_MAX = 0.05  # "predicts" only when the placebo "predicts" rate is at most this
CHUNK = 256  # columns per bootstrap block (memory: CHUNK x DRAWS x G floats)
WCB_MAX_CLUSTERS = 60  # wild bootstrap up to this many clusters; beyond, the CR1 t against t(G - 1)
MAX_DENSE = 30_000_000  # numbers in the largest dense array (rows x cells, rows x clusters): ~240 MB
SERIES_TREND = 3  # degree of the series-specific trend in log(1 + epoch) (0: none); chosen by benchmarks/report_calibration.py
RANKS = True  # within-series ranks (else standardised values); chosen by benchmarks/report_calibration.py
TREND_RESID_DOF = 4  # a series keeps at least this many points beyond its own trend (9 checkpoints: cubic)
CELL_COLUMNS = ("dataset", "target")  # per-series column defining the dataset x epoch effect
WEBB = np.array([-np.sqrt(1.5), -1.0, -np.sqrt(0.5), np.sqrt(0.5), 1.0, np.sqrt(1.5)])
MODEL = ("fixed effects on within-series ranks (each series' own cubic trend in log epoch + {cell} x epoch), wild cluster "
         "bootstrap (restricted, Webb weights) of the cluster-robust t over pretraining runs")


@dataclass
class Design:
    """The rows (series, epoch) of one pattern of known values, and what the model needs of them."""
    series: np.ndarray  # (n,) series index
    cluster: np.ndarray  # (n,) cluster index 0..G-1
    blocks: list  # per series: (row indices, orthonormal basis of its own trend)
    cell_basis: np.ndarray | None  # (n, r) orthonormal basis of the cell effects after the series trends; None: too large
    n_clusters: int
    groups: sparse.csr_matrix  # (G, n) cluster membership

    def resid(self, v: np.ndarray) -> np.ndarray:
        """``v`` (n, Q) minus its projection on every fixed effect."""
        out = np.array(v, dtype=float, copy=True)
        for rows, q in self.blocks:
            out[rows] -= q @ (q.T @ out[rows])
        if self.cell_basis is not None and self.cell_basis.shape[1]:
            out -= self.cell_basis @ (self.cell_basis.T @ out)
        return out


def cell_column(df: pd.DataFrame) -> str | None:
    for c in CELL_COLUMNS:
        if c in df.columns and df.groupby("series")[c].nunique(dropna=True).le(1).all():
            return c
    return None


def within_ranks(values: np.ndarray, series: np.ndarray) -> np.ndarray:
    """Average ranks (``RANKS``; else the values) within each series, standardised (columns of ``values`` (n, Q));
    0 where a series is constant."""
    out = np.zeros_like(values, dtype=float)
    order = np.argsort(series, kind="stable")
    cuts = np.nonzero(np.diff(series[order]))[0] + 1
    for m in np.split(order, cuts):
        r = rankdata_columns(values[m]) if RANKS else np.asarray(values[m], dtype=float)
        r = r - r.mean(axis=0)
        sd = np.sqrt((r ** 2).mean(axis=0))
        out[m] = np.divide(r, sd, out=np.zeros_like(r), where=sd > 0)
    return out


def sorted_codes(labels: np.ndarray) -> np.ndarray:
    """``np.unique(labels, return_inverse=True)[1]`` by hashing (``pandas.factorize``, sorted): the same codes in
    linear time (sorting a million strings was a second of a 1,000,000-row report)."""
    return pd.factorize(np.asarray(labels), sort=True)[0]


def cell_epoch_codes(cells: np.ndarray, epochs: np.ndarray) -> np.ndarray:
    """Codes of the labels ``f"{cell}|{epoch}"`` in their sorted order, the codes ``np.unique`` gives the joined
    strings, with only the distinct (cell, epoch) pairs joined."""
    c_codes, c_uniq = pd.factorize(np.asarray(cells, dtype=str))
    e_codes, e_uniq = pd.factorize(np.asarray(epochs))
    pair_codes, pairs = pd.factorize(c_codes.astype(np.int64) * max(1, len(e_uniq)) + e_codes)
    c_of, e_of = np.divmod(pairs, max(1, len(e_uniq)))
    labels = np.char.add(np.asarray(c_uniq, dtype=str)[c_of], np.char.add("|", np.asarray(np.asarray(e_uniq)[e_of], dtype=str)))
    return np.unique(labels, return_inverse=True)[1][pair_codes]


def design(series: np.ndarray, cells: np.ndarray, epochs: np.ndarray, clusters: np.ndarray, *, trend: int | None = None) -> Design:
    """Fixed effects: each series' own polynomial in log(1 + epoch) (level, and up to ``trend`` degrees), and a
    cell x epoch effect. Built in two stages (Frisch-Waugh-Lovell): the series blocks are orthonormal per series
    (a 9 x 4 QR each, kept per series), the cell dummies are residualised on them and orthonormalised (a cells x
    cells eigenproblem): no decomposition of the whole design. A design whose cell basis would exceed
    ``MAX_DENSE`` numbers gets none (:func:`fit` then reports no effect and says why)."""
    trend = SERIES_TREND if trend is None else trend
    s_idx = sorted_codes(series)
    c_idx = cell_epoch_codes(cells, epochs)
    n = len(series)
    t = np.log1p(np.maximum(np.asarray(epochs, dtype=float), 0.0))
    order = np.argsort(s_idx, kind="stable")
    bounds = np.searchsorted(s_idx[order], np.arange(s_idx.max() + 2))
    blocks = []
    for s in range(s_idx.max() + 1):  # degree <= trend, leaving >= TREND_RESID_DOF points beyond the series' own fit
        rows = order[bounds[s]:bounds[s + 1]]
        deg = max(0, min(trend, len(np.unique(t[rows])) - 1 - TREND_RESID_DOF))
        ts = (t[rows] - t[rows].mean()) / (t[rows].std() or 1.0)
        blocks.append((rows, np.linalg.qr(np.vander(ts, deg + 1, increasing=True))[0]))
    g_idx = sorted_codes(clusters)
    g = int(g_idx.max()) + 1
    from scipy import sparse  # here, not at import: scipy's start-up is a share of a small report's seconds

    groups = sparse.csr_matrix((np.ones(n), (g_idx, np.arange(n))), shape=(g, n))
    des = Design(s_idx, g_idx, blocks, None, g, groups)
    n_cells = int(c_idx.max()) + 1
    if n * n_cells <= MAX_DENSE:
        c = np.zeros((n, n_cells))
        c[np.arange(n), c_idx] = 1.0
        c = des.resid(c)
        lam, vec = np.linalg.eigh(c.T @ c)
        keep = lam > 1e-9 * max(lam.max(), 1e-300)
        des.cell_basis = c @ (vec[:, keep] / np.sqrt(lam[keep]))
    return des


def weights(g: int, draws: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).choice(WEBB, size=(draws, g))


def fit(des: Design, y: np.ndarray, x: np.ndarray, sign: np.ndarray, *, draws: int = DRAWS, seed: int = 0) -> dict[str, np.ndarray]:
    """Partial correlation, one-sided p-value (positive = ``sign`` direction; WCR wild cluster bootstrap up to
    ``WCB_MAX_CLUSTERS`` clusters, beyond it the CR1 t against t(G - 1)) and per-cluster partial correlations of
    each column of ``x`` (n, Q) with ``y`` (n,), on the design's rows. Ranks are taken here. All NaN when the
    design is too large for the cell effects."""
    q = x.shape[1]
    g = des.n_clusters
    nan = np.full(q, np.nan)
    if des.cell_basis is None:
        return {"effect": nan, "p": nan.copy(), "t": nan.copy(), "per_cluster": np.full((q, g), np.nan), "n": np.full(q, len(y)),
                "n_clusters": np.full(q, g), "too_large": True}
    yt = des.resid(within_ranks(y[:, None], des.series))[:, 0]
    xt = des.resid(within_ranks(x, des.series))
    n = len(yt)
    xx_g = des.groups @ (xt ** 2)  # (G, Q)
    yy_g = des.groups @ (yt ** 2)  # (G,)
    s_g = des.groups @ (xt * yt[:, None])  # (G, Q)
    xx, yy = xx_g.sum(axis=0), float(yy_g.sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        effect = s_g.sum(axis=0) / np.sqrt(xx * yy)
        per_cluster = s_g / np.sqrt(xx_g * yy_g[:, None])
        beta_all = s_g.sum(axis=0) / xx
        t_all = s_g.sum(axis=0) / np.sqrt(((s_g - beta_all[None, :] * xx_g) ** 2).sum(axis=0))
    p = nan.copy()
    defined = (xx > 1e-9 * n) & (yy > 1e-9 * n)
    ok = defined & (g >= MIN_CLUSTERS) & np.isfinite(t_all)
    if g > WCB_MAX_CLUSTERS or n * g > MAX_DENSE:  # many clusters: the asymptotic CR1 t is fine (and the bootstrap costly)
        from scipy import stats

        p[ok] = stats.t.sf(sign[ok] * t_all[ok], df=g - 1)
    elif ok.any():
        z = des.resid(des.groups.T.toarray() * yt[:, None])  # M (u o 1_h), one column per cluster h
        w = weights(g, draws, seed)
        for start in range(0, q, CHUNK):
            cols = np.arange(start, min(q, start + CHUNK))
            cols = cols[ok[cols]]
            if not len(cols):
                continue
            a = np.stack([des.groups @ (xt[:, cols] * z[:, [h]]) for h in range(g)], axis=2).transpose(1, 0, 2)  # (Q, G, G)
            sg, xg, x2 = s_g[:, cols].T, xx_g[:, cols].T, xx[cols]
            beta_b = (sg @ w.T) / x2[:, None]  # (Q, B)
            scores = np.einsum("qgh,bh->qbg", a, w) - beta_b[..., None] * xg[:, None, :]
            with np.errstate(invalid="ignore", divide="ignore"):
                t_b = (sg @ w.T) / np.sqrt((scores ** 2).sum(axis=2))
            o = sign[cols]
            p[cols] = ((o[:, None] * t_b) >= (o * t_all[cols])[:, None] - 1e-12).mean(axis=1)
    effect = np.where(defined, effect, np.nan)
    per_cluster = np.where(defined[None, :] & (xx_g > 1e-9) & (yy_g[:, None] > 1e-9), per_cluster, np.nan)
    return {"effect": effect, "p": p, "t": np.where(ok, t_all, np.nan), "per_cluster": per_cluster.T, "n": np.full(q, n),
            "n_clusters": np.full(q, g), "too_large": False}


def _placebos(x: np.ndarray, series: np.ndarray, clusters: np.ndarray, epochs: np.ndarray, sign: float, k: int,
              rng: np.random.Generator) -> np.ndarray:
    """(n, k) placebo columns: the predictor's run shape or -log epoch (declared direction), plus noise at run x epoch
    and series level with the predictor's own SDs."""
    t = np.log1p(np.maximum(epochs, 0.0))
    frame = pd.DataFrame({"x": x, "r": clusters, "e": epochs, "t": t})
    run_mean = frame.groupby(["r", "e"])["x"].transform("mean").to_numpy()
    shape = np.empty_like(x)
    for r in np.unique(clusters):
        m = clusters == r
        deg = min(2, len(np.unique(t[m])) - 1)
        shape[m] = np.polyval(np.polyfit(t[m], run_mean[m], deg), t[m]) if deg >= 1 else run_mean[m].mean()
    sd_run = float(np.std(run_mean - shape)) or 0.0
    sd_series = float(np.std(x - run_mean)) or 0.0
    cell = cell_epoch_codes(clusters, epochs)
    scale = float(np.std(shape)) or float(np.std(x)) or 1.0
    trend = sign * (t - t.mean()) / (np.std(t) or 1.0) * scale
    half = k // 2
    base = np.column_stack([np.repeat(shape[:, None], half, axis=1), np.repeat(trend[:, None], k - half, axis=1)])
    noise = rng.normal(size=(cell.max() + 1, k))[cell] * sd_run + rng.normal(size=(len(x), k)) * sd_series
    if sd_run == 0 and sd_series == 0:  # a predictor without noise: the placebos get a little, so that ranks are defined
        noise = rng.normal(size=(len(x), k)) * 1e-6 * scale
    return base + noise


def placebo_rate(des: Design, y: np.ndarray, x: np.ndarray, epochs: np.ndarray, sign: float, *, alpha: float,
                 floor: float, k: int = PLACEBOS, seed: int = 0) -> dict:
    """Share of ``k`` placebo columns that this test would call "predicts" (p < alpha and effect >= floor in the
    declared direction), with its Monte Carlo SE."""
    rng = np.random.default_rng(seed + 7919)
    cols = _placebos(x, des.series, des.cluster, epochs, sign, k, rng)
    res = fit(des, y, cols, np.full(k, sign), seed=seed + 1)
    hit = (res["p"] < alpha) & (sign * res["effect"] >= floor)
    rate = float(np.mean(hit))
    return {"rate": rate, "n": k, "mc_se": float(np.sqrt(max(rate * (1 - rate), 1.0 / k) / k)), "max": PLACEBO_MAX,
            "families": "predictor's run shape + noise; -log(1 + epoch) + noise (half each)"}


def prepare(df: pd.DataFrame, mapping: dict[str, str]) -> tuple[pd.DataFrame, str | None]:
    """The scored rows with their cluster label and the dataset-x-epoch cell."""
    cell = cell_column(df)
    out = df[df["dice"].notna()].copy()
    out["_cluster"] = out["series"].astype(str).map(lambda s: mapping.get(s, s))
    out["_cell"] = out[cell].astype(str) if cell else "all"
    return out, cell


def test_predictors(scored: pd.DataFrame, predictors: Sequence[str], signs: dict[str, int], *, seed: int = 0) -> dict[str, dict]:
    """Run :func:`fit` for every predictor with a direction, one design per pattern of known values."""
    y_all = scored["dice"].to_numpy(float)
    out: dict[str, dict] = {}
    patterns: dict[bytes, list[str]] = {}
    values = {p: pd.to_numeric(scored[p], errors="coerce").to_numpy(float) for p in predictors if signs.get(p)}
    for p, v in values.items():
        patterns.setdefault(np.isfinite(v).tobytes(), []).append(p)
    for key, names in patterns.items():
        m = np.frombuffer(key, dtype=bool)
        if m.sum() < 3:
            continue
        sub = scored[m]
        des = design(sub["series"].to_numpy(str), sub["_cell"].to_numpy(str), sub["epoch"].to_numpy(float),
                     sub["_cluster"].to_numpy(str))
        x = np.column_stack([values[p][m] for p in names])
        res = fit(des, y_all[m], x, np.asarray([signs[p] for p in names], float), seed=seed)
        for j, p in enumerate(names):
            out[p] = {"effect": res["effect"][j], "p": res["p"][j], "per_cluster": res["per_cluster"][j],
                      "n_clusters": des.n_clusters, "too_large": res["too_large"], "_design": des, "_y": y_all[m], "_x": x[:, j],
                      "_epochs": sub["epoch"].to_numpy(float)}
    return out
