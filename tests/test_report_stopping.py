"""Issue 23 item 5: the stopping question answered. Constructed tables whose right answers are known: a rule
that truly beats the fixed stop saving as much, one that does not, ``--max-loss`` tuning, leave-one-dataset-out
when every run spans every dataset, corrected intervals only where attainable, and seed noise like with like."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from hf_transfer_seg.report.analysis import headline_sentence
from hf_transfer_seg.report.pipeline import run_analysis as analyse
from hf_transfer_seg.report.compare import attainable, best_vs_last_noise
from hf_transfer_seg.report.rules import Runs, tune
from hf_transfer_seg.selection import Patience

EPOCHS = list(range(0, 301, 25))  # 13 checkpoints
SCORE = "robustness:x"


def _plateau_table(runs: int = 8) -> pd.DataFrame:
    """Each run has two series: Dice rises linearly until its plateau epoch (early: 50, late: 250) and stays
    there; the score improves exactly until the plateau. Patience stops right after each series' plateau and
    loses nothing; a fixed stop saving the same mean share stops too early for the late series."""
    rows = []
    for r in range(runs):
        for kind, plateau in (("early", 50 + 25 * (r % 2)), ("late", 250)):
            for e in EPOCHS:
                rows.append({"series": f"run{r}-{kind}", "pretraining_run": f"run{r}", "dataset": kind, "epoch": e,
                             "dice": 70 + 10 * min(e, plateau) / plateau, SCORE: -min(e, plateau)})
    return pd.DataFrame(rows)


def _late_gain_table(runs: int = 8) -> pd.DataFrame:
    """Dice rises linearly to epoch 300 in every series; the score stops improving at epoch 50. Patience-2
    stops at epoch 100 keeping epoch 50; the fixed stop saving the same share stops at 100 with more Dice."""
    rows = []
    for r in range(runs):
        for d in ("a", "b"):
            for e in EPOCHS:
                rows.append({"series": f"run{r}-{d}", "pretraining_run": f"run{r}", "dataset": d, "epoch": e,
                             "dice": 70 + e / 30, SCORE: -min(e, 50)})
    return pd.DataFrame(rows)


def _patience(report: dict) -> dict:
    return next(r for r in report["selection"] if r["predictor"] == SCORE and r["rule"] == "patience")


def test_a_rule_that_beats_the_equal_savings_fixed_stop_is_said_to():
    report = analyse(_plateau_table(), patience=2, n_boot=0)
    e = _patience(report)["equal_savings"]
    assert e["difference"] < 0 and e["n_clusters"] == 8 and e["n_clusters_rule_better"] == 8
    assert e["difference_ci_corrected"] is not None and e["difference_ci_corrected"][1] < 0  # 8 clusters: 2/2^8 < 0.05
    assert e["rule_vs_fixed"] == "rule beats the fixed stop"
    sentence = report["stopping_sentence"]
    assert sentence.startswith("Yes, an online rule beats the fixed stop that saves as much: patience-2 on robustness:x")
    assert "(rule − fixed, corrected interval [" in sentence and "better in 8 of 8 runs" in sentence
    assert sentence.endswith(".") and not re.search(r"[.;]\s+[A-Z]", sentence)  # one sentence


def test_a_rule_that_does_not_beat_it_gets_the_estimate_and_k_of_k_runs():
    report = analyse(_late_gain_table(), patience=2, n_boot=0)
    row = _patience(report)
    # stops at epoch 100 (saved 2/3) keeping epoch 50: Dice 70 + 50/30; the fixed stop at 100 has 70 + 100/30
    assert row["epochs_saved"] == pytest.approx(2 / 3) and row["chosen_epoch_mean"] == 50
    e = row["equal_savings"]
    assert e["epoch"] == pytest.approx(100) and e["difference"] == pytest.approx(50 / 30)
    assert e["n_clusters_rule_worse"] == 8 and e["rule_vs_fixed"] == "fixed stop beats the rule"
    assert report["stopping_sentence"] == (
        "No online rule beats the fixed stop that saves as much: best, patience-2 on robustness:x (saving 67% of the epochs), "
        "+1.67 points worse (worse in 8 of 8 runs).")


def test_max_loss_tunes_for_savings_under_the_cap_out_of_sample():
    # Dice 70 + e/30: a fixed stop at epoch e loses (300 - e)/30; the most saved within 2.0 points is epoch 250
    least = analyse(_late_gain_table(), n_boot=0)
    assert not [r for r in least["selection"] if r.get("tuned_to_cap")]
    report = analyse(_late_gain_table(), n_boot=0, max_loss=2.0)
    assert report["settings"]["max_loss"] == 2.0 and "<= 2" in report["settings"]["tuning_objective"]
    fixed = next(r for r in report["selection"] if r.get("tuned_to_cap"))
    assert fixed["params"]["epoch"] == pytest.approx(250) and fixed["dice_lost_vs_last"] == pytest.approx(50 / 30)
    cv = fixed["cross_validated"]  # no --group-by: one pretraining run held out at a time
    assert cv["group_by"] == "cluster" and len(cv["params_per_group"]) == 8 and cv["within_cap"]
    assert cv["epochs_saved"] == pytest.approx(1 / 6) and cv["dice_lost_vs_last"] == pytest.approx(50 / 30)
    assert "under --max-loss 2 points, out of sample (leave-one-cluster-out" in report["stopping_sentence"]
    assert "the fixed stop tuned the same way 17% at +1.67 points (within the cap)" in report["stopping_sentence"]
    tight = analyse(_late_gain_table(), n_boot=0, max_loss=0.0)
    assert next(r for r in tight["selection"] if r.get("tuned_to_cap"))["epochs_saved"] == 0  # only the last checkpoint loses nothing


def test_leave_one_dataset_out_with_crossed_datasets_trains_on_the_other_datasets_only(tmp_path):
    df = _plateau_table()  # every run spans both datasets ("early", "late")
    report = analyse(df, group_by="dataset", n_boot=0)
    cv = _patience(report)["cross_validated"]
    assert cv["groups_without_fold"] == [] and cv["n_series"] == 16
    assert cv["trains_on_held_out_runs"] == ["early", "late"]
    # the fold holding out "early" was tuned on the "late" series alone (the same runs, the other dataset)
    runs = Runs(df)
    late = {s: v for s, v in runs.series(SCORE, "lower").items() if s.endswith("late")}
    assert cv["params_per_group"]["early"] == tune(Patience().grid(), late).params
    out = tmp_path / "r"
    done = subprocess.run([sys.executable, "-m", "hf_transfer_seg", "report", "--table", _csv(df, tmp_path), "--output", str(out),
                           "--group-by", "dataset", "--no-plots", "--bootstrap", "0"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    md, grid = (out / "report.md").read_text(), (out / "report-appendix.md").read_text()
    assert "folds early, late train on the held-out runs' other-dataset series" in grid and "no fold for" not in grid
    assert "-inf" not in md + grid and "+inf" not in md + grid and "no corrected CI: 8 clusters reach 99.2% at most" in grid
    assert not list(out.glob("*.png")) and "## Plots" not in md  # --no-plots
    assert done.stdout.strip().splitlines()[-1].strip() == json.loads((out / "report.json").read_text())["stopping_sentence"]
    assert f"**Stopping:** {report['stopping_sentence']}" in md


def _csv(df: pd.DataFrame, tmp_path) -> str:
    path = tmp_path / "table.csv"
    df.to_csv(path, index=False)
    return str(path)


@pytest.mark.parametrize("value", ["-0.1", "nan", "inf", "-inf", "x"])
def test_max_loss_must_be_a_finite_number_at_least_zero(tmp_path, value):
    done = subprocess.run([sys.executable, "-m", "hf_transfer_seg", "report", "--table", _csv(_late_gain_table(2), tmp_path),
                           "--output", str(tmp_path / "r"), f"--max-loss={value}"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "--max-loss" in lines[0] and "give a value >= 0" in lines[0] or "not a number" in lines[0]
    assert not (tmp_path / "r").exists()


def test_corrected_intervals_only_where_attainable():
    assert attainable(6, 0.99) == {"clusters": 6, "level": 0.99, "smallest_p": 2 / 64, "needed_p": pytest.approx(0.01),
                                   "attainable": False, "attainable_level": pytest.approx(1 - 2 / 64)}
    assert attainable(8, 0.95)["attainable"] and not attainable(5, 0.95)["attainable"]
    report = analyse(_late_gain_table(runs=6), n_boot=0)  # 6 runs: 2/2^6 = 0.031 cannot reach any corrected row level
    fixed = next(r for r in report["selection"] if r["rule"] == "fixed_fraction")
    assert fixed["dice_lost_vs_last_ci_corrected"] is None and fixed["claim"].startswith("no corrected claim: not attainable with 6")


def _flat_seed_table(checkpoints: int, series: int = 30, seed: int = 0) -> pd.DataFrame:
    """True Dice flat at 80; each checkpoint's seed mean of 5 seeds (seed SD 1) drawn independently."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame([{"series": f"s{s}", "epoch": e, "dice": 80 + rng.normal(0, 1.0 / np.sqrt(5)), "dice_std": 1.0, "num_seeds": 5}
                         for s in range(series) for e in range(checkpoints)])


def test_best_vs_last_gap_is_compared_with_the_same_mean_of_maxima_under_seed_noise():
    noise = {"known": True, "seed_sd": 1.0, "num_seeds": 5, "se_of_difference": np.sqrt(2 / 5)}
    old_yardstick = 2 * noise["se_of_difference"]  # 2 SE of one difference: the wrong comparison
    # 500 checkpoints of pure seed noise: the mean of maxima passes 2 SE of one difference, yet is seed noise
    out = best_vs_last_noise(_flat_seed_table(500, series=10), noise, seed=1)
    assert out["best_vs_last_gap_mean"] > old_yardstick and not out["gap_exceeds_noise"]
    # 13 checkpoints with a real +0.8 peak mid-run in every series: below the old yardstick, above the noise's own
    df = _flat_seed_table(13)
    assert not best_vs_last_noise(df, noise, seed=1)["gap_exceeds_noise"]
    df.loc[df["epoch"] == 6, "dice"] += 0.8
    out = best_vs_last_noise(df, noise, seed=1)
    assert out["best_vs_last_gap_mean"] < old_yardstick and out["gap_exceeds_noise"]
    report = analyse(df, n_boot=0)  # the headline sentence states the like-with-like comparison
    assert report["noise"]["gap_exceeds_noise"] and "exceeds what seed noise alone gives that mean of maxima" in headline_sentence(report)


def test_patience_vectorised_pass_makes_the_live_decisions():
    """The report's one-pass Patience.apply against the live rule (should_stop on every prefix)."""
    rng = np.random.default_rng(0)
    for _ in range(3000):
        n = int(rng.integers(1, 12))
        values = rng.integers(0, 4, n).astype(float)
        values[rng.random(n) < 0.2] = np.inf
        values[rng.random(n) < 0.1] = np.nan
        epochs = np.arange(n, dtype=float)
        for p in (1, 2, 3):
            rule = Patience(p)
            live = next((i for i in range(n) if rule.should_stop(epochs[: i + 1], values[: i + 1], epochs[-1])), None)
            out = rule.apply(epochs, values)
            assert out.stop == live
            assert out.chosen == rule.choose(epochs[: (n if live is None else live + 1)], values[: (n if live is None else live + 1)])


def test_many_clusters_are_dealt_into_bounded_folds():
    rows = [{"series": f"s{i}", "epoch": e, "dice": 70 + e / 30, SCORE: -min(e, 50)} for i in range(45) for e in EPOCHS]
    report = analyse(pd.DataFrame(rows), n_boot=0, max_loss=1.0, headline=None)
    cv = next(r for r in report["selection"] if r.get("tuned_to_cap"))["cross_validated"]
    assert len(cv["params_per_group"]) == 20 and cv["n_series"] == 45  # 45 series (own clusters) in 20 folds
    assert "20 folds of whole clusters" in report["stopping_sentence"]


def test_plots_of_many_series_are_drawn_as_collections(tmp_path):
    from PIL import Image

    from hf_transfer_seg.report.plots import LEGEND_SERIES, make_plots

    df = _late_gain_table(runs=10)  # 20 series: beyond the legend, one collection per plot
    assert df["series"].nunique() > LEGEND_SERIES
    plots = make_plots(df, SCORE, tmp_path, spearman=0.5)
    assert set(plots) == {"dice_vs_epoch", "score_vs_epoch", "score_vs_dice"}
    for name in plots.values():
        with Image.open(tmp_path / name) as image:
            assert image.size == (660, 440) or image.size == (550, 440)
