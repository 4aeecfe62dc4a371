"""The report's selection table: every rule of :mod:`hf_transfer_seg.selection`, honestly costed.

For a rule and a series (every checkpoint in epoch order; Dice where fine-tuned): the chosen checkpoint,
the Dice lost against the series' *last* checkpoint and against the oracle (positive = worse, in the
table's own Dice units), and the fraction of the last checkpoint's pretraining epochs not run
(``1 - stop epoch / last epoch`` for an online rule that stopped; 0 for hindsight rules and online rules
that never fired). A checkpoint where the rule's predictor is missing counts as "no improvement", exactly
as the live ``--early-stop`` treats it; "last" is always the series' last checkpoint, whatever the
predictor (a series without Dice there has no reference and is left out, by name, in the report).

Means come with BCa intervals that resample *clusters* (:mod:`hf_transfer_seg.report.stats`) and a
two-sided Wilcoxon p-value over cluster means. Baselines: a fixed stop at every checkpoint of the grid
(named by the epoch it really stops at), the last checkpoint, the oracle. Beside every online rule: the
fixed stop that saves the same share of epochs (interpolated between checkpoints) and whether the rule
beats it (:mod:`hf_transfer_seg.report.compare`).

Tuning objectives (:class:`Objective`): least mean Dice lost vs last (the default), or with ``max_loss``
(``--max-loss``) the most epochs saved with a mean loss at or below the cap, in the table's Dice units.
With ``group_by``, tunable rules are tuned leave-one-group-out with the same grid and objective as
in-sample; with ``max_loss`` and no ``group_by``, leave-one-cluster-out (one pretraining run held out at a
time), so the savings and loss under the cap are always out of sample. More than :data:`MAX_FOLDS` groups
are dealt into that many folds (:func:`deal_folds`), which bounds the cost on a 1,000-series table. A
fold trains on the other groups' series that share no cluster with the held-out group; where no such
series exist (every run spans every group, e.g. leave-one-dataset-out on runs that were fine-tuned on
every dataset), it trains on every series outside the held-out group, the held-out runs' series of other
groups included, and says so (``fold_per_group``: ``"same_runs_other_groups"``): out of sample in the
group, not in the pretraining run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pandas as pd

from hf_transfer_seg.errors import ConfigError
from hf_transfer_seg.report.stats import cluster_ids, cluster_means, cluster_mean_ci, cluster_wilcoxon
from hf_transfer_seg.selection import (
    HIGHER, FixedFraction, Last, Lowest, Oracle, Patience, Rule, Threshold, WithinTolerance, orient,
)

Series = dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]  # name -> (epochs, oriented values, dice)
TOP1_NAMES = ("top1", "imagenet_top1")
CLUSTER_FOLDS = "cluster"  # the folds under --max-loss without --group-by
MAX_FOLDS = 20  # more groups than this are dealt into this many folds (bounds tuning: folds x grid x series x checkpoints)
MAX_FIXED_STOPS = 20  # fixed stops offered on a grid with more checkpoints (evenly spaced in the grid)
TUNING_OBJECTIVE = "least mean Dice lost vs last over the tuning series (ties: most epochs saved, then the first in the grid)"


@dataclass(frozen=True)
class Objective:
    """What tuning optimises: least mean loss (``max_loss`` None), or the most mean epochs saved with mean
    Dice lost vs last <= ``max_loss`` (ties: least loss; no candidate within the cap: the least loss)."""

    max_loss: float | None = None

    @property
    def text(self) -> str:
        if self.max_loss is None:
            return TUNING_OBJECTIVE
        return (f"most mean epochs saved with mean Dice lost vs last <= {self.max_loss:g} (the table's Dice units) over the "
                "tuning series (ties: least loss, then the first in the grid; no candidate within the cap: the least loss)")

    def key(self, lost: float, saved: float) -> tuple:
        lost, saved = round(lost, 12), round(saved, 12)
        if self.max_loss is None:
            return (lost, -saved)
        within = lost <= self.max_loss + 1e-12
        return (0, -saved, lost) if within else (1, lost, -saved)


class Runs:
    """Every series of the table once: epochs (sorted), Dice (NaN where not fine-tuned) and its rows."""

    def __init__(self, df: pd.DataFrame):
        self.frames: dict[str, pd.DataFrame] = {}
        self.excluded: dict[str, str] = {}
        self._grid: tuple[float, list[float]] | None = None
        for name, group in df.groupby("series", sort=True):
            g = group.sort_values("epoch")
            dice = pd.to_numeric(g["dice"], errors="coerce").to_numpy(float)
            if not np.isfinite(dice[-1]):
                self.excluded[str(name)] = f"no Dice at its last checkpoint (epoch {float(g['epoch'].iloc[-1]):g})"
                continue
            if np.isfinite(dice).sum() < 2:
                self.excluded[str(name)] = "fewer than 2 checkpoints with Dice"
                continue
            self.frames[str(name)] = g

    def series(self, predictor: str | None, direction: str | None) -> Series:
        out: Series = {}
        for name, g in self.frames.items():
            epochs = g["epoch"].to_numpy(float)
            dice = pd.to_numeric(g["dice"], errors="coerce").to_numpy(float)
            if predictor and predictor != "epoch":
                raw = pd.to_numeric(g[predictor], errors="coerce").to_numpy(float)
                if not np.isfinite(raw).any():
                    continue
                values = np.array(orient(raw, direction) if direction else raw, dtype=float)
                values[~np.isfinite(values)] = np.inf  # missing: never an improvement (as live)
            else:
                values = orient(epochs, direction) if direction else epochs
            out[name] = (epochs, values, dice)
        return out

    def grid(self) -> tuple[float, list[float]]:
        """The most common last epoch, and the fixed-stop epochs before it (every checkpoint of the grid,
        at most :data:`MAX_FIXED_STOPS` evenly spaced ones on a longer grid)."""
        if self._grid is not None:
            return self._grid
        lasts = [float(g["epoch"].iloc[-1]) for g in self.frames.values()]
        if not lasts:
            return 0.0, []
        values, counts = np.unique(lasts, return_counts=True)
        last = float(values[np.argmax(counts)])
        every = np.unique(np.concatenate([g["epoch"].to_numpy(float) for g in self.frames.values()]))
        epochs = [float(e) for e in every if e < last]
        if len(epochs) > MAX_FIXED_STOPS:
            idx = np.unique(np.round(np.linspace(0, len(epochs) - 1, MAX_FIXED_STOPS)).astype(int))
            epochs = [epochs[i] for i in idx]
        self._grid = (last, epochs)
        return self._grid


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


def summarise(rows: dict[str, dict], *, n_boot: int, seed: int, clusters: dict[str, str] | None = None,
              n_total: int | None = None) -> dict[str, Any]:
    names = list(rows)
    ids = cluster_ids(names, clusters)
    lost = [rows[n]["lost_vs_last"] for n in names]
    cis = cluster_mean_ci(np.asarray([lost, [rows[n]["epochs_saved"] for n in names]], float), ids, n_boot=n_boot, seed=seed) \
        if names else [None, None]
    return {
        "n_series_no_dice_at_choice": (n_total - len(rows)) if n_total is not None else 0,
        "dice_lost_vs_last": _mean(rows, "lost_vs_last"),
        "dice_lost_vs_last_ci": cis[0],
        "dice_lost_vs_oracle": _mean(rows, "lost_vs_oracle"),
        "epochs_saved": _mean(rows, "epochs_saved"),
        "epochs_saved_ci": cis[1],
        "chosen_epoch_mean": _mean(rows, "chosen_epoch"),
        "n_series": len(rows),
        "n_clusters": int(len(set(ids))) if names else 0,
        "p_value": cluster_wilcoxon(lost, ids, alternative="two-sided") if names else None,
        "_cluster_lost": cluster_means(lost, ids).tolist() if names else [],
    }


def tune(candidates: list[Rule], series: Series, objective: Objective = Objective()) -> Rule:
    """The candidate that is best by ``objective`` on ``series``; a candidate that chooses a checkpoint
    nobody fine-tuned cannot be judged and is never tuned to."""
    best, key = candidates[0], None
    for rule in candidates:
        rows = evaluate(rule, series)
        if len(rows) < len(series) or not rows:
            continue
        k = objective.key(_mean(rows, "lost_vs_last"), _mean(rows, "epochs_saved"))
        if key is None or k < key:
            best, key = rule, k
    return best


def groups_of(df: pd.DataFrame, column: str, flag: str = "--group-by") -> dict[str, str]:
    """series -> group value; every series must have exactly one."""
    if column not in df.columns:
        raise ConfigError(f"{flag} {column}: the table has no column {column!r}; columns: {', '.join(map(str, df.columns))}")
    out = {}
    for name, group in df.groupby("series", sort=True):
        values = {str(v) for v in group[column].dropna()}
        if len(values) != 1:
            raise ConfigError(f"{flag} {column}: series {name!r} has {len(values)} values of {column} ({', '.join(sorted(values)) or 'none'}); "
                              "each series needs exactly one (the grouping is per series)")
        out[str(name)] = values.pop()
    return out


def candidates_of(rule: Rule, series: Series, runs: "Runs | None" = None) -> list[Rule]:
    """The grid tuning tries for ``rule``: its own grid, and for a fixed stop every fixed stop of the grid."""
    if isinstance(rule, FixedFraction) and runs is not None:
        last, grid = runs.grid()
        return [FixedFraction(e / last) for e in grid] + [Last()] if last > 0 else [rule]
    return rule.grid([v[1] for v in series.values()])


def deal_folds(groups: dict[str, str], limit: int = MAX_FOLDS) -> dict[str, str]:
    """series -> group, unchanged up to ``limit`` groups; beyond, the groups (sorted) are dealt round-robin
    into ``limit`` folds named 'fold i/limit' (a group never splits), so tuning costs at most ``limit`` folds."""
    names = sorted(set(groups.values()))
    if len(names) <= limit:
        return groups
    fold = {g: f"fold {i % limit + 1}/{limit}" for i, g in enumerate(names)}
    return {s: fold[g] for s, g in groups.items()}


def _fold(test: Series, series: Series, groups: dict[str, str], g: str, cl: dict[str, str]) -> tuple[Series, str]:
    """The training series of the fold holding out group ``g``, and which kind of fold it is."""
    held = {cl.get(s, s) for s in test}
    strict = {s: v for s, v in series.items() if groups.get(s) != g and cl.get(s, s) not in held}
    if strict:
        return strict, "other_runs"
    return {s: v for s, v in series.items() if groups.get(s) != g and s in groups}, "same_runs_other_groups"


def cross_validate(rule: Rule, series: Series, groups: dict[str, str], column: str, *, clusters: dict[str, str] | None,
                   n_boot: int, seed: int, display: Callable, objective: Objective = Objective(),
                   runs: "Runs | None" = None) -> dict[str, Any]:
    """Leave-one-group-out: tune on the other groups' series that share no cluster (pretraining run) with
    the held-out group (else, see the module's docstring, on every series outside the group), apply to the
    held-out group. The in-sample figures use the same grid and objective."""
    rows: dict[str, dict] = {}
    chosen: dict[str, dict] = {}
    folds: dict[str, str] = {}
    skipped: list[str] = []
    cl = clusters or {}
    for g in sorted({groups[s] for s in series if s in groups}):
        test = {s: v for s, v in series.items() if groups.get(s) == g}
        if not test:
            continue
        train, kind = _fold(test, series, groups, g, cl)
        if not train:
            skipped.append(g)
            continue
        tuned = tune(candidates_of(rule, train, runs), train, objective)
        chosen[g] = display(tuned)
        folds[g] = kind
        rows.update(evaluate(tuned, test))
    s = summarise(rows, n_boot=n_boot, seed=seed, clusters=clusters)
    best_in = tune(candidates_of(rule, series, runs), series, objective)
    inside = summarise(evaluate(best_in, series), n_boot=0, seed=seed, clusters=clusters)
    out = {"group_by": column, "objective": objective.text, "dice_lost_vs_last": s["dice_lost_vs_last"],
           "dice_lost_vs_last_ci": s["dice_lost_vs_last_ci"], "epochs_saved": s["epochs_saved"],
           "epochs_saved_ci": s["epochs_saved_ci"], "params_per_group": chosen, "n_series": s["n_series"],
           "groups_without_fold": skipped, "fold_per_group": folds,
           "trains_on_held_out_runs": sorted(g for g, k in folds.items() if k == "same_runs_other_groups"),
           "in_sample_tuned": {"params": display(best_in), "dice_lost_vs_last": inside["dice_lost_vs_last"],
                               "epochs_saved": inside["epochs_saved"]}}
    if objective.max_loss is not None:
        out["max_loss"] = objective.max_loss
        out["within_cap"] = s["dice_lost_vs_last"] is not None and s["dice_lost_vs_last"] <= objective.max_loss + 1e-12
    return out


def _row(predictor: str, rule: Rule, params: dict, series: Series, *, n_boot: int, seed: int, clusters, cv=None, **extra) -> dict[str, Any]:
    rows = evaluate(rule, series)
    return {"predictor": predictor, "rule": rule.name, "online": rule.online, "params": params,
            **summarise(rows, n_boot=n_boot, seed=seed, clusters=clusters, n_total=len(series)), "cross_validated": cv,
            **extra, "series": rows}


def rule_predictors(directions: dict[str, str | None], headline: str | None, limit: int | None) -> tuple[list[str], list[str]]:
    """Predictors that get selection rules (headline first, then top-1 columns, then table order), at most
    ``limit``; and the declared ones left out by the bound."""
    declared = [n for n, d in directions.items() if d is not None and n != "epoch"]
    first = [n for n in declared if n == headline] + [n for n in declared if n != headline and (n in TOP1_NAMES or n.endswith(":top1"))]
    order = first + [n for n in declared if n not in first]
    if limit is None or len(order) <= limit:
        return order, []
    return order[:limit], order[limit:]


def selection_table(
    df: pd.DataFrame,
    directions: dict[str, str | None],
    *,
    tolerance: float = 0.05,
    patience: int = 2,
    group_by: str | None = None,
    clusters: dict[str, str] | None = None,
    headline: str | None = None,
    max_predictors: int | None = None,
    n_boot: int = 2000,
    seed: int = 0,
    runs: Runs | None = None,
    progress: Callable | None = None,
    max_loss: float | None = None,
) -> list[dict[str, Any]]:
    """Baselines first (a fixed stop at every checkpoint of the grid, last, oracle; with ``max_loss`` also
    the fixed stop tuned to the cap), then every rule of the predictors with a known direction (at most
    ``max_predictors`` of them)."""
    runs = runs or Runs(df)
    groups = groups_of(df, group_by) if group_by else None
    if groups is not None and len(set(groups.values())) < 2:
        raise ConfigError(f"--group-by {group_by}: leave-one-group-out needs at least 2 groups, the table has {len(set(groups.values()))}")
    objective = Objective(max_loss)
    if groups is None and max_loss is not None:  # out-of-sample figures under the cap: leave one cluster out
        groups = {s: (clusters or {}).get(s, s) for s in runs.frames}
        group_by = CLUSTER_FOLDS
        if len(set(groups.values())) < 2:
            groups = None
    if groups is not None:
        groups = deal_folds(groups)
    kw = dict(n_boot=n_boot, seed=seed, clusters=clusters)
    base = runs.series("epoch", HIGHER)
    last_epoch, grid = runs.grid()
    table = []
    for e in grid:
        fraction = e / last_epoch if last_epoch > 0 else 0.0
        table.append(_row("epoch", FixedFraction(fraction), {"fraction": round(fraction, 4), "epoch": e}, base, **kw))
    table.append(_row("epoch", Last(), {}, base, **kw))
    table.append(_row("epoch", Oracle(), {}, base, **kw))
    if max_loss is not None and grid:
        def fixed_display(rule: Rule) -> dict:
            f = float(rule.params.get("fraction", 1.0))
            return {"fraction": round(f, 4), "epoch": f * last_epoch}

        fixed = tune(candidates_of(FixedFraction(), base, runs), base, objective)
        cv = cross_validate(fixed, base, groups, group_by, clusters=clusters, n_boot=n_boot, seed=seed, display=fixed_display,
                            objective=objective, runs=runs) if groups else None
        table.append(_row("epoch", fixed, fixed_display(fixed), base, cv=cv, **kw, tuned_in_sample=True, tuned_to_cap=True))
    names, _ = rule_predictors(directions, headline, max_predictors)
    for name in names:
        direction = directions[name]
        series = runs.series(name, direction)
        if progress:
            progress(1)
        if not series:
            continue

        def display(rule: Rule, direction=direction) -> dict:
            params = dict(rule.params)
            if "threshold" in params and direction == HIGHER:
                params["threshold"] = -params["threshold"]  # back to the column's own units
            return params

        rules: list[tuple[Rule, dict]] = [(Lowest(), {}), (WithinTolerance(tolerance), {}), (Patience(patience), {})]
        if name in TOP1_NAMES or name.endswith(":top1"):
            tuned = tune(Threshold().grid([v[1] for v in series.values()]), series, objective)
            rules.append((tuned, {"tuned_in_sample": True}))
        for rule, extra in rules:
            cv = None
            if groups and len(rule.grid([v[1] for v in series.values()])) > 1:
                cv = cross_validate(rule, series, groups, group_by, clusters=clusters, n_boot=n_boot, seed=seed, display=display,
                                    objective=objective)
            table.append(_row(name, rule, display(rule), series, cv=cv, **kw, **extra))
    return table
