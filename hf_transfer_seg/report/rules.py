"""The report's selection table: every rule of :mod:`hf_transfer_seg.selection`, honestly costed.

For a rule and a series (checkpoints in epoch order, Dice known): the chosen checkpoint, the Dice lost
against the last checkpoint and against the oracle (positive = worse, in the table's own Dice units),
and the fraction of the last checkpoint's pretraining epochs not run: ``1 - stop epoch / last epoch``
for an online rule that stopped, 0 for a hindsight rule (it only chooses among finished checkpoints)
and for an online rule that never fired. Means come with percentile bootstrap intervals over series.

Always present: the baselines on the ``epoch`` predictor (fixed fractions 1/2 and 2/3 of the schedule,
the last checkpoint, the oracle). With ``group_by``, every tunable rule is also tuned leave-one-group-out:
its parameters are chosen on the other groups' series only and applied to the held-out group, and the
out-of-sample figures are reported beside the in-sample ones.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from hf_transfer_seg.errors import ConfigError
from hf_transfer_seg.selection import (
    HIGHER, FixedFraction, Last, Lowest, Oracle, Patience, Rule, Threshold, WithinTolerance, orient,
)

Series = dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]  # name -> (epochs, oriented values, dice)
TOP1_NAMES = ("top1", "imagenet_top1")
BASELINE_FRACTIONS = (0.5, 0.667)


def bootstrap_mean(values, *, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> list[float] | None:
    """Percentile bootstrap interval of the mean (resampling the values), None for fewer than 2."""
    values = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=float)
    if len(values) < 2 or n_boot < 1:
        return None
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(n_boot, len(values)))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    return [float(lo), float(hi)]


def series_of(df: pd.DataFrame, predictor: str | None, direction: str | None) -> Series:
    """Per series, every checkpoint where the predictor is known, in epoch order, with its Dice (NaN: not
    fine-tuned). A rule walks all of them, as it would during the run; a series counts only where the last
    checkpoint and at least one other have a Dice value (the references of the table)."""
    out: Series = {}
    cols = ["epoch", "dice"] + ([predictor] if predictor and predictor != "epoch" else [])
    for name, group in df.groupby("series", sort=True):
        g = group[cols].apply(pd.to_numeric, errors="coerce")
        g = g.dropna(subset=[c for c in cols if c != "dice"]).sort_values("epoch")
        if g["dice"].notna().sum() < 2 or not np.isfinite(g["dice"].iloc[-1]):
            continue
        epochs, dice = g["epoch"].to_numpy(float), g["dice"].to_numpy(float)
        raw = g[predictor].to_numpy(float) if predictor and predictor != "epoch" else epochs
        out[str(name)] = (epochs, orient(raw, direction) if direction else raw, dice)
    return out


def outcome_row(rule: Rule, epochs: np.ndarray, values: np.ndarray, dice: np.ndarray) -> dict[str, float] | None:
    """What ``rule`` did on one series, or None when its chosen checkpoint was never fine-tuned (no Dice)."""
    out = rule.apply(epochs, values, dice)
    if not np.isfinite(dice[out.chosen]):
        return None
    last = float(epochs[-1])
    saved = 0.0
    if rule.online and out.stop is not None and last > 0:
        saved = float(1.0 - epochs[out.stop] / last)
    return {
        "chosen_epoch": float(epochs[out.chosen]),
        "stop_epoch": float(epochs[out.stop]) if out.stop is not None else last,
        "dice": float(dice[out.chosen]),
        "lost_vs_last": float(dice[-1] - dice[out.chosen]),
        "lost_vs_oracle": float(np.nanmax(dice) - dice[out.chosen]),
        "epochs_saved": saved,
    }


def evaluate(rule: Rule, series: Series) -> dict[str, dict[str, float]]:
    """Per series, :func:`outcome_row`; series where the rule chose a checkpoint without Dice are left out
    (``summarise`` counts them), never filled in."""
    rows = {name: outcome_row(rule, *s) for name, s in series.items()}
    return {name: row for name, row in rows.items() if row is not None}


def _mean(rows: dict[str, dict], key: str) -> float | None:
    values = [r[key] for r in rows.values()]
    return float(np.mean(values)) if values else None


def summarise(rows: dict[str, dict], *, n_boot: int, seed: int, n_total: int | None = None) -> dict[str, Any]:
    return {
        "n_series_no_dice_at_choice": (n_total - len(rows)) if n_total is not None else 0,
        "dice_lost_vs_last": _mean(rows, "lost_vs_last"),
        "dice_lost_vs_last_ci": bootstrap_mean([r["lost_vs_last"] for r in rows.values()], n_boot=n_boot, seed=seed),
        "dice_lost_vs_oracle": _mean(rows, "lost_vs_oracle"),
        "epochs_saved": _mean(rows, "epochs_saved"),
        "epochs_saved_ci": bootstrap_mean([r["epochs_saved"] for r in rows.values()], n_boot=n_boot, seed=seed),
        "chosen_epoch_mean": _mean(rows, "chosen_epoch"),
        "n_series": len(rows),
    }


def tune(candidates: list[Rule], series: Series) -> Rule:
    """The candidate with the least mean Dice lost vs last on ``series`` (ties: most epochs saved, then first)."""
    best, key = candidates[0], None
    for rule in candidates:
        rows = evaluate(rule, series)
        if len(rows) < len(series):  # it picks checkpoints nobody fine-tuned: cannot be judged, never tuned to
            continue
        k = (round(_mean(rows, "lost_vs_last"), 12), -round(_mean(rows, "epochs_saved"), 12))
        if key is None or k < key:
            best, key = rule, k
    return best


def groups_of(df: pd.DataFrame, column: str) -> dict[str, str]:
    """series -> group value; every series must have exactly one."""
    if column not in df.columns:
        raise ConfigError(f"--group-by {column}: the table has no column {column!r}; columns: {', '.join(map(str, df.columns))}")
    out = {}
    for name, group in df.groupby("series", sort=True):
        values = {str(v) for v in group[column].dropna()}
        if len(values) != 1:
            raise ConfigError(f"--group-by {column}: series {name!r} has {len(values)} values of {column} ({', '.join(sorted(values)) or 'none'}); "
                              "each series needs exactly one (the grouping is per series)")
        out[str(name)] = values.pop()
    if len(set(out.values())) < 2:
        raise ConfigError(f"--group-by {column}: leave-one-group-out needs at least 2 groups, the table has {len(set(out.values()))}")
    return out


def cross_validate(rule: Rule, series: Series, groups: dict[str, str], column: str, *, n_boot: int, seed: int, display) -> dict[str, Any]:
    """Leave-one-group-out: tune on the other groups, apply to the held-out one."""
    rows: dict[str, dict] = {}
    chosen: dict[str, dict] = {}
    for g in sorted({groups[s] for s in series if s in groups}):
        train = {s: v for s, v in series.items() if groups.get(s) != g}
        test = {s: v for s, v in series.items() if groups.get(s) == g}
        if not train or not test:
            continue
        tuned = tune(rule.grid([v[1] for v in train.values()]), train)
        chosen[g] = display(tuned)
        rows.update(evaluate(tuned, test))
    s = summarise(rows, n_boot=n_boot, seed=seed)
    return {"group_by": column, "dice_lost_vs_last": s["dice_lost_vs_last"], "dice_lost_vs_last_ci": s["dice_lost_vs_last_ci"],
            "epochs_saved": s["epochs_saved"], "epochs_saved_ci": s["epochs_saved_ci"], "params_per_group": chosen,
            "n_series": s["n_series"]}


def _row(predictor: str, rule: Rule, params: dict, series: Series, *, n_boot: int, seed: int, cv=None, **extra) -> dict[str, Any]:
    rows = evaluate(rule, series)
    return {"predictor": predictor, "rule": rule.name, "online": rule.online, "params": params,
            **summarise(rows, n_boot=n_boot, seed=seed, n_total=len(series)), "cross_validated": cv, **extra, "series": rows}


def selection_table(
    df: pd.DataFrame,
    directions: dict[str, str | None],
    *,
    tolerance: float = 0.05,
    patience: int = 2,
    group_by: str | None = None,
    n_boot: int = 2000,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Baselines first, then every rule of every predictor with a known direction."""
    groups = groups_of(df, group_by) if group_by else None
    base = series_of(df, "epoch", HIGHER)
    table = [_row("epoch", FixedFraction(f), {"fraction": f}, base, n_boot=n_boot, seed=seed) for f in BASELINE_FRACTIONS]
    table.append(_row("epoch", Last(), {}, base, n_boot=n_boot, seed=seed))
    table.append(_row("epoch", Oracle(), {}, base, n_boot=n_boot, seed=seed))
    for name, direction in directions.items():
        if direction is None or name == "epoch":
            continue
        series = series_of(df, name, direction)
        if not series:
            continue

        def display(rule: Rule, direction=direction) -> dict:
            params = dict(rule.params)
            if "threshold" in params and direction == HIGHER:
                params["threshold"] = -params["threshold"]  # back to the column's own units
            return params

        rules: list[tuple[Rule, dict]] = [(Lowest(), {}), (WithinTolerance(tolerance), {}), (Patience(patience), {})]
        if name in TOP1_NAMES or name.endswith(":top1"):
            tuned = tune(Threshold().grid([v[1] for v in series.values()]), series)
            rules.append((tuned, {"tuned_in_sample": True}))
        for rule, extra in rules:
            cv = None
            if groups and len(rule.grid([v[1] for v in series.values()])) > 1:
                cv = cross_validate(rule, series, groups, group_by, n_boot=n_boot, seed=seed, display=display)
                best_in = tune(rule.grid([v[1] for v in series.values()]), series)
                cv["in_sample_tuned"] = {"params": display(best_in), **{k: v for k, v in summarise(evaluate(best_in, series), n_boot=0, seed=seed).items()
                                                                      if k in ("dice_lost_vs_last", "epochs_saved")}}
            table.append(_row(name, rule, display(rule), series, n_boot=n_boot, seed=seed, cv=cv, **extra))
    return table
