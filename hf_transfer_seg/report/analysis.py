"""Did a predictor predict Dice? Rank correlations per series and checkpoint selection rules.

Per predictor and series (a series is one encoder/target/setting across its checkpoints):
Spearman and Kendall (tau-b) correlation of Dice with the predictor over the checkpoints where both
are known (at least 3). The *expected sign* is negative for lower-is-better predictors (robustness
scores) and positive otherwise.

Selection rules turn a predictor into a checkpoint choice (higher-is-better predictors are negated
first, so "lowest" always means "best"):

- ``lowest``: the checkpoint with the best value (earliest on ties).
- ``within_tolerance``: the earliest checkpoint whose value is within ``tolerance`` x (range of the
  series' values) of the best.
- ``patience``: walk the checkpoints in epoch order as live scoring would; stop once the best value has
  not improved for ``patience`` checkpoints; choose the best checkpoint seen. Pretraining stops at the
  stopping checkpoint, so that is the epoch cost.

For each rule and series: Dice lost against the oracle best checkpoint and against the last checkpoint
(positive = worse than that), and the fraction of pretraining epochs saved (``1 - cost epoch / last
epoch``). Means over series come with percentile bootstrap intervals over series when there are at
least two series.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Iterable

import numpy as np
import pandas as pd
from scipy import stats

from hf_transfer_seg.report.table import lower_is_better, predictor_columns

RULES = ("lowest", "within_tolerance", "patience")
MIN_POINTS = 3
STRONG = 0.3  # |mean Spearman| needed to call a predictor useful


def _clean(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def bootstrap_mean(values: Iterable[float], *, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> list[float] | None:
    """Percentile bootstrap interval of the mean of ``values`` (resampling them), or None for fewer than 2."""
    values = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if len(values) < 2 or n_boot < 1:
        return None
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(n_boot, len(values)))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    return [float(lo), float(hi)]


def series_points(df: pd.DataFrame, predictor: str) -> dict[str, pd.DataFrame]:
    """Per series: rows (epoch order) where both Dice and the predictor are known."""
    out = {}
    for name, group in df.groupby("series", sort=True):
        group = group[["epoch", "dice", predictor]].apply(pd.to_numeric, errors="coerce").dropna()
        out[str(name)] = group.sort_values("epoch").reset_index(drop=True)
    return out


def correlation(dice: np.ndarray, values: np.ndarray) -> tuple[float | None, float | None]:
    """(Spearman, Kendall tau-b) of Dice against the predictor; None when undefined."""
    if len(dice) < MIN_POINTS or np.ptp(dice) == 0 or np.ptp(values) == 0:
        return None, None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rho = stats.spearmanr(values, dice).statistic
        tau = stats.kendalltau(values, dice).statistic
    return _clean(rho), _clean(tau)


def correlations(df: pd.DataFrame, predictor: str, *, lower_better: bool, n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
    expected = -1 if lower_better else 1
    per_series = {}
    for name, points in series_points(df, predictor).items():
        rho, tau = correlation(points["dice"].to_numpy(), points[predictor].to_numpy())
        per_series[name] = {"spearman": rho, "kendall": tau, "n": int(len(points))}
    rhos = [s["spearman"] for s in per_series.values() if s["spearman"] is not None]
    taus = [s["kendall"] for s in per_series.values() if s["kendall"] is not None]
    signs = [np.sign(r) == expected for r in rhos]
    return {
        "lower_is_better": lower_better,
        "expected_sign": "negative" if expected < 0 else "positive",
        "mean_spearman": float(np.mean(rhos)) if rhos else None,
        "mean_kendall": float(np.mean(taus)) if taus else None,
        "fraction_expected_sign": float(np.mean(signs)) if signs else None,
        "n_series": len(rhos),
        "mean_spearman_ci": bootstrap_mean(rhos, n_boot=n_boot, seed=seed),
        "series": per_series,
    }


def select(epochs: np.ndarray, values: np.ndarray, rule: str, *, tolerance: float = 0.05, patience: int = 2) -> tuple[int, int]:
    """(chosen index, index of the checkpoint where pretraining could stop) for lower-is-better ``values``."""
    n = len(values)
    if n == 0:
        raise ValueError("no checkpoints")
    if rule == "lowest":
        best = int(np.argmin(values))  # argmin takes the first (earliest) of ties
        return best, best
    if rule == "within_tolerance":
        lo, span = float(np.min(values)), float(np.ptp(values))
        ok = np.nonzero(values <= lo + tolerance * span + 1e-12)[0]
        chosen = int(ok[0])
        return chosen, chosen
    if rule == "patience":
        best, since = 0, 0
        for i in range(1, n):
            if values[i] < values[best]:
                best, since = i, 0
            else:
                since += 1
            if since >= patience:
                return best, i
        return best, n - 1
    raise ValueError(f"unknown rule {rule!r}")


def selection(df: pd.DataFrame, predictor: str, *, lower_better: bool, tolerance: float, patience: int, n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
    out: dict[str, Any] = {}
    points = series_points(df, predictor)
    for rule in RULES:
        per_series = {}
        for name, p in points.items():
            if len(p) < 2:
                continue
            epochs = p["epoch"].to_numpy(float)
            dice = p["dice"].to_numpy(float)
            values = p[predictor].to_numpy(float) * (1 if lower_better else -1)
            chosen, stop = select(epochs, values, rule, tolerance=tolerance, patience=patience)
            last_epoch = float(epochs[-1])
            per_series[name] = {
                "chosen_epoch": float(epochs[chosen]),
                "stop_epoch": float(epochs[stop]),
                "dice": float(dice[chosen]),
                "oracle_epoch": float(epochs[int(np.argmax(dice))]),
                "dice_oracle": float(dice.max()),
                "dice_last": float(dice[-1]),
                "lost_vs_oracle": float(dice.max() - dice[chosen]),
                "lost_vs_last": float(dice[-1] - dice[chosen]),
                "epochs_saved": float(1.0 - epochs[stop] / last_epoch) if last_epoch > 0 else None,
            }
        summary: dict[str, Any] = {"series": per_series, "n_series": len(per_series)}
        for metric in ("lost_vs_oracle", "lost_vs_last", "epochs_saved"):
            values = [s[metric] for s in per_series.values() if s[metric] is not None]
            summary[f"mean_{metric}"] = float(np.mean(values)) if values else None
            summary[f"mean_{metric}_ci"] = bootstrap_mean(values, n_boot=n_boot, seed=seed)
        out[rule] = summary
    return out


def verdict(corr: dict[str, Any]) -> tuple[bool, str]:
    """(predicted, one plain sentence) for a predictor's correlation summary."""
    rho, ci, frac = corr["mean_spearman"], corr["mean_spearman_ci"], corr["fraction_expected_sign"]
    want = corr["expected_sign"]
    if rho is None:
        return False, f"did NOT predict Dice: too few checkpoints with both values (need {MIN_POINTS} per series)."
    right_sign = rho < 0 if want == "negative" else rho > 0
    if not right_sign:
        return False, f"did NOT predict Dice: mean Spearman {rho:+.2f} has the wrong sign (expected {want})."
    if abs(rho) < STRONG:
        return False, f"did NOT predict Dice: mean Spearman {rho:+.2f} is too weak (|rho| < {STRONG})."
    if ci is not None and (ci[0] <= 0 <= ci[1]):
        return False, f"did NOT reliably predict Dice: mean Spearman {rho:+.2f} but its 95% interval [{ci[0]:+.2f}, {ci[1]:+.2f}] includes 0."
    note = "" if corr["n_series"] > 1 else " (one series only: weak evidence)"
    return True, f"predicted Dice: mean Spearman {rho:+.2f}, expected sign in {frac:.0%} of series{note}."


def analyse(
    df: pd.DataFrame,
    *,
    predictors: list[str] | None = None,
    lower: Iterable[str] = (),
    higher: Iterable[str] = (),
    tolerance: float = 0.05,
    patience: int = 2,
    n_boot: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """Correlations and selection rules for every predictor of ``df``; see the module docstring."""
    predictors = predictors or predictor_columns(df)
    df = df[df["dice"].notna()]
    lower, higher = list(lower), list(higher)
    result: dict[str, Any] = {
        "settings": {"tolerance": tolerance, "patience": patience, "bootstrap": n_boot, "seed": seed, "min_points": MIN_POINTS},
        "n_series": int(df["series"].nunique()),
        "n_rows": int(len(df)),
        "predictors": {},
    }
    for name in predictors:
        lb = lower_is_better(name, lower=lower, higher=higher)
        corr = correlations(df, name, lower_better=lb, n_boot=n_boot, seed=seed)
        ok, sentence = verdict(corr)
        corr.update(predicted_dice=ok, verdict=sentence)
        corr["rules"] = selection(df, name, lower_better=lb, tolerance=tolerance, patience=patience, n_boot=n_boot, seed=seed)
        result["predictors"][name] = corr
    # baseline: how far is "more pretraining = better" from the truth?
    base = correlations(df.assign(_epoch=df["epoch"]), "_epoch", lower_better=False, n_boot=n_boot, seed=seed)
    base.pop("lower_is_better")
    result["epoch_baseline"] = base
    return result
