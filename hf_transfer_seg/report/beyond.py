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

Choices made by simulation (``benchmarks/report_calibration.py``, authors' structure): ranks and the
series' cubic trend. Without the series' own trend (dataset x epoch only, or a line) a column carrying
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
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import stats

MIN_CLUSTERS = 5  # no test, no interval from fewer clusters
DRAWS = 999  # wild bootstrap draws
PLACEBOS = 200
PLACEBO_MAX = 0.05  # "predicts" only when the placebo "predicts" rate is at most this
CHUNK = 256  # columns per bootstrap block (memory: CHUNK x DRAWS x G floats)
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
    basis: np.ndarray  # (n, r) orthonormal basis of the fixed effects' column space
    n_clusters: int


def cell_column(df: pd.DataFrame) -> str | None:
    for c in CELL_COLUMNS:
        if c in df.columns and df.groupby("series")[c].nunique(dropna=True).le(1).all():
            return c
    return None


def within_ranks(values: np.ndarray, series: np.ndarray) -> np.ndarray:
    """Average ranks (``RANKS``; else the values) within each series, standardised (columns of ``values`` (n, Q));
    0 where a series is constant."""
    out = np.zeros_like(values, dtype=float)
    for s in np.unique(series):
        m = series == s
        r = stats.rankdata(values[m], axis=0) if RANKS else np.asarray(values[m], dtype=float)
        r = r - r.mean(axis=0)
        sd = np.sqrt((r ** 2).mean(axis=0))
        out[m] = np.divide(r, sd, out=np.zeros_like(r), where=sd > 0)
    return out


def design(series: np.ndarray, cells: np.ndarray, epochs: np.ndarray, clusters: np.ndarray, *, trend: int | None = None) -> Design:
    """Fixed effects: each series' own polynomial in log(1 + epoch) (level, and up to ``trend`` degrees), and a
    cell x epoch effect. The basis is built in two stages (Frisch-Waugh-Lovell): the series blocks are orthonormal
    per series (a 9 x 4 QR each), the cell dummies are residualised on them and orthonormalised (a cells x cells
    eigenproblem): no decomposition of the whole design."""
    trend = SERIES_TREND if trend is None else trend
    s_idx = np.unique(series, return_inverse=True)[1]
    c_idx = np.unique(np.char.add(np.asarray(cells, dtype=str), np.char.add("|", np.asarray(epochs, dtype=str))), return_inverse=True)[1]
    n = len(series)
    t = np.log1p(np.maximum(np.asarray(epochs, dtype=float), 0.0))
    blocks = []
    for s in range(s_idx.max() + 1):  # degree <= trend, leaving >= TREND_RESID_DOF points beyond the series' own fit
        rows = np.nonzero(s_idx == s)[0]
        deg = max(0, min(trend, len(np.unique(t[rows])) - 1 - TREND_RESID_DOF))
        ts = (t[rows] - t[rows].mean()) / (t[rows].std() or 1.0)
        q, _ = np.linalg.qr(np.vander(ts, deg + 1, increasing=True))
        block = np.zeros((n, q.shape[1]))
        block[rows] = q
        blocks.append(block)
    b1 = np.hstack(blocks)
    c = np.zeros((n, c_idx.max() + 1))
    c[np.arange(n), c_idx] = 1.0
    c = c - b1 @ (b1.T @ c)
    lam, vec = np.linalg.eigh(c.T @ c)
    keep = lam > 1e-9 * max(lam.max(), 1e-300)
    basis = np.hstack([b1, c @ (vec[:, keep] / np.sqrt(lam[keep]))])
    g_idx = np.unique(clusters, return_inverse=True)[1]
    return Design(s_idx, g_idx, basis, int(g_idx.max()) + 1)


def weights(g: int, draws: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).choice(WEBB, size=(draws, g))


def fit(des: Design, y: np.ndarray, x: np.ndarray, sign: np.ndarray, *, draws: int = DRAWS, seed: int = 0) -> dict[str, np.ndarray]:
    """Partial correlation, one-sided WCR p-value (positive = ``sign`` direction) and per-cluster partial
    correlations of each column of ``x`` (n, Q) with ``y`` (n,), on the design's rows. Ranks are taken here."""
    yr = within_ranks(y[:, None], des.series)[:, 0]
    xr = within_ranks(x, des.series)
    b = des.basis
    yt = yr - b @ (b.T @ yr)
    xt = xr - b @ (b.T @ xr)
    g = des.n_clusters
    onehot = np.zeros((len(yt), g))
    onehot[np.arange(len(yt)), des.cluster] = 1.0
    placed = onehot * yt[:, None]  # u_h placed in column h
    z = placed - b @ (b.T @ placed)  # M (u o 1_h)
    xx_g = onehot.T @ (xt ** 2)  # (G, Q)
    yy_g = onehot.T @ (yt ** 2)  # (G,)
    s_g = onehot.T @ (xt * yt[:, None])  # (G, Q)
    xx, yy = xx_g.sum(axis=0), float(yy_g.sum())
    q = xt.shape[1]
    with np.errstate(invalid="ignore", divide="ignore"):
        effect = s_g.sum(axis=0) / np.sqrt(xx * yy)
        per_cluster = s_g / np.sqrt(xx_g * yy_g[:, None])
    p, t_stat = np.full(q, np.nan), np.full(q, np.nan)
    ok = (xx > 1e-9 * len(yt)) & (yy > 1e-9 * len(yt)) & (g >= MIN_CLUSTERS)
    w = weights(g, draws, seed)
    for start in range(0, q, CHUNK):
        cols = np.arange(start, min(q, start + CHUNK))
        cols = cols[ok[cols]]
        if not len(cols):
            continue
        a = np.einsum("iq,ig,ih->qgh", xt[:, cols], onehot, z)  # (Q, G, G)
        sg, xg, x2 = s_g[:, cols].T, xx_g[:, cols].T, xx[cols]
        beta = sg.sum(axis=1) / x2
        t = sg.sum(axis=1) / np.sqrt(((sg - beta[:, None] * xg) ** 2).sum(axis=1))
        beta_b = (sg @ w.T) / x2[:, None]  # (Q, B)
        scores = np.einsum("qgh,bh->qbg", a, w) - beta_b[..., None] * xg[:, None, :]
        with np.errstate(invalid="ignore", divide="ignore"):
            t_b = (sg @ w.T) / np.sqrt((scores ** 2).sum(axis=2))
        o = sign[cols]
        t_stat[cols] = t
        p[cols] = ((o[:, None] * t_b) >= (o * t)[:, None] - 1e-12).mean(axis=1)
    defined = (xx > 1e-9 * len(yt)) & (yy > 1e-9 * len(yt))
    effect = np.where(defined, effect, np.nan)
    per_cluster = np.where(defined[None, :] & (xx_g > 1e-9) & (yy_g[:, None] > 1e-9), per_cluster, np.nan)
    return {"effect": effect, "p": p, "t": t_stat, "per_cluster": per_cluster.T, "n": np.full(q, len(yt)), "n_clusters": np.full(q, g)}


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
    cell = np.unique(np.char.add(np.asarray(clusters, dtype=str), np.char.add("|", np.asarray(epochs, dtype=str))), return_inverse=True)[1]
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
                      "n_clusters": des.n_clusters, "_design": des, "_y": y_all[m], "_x": x[:, j],
                      "_epochs": sub["epoch"].to_numpy(float)}
    return out
