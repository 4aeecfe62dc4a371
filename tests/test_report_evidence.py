"""The report never states more than its evidence: hand-built tables where the right answer is known."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from hf_transfer_seg.report.analysis import MIN_SERIES, holm, partial_spearman
from hf_transfer_seg.report.pipeline import run_analysis as analyse
from hf_transfer_seg.scoring.ties import paired_difference, pick, ties_with_best
from hf_transfer_seg.selection import FixedFraction, Patience, parse_rule

EPOCHS = [0, 1, 5, 20, 50, 100, 150, 200, 250, 300]


def _rows(series: str, epochs, dice, **cols) -> list[dict]:
    return [{"series": series, "epoch": e, "dice": d, **{k: v[i] for k, v in cols.items()}} for i, (e, d) in enumerate(zip(epochs, dice))]


def _predictive_table(n_series: int = 8, seed: int = 0) -> pd.DataFrame:
    """Dice varies over checkpoints (not monotone in epoch); ``cos_m050_L1_unpooled`` falls when Dice rises
    (a good lower-is-better score), ``anti`` rises with Dice (the one truly wrong-signed score)."""
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(n_series):
        dice = rng.uniform(0.5, 0.9, len(EPOCHS))
        score = 1.0 - dice + rng.normal(0, 0.01, len(EPOCHS))
        anti = dice + rng.normal(0, 0.01, len(EPOCHS))
        rows += _rows(f"s{s}", EPOCHS, dice, cos_m050_L1_unpooled=score, anti=anti)
    return pd.DataFrame(rows)


def _selection(report: dict, predictor: str, rule: str) -> dict:
    return next(r for r in report["selection"] if r["predictor"] == predictor and r["rule"] == rule)


def test_undeclared_directions_get_correlations_only_and_the_report_says_which_flag(tmp_path):
    from hf_transfer_seg.cli import main

    csv = tmp_path / "t.csv"
    _predictive_table().to_csv(csv, index=False)
    out = tmp_path / "undeclared"
    assert main(["report", "--table", str(csv), "--output", str(out), "--bootstrap", "200"]) == 0
    report = json.loads((out / "report.json").read_text())
    for name in ("cos_m050_L1_unpooled", "anti"):
        p = report["predictors"][name]
        assert p["direction"] is None and p["verdict"] == "direction_unknown"
        assert p["mean_spearman"] is not None  # correlations are still there
        assert not [r for r in report["selection"] if r["predictor"] == name]  # no rules without a direction
    assert {r["predictor"] for r in report["selection"]} == {"epoch"}  # the baselines are always there
    top = (out / "report.md").read_text().split("## Headline")[0]
    assert "Directions not declared" in top and "--lower-is-better" in top and "cos_m050_L1_unpooled" in top

    out2 = tmp_path / "declared"
    assert main(["report", "--table", str(csv), "--output", str(out2), "--bootstrap", "200",
                 "--lower-is-better", "cos_m050_L1_unpooled", "anti", "--headline", "cos_m050_L1_unpooled"]) == 0
    report = json.loads((out2 / "report.json").read_text())
    good, bad = report["predictors"]["cos_m050_L1_unpooled"], report["predictors"]["anti"]
    assert good["direction"] == "lower" and good["headline"] and good["verdict"] == "predicts"
    assert good["mean_spearman"] < -0.9
    assert bad["verdict"] == "does_not_predict" and not bad["headline"]  # wrong sign, declared lower: no credit
    # the selection rule on the declared score picks the lowest value, which is the best Dice: nothing lost vs oracle
    assert _selection(report, "cos_m050_L1_unpooled", "lowest")["dice_lost_vs_oracle"] == pytest.approx(0.0, abs=0.02)
    assert "Directions not declared" not in (out2 / "report.md").read_text()


def test_noise_only_table_with_many_predictors_yields_no_predicts_verdict():
    rng = np.random.default_rng(1)
    rows = []
    for s in range(8):
        cols = {f"noise{j}": rng.normal(size=len(EPOCHS)) for j in range(60)}
        rows += _rows(f"s{s}", EPOCHS, rng.uniform(0.6, 0.7, len(EPOCHS)), **cols)
    df = pd.DataFrame(rows)
    names = [f"noise{j}" for j in range(60)]
    result = analyse(df, lower=names, headline=None, n_boot=100)
    verdicts = [result["predictors"][n]["verdict"] for n in names]
    # 60 noise columns over 8 series (each its own cluster): nothing is shown either way; absence of evidence is
    # "not shown", never "does not predict" (the equivalence test over 8 clusters, Holm over 60, cannot reach 0.05)
    assert "predicts" not in verdicts and set(verdicts) == {"not_shown"}
    assert "the smallest signed-rank p attainable with 8 clusters and Holm over 60 exploratory predictors is 0.234" in \
        result["predictors"]["noise0"]["verdict_text"]
    raw = [result["predictors"][n]["p_value"] for n in names]
    assert min(raw) < 0.05  # some raw p-values would have passed: the Holm correction is what holds them back
    assert all(result["predictors"][n]["p_adjusted"] >= result["predictors"][n]["p_value"] for n in names)


def test_minimum_evidence_gate_one_series_of_three_checkpoints():
    # the demo's old situation: one series, three checkpoints, a perfect Spearman of -1 over noise-sized Dice gaps
    df = pd.DataFrame(_rows("demo", [2, 4.5, 6], [0.934, 0.941, 0.942], **{"robustness:cosine_m0.5_L-1_flat": [0.30, 0.26, 0.25]}))
    p = analyse(df, n_boot=100)["predictors"]["robustness:cosine_m0.5_L-1_flat"]
    assert p["mean_spearman"] == pytest.approx(-1.0)
    assert p["verdict"] == "insufficient_evidence" and "insufficient evidence: 0 series" in p["verdict_text"]
    assert p["adds_beyond_epoch"] is None
    assert MIN_SERIES >= 2


def test_fixed_fraction_and_hindsight_accounting_by_hand():
    # one series, schedule of 300 epochs; Dice peaks at 150
    dice = [0.10, 0.20, 0.30, 0.40, 0.50, 0.60, 0.70, 0.65, 0.62, 0.60]
    score = [0.90, 0.80, 0.70, 0.60, 0.50, 0.40, 0.45, 0.35, 0.50, 0.55]  # lowest at 200; never better after 200
    df = pd.DataFrame(_rows("s", EPOCHS, dice, **{"robustness:x": score}))
    report = analyse(df, patience=2, n_boot=0)
    stops = {r["params"]["epoch"]: r for r in report["selection"] if r["rule"] == "fixed_fraction"}
    # every checkpoint of the grid before the last is offered as a fixed stop, named by its epoch
    assert sorted(stops) == EPOCHS[:-1]
    half, two_thirds = stops[150], stops[200]
    assert half["params"]["fraction"] == 0.5 and two_thirds["params"]["fraction"] == pytest.approx(0.6667)
    assert half["predictor"] == "epoch" and half["online"]
    assert half["chosen_epoch_mean"] == 150 and half["epochs_saved"] == pytest.approx(0.5)
    assert half["dice_lost_vs_last"] == pytest.approx(0.60 - 0.70) and half["dice_lost_vs_oracle"] == pytest.approx(0.0)
    assert two_thirds["chosen_epoch_mean"] == 200 and two_thirds["epochs_saved"] == pytest.approx(1 / 3)
    assert two_thirds["dice_lost_vs_last"] == pytest.approx(0.60 - 0.65)
    last, oracle = _selection(report, "epoch", "last"), _selection(report, "epoch", "oracle")
    assert last["epochs_saved"] == 0 and last["dice_lost_vs_last"] == 0 and last["chosen_epoch_mean"] == 300
    assert not oracle["online"] and oracle["epochs_saved"] == 0 and oracle["chosen_epoch_mean"] == 150
    assert oracle["dice_lost_vs_last"] == pytest.approx(-0.10)
    # hindsight: the lowest score is at epoch 200 but finding it needs the whole run: nothing saved
    lowest = _selection(report, "robustness:x", "lowest")
    assert not lowest["online"] and lowest["chosen_epoch_mean"] == 200 and lowest["epochs_saved"] == 0
    assert lowest["dice_lost_vs_last"] == pytest.approx(0.60 - 0.65)
    # online patience 2: best at 200, no improvement at 250 and 300 -> stops at 300 (the end): nothing saved
    pat = _selection(report, "robustness:x", "patience")
    assert pat["online"] and pat["chosen_epoch_mean"] == 200 and pat["epochs_saved"] == 0
    # the same rule objects: patience 1 stops at 150 (0.45 is no better than 0.40) keeping epoch 100; 2/3 stops at 200
    out = Patience(1).apply(EPOCHS, score)
    assert (EPOCHS[out.chosen], EPOCHS[out.stop]) == (100, 150)
    assert FixedFraction(0.667).apply(EPOCHS).stop == EPOCHS.index(200)


def test_rules_walk_every_checkpoint_and_never_judge_one_without_dice():
    # the same run, but only epochs 0, 100, 150 and 300 were fine-tuned (as in the demo: a few U-Nets per run)
    dice = [0.10, None, None, None, None, 0.60, 0.70, None, None, 0.60]
    score = [0.90, 0.80, 0.70, 0.60, 0.50, 0.40, 0.45, 0.35, 0.50, 0.55]  # lowest at 200: never fine-tuned
    df = pd.DataFrame(_rows("s", EPOCHS, dice, **{"robustness:x": score}))
    report = analyse(df, patience=2, n_boot=0)
    half = next(r for r in report["selection"] if r["rule"] == "fixed_fraction" and r["params"]["epoch"] == 150)
    assert half["chosen_epoch_mean"] == 150 and half["epochs_saved"] == pytest.approx(0.5)  # epoch 150 is fine-tuned
    two_thirds = next(r for r in report["selection"] if r["rule"] == "fixed_fraction" and r["params"]["epoch"] == 200)
    # it stops at 200, which has no Dice: not judged (and not replaced by an earlier fine-tuned checkpoint)
    assert two_thirds["n_series_no_dice_at_choice"] == 1 and two_thirds["dice_lost_vs_last"] is None
    lowest = _selection(report, "robustness:x", "lowest")
    assert lowest["n_series_no_dice_at_choice"] == 1 and lowest["chosen_epoch_mean"] is None
    oracle = _selection(report, "epoch", "oracle")  # the best of the fine-tuned checkpoints
    assert oracle["chosen_epoch_mean"] == 150 and oracle["n_series_no_dice_at_choice"] == 0


def test_leave_one_group_out_tunes_without_seeing_the_held_out_group():
    # score range 1 in every series; tolerance 0.3 picks epoch 2, 0.1/0.2 epoch 3, <= 0.05 epoch 4
    epochs, score = [1, 2, 3, 4], [1.0, 0.25, 0.1, 0.0]
    rows = []
    for i in range(2):  # group A: the lowest score is the best checkpoint -> tolerance 0 is right
        rows += _rows(f"a{i}", epochs, [0.1, 0.2, 0.3, 0.9], **{"robustness:x": score, "dataset": ["A"] * 4})
    for i in range(2):  # group B: an earlier checkpoint within 30 % is much better -> tolerance 0.3 is right
        rows += _rows(f"b{i}", epochs, [0.1, 0.9, 0.3, 0.2], **{"robustness:x": score, "dataset": ["B"] * 4})
    report = analyse(pd.DataFrame(rows), group_by="dataset", n_boot=200)
    tol = _selection(report, "robustness:x", "within_tolerance")
    cv = tol["cross_validated"]
    assert cv["group_by"] == "dataset"
    # held-out A was tuned on B only (-> 0.3), held-out B on A only (-> 0)
    assert cv["params_per_group"] == {"A": {"tolerance": 0.3}, "B": {"tolerance": 0.0}}
    # in-sample, tolerance 0 and 0.3 tie at 0 lost on average; out of sample each group gets the other's choice
    assert cv["in_sample_tuned"]["dice_lost_vs_last"] == pytest.approx(0.0)
    assert cv["dice_lost_vs_last"] == pytest.approx((0.9 - 0.2) / 2)
    assert cv["dice_lost_vs_last"] > cv["in_sample_tuned"]["dice_lost_vs_last"]
    assert _selection(report, "epoch", "fixed_fraction")["cross_validated"] is None  # nothing to tune


def test_partial_spearman_is_undefined_for_a_pure_training_length_proxy():
    e = [0, 1, 5, 20, 50, 100, 150]  # the epoch control (cubic in log epoch) needs 7 checkpoints
    assert partial_spearman([7, 6, 5, 4, 3, 2, 1], [0.1, 0.3, 0.2, 0.5, 0.4, 0.6, 0.7], e) is None  # score = -epoch
    assert partial_spearman([1, 3, 2, 5, 4, 7, 6], [1, 3, 2, 5, 4, 7, 6], e) == pytest.approx(1.0, abs=0.2)
    assert partial_spearman([1, 3, 2, 5, 4, 6], [1, 3, 2, 5, 4, 6], e[:6]) is None  # 6 checkpoints: undefined
    assert holm({"a": 0.01, "b": 0.04, "c": 0.03}) == {"a": 0.03, "c": 0.06, "b": 0.06}


def test_ties_on_constructed_per_image_values():
    rng = np.random.default_rng(0)
    base = rng.uniform(0.2, 0.4, 64)  # image difficulty varies a lot between images...
    per_image = {
        "epoch-0004": {"plan": "p", "values": list(base)},
        "epoch-0002": {"plan": "p", "values": list(base + 0.00001 + np.tile([0.002, -0.002], 32))},  # ...a tiny shift: tied
        "epoch-0001": {"plan": "p", "values": list(base + 0.01 + rng.normal(0, 0.002, 64))},  # a small, consistent shift: not tied
        "epoch-0006": {"plan": "other", "values": list(base + 0.0001)},  # another plan: cannot be paired
    }
    rows = [{"revision": r, "epoch": float(r[-4:]), "score": float(np.mean(v["values"]))} for r, v in per_image.items()]
    lowest = pick(rows, "lowest")
    assert lowest["revision"] == "epoch-0004"
    ties = ties_with_best(rows, lowest, per_image)
    assert ties["epoch-0004"]["tied"] and ties["epoch-0002"]["tied"]
    assert ties["epoch-0001"]["tied"] is False and ties["epoch-0006"]["tied"] is None
    # unpaired per-revision intervals would overlap for epoch-0001 (the images spread by ~0.06): pairing resolves it
    d = paired_difference(per_image["epoch-0001"]["values"], per_image["epoch-0004"]["values"])
    assert d["ci_low"] > 0 and d["mean"] == pytest.approx(0.01, abs=0.002)
    for r in rows:
        r["tied_with_best"] = ties[r["revision"]]["tied"]
    assert pick(rows, "earliest-tied")["revision"] == "epoch-0002"
    assert pick(rows, "lowest")["revision"] == "epoch-0004"


def test_early_stop_specs_use_online_rules_only():
    from hf_transfer_seg.errors import ConfigError

    stop = parse_rule("top1:threshold=70")
    assert stop.predictor == "top1" and not stop.stop_now([1, 2], [40.0, 69.9], [1, 2, 3]) and stop.stop_now([1, 2], [40.0, 70.0], [1, 2, 3])
    assert parse_rule("epoch:fixed_fraction=0.5").stop_now([1, 2], [None, None], [1, 2, 3, 4])
    pat = parse_rule("patience=2")
    assert pat.predictor == "robustness" and pat.stop_now([1, 2, 3], [0.5, 0.6, 0.55], [1, 2, 3, 4])
    for bad in ("lowest", "top1:within_tolerance=0.1", "patience=0", "loss:patience=2", "robustness:fixed_fraction=0.5"):
        with pytest.raises(ConfigError):
            parse_rule(bad)
