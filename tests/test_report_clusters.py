"""Issue 18: the report's statistics by cluster, with an effect floor, seed noise, equal-savings baselines,
multiplicity and named bad values. Constructed tables whose right answers are known."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from hf_transfer_seg.errors import DataError
from hf_transfer_seg.report.analysis import headline_sentence
from hf_transfer_seg.report.pipeline import run_analysis as analyse
from hf_transfer_seg.report.correlate import kendall_columns
from hf_transfer_seg.report.stats import (
    cluster_ids, cluster_mean_ci, epoch_partial_columns, partial_spearman, signed_rank_interval, signed_rank_p,
    spearman_columns,
)
from hf_transfer_seg.report.table import check_table
from test_rank import TARGET, ranked, record_downstream_dice, zoo  # noqa: F401 (the results-repo fixtures: a real zoo, a real `rank`)

EPOCHS = [0, 1, 5, 20, 50, 100, 150, 200, 250, 300]
SCORE = "robustness:cosine_m0.5_L-1_flat"
SATURATING_SEED = 0  # a table the former control (linear in epoch ranks) called "predicts"


def _runs_table(seed: int = 0, runs: int = 6, per_run: int = 6) -> pd.DataFrame:
    """``runs`` pretraining runs (model x scheme), each with ``per_run`` series (datasets x frozen) sharing the
    run's top-1 curve; Dice rises with epoch + noise."""
    rng = np.random.default_rng(seed)
    rows = []
    for r in range(runs):
        top1 = np.sort(rng.uniform(0, 0.8, len(EPOCHS)))
        for s in range(per_run):
            dice = 0.7 + 0.1 * np.log1p(EPOCHS) / np.log1p(300) + rng.normal(0, 0.01, len(EPOCHS))
            for e, d, t in zip(EPOCHS, dice, top1):
                rows.append({"series": f"run{r}-s{s}", "model": f"m{r // 2}", "pretraining_scheme": f"sch{r % 2}",
                             "dataset": f"d{s // 2}", "epoch": e, "dice": d, "top1": t})
    return pd.DataFrame(rows)


def _cli(*args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hf_transfer_seg", "report", *args], capture_output=True, text=True, cwd=cwd, timeout=300)


# --- the statistics against their library definitions ---------------------------------------------------


def test_vectorised_rank_statistics_match_scipy_and_the_residual_definition():
    rng = np.random.default_rng(0)
    x, y, z = rng.normal(size=(12, 5)), rng.normal(size=12), np.arange(12.0)
    x[:, 4] = np.round(x[:, 4])  # ties
    for j in range(5):
        assert spearman_columns(x, y)[j] == pytest.approx(stats.spearmanr(x[:, j], y).statistic)
        assert kendall_columns(x, y)[j] == pytest.approx(stats.kendalltau(x[:, j], y).statistic)
    # partial Spearman = Pearson of the residuals of the ranks regressed on a cubic in log(1 + z)
    rx, ry, rz, lz = (*(stats.rankdata(v) for v in (x[:, 0], y, z)), np.log1p(z))
    resid = [v - np.polyval(np.polyfit(lz, v, 3), lz) for v in (rx, ry)]
    assert partial_spearman(x[:, 0], y, z) == pytest.approx(np.corrcoef(*resid)[0, 1])
    # the former control (the first-order rank partial): a line in the ranks of z
    linear = [v - np.polyval(np.polyfit(rz, v, 1), rz) for v in (rx, ry)]
    assert epoch_partial_columns(x[:, :1], y, z, degree=1, basis="rank")[0] == pytest.approx(np.corrcoef(*linear)[0, 1])
    # too few checkpoints for the control (6 < 7): undefined, not a weaker control
    assert partial_spearman(x[:6, 0], y[:6], z[:6]) is None and partial_spearman(x[:7, 0], y[:7], z[:7]) is not None
    assert partial_spearman(-z, y, z) is None  # a pure training-length proxy has no partial


def test_signed_rank_p_is_scipys_wilcoxon_and_the_interval_is_honest_for_few_clusters():
    rng = np.random.default_rng(3)
    for k in (5, 6, 9):
        x = np.round(rng.normal(0.3, 1, k), 1)
        x[0] = 0.0  # a zero and (likely) ties: scipy's permutation branch
        for alt in ("greater", "two-sided"):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ref = stats.wilcoxon(x, alternative=alt, zero_method="zsplit").pvalue
            assert signed_rank_p(x[None, :], alternative=alt)[0] == pytest.approx(ref)
    six = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]  # all positive: the smallest two-sided p with 6 is 2/64
    assert signed_rank_interval(six, level=0.95) == [0.1, 0.6]  # exact level 1 - 2/64, the range
    assert signed_rank_interval(six, level=1 - 0.05 / 40) == [-math.inf, math.inf]  # cannot reach that level


def test_cluster_bootstrap_counts_clusters_not_copies():
    rng = np.random.default_rng(1)
    means = rng.normal(size=6)
    one = cluster_mean_ci(means[None, :], cluster_ids([f"c{i}" for i in range(6)], None), n_boot=500)[0]
    names = [f"c{i}-{j}" for i in range(6) for j in range(6)]
    copies = cluster_mean_ci(np.repeat(means, 6)[None, :], cluster_ids(names, {n: n.split("-")[0] for n in names}), n_boot=500)[0]
    assert copies == pytest.approx(one, abs=2e-3)  # six identical copies per run add no information
    naive = cluster_mean_ci(np.repeat(means, 6)[None, :], cluster_ids(names, None), n_boot=500)[0]
    assert naive[1] - naive[0] < 0.7 * (one[1] - one[0])  # treated as independent, the interval is far too narrow


# --- verdicts ----------------------------------------------------------------------------------------------


def test_pseudo_replicated_series_are_tested_by_pretraining_run():
    df = _runs_table()
    report = analyse(df, n_boot=300)  # no run column: the runs are found from top-1, identical across a run's series
    assert report["settings"]["cluster_source"] == "inferred" and report["n_clusters"] == 6
    assert "pretraining runs inferred from top1" in report["cluster_text"]
    top1 = report["predictors"]["top1"]
    assert top1["n_clusters_evidence"] == 6
    assert top1["p_value"] == pytest.approx(1 / 64)  # every run positive: the exact one-sided p over 6 clusters
    naive = analyse(df, n_boot=300, cluster_by=["none"])["predictors"]["top1"]  # 36 "independent" series
    assert naive["p_value"] < 1e-4 < top1["p_value"]


def test_minus_epoch_plus_noise_tracks_training_length_only():
    rng = np.random.default_rng(5)
    rows = []
    for s in range(8):
        dice = 0.6 + 0.2 * np.log1p(EPOCHS) / np.log1p(300) + rng.normal(0, 0.01, len(EPOCHS))
        score = -np.asarray(EPOCHS, float) + rng.normal(0, 30, len(EPOCHS))
        rows += [{"series": f"s{s}", "epoch": e, "dice": d, "proxy": v} for e, d, v in zip(EPOCHS, dice, score)]
    report = analyse(pd.DataFrame(rows), lower=["proxy"], headline="proxy", n_boot=500)  # falls as Dice rises: a "good" score
    p = report["predictors"]["proxy"]
    assert p["mean_spearman"] < -0.5 and p["p_value"] < 0.05  # strongly "correlated" with Dice...
    assert p["verdict"] == "tracks_training_length_only" and p["adds_beyond_epoch"] is False  # ...through epoch only
    assert "tracks training length only" in p["verdict_text"] and "partial" in p["verdict_text"]
    assert "tracks training length only" in report["predictors"]["proxy"]["verdict_text"]


def _saturating_table(seed: int, noise_corr: float = 0.0, grid=(1, 5, 10, 20, 50, 100, 150, 200, 250, 300)) -> pd.DataFrame:
    """36 series in 6 runs: Dice rises and the score falls, both *saturating* along training (exponential or
    logistic in log epoch, random rates; a run's score curve is shared by its series), plus noise; the score's
    noise carries minus ``noise_corr`` x Dice's (0: nothing beyond training length). As in
    the former benchmarks/report_epoch_control.py."""
    rng = np.random.default_rng(seed)
    e = np.asarray(grid, float)

    def curve():
        if rng.random() < 0.5:
            return 1 - np.exp(-e / np.exp(rng.uniform(np.log(3), np.log(80))))
        return 1 / (1 + np.exp(-(np.log1p(e) - rng.uniform(np.log(5), np.log(60))) / rng.uniform(0.3, 1.0)))

    rows = []
    for r in range(6):
        run_curve = curve()
        for s in range(6):
            dice_sd, score_sd = rng.uniform(0.004, 0.015), rng.uniform(0.01, 0.04)
            zd = rng.normal(size=len(e))
            zs = noise_corr * zd + np.sqrt(1 - noise_corr ** 2) * rng.normal(size=len(e))
            dice = 0.6 + rng.uniform(0.05, 0.2) * curve() + dice_sd * zd
            score = 0.9 - rng.uniform(0.2, 0.5) * run_curve * rng.uniform(0.8, 1.2) - score_sd * zs
            rows += [{"series": f"run{r}-s{s}", "model": f"m{r // 2}", "pretraining_scheme": f"sch{r % 2}", "epoch": a,
                      "dice": d, SCORE: v} for a, d, v in zip(grid, dice, score)]
    return pd.DataFrame(rows)


def test_saturating_score_and_dice_with_independent_noise_track_training_length_only():
    # the former control (a line in the epoch ranks) called this table "predicts ... beyond training length"
    report = analyse(_saturating_table(SATURATING_SEED), lower=[SCORE], headline=SCORE, n_boot=1000)
    p = report["predictors"][SCORE]
    assert p["mean_spearman"] < -0.5 and p["p_value"] < 0.05  # strongly "correlated" with Dice, through epoch
    assert p["verdict"] == "tracks_training_length_only" and p["adds_beyond_epoch"] is False
    assert "epoch-controlled effect (fixed-effects partial r)" in p["verdict_text"]
    assert "predicts" not in headline_sentence(report) and "tracks training length only" in headline_sentence(report)


def test_saturating_score_with_information_beyond_epoch_predicts():
    report = analyse(_saturating_table(SATURATING_SEED, noise_corr=0.6), lower=[SCORE], headline=SCORE, n_boot=1000)
    p = report["predictors"][SCORE]
    b = p["beyond_epoch"]
    assert p["verdict"] == "predicts" and p["adds_beyond_epoch"] is True
    assert b["effect"] <= -0.3 and b["p_value"] < 0.05 and b["placebo"]["rate"] <= 0.05
    assert "predicts Dice beyond training length" in headline_sentence(report)


def test_six_checkpoints_with_nothing_beyond_epoch_are_not_called_predicts():
    # 6 checkpoints: the series' own trend drops to a line in log epoch (4 points left beyond it); still no "predicts"
    df = _saturating_table(SATURATING_SEED, noise_corr=0.0, grid=(1, 10, 50, 100, 200, 300))
    p = analyse(df, lower=[SCORE], headline=SCORE, n_boot=0)["predictors"][SCORE]
    assert p["verdict"] == "tracks_training_length_only" and p["beyond_epoch"]["n_runs"] == 6


def test_effect_floor_and_reason_are_stated():
    rng = np.random.default_rng(2)
    rows = []
    for s in range(10):
        dice = rng.uniform(0.6, 0.8, len(EPOCHS))
        weak = -0.15 * (dice - dice.mean()) / dice.std() + rng.normal(0, 1, len(EPOCHS))  # right sign, tiny effect
        rows += [{"series": f"s{s}", "epoch": e, "dice": d, "weak": w} for e, d, w in zip(EPOCHS, dice, weak)]
    df = pd.DataFrame(rows)
    p = analyse(df, lower=["weak"], headline="weak", min_effect=0.3, n_boot=200)["predictors"]["weak"]
    assert p["verdict"] != "predicts"
    if p["p_value"] is not None and p["p_value"] < 0.05:
        assert "below the declared minimum effect" in p["verdict_text"]


def test_pure_noise_40_predictors_6_series_no_predicts_and_no_corrected_claim():
    rng = np.random.default_rng(11)
    rows = []
    for s in range(6):
        cols = {f"n{j}": rng.normal(size=len(EPOCHS)) for j in range(40)}
        rows += [{"series": f"s{s}", "epoch": e, "dice": d, **{k: v[i] for k, v in cols.items()}}
                 for i, (e, d) in enumerate(zip(EPOCHS, rng.uniform(0.6, 0.7, len(EPOCHS))))]
    names = [f"n{j}" for j in range(40)]
    report = analyse(pd.DataFrame(rows), lower=names, headline=None, n_boot=200)
    assert not [n for n, p in report["predictors"].items() if p["verdict"] == "predicts"]
    online = [r for r in report["selection"] if r["online"] and r["predictor"] != "epoch"]
    assert len(online) == 40
    for r in online:
        # 6 clusters cannot reach the corrected level: no interval (never [-inf, +inf]) and no claim, the level stated
        assert r["dice_lost_vs_last_ci_corrected"] is None and r["exploratory"]
        assert not r["corrected_attainable"]["attainable"] and r["corrected_attainable"]["smallest_p"] == pytest.approx(2 / 2 ** 6)
        assert r["claim"].startswith("no corrected claim: not attainable with 6 clusters")
        e = r["equal_savings"]
        assert e["difference_ci_corrected"] is None and e["rule_vs_fixed"].startswith("no corrected claim")
    uncorrected = sum(1 for r in online if r["dice_lost_vs_last_ci"] and (r["dice_lost_vs_last_ci"][1] < 0 or r["dice_lost_vs_last_ci"][0] > 0))
    assert r["p_adjusted"] >= r["p_value"] and uncorrected >= 0


# --- selection ---------------------------------------------------------------------------------------------


def test_equal_savings_fixed_stop_by_hand():
    # patience 1 stops at epoch 200 (no improvement there), keeping epoch 100: saved 1/3 in both series
    epochs = [0, 100, 200, 300]
    rows = []
    for s, dice in (("a", [0.1, 0.5, 0.6, 0.7]), ("b", [0.2, 0.4, 0.8, 0.6])):
        rows += [{"series": s, "epoch": e, "dice": d, "robustness:x": v} for e, d, v in zip(epochs, dice, [0.9, 0.5, 0.6, 0.4])]
    report = analyse(pd.DataFrame(rows), patience=1, n_boot=0)
    pat = next(r for r in report["selection"] if r["predictor"] == "robustness:x" and r["rule"] == "patience")
    assert pat["epochs_saved"] == pytest.approx(1 / 3) and pat["chosen_epoch_mean"] == 100
    e = pat["equal_savings"]
    # the fixed stop saving 1/3 stops at epoch 200 of 300: Dice 0.6 (a) and 0.8 (b)
    assert e["fraction"] == pytest.approx(2 / 3, abs=1e-4) and e["epoch"] == pytest.approx(200) and e["between_epochs"] == [200, 200]
    assert e["dice_lost_vs_last"] == pytest.approx(((0.7 - 0.6) + (0.6 - 0.8)) / 2)
    # the rule keeps epoch 100: lost 0.2 (a) and 0.2 (b); minus the fixed stop's loss
    assert e["difference"] == pytest.approx(((0.2 - 0.1) + (0.2 + 0.2)) / 2)


def test_equal_savings_interpolates_between_checkpoints():
    epochs = [0, 100, 200, 300]
    rows = [{"series": s, "epoch": e, "dice": d, "robustness:x": v}
            for s in ("a", "b") for e, d, v in zip(epochs, [0.1, 0.5, 0.6, 0.7], [0.9, 0.5, 0.6, 0.4])]
    rows += [{"series": "c", "epoch": e, "dice": d, "robustness:x": v} for e, d, v in zip(epochs, [0.1, 0.5, 0.6, 0.7], [0.9, 0.8, 0.7, 0.6])]
    report = analyse(pd.DataFrame(rows), patience=1, n_boot=0)
    e = next(r for r in report["selection"] if r["rule"] == "patience")["equal_savings"]
    # saved (1/3 + 1/3 + 0) / 3 = 2/9 -> stop at 7/9 of 300 = 233.3, between 200 and 300: Dice 0.6 + 0.1/3
    assert e["epoch"] == pytest.approx(700 / 3, abs=1e-3) and e["between_epochs"] == [200, 300]
    assert e["dice_lost_vs_last"] == pytest.approx(0.7 - (0.6 + 0.1 / 3))


def test_leave_one_group_out_trains_on_other_runs_where_it_can_and_says_when_it_cannot():
    df = _runs_table(per_run=4)
    df["robustness:x"] = -df["top1"] + np.random.default_rng(0).normal(0, 0.05, len(df))
    report = analyse(df, group_by="dataset", n_boot=0)
    cv = next(r for r in report["selection"] if r["predictor"] == "top1" and r["rule"] == "patience")["cross_validated"]
    # every run has series in every dataset: the folds keep the held-out runs' other-dataset series, and say so
    assert cv["groups_without_fold"] == [] and cv["n_series"] == 24
    assert cv["trains_on_held_out_runs"] == ["d0", "d1"] and set(cv["fold_per_group"].values()) == {"same_runs_other_groups"}
    assert cv["objective"] == report["settings"]["tuning_objective"]
    by_model = analyse(df, group_by="model", n_boot=0)
    cv = next(r for r in by_model["selection"] if r["predictor"] == "top1" and r["rule"] == "patience")["cross_validated"]
    assert cv["groups_without_fold"] == [] and cv["n_series"] == 24 and set(cv["params_per_group"]) == {"m0", "m1", "m2"}
    assert cv["trains_on_held_out_runs"] == [] and set(cv["fold_per_group"].values()) == {"other_runs"}


# --- seeds and bad values ---------------------------------------------------------------------------------


def test_long_table_with_a_seed_column_gives_the_seed_noise():
    rows = []
    for s in range(2):
        for e in (0, 10, 20):
            for seed, d in enumerate((0.50, 0.52, 0.54)):
                rows.append({"series": f"s{s}", "epoch": e, "seed": seed, "dice": d + e / 100, "robustness:x": -e})
    df = check_table(pd.DataFrame(rows))
    assert len(df) == 6 and set(df["num_seeds"]) == {3}
    assert df["dice"].iloc[0] == pytest.approx(0.52) and df["dice_std"].iloc[0] == pytest.approx(0.02)
    report = analyse(df, n_boot=0)
    n = report["noise"]
    assert n["known"] and n["num_seeds"] == 3 and n["seed_sd"] == pytest.approx(0.02)
    last = next(r for r in report["selection"] if r["rule"] == "oracle")
    assert last["seed_noise"] is None  # the oracle is the last checkpoint here: no gain claimed
    two = next(r for r in report["selection"] if r["rule"] == "fixed_fraction" and r["params"]["epoch"] == 10)
    assert two["dice_lost_vs_last"] == pytest.approx(0.1) and two["seed_noise"] is None


def test_bad_values_are_refused_or_named(tmp_path):
    good = _runs_table(runs=1, per_run=2)
    bad = good.copy()
    bad.loc[3, "top1"] = np.inf
    bad.to_csv(tmp_path / "inf.csv", index=False)
    done = _cli("--table", str(tmp_path / "inf.csv"), "--output", str(tmp_path / "o"))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "'top1' is infinite at series 'run0-s0', epoch 20" in done.stderr + done.stdout
    with pytest.raises(DataError, match="infinite"):
        check_table(pd.DataFrame({"series": ["a"], "epoch": [1], "dice": [np.inf]}))

    gaps = good.copy()
    gaps.loc[(gaps["series"] == "run0-s0") & (gaps["epoch"] == 300), "top1"] = np.nan  # predictor missing at last
    gaps.loc[(gaps["series"] == "run0-s1") & (gaps["epoch"] == 300), "dice"] = np.nan  # no Dice at last
    gaps.to_csv(tmp_path / "gaps.csv", index=False)
    done = _cli("--table", str(tmp_path / "gaps.csv"), "--output", str(tmp_path / "g"), "--bootstrap", "0")
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "g" / "report.json").read_text())
    text = " ".join(report["warnings"])
    assert "'run0-s1': no Dice at its last checkpoint (epoch 300)" in text and "run0-s1" in done.stdout
    assert "top1 has no value at the last checkpoint of 1 series ('run0-s0' (epoch 300))" in text
    last = next(r for r in report["selection"] if r["predictor"] == "top1" and r["rule"] == "lowest")
    assert set(last["series"]) == {"run0-s0"}  # run0-s1 has no reference; run0-s0 keeps epoch 300 as "last"
    row = last["series"]["run0-s0"]
    d = good[good["series"] == "run0-s0"].set_index("epoch")["dice"]
    assert row["lost_vs_last"] == pytest.approx(d[300] - d[row["chosen_epoch"]])
    assert "Warning" in (tmp_path / "g" / "report.md").read_text()


# --- the files --------------------------------------------------------------------------------------------


def test_report_md_is_one_page_with_an_appendix(tmp_path):
    df = _runs_table()
    df[SCORE] = -df["top1"] + np.random.default_rng(1).normal(0, 0.05, len(df))
    for j in range(30):
        df[f"extra{j}"] = np.random.default_rng(j).normal(size=len(df))
    df.to_csv(tmp_path / "t.csv", index=False)
    done = _cli("--table", str(tmp_path / "t.csv"), "--output", str(tmp_path / "r"), "--bootstrap", "200",
                "--lower-is-better", ",".join(f"extra{j}" for j in range(30)))
    assert done.returncode == 0, done.stderr
    md = (tmp_path / "r" / "report.md").read_text()
    appendix = (tmp_path / "r" / "report-appendix.md").read_text()
    assert len(md.splitlines()) < 90 and "report-appendix.md" in md  # one page: headline, verdicts, stopping, baselines
    assert "| extra29 |" in appendix and "| extra29 |" not in md  # the exploratory grid is in the appendix...
    assert "extra29" in md.split("## Verdicts")[1].split("## Baselines")[0]  # ...and every declared verdict on the first page
    assert "top1 | best value" in md and "lowest" not in md  # a higher-is-better column's best value
    assert "fixed stop at epoch 150" in md and "fixed stop saving the same share" in md
    assert "insufficient_evidence" not in done.stdout
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    for r in report["selection"]:  # the keys the demo reads
        assert {"predictor", "rule", "online", "params", "dice_lost_vs_last", "label"} <= set(r)
        if r["online"] and r["predictor"] != "epoch":
            assert r["equal_savings"]["epoch"] is not None
    assert report["headline_sentence"].startswith(f"Headline {SCORE}")


def test_results_repo_mode_prints_ranking_statistics_only(tmp_path):
    from hf_transfer_seg.report.results import table_from_results
    from hf_transfer_seg.report.write import write_report

    models = [f"org/model{i}" for i in range(6)]
    dice = [0.60, 0.70, 0.65, 0.80, 0.75, 0.55]
    rows = []
    for m, d in zip(models, dice):
        rows.append({"target": "t", "model": m, "repo_id": m, "revision": "main", "sha": "0" * 40, "status": "ok",
                     "predictor": SCORE, "value": 1 - d, "lower_is_better": True})
        rows.append({"target": "t", "model": m, "repo_id": m, "revision": "main", "sha": "0" * 40, "status": "ok",
                     "predictor": "dice", "value": d, "lower_is_better": ""})
    table, lower = table_from_results(pd.DataFrame(rows), "t", read_cards=False)
    report = write_report(table, tmp_path / "zoo", source="results", lower=lower, n_boot=0, mode="ranking")
    assert report["selection"] == [] and report["mode"] == "ranking"
    r = report["ranking"][SCORE]["targets"]["t (models)"]
    assert r["spearman"] == pytest.approx(1.0) and r["top1_hit"] and r["regret"] == 0 and r["pick"] == "org/model3"
    assert r["p_value"] == pytest.approx(1 / 720)  # exact: one ordering of 6 models out of 720
    assert report["predictors"][SCORE]["verdict"] == "predicts"
    md = (tmp_path / "zoo" / "report.md").read_text().lower()
    for word in ("patience", "epochs saved", "last checkpoint", "fixed stop", "| epoch", "stop after"):
        assert word not in md
    assert "regret" in md and "top-1 hit" in md


def test_report_on_a_results_repo_via_the_local_hub_has_no_stopping_rule(zoo, ranked, tmp_path, capsys):
    """The real `rank` results repo (test_rank's fixtures): the CLI prints ranking statistics only."""
    from hf_transfer_seg.cli import main

    record_downstream_dice(zoo, {"convnext": 0.8, "vit": 0.7, "dinov2": 0.75, "hfvit": 0.6, "resnet": 0.65})
    out = tmp_path / "zoo-report"
    assert main(["report", "--results-repo", ranked[0], "--target", TARGET, "--output", str(out), "--bootstrap", "100"]) == 0
    printed = capsys.readouterr().out
    report = json.loads((out / "report.json").read_text())
    assert report["mode"] == "ranking" and report["selection"] == [] and report["appendix"] is None
    assert "5 models with Dice" in printed and "model ranking, no stopping rules" in printed
    text = (printed + (out / "report.md").read_text()).lower()
    for word in ("patience", "epochs saved", "last checkpoint", "fixed stop", "stop after", "oracle"):
        assert word not in text
    ranking = report["ranking"]["rankme"]["targets"][f"{TARGET} (models)"]
    assert ranking["n_models"] == 5 and ranking["best_model"] == zoo["convnext"] and ranking["regret"] >= 0
