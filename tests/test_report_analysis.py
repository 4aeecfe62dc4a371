"""Report analysis on hand-built tables: correlations computed by hand, selection rules, files written."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from hf_transfer_seg.errors import DataError
from hf_transfer_seg.report.pipeline import run_analysis as analyse
from hf_transfer_seg.report.table import check_table, load_csv, predictor_columns
from hf_transfer_seg.selection import Lowest, Patience, known_direction, resolve_directions

# --- hand-computed rank statistics (no ties), independent of scipy ------------------------------


def ranks(values):
    order = sorted(range(len(values)), key=lambda i: values[i])
    out = [0] * len(values)
    for rank, i in enumerate(order, start=1):
        out[i] = rank
    return out


def spearman_by_hand(x, y):
    n = len(x)
    d2 = sum((a - b) ** 2 for a, b in zip(ranks(x), ranks(y)))
    return 1 - 6 * d2 / (n * (n * n - 1))


def kendall_by_hand(x, y):
    n = len(x)
    concordant = discordant = 0
    for i in range(n):
        for j in range(i + 1, n):
            s = (x[i] - x[j]) * (y[i] - y[j])
            concordant += s > 0
            discordant += s < 0
    return (concordant - discordant) / (n * (n - 1) / 2)


A = dict(epoch=[1, 5, 20, 50, 100], dice=[0.50, 0.62, 0.70, 0.66, 0.74], score=[0.90, 0.70, 0.40, 0.35, 0.30],
         top1=[0.01, 0.10, np.nan, 0.50, 0.60])
B = dict(epoch=[0, 10, 20, 40], dice=[0.30, 0.45, 0.44, 0.50], score=[0.80, 0.60, 0.55, 0.50], top1=[np.nan, np.nan, 0.3, 0.4])
C = dict(epoch=[1, 2, 3], dice=[0.10, 0.20, 0.30], score=[0.10, 0.20, 0.30], top1=[np.nan] * 3)


def table() -> pd.DataFrame:
    rows = []
    for name, s in (("a", A), ("b", B), ("c", C)):
        for i in range(len(s["epoch"])):
            rows.append({"series": name, "epoch": s["epoch"][i], "dice": s["dice"][i],
                         "robustness:cosine_m0.5_L-1_flat": s["score"][i], "imagenet_top1": s["top1"][i]})
    return pd.DataFrame(rows)


def test_hand_formulas_give_the_values_worked_out_on_paper():
    # worked out by hand: series a has rank differences (4, 2, -1, -1, -4) -> rho = 1 - 6*38/120 = -0.9,
    # one concordant pair of ten -> tau = (1 - 9)/10 = -0.8; series b: d = (3, 0, 0, -3) -> -0.8, tau = -4/6
    assert spearman_by_hand(A["score"], A["dice"]) == pytest.approx(-0.9)
    assert kendall_by_hand(A["score"], A["dice"]) == pytest.approx(-0.8)
    assert spearman_by_hand(B["score"], B["dice"]) == pytest.approx(-0.8)
    assert kendall_by_hand(B["score"], B["dice"]) == pytest.approx(-4 / 6)


def test_correlations_match_hand_computation_and_missing_values_are_per_predictor():
    result = analyse(check_table(table()), n_boot=500)
    score = result["predictors"]["robustness:cosine_m0.5_L-1_flat"]
    assert score["direction"] == "lower"
    per = score["series"]
    assert per["a"]["spearman"] == pytest.approx(spearman_by_hand(A["score"], A["dice"]))
    assert per["a"]["kendall"] == pytest.approx(kendall_by_hand(A["score"], A["dice"]))
    assert per["b"]["spearman"] == pytest.approx(-0.8)
    assert per["b"]["kendall"] == pytest.approx(-4 / 6)
    assert per["c"]["spearman"] == pytest.approx(1.0) and per["c"]["kendall"] == pytest.approx(1.0)
    assert per["a"]["n"] == 5  # the missing top-1 value does not drop the row for the score
    assert score["mean_spearman"] == pytest.approx((-0.9 - 0.8 + 1.0) / 3)
    assert score["mean_kendall"] == pytest.approx((-0.8 - 4 / 6 + 1.0) / 3)
    assert score["fraction_expected_sign"] == pytest.approx(2 / 3)
    assert score["mean_spearman_ci"] is None  # 3 series, each its own cluster: no interval from fewer than 5 clusters
    # three series (one of them with 3 checkpoints): below the minimum evidence, no verdict either way
    assert score["verdict"] == "insufficient_evidence" and "insufficient evidence: 2 series" in score["verdict_text"]

    top1 = result["predictors"]["imagenet_top1"]
    assert top1["direction"] == "higher"
    # series a: 4 rows with top-1 (epoch 20 dropped), monotone with Dice -> +1; series b has 2 points -> undefined
    assert top1["series"]["a"]["n"] == 4 and top1["series"]["a"]["spearman"] == pytest.approx(1.0)
    assert top1["series"]["b"]["spearman"] is None and top1["series"]["c"]["n"] == 0
    assert top1["n_series"] == 1 and top1["mean_spearman"] == pytest.approx(1.0)
    assert top1["mean_spearman_ci"] is None  # one series: no bootstrap interval


def test_selection_rules_pick_the_expected_checkpoints():
    epochs = [1, 2, 3, 4, 5, 6]
    score = [0.9, 0.5, 0.6, 0.7, 0.4, 0.3]
    dice = [0.10, 0.50, 0.40, 0.45, 0.60, 0.55]
    df = pd.DataFrame({"series": "s", "epoch": epochs, "dice": dice, "robustness:x": score})
    rows = {(r["predictor"], r["rule"]): r for r in analyse(df, tolerance=0.2, patience=2, n_boot=0)["selection"]}
    lowest, tol, pat = (rows[("robustness:x", k)]["series"]["s"] for k in ("lowest", "within_tolerance", "patience"))
    assert lowest["chosen_epoch"] == 6 and lowest["lost_vs_oracle"] == pytest.approx(0.05)
    assert lowest["lost_vs_last"] == pytest.approx(0.0) and lowest["epochs_saved"] == 0.0
    # range 0.6, tolerance 0.2 -> anything <= 0.42: the earliest is epoch 5; hindsight: nothing saved
    assert tol["chosen_epoch"] == 5 and tol["lost_vs_oracle"] == pytest.approx(0.0)
    assert tol["lost_vs_last"] == pytest.approx(-0.05) and tol["epochs_saved"] == 0.0
    # no improvement at epochs 3 and 4 -> stop at 4 with the best so far (epoch 2); online: 2 of 6 epochs saved
    assert pat["chosen_epoch"] == 2 and pat["stop_epoch"] == 4
    assert pat["lost_vs_oracle"] == pytest.approx(0.10) and pat["lost_vs_last"] == pytest.approx(0.05)
    assert pat["epochs_saved"] == pytest.approx(1 - 4 / 6)
    assert rows[("robustness:x", "patience")]["online"] and not rows[("robustness:x", "lowest")]["online"]


def test_select_higher_is_better_is_negated_and_ties_take_the_earliest():
    assert Lowest().apply([1, 2, 3], [0.5, 0.2, 0.2]).chosen == 1
    assert Patience(1).apply([1, 2, 3, 4], [0.5, 0.4, 0.3, 0.2]).chosen == 3
    df = pd.DataFrame({"series": "s", "epoch": [1, 2, 3], "dice": [0.2, 0.5, 0.4], "top1": [0.1, 0.3, 0.2]})
    rows = {(r["predictor"], r["rule"]): r for r in analyse(df, n_boot=0)["selection"]}
    assert rows[("top1", "lowest")]["series"]["s"]["chosen_epoch"] == 2  # highest top-1


def test_direction_rule_and_predictor_columns():
    assert known_direction("robustness:cosine_m0.5_L-1_flat") == "lower"
    assert known_direction("top1") == known_direction("logme") == known_direction("epoch") == "higher"
    assert known_direction("score_pooled") is None and known_direction("val_loss") is None  # never guessed from a name
    assert resolve_directions(["robustness:x", "my_metric"], higher=["robustness:x"], lower=["my_metric"]) == {
        "robustness:x": "higher", "my_metric": "lower"}
    df = check_table(pd.DataFrame({"series": ["a"], "epoch": [1], "dice": [0.5], "note": ["x"], "logme": [1.0]}))
    assert predictor_columns(df) == ["logme"]


def test_table_errors(tmp_path):
    with pytest.raises(DataError, match="dice"):
        check_table(pd.DataFrame({"series": ["a"], "epoch": [1]}))
    with pytest.raises(DataError, match="duplicated"):
        check_table(pd.DataFrame({"series": ["a", "a"], "epoch": [1, 1], "dice": [0.1, 0.2]}))


def test_report_cli_from_csv_writes_json_markdown_and_plots(tmp_path):
    from hf_transfer_seg.cli import main

    csv = tmp_path / "table.csv"
    table().to_csv(csv, index=False)
    out = tmp_path / "report"
    assert main(["report", "--table", str(csv), "--output", str(out), "--bootstrap", "200"]) == 0
    report = json.loads((out / "report.json").read_text())
    score = report["predictors"]["robustness:cosine_m0.5_L-1_flat"]
    assert score["series"]["a"]["spearman"] == pytest.approx(-0.9)
    rules = {r["rule"] for r in report["selection"] if r["predictor"] == "robustness:cosine_m0.5_L-1_flat"}
    assert rules == {"lowest", "within_tolerance", "patience"}
    for row in report["selection"]:
        for key in ("dice_lost_vs_oracle", "dice_lost_vs_last", "epochs_saved"):
            assert row[key] is None or math.isfinite(row[key])
    assert report["primary_predictor"] == "robustness:cosine_m0.5_L-1_flat"
    md = (out / "report.md").read_text()
    assert "insufficient evidence" in md and "| robustness:cosine_m0.5_L-1_flat |" in md
    for name in ("score_vs_epoch.png", "dice_vs_epoch.png", "score_vs_dice.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"


def test_load_csv_reads_numeric_predictors(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("series,epoch,dice,robustness_a,comment\ns,1,0.5,0.2,hello\ns,2,0.6,,world\n")
    df = load_csv(path)
    assert predictor_columns(df) == ["robustness_a"]
    assert math.isnan(df.loc[1, "robustness_a"])
