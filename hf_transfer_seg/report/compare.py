"""What the selection table may claim: equal-savings baselines, multiplicity, seed noise.

- :func:`equal_savings`: beside an online rule that saves a mean share ``s`` of the pretraining epochs,
  the fixed stop at ``(1 - s)`` of the schedule, i.e. the plain stop that saves the same compute. Its Dice
  in each series is interpolated linearly between the neighbouring fine-tuned checkpoints; the paired
  per-series difference (rule's loss - fixed stop's loss) says whether the rule beats it.
- :func:`correct`: every interval of the selection table is exploratory (many rules, many predictors).
  Two families -- the rows (Dice lost vs last) and the equal-savings differences -- are each corrected:
  Holm-adjusted p-values (statsmodels) and Bonferroni-level signed-rank intervals over cluster means (see
  :mod:`hf_transfer_seg.report.stats` for why not a bootstrap at that level). A claim ("loses", "gains",
  "beats the fixed stop") is made only where the corrected interval excludes 0.
- :func:`mark_seed_noise`: whether each claimed gain exceeds the seed noise of one comparison.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hf_transfer_seg.report.rules import Runs
from hf_transfer_seg.report.stats import (
    cluster_ids, cluster_means, cluster_mean_ci, cluster_wilcoxon, holm, signed_rank_interval,
)

BASELINE_RULES = ("last", "oracle")


def _grid_neighbours(grid: list[float], last: float, epoch: float) -> list[float]:
    points = sorted(set(grid) | {last})
    lo = max([e for e in points if e <= epoch + 1e-9], default=points[0])
    hi = min([e for e in points if e >= epoch - 1e-9], default=points[-1])
    return [lo, hi]


def equal_savings(row: dict[str, Any], runs: Runs, *, clusters: dict[str, str] | None, n_boot: int, seed: int) -> dict[str, Any] | None:
    """The fixed stop saving the same mean share as ``row`` (an online rule), and the paired difference."""
    if not row["online"] or row["epochs_saved"] is None or not row["series"]:
        return None
    saved = float(row["epochs_saved"])
    fraction = 1.0 - saved
    fixed_lost, diffs, names = [], [], []
    for name, r in row["series"].items():
        g = runs.frames.get(name)
        if g is None:
            continue
        epochs, dice = g["epoch"].to_numpy(float), g["dice"].to_numpy(float)
        ok = np.isfinite(dice)
        interp = float(np.interp(fraction * epochs[-1], epochs[ok], dice[ok]))
        lost = float(dice[-1] - interp)
        fixed_lost.append(lost)
        diffs.append(r["lost_vs_last"] - lost)
        names.append(name)
    if not names:
        return None
    ids = cluster_ids(names, clusters)
    last, grid = runs.grid()
    epoch = fraction * last
    ci = cluster_mean_ci(np.asarray([diffs]), ids, n_boot=n_boot, seed=seed)[0]
    return {
        "fraction": round(fraction, 4), "epoch": round(epoch, 4), "between_epochs": _grid_neighbours(grid, last, epoch),
        "epochs_saved": saved, "dice_lost_vs_last": float(np.mean(fixed_lost)),
        "difference": float(np.mean(diffs)), "difference_ci": ci,
        "p_value": cluster_wilcoxon(diffs, ids, alternative="two-sided"), "n_series": len(names),
        "_cluster_diff": cluster_means(diffs, ids).tolist(),
    }


def _claim(ci: list[float] | None, below: str, above: str) -> str:
    if ci is None:
        return "not testable"
    if ci[1] < 0:
        return below
    if ci[0] > 0:
        return above
    return "no difference shown"


def correct(table: list[dict[str, Any]], *, alpha: float) -> dict[str, Any]:
    """Holm p-values and Bonferroni-level signed-rank intervals for both families; returns the settings."""
    rows = [r for r in table if r["rule"] not in BASELINE_RULES and r.get("p_value") is not None]
    adjusted = holm({str(i): r["p_value"] for i, r in enumerate(rows)})
    level_rows = 1 - alpha / max(len(rows), 1)
    for i, r in enumerate(rows):
        r["p_adjusted"] = adjusted[str(i)]
        r["dice_lost_vs_last_ci_corrected"] = signed_rank_interval(r["_cluster_lost"], level=level_rows)
        r["claim"] = _claim(r["dice_lost_vs_last_ci_corrected"], "gains vs last", "loses vs last")
    pairs = [r["equal_savings"] for r in table if r.get("equal_savings") and r["equal_savings"].get("p_value") is not None]
    adjusted = holm({str(i): e["p_value"] for i, e in enumerate(pairs)})
    level_pairs = 1 - alpha / max(len(pairs), 1)
    for i, e in enumerate(pairs):
        e["p_adjusted"] = adjusted[str(i)]
        e["difference_ci_corrected"] = signed_rank_interval(e["_cluster_diff"], level=level_pairs)
        e["rule_vs_fixed"] = _claim(e["difference_ci_corrected"], "rule beats the fixed stop", "fixed stop beats the rule")
    for r in table:
        r.pop("_cluster_lost", None)
        r.setdefault("exploratory", r["rule"] not in BASELINE_RULES)
        if r.get("equal_savings"):
            r["equal_savings"].pop("_cluster_diff", None)
    return {"rows": len(rows), "rows_level": level_rows, "equal_savings": len(pairs), "equal_savings_level": level_pairs,
            "method": "Holm-adjusted two-sided Wilcoxon signed-rank p over cluster means; Bonferroni-level signed-rank "
                      "(Hodges-Lehmann) intervals over cluster means, per family"}


def mark_seed_noise(table: list[dict[str, Any]], noise: dict[str, Any]) -> None:
    """``seed_noise`` on every row claiming a gain vs last (and every equal-savings gain): does the mean
    gain exceed twice the SE of one checkpoint-vs-checkpoint difference of seed means?"""
    threshold = 2 * noise["se_of_difference"] if noise.get("known") else None

    def mark(gain: float | None) -> dict[str, Any] | None:
        if gain is None or gain <= 0:
            return None
        if threshold is None:
            return {"gain": gain, "threshold": None, "exceeds": None}
        return {"gain": gain, "threshold": threshold, "exceeds": bool(gain > threshold)}

    for r in table:
        lost = r.get("dice_lost_vs_last")
        r["seed_noise"] = mark(-lost if lost is not None else None)
        e = r.get("equal_savings")
        if e:
            e["seed_noise"] = mark(-e["difference"] if e.get("difference") is not None else None)
