"""What the selection table may claim: equal-savings baselines, multiplicity, seed noise.

- :func:`equal_savings`: beside an online rule that saves a mean share ``s`` of the pretraining epochs,
  the fixed stop at ``(1 - s)`` of the schedule, i.e. the plain stop that saves the same compute. Its Dice
  in each series is interpolated linearly between the neighbouring fine-tuned checkpoints; the paired
  per-series difference (rule's loss - fixed stop's loss) says whether the rule beats it.
- :func:`correct`: every interval of the selection table is exploratory (many rules, many predictors).
  Two families -- the rows (Dice lost vs last) and the equal-savings differences -- are each corrected:
  Holm-adjusted p-values (as statsmodels computes them) and Bonferroni-level signed-rank intervals over cluster means (see
  :mod:`hf_transfer_seg.report.stats` for why not a bootstrap at that level). A claim ("loses", "gains",
  "beats the fixed stop") is made only where the corrected interval excludes 0. With K clusters a
  two-sided signed-rank test cannot go below p = 2/2^K; where that is above the corrected level there is
  no corrected interval (None, never [-inf, +inf]) and :func:`attainable` states the level that is.
- :func:`mark_seed_noise`: whether each claimed gain exceeds seed noise, like with like: a mean of paired
  differences against the SE of that mean under seed noise alone, and the oracle's best-vs-last gap (a
  mean of maxima) against the same mean of maxima under seed noise alone (:func:`best_vs_last_noise`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

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
    per_cluster = cluster_means(diffs, ids)
    return {
        "fraction": round(fraction, 4), "epoch": round(epoch, 4), "between_epochs": _grid_neighbours(grid, last, epoch),
        "epochs_saved": saved, "dice_lost_vs_last": float(np.mean(fixed_lost)),
        "difference": float(np.mean(diffs)), "difference_ci": ci,
        "p_value": cluster_wilcoxon(diffs, ids, alternative="two-sided"), "n_series": len(names),
        "n_clusters": int(len(per_cluster)), "n_clusters_rule_worse": int((per_cluster > 0).sum()),
        "n_clusters_rule_better": int((per_cluster < 0).sum()), "_cluster_diff": per_cluster.tolist(),
    }


def attainable(k: int, level: float) -> dict[str, Any]:
    """Can a two-sided signed-rank interval over ``k`` clusters reach ``level``? The smallest two-sided p
    with k clusters is 2/2^k; the highest level reachable is 1 - 2/2^k."""
    smallest = 2.0 / 2 ** k if k > 0 else 1.0
    return {"clusters": int(k), "level": level, "smallest_p": smallest, "needed_p": 1.0 - level,
            "attainable": bool(smallest <= 1.0 - level + 1e-15), "attainable_level": max(0.0, 1.0 - smallest)}


def corrected_interval(cluster_values: list[float], level: float) -> tuple[list[float] | None, dict[str, Any]]:
    """The signed-rank interval at ``level``, or None (with why) where so few clusters cannot reach it."""
    info = attainable(len(cluster_values), level)
    ci = signed_rank_interval(cluster_values, level=level) if cluster_values else None
    if ci is None or not all(math.isfinite(v) for v in ci):
        info["attainable"] = False
        return None, info
    return ci, info


def not_attainable_text(info: dict[str, Any]) -> str:
    """'not attainable with 6 clusters (smallest two-sided p 2/2^6 = 0.031 > 0.00086 needed; attainable level 96.9 %)'."""
    k = info["clusters"]
    return (f"not attainable with {k} clusters (smallest two-sided signed-rank p 2/2^{k} = {info['smallest_p']:.2g} > "
            f"{info['needed_p']:.2g} needed; attainable level {info['attainable_level']:.1%})")


def _claim(ci: list[float] | None, below: str, above: str, info: dict[str, Any] | None = None) -> str:
    if ci is None:
        return "not testable" if not info or not info["clusters"] else f"no corrected claim: {not_attainable_text(info)}"
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
        ci, info = corrected_interval(r["_cluster_lost"], level_rows)
        r["dice_lost_vs_last_ci_corrected"], r["corrected_attainable"] = ci, info
        r["claim"] = _claim(ci, "gains vs last", "loses vs last", info)
    pairs = [r["equal_savings"] for r in table if r.get("equal_savings") and r["equal_savings"].get("p_value") is not None]
    adjusted = holm({str(i): e["p_value"] for i, e in enumerate(pairs)})
    level_pairs = 1 - alpha / max(len(pairs), 1)
    for i, e in enumerate(pairs):
        e["p_adjusted"] = adjusted[str(i)]
        ci, info = corrected_interval(e["_cluster_diff"], level_pairs)
        e["difference_ci_corrected"], e["corrected_attainable"] = ci, info
        e["rule_vs_fixed"] = _claim(ci, "rule beats the fixed stop", "fixed stop beats the rule", info)
    for r in table:
        r.pop("_cluster_lost", None)
        r.setdefault("exploratory", r["rule"] not in BASELINE_RULES)
        if r.get("equal_savings"):
            r["equal_savings"].pop("_cluster_diff", None)
    return {"rows": len(rows), "rows_level": level_rows, "equal_savings": len(pairs), "equal_savings_level": level_pairs,
            "method": "Holm-adjusted two-sided Wilcoxon signed-rank p over cluster means; Bonferroni-level signed-rank "
                      "(Hodges-Lehmann) intervals over cluster means, per family, only where that level is attainable "
                      "with the number of clusters (else none, and the attainable level is stated)"}


GAP_DRAWS = 20_000_000  # normal draws the best-vs-last null may use (bounds its cost on a 10^6-row table)


def best_vs_last_noise(df: pd.DataFrame, noise: dict[str, Any], *, seed: int = 0, n_sim: int = 2000) -> dict[str, Any]:
    """The mean over series of (best Dice - last Dice), against the same statistic under seed noise alone.

    Each series' best checkpoint is a maximum, so its gap over the last is positive even when every
    checkpoint has the same true Dice; a single difference's SE is the wrong yardstick. Under the null
    every checkpoint's seed mean is the series' value plus N(0, seed_sd^2 / seeds at that checkpoint),
    independently (separate fine-tunes); the null's mean and 95th percentile of the mean gap come from
    ``n_sim`` draws (fewer on a huge table: at most :data:`GAP_DRAWS` normal draws)."""
    if not noise.get("known"):
        return {}
    sd = float(noise["seed_sd"])
    d = df[df["dice"].notna()].sort_values(["series", "epoch"], kind="stable")
    k = pd.to_numeric(d["num_seeds"], errors="coerce").fillna(1).clip(lower=1).to_numpy(float)
    codes, _ = pd.factorize(d["series"], sort=True)
    dice = d["dice"].to_numpy(float)
    n_series = int(codes.max()) + 1 if len(codes) else 0
    counts = np.bincount(codes, minlength=n_series)
    keep = counts[codes] >= 2
    if not keep.any():
        return {}
    codes, k, dice = pd.factorize(codes[keep])[0], k[keep], dice[keep]
    n = int(codes.max()) + 1
    last_pos = np.r_[np.nonzero(np.diff(codes))[0], len(codes) - 1]
    observed = float(np.mean(np.maximum.reduceat(dice, np.r_[0, last_pos[:-1] + 1]) - dice[last_pos]))
    sims = int(max(200, min(n_sim, GAP_DRAWS // max(len(codes), 1))))
    rng = np.random.default_rng(seed)
    scale = sd / np.sqrt(k)
    starts = np.r_[0, last_pos[:-1] + 1]
    null = np.empty(sims)
    for i in range(sims):
        x = rng.standard_normal(len(codes)) * scale
        null[i] = np.mean(np.maximum.reduceat(x, starts) - x[last_pos])
    q95 = float(np.quantile(null, 0.95))
    return {"best_vs_last_gap_mean": observed, "gap_null_mean": float(null.mean()), "gap_null_q95": q95,
            "gap_null_draws": sims, "gap_series": n, "gap_exceeds_noise": bool(observed > q95),
            "gap_test": "mean over series of (best - last) against the same statistic under seed noise alone "
                        "(each checkpoint's seed mean drawn with the pooled seed SD / sqrt(its seeds)); exceeds = above its 95th percentile"}


def mark_seed_noise(table: list[dict[str, Any]], noise: dict[str, Any]) -> None:
    """``seed_noise`` on every row claiming a gain vs last (and every equal-savings gain), like with like:
    a mean over n series of paired differences against twice its SE under seed noise alone
    (SE of one difference / sqrt(n)); the oracle (a mean of maxima) against the 95th percentile of the same
    mean of maxima under seed noise alone (:func:`best_vs_last_noise`)."""
    known = bool(noise.get("known"))

    def mark(gain: float | None, n: int | None, *, maxima: bool = False) -> dict[str, Any] | None:
        if gain is None or gain <= 0:
            return None
        if not known or not n:
            return {"gain": gain, "threshold": None, "exceeds": None}
        if maxima:
            if noise.get("gap_null_q95") is None:
                return {"gain": gain, "threshold": None, "exceeds": None}
            threshold, against = float(noise["gap_null_q95"]), "95th percentile of the mean best-vs-last gap under seed noise alone"
        else:
            threshold = 2 * noise["se_of_difference"] / math.sqrt(n)
            against = f"2 SE of a mean of {n} paired differences under seed noise alone"
        return {"gain": gain, "threshold": threshold, "exceeds": bool(gain > threshold), "against": against}

    for r in table:
        lost = r.get("dice_lost_vs_last")
        r["seed_noise"] = mark(-lost if lost is not None else None, r.get("n_series"), maxima=r["rule"] == "oracle")
        e = r.get("equal_savings")
        if e:
            e["seed_noise"] = mark(-e["difference"] if e.get("difference") is not None else None, e.get("n_series"))
