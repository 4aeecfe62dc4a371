"""The report's fast statistics equal their definitions: cluster sums without a one-hot matrix and
correlations of many series side by side (issue 24 item 7); the bootstrap interval, Holm and ranks computed
without importing scipy.stats or statsmodels (issue 25 item 6) equal scipy's and statsmodels'."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from hf_transfer_seg.errors import ConfigError
from hf_transfer_seg.report.bootstrap import bootstrap_interval
from hf_transfer_seg.report.clusters import check_varies_within_runs
from hf_transfer_seg.report.correlate import kendall_columns, per_series
from hf_transfer_seg.report.stats import _cluster_sums, epoch_partial_columns, holm, rankdata_columns, spearman_columns


def test_cluster_sums_equal_the_one_hot_definition():
    rng = np.random.default_rng(0)
    values = rng.normal(size=(7, 300))
    values[rng.random(values.shape) < 0.2] = np.nan
    values[0, :5] = np.inf
    ids = rng.integers(0, 40, 300)
    ids[ids == 13] = 12  # a cluster with no series: sums and counts 0
    onehot = np.zeros((300, 40))
    onehot[np.arange(300), ids] = 1.0
    ok = np.isfinite(values)
    sums, counts = _cluster_sums(values, ids, 40)
    np.testing.assert_allclose(sums, np.where(ok, values, 0.0) @ onehot, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(counts, ok.astype(float) @ onehot)
    assert counts[:, 13].sum() == 0


def _table(seed: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(30):  # lengths 3..70, two epoch grids, so several batches and scipy's Kendall beyond 60
        n = [3, 5, 8, 10, 70][s % 5]
        for e in np.arange(n) * (1 + s % 2):
            rows.append({"series": f"s{s:02d}", "epoch": e, "dice": rng.normal(), "a": rng.normal(),
                         "b": float(rng.integers(0, 3)), "c": rng.normal()})
    df = pd.DataFrame(rows).sample(frac=1.0, random_state=1)  # row order must not matter
    df.loc[rng.random(len(df)) < 0.05, "c"] = np.nan
    df.loc[rng.random(len(df)) < 0.02, "dice"] = np.nan
    df.loc[df.series == "s03", "a"] = df.loc[df.series == "s03", "epoch"] * 2.0  # a function of epoch: no partial
    return df


def test_per_series_equals_one_series_and_one_predictor_at_a_time():
    df = _table()
    predictors = ["a", "b", "c", "epoch"]
    names, out = per_series(df, predictors)
    assert names == sorted(df.series.unique())
    for i, name in enumerate(names):
        g = df[(df.series == name) & df.dice.notna()]
        for j, p in enumerate(predictors):
            m = g[p].notna().to_numpy()
            x, y, e = g[p].to_numpy(float)[m], g.dice.to_numpy(float)[m], g.epoch.to_numpy(float)[m]
            assert out["n"][i, j] == m.sum()
            if len(x) < 3:
                assert np.isnan(out["spearman"][i, j])
                continue
            with warnings.catch_warnings():  # a constant column: scipy warns and gives NaN, as the report does
                warnings.simplefilter("ignore")
                rho, tau = stats.spearmanr(x, y).statistic, stats.kendalltau(x, y).statistic
            np.testing.assert_allclose(out["spearman"][i, j], rho, rtol=1e-10, atol=1e-12, equal_nan=True)
            np.testing.assert_allclose(out["kendall"][i, j], tau, rtol=1e-10, atol=1e-12, equal_nan=True)
            partial = epoch_partial_columns(x[:, None], y, e)[0] if p != "epoch" else np.nan
            np.testing.assert_allclose(out["partial_spearman"][i, j], partial, rtol=1e-10, atol=1e-12, equal_nan=True)
    assert np.isfinite(out["partial_spearman"]).sum() > 20  # the comparison covered defined partials


def test_paired_columns_equal_one_column_each():
    rng = np.random.default_rng(5)
    x, y, e = rng.normal(size=(12, 6)), rng.normal(size=(12, 6)), np.arange(12.0)
    for j in range(6):
        assert spearman_columns(x, y)[j] == spearman_columns(x[:, j:j + 1], y[:, j])[0]
        assert kendall_columns(x, y)[j] == kendall_columns(x[:, j:j + 1], y[:, j])[0]
        np.testing.assert_allclose(epoch_partial_columns(x, y, e)[j], epoch_partial_columns(x[:, j:j + 1], y[:, j], e)[0], rtol=1e-12)


def test_bootstrap_interval_is_scipys_bootstrap():
    rng = np.random.default_rng(2)
    for k, method in [(6, "BCa"), (12, "BCa"), (30, "BCa"), (6, "percentile")]:
        s, c = rng.normal(size=(5, k)), rng.integers(1, 4, size=(5, k)).astype(float)
        s[4] = c[4] * 0.3  # every cluster the same mean: BCa undefined (NaN) in both

        def statistic(idx, axis=-1):
            return s[:, idx].sum(axis=-1) / c[:, idx].sum(axis=-1)

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = stats.bootstrap((np.arange(k),), statistic, n_resamples=300, method=method, vectorized=True,
                                  confidence_level=0.9, rng=np.random.default_rng(7)).confidence_interval
            lo, hi = bootstrap_interval(statistic, k, n_resamples=300, level=0.9, rng=np.random.default_rng(7), method=method)
            # the leave-one-out means in closed form (what cluster_mean_ci passes) change nothing
            jlo, jhi = bootstrap_interval(statistic, k, n_resamples=300, level=0.9, rng=np.random.default_rng(7), method=method,
                                          jackknife=lambda: (s.sum(axis=1, keepdims=True) - s) / (c.sum(axis=1, keepdims=True) - c))
        for low, high in ((lo, hi), (jlo, jhi)):
            np.testing.assert_allclose(low, ref.low, rtol=1e-12, atol=1e-14, equal_nan=True)
            np.testing.assert_allclose(high, ref.high, rtol=1e-12, atol=1e-14, equal_nan=True)
        assert np.isfinite(lo[:4]).all()


def test_holm_is_statsmodels_multipletests():
    from statsmodels.stats.multitest import multipletests

    rng = np.random.default_rng(4)
    p = np.r_[rng.uniform(0, 0.05, 6), rng.uniform(0, 1, 10), [0.01, 0.01, 1.0]]
    got = holm({f"p{i}": v for i, v in enumerate(p)})
    np.testing.assert_array_equal(list(got.values()), multipletests(p, method="holm")[1])


def test_ranks_are_scipys_rankdata():
    rng = np.random.default_rng(6)
    for shape in [(40, 7), (1, 3), (0, 2), (9,), (0,)]:
        a = rng.integers(0, 5, size=shape).astype(float)  # many ties
        np.testing.assert_array_equal(rankdata_columns(a), stats.rankdata(a, axis=0))
    big = rng.integers(0, 50, size=(500, 500)).astype(float)  # above PANDAS_RANK_SIZE: pandas' rank, the same numbers
    np.testing.assert_array_equal(rankdata_columns(big), stats.rankdata(big, axis=0))


def test_constant_within_runs_is_found_among_many_predictors_of_any_type():
    """One groupby over every predictor names the same predictor the per-column definition does."""
    rng = np.random.default_rng(8)
    runs = {f"s{i}": f"r{i // 2}" for i in range(8)}
    df = pd.DataFrame({"series": np.repeat(list(runs), 5), "epoch": np.tile(range(5), 8),
                       **{f"p{j}": rng.normal(size=40) for j in range(300)}})
    df["flag"] = np.tile([True, False], 20)
    df["text"] = rng.normal(size=len(df)).astype(str)
    df.loc[::3, "text"] = "n/a"
    check_varies_within_runs(df, runs, [*(f"p{j}" for j in range(300)), "flag", "text", "epoch"], "--f")
    per_run = df["series"].map(runs)
    df["const"] = per_run.str[1:].astype(float)  # one value per run
    df["const_text"] = per_run.str[1:]
    df.loc[::4, "const_text"] = "missing"
    for name in ("const", "const_text"):
        with pytest.raises(ConfigError, match=f"'{name}'"):
            check_varies_within_runs(df, runs, ["p0", name, "p1"], "--f")
