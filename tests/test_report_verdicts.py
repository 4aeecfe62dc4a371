"""Issue 23: verdicts that hold on a table with the authors' structure (constructed data, never theirs).

36 series = 6 pretraining runs (3 models x 2 schemes) x 3 datasets x frozen/unfrozen, 9 checkpoints, and no
run column: the report must find the runs from top-1. The epoch-controlled test is checked against
statsmodels, the verdicts against tables whose right answer is known, bad cluster keys against the CLI."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm

from hf_transfer_seg.errors import ConfigError
from hf_transfer_seg.report import beyond
from hf_transfer_seg.report.analysis import assess
from hf_transfer_seg.report.clusters import resolve
from hf_transfer_seg.selection import HIGHER, LOWER

_spec = importlib.util.spec_from_file_location("report_calibration", Path(__file__).parents[1] / "benchmarks" / "report_calibration.py")
CALIBRATION = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(CALIBRATION)
EPOCHS = CALIBRATION.EPOCHS


def authors_like(seed: int = 0) -> pd.DataFrame:
    """The benchmark's tables (benchmarks/report_calibration.py) with columns ``beyond`` (lower is better: carries Dice's
    within-series deviation), ``noise`` (independent of Dice), ``run_curve`` (top-1's run curve + run-level noise:
    nothing beyond training length), ``run_const`` (one value per run: cannot rank checkpoints)."""
    def columns(rng, top1, dev, run_noise, m, sch):
        k = len(EPOCHS)
        return {"beyond": -0.1 * top1 - 1.5 * dev + rng.normal(0, 0.008, k), "noise": rng.normal(size=k),
                "run_curve": top1 + run_noise, "run_const": np.full(k, 10.0 * m + sch)}

    return CALIBRATION.authors_structure(seed, columns, 0.02)


def _verdicts(df: pd.DataFrame, directions: dict, headline: str | None) -> dict:
    preds, _ = assess(df, list(directions), directions, resolve(df, None), headline=headline, min_effect=0.3, n_boot=0, seed=0)
    return preds


def _cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hf_transfer_seg", "report", *args], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    return authors_like(0)


def test_runs_are_inferred_from_top1_without_a_run_column(table):
    unit = resolve(table, None)
    assert unit.how == "inferred" and unit.n == 6 and unit.key == ["top1"]
    runs = {}
    for s, r in unit.mapping.items():
        runs.setdefault(r, set()).add(" | ".join(s.split(" | ")[:2]))  # model | scheme
    assert all(len(v) == 1 for v in runs.values()) and len(runs) == 6  # exactly the model x scheme runs
    gap = table.drop(index=table.index[[3, 40]])  # a checkpoint missing in two series: they stay in their runs
    assert resolve(gap, None).n == 6
    # a named pretraining column is used as well; a model column alone would have given 3 (never silently)
    assert resolve(table, None, ["run_curve"]).n == 6
    assert resolve(table.drop(columns=["top1"]), None).how == "run_parts"
    assert "from column names" in resolve(table.drop(columns=["top1"]), None).description


@pytest.mark.filterwarnings("ignore::statsmodels.tools.sm_exceptions.SingularMatrixWarning")  # series + cell dummies overlap by design
def test_fixed_effects_t_matches_statsmodels_cluster_robust_ols(table):
    sub, _ = beyond.prepare(table, resolve(table, None).mapping)
    des = beyond.design(sub["series"].to_numpy(str), sub["_cell"].to_numpy(str), sub["epoch"].to_numpy(float), sub["_cluster"].to_numpy(str))
    y, x = sub["dice"].to_numpy(float), sub[["beyond"]].to_numpy(float)
    res = beyond.fit(des, y, x, np.array([-1.0]))
    # the same model as a dummy-variable OLS: within-series ranks, series x {1, t, t^2, t^3}, dataset x epoch dummies
    yr, xr = beyond.within_ranks(y[:, None], des.series)[:, 0], beyond.within_ranks(x, des.series)[:, 0]
    t = np.log1p(sub["epoch"].to_numpy(float))
    cols = []
    for s in np.unique(des.series):
        m = (des.series == s).astype(float)
        ts = (t - t[m > 0].mean()) / t[m > 0].std()
        cols += [m * ts ** k for k in range(4)]
    cells = pd.get_dummies(sub["_cell"] + "|" + sub["epoch"].astype(str)).to_numpy(float)
    exog = np.column_stack([xr, np.column_stack(cols), cells])
    fit = sm.OLS(yr, exog).fit(cov_type="cluster", cov_kwds={"groups": des.cluster, "use_correction": False, "df_correction": False})
    assert res["t"][0] == pytest.approx(fit.tvalues[0], rel=1e-6)
    resid_x = sm.OLS(xr, exog[:, 1:]).fit().resid
    resid_y = sm.OLS(yr, exog[:, 1:]).fit().resid
    assert res["effect"][0] == pytest.approx(np.corrcoef(resid_x, resid_y)[0, 1], rel=1e-6)


def test_a_true_effect_beyond_training_length_is_called_predicts(table):
    p = _verdicts(table, {"beyond": LOWER}, "beyond")["beyond"]
    b = p["beyond_epoch"]
    assert p["verdict"] == "predicts" and b["effect"] <= -0.3 and b["p_value"] < 0.05 and b["runs_in_direction"] == 6
    assert b["placebo"]["n"] == beyond.PLACEBOS and b["placebo"]["rate"] <= beyond.PLACEBO_MAX
    assert "predicts Dice beyond training length" in p["verdict_text"] and "placebo" in p["verdict_text"]


def test_a_run_curve_plus_noise_tracks_training_length_only(table):
    p = _verdicts(table, {"run_curve": HIGHER}, "run_curve")["run_curve"]
    assert p["verdict"] == "tracks_training_length_only" and p["runs_in_direction"] == 6


def test_absence_of_evidence_is_not_shown_and_equivalence_is_does_not_predict(table):
    # alone (the headline, no correction), a noise column over 6 runs: the equivalence test excludes effects >= 0.3
    alone = _verdicts(table, {"noise": HIGHER}, "noise")["noise"]
    assert alone["verdict"] == "does_not_predict" and alone["beyond_epoch"]["equivalence_p"] < 0.05
    # the same column among 5 exploratory ones: Holm over 5 makes 5/64 the smallest p, so nothing is shown either way
    many = table.assign(**{f"noise{j}": np.random.default_rng(j).normal(size=len(table)) for j in range(4)})
    directions = {"noise": HIGHER, **{f"noise{j}": HIGHER for j in range(4)}}
    p = _verdicts(many, directions, None)["noise"]
    assert p["verdict"] == "not_shown"
    assert "the smallest signed-rank p attainable with 6 clusters and Holm over 5 exploratory predictors is 0.0781" in p["verdict_text"]
    assert f"{p['runs_in_direction']} of 6 runs in the declared direction" in p["verdict_text"]


def test_placebo_rate_is_in_report_json_and_md_and_the_headline_names_the_unit(tmp_path, table):
    path = tmp_path / "t.csv"
    table.drop(columns=["run_const"]).to_csv(path, index=False)
    done = _cli("--table", str(path), "--output", str(tmp_path / "r"), "--bootstrap", "0", "--headline", "beyond",
                "--lower-is-better", "beyond", "--higher-is-better", "noise,run_curve", "--max-rule-predictors", "2")
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    placebo = report["predictors"]["beyond"]["beyond_epoch"]["placebo"]
    assert placebo["n"] == 200 and 0 <= placebo["rate"] <= 0.05
    assert report["n_clusters"] == 6 and "inferred from top1" in report["cluster_text"]
    assert "Unit: 6 clusters, pretraining runs inferred from top1" in report["headline_sentence"]
    md = (tmp_path / "r" / "report.md").read_text()
    verdicts = md.split("## Verdicts")[1].split("## Baselines")[0]
    for name in ("beyond", "top1", "noise", "run_curve"):  # every declared predictor on the first page
        assert f"| {name}" in verdicts
    assert "of 200 |" in verdicts


@pytest.mark.parametrize("flag, message", [
    ("", "--cluster-by is empty"),
    (",", "--cluster-by is empty"),
    ("lab_name", "--cluster-by lab_name: not a column of the table; its columns are: series"),
    ("lab", "puts all 36 series in one cluster"),
])
def test_bad_cluster_keys_exit_2_naming_the_columns(tmp_path, table, flag, message):
    path = tmp_path / "t.csv"
    table.assign(lab="one lab").to_csv(path, index=False)
    done = _cli("--table", str(path), "--output", str(tmp_path / "r"), "--bootstrap", "0", "--cluster-by", flag)
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "r" / "report.json").exists()


def test_a_predictor_constant_within_every_run_is_refused(tmp_path, table):
    path = tmp_path / "t.csv"
    table.to_csv(path, index=False)
    done = _cli("--table", str(path), "--output", str(tmp_path / "r"), "--bootstrap", "0", "--lower-is-better", "run_const")
    assert done.returncode == 2 and "'run_const'" in done.stderr and "constant within every pretraining run" in done.stderr
    assert "Traceback" not in done.stderr
    with pytest.raises(ConfigError, match="--pretraining-columns nope"):
        resolve(table, None, ["nope"])
