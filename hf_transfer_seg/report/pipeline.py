"""The report's analysis, end to end: correlations -> verdicts -> selection table -> corrections.

Bounded for big tables: correlations are vectorised over predictors (:mod:`.correlate`), intervals are
one vectorised bootstrap per quantity (:mod:`.stats`), and selection rules run for at most
``max_rule_predictors`` predictors (headline and top-1 first; the report lists any left out). Progress
bars (tqdm) show on a terminal.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from hf_transfer_seg.report import beyond
from hf_transfer_seg.report.analysis import (
    ALPHA, HEADLINE, MIN_CLUSTERS, MIN_EFFECT, MIN_POINTS, MIN_SERIES, assess, noise, table_warnings,
)
from hf_transfer_seg.report.clusters import check_varies_within_runs, resolve, top1_columns
from hf_transfer_seg.report.compare import best_vs_last_noise, correct, equal_savings, mark_seed_noise
from hf_transfer_seg.report.rules import Objective, Runs, rule_predictors, selection_table
from hf_transfer_seg.report.stopping import stopping_sentence
from hf_transfer_seg.report.table import predictor_columns
from hf_transfer_seg.selection import resolve_directions

MAX_RULE_PREDICTORS = 50


def _bar(total: int, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="it", disable=None, leave=False)


def run_analysis(
    df: pd.DataFrame,
    *,
    predictors: list[str] | None = None,
    lower: list[str] | tuple = (),
    higher: list[str] | tuple = (),
    headline: str | None = HEADLINE,
    tolerance: float = 0.05,
    patience: int = 2,
    group_by: str | None = None,
    cluster_by: list[str] | None = None,
    pretraining_columns: list[str] | None = None,
    min_effect: float = MIN_EFFECT,
    max_rule_predictors: int | None = MAX_RULE_PREDICTORS,
    n_boot: int = 2000,
    seed: int = 0,
    max_loss: float | None = None,
) -> dict[str, Any]:
    unit = resolve(df, cluster_by, pretraining_columns)
    cluster_cols = unit.key
    exclude = set(unit.columns) | ({group_by} if group_by else set())
    predictors = predictors or predictor_columns(df, exclude=exclude)
    clusters = unit.mapping
    run = df  # every checkpoint: selection rules walk the whole run, fine-tuned or not
    scored = df[df["dice"].notna()]
    directions = resolve_directions(predictors, lower=list(lower), higher=list(higher))
    if unit.n > 1:
        check_varies_within_runs(df, clusters, [p for p in list(lower) + list(higher) + [headline] if p in directions],
                                 "declared or headline")

    with _bar(int(scored["series"].nunique()), "correlations per series") as bar:
        out_predictors, base = assess(scored, predictors, directions, unit, headline=headline, min_effect=min_effect, n_boot=n_boot,
                                      seed=seed, progress=bar.update, placebo_for=top1_columns(df))

    runs = Runs(run)
    chosen, skipped = rule_predictors(directions, headline, max_rule_predictors)
    with _bar(len(chosen), "selection rules") as bar:
        table = selection_table(run, directions, tolerance=tolerance, patience=patience, group_by=group_by, clusters=clusters,
                                headline=headline, max_predictors=max_rule_predictors, n_boot=n_boot, seed=seed, runs=runs,
                                progress=bar.update, max_loss=max_loss)
    for row in table:
        if row["online"] and row["predictor"] != "epoch":
            row["equal_savings"] = equal_savings(row, runs, clusters=clusters, n_boot=n_boot, seed=seed)
    correction = correct(table, alpha=ALPHA)
    noise_info = noise(scored)
    noise_info.update(best_vs_last_noise(scored, noise_info, seed=seed))  # like with like (see compare.best_vs_last_noise)
    mark_seed_noise(table, noise_info)
    n_clusters = len({clusters.get(s, s) for s in scored["series"].astype(str).unique()})
    out = {
        "settings": {"tolerance": tolerance, "patience": patience, "bootstrap": n_boot, "seed": seed, "min_points": MIN_POINTS,
                     "min_series": MIN_SERIES, "min_clusters": MIN_CLUSTERS, "min_effect": min_effect, "alpha": ALPHA,
                     "test": "one-sided Wilcoxon signed-rank over cluster means of the per-series Spearman",
                     "beyond_epoch_test": beyond.MODEL.format(cell=beyond.cell_column(df) or "all series"),
                     "equivalence_test": "one-sided signed-rank over clusters of (floor - value), raw Spearman and epoch-controlled effect",
                     "placebo": {"n": beyond.PLACEBOS, "max_rate": beyond.PLACEBO_MAX},
                     "correction": "Holm over exploratory predictors", "group_by": group_by, "cluster_by": cluster_cols,
                     "cluster_source": unit.how,
                     "interval": "BCa bootstrap resampling clusters (scipy.stats.bootstrap)",
                     "tuning_objective": Objective(max_loss).text, "selection_correction": correction,
                     "max_rule_predictors": max_rule_predictors, "max_loss": max_loss},
        "headline": headline if headline in out_predictors else None,
        "headline_requested": headline,
        "undeclared": [n for n, d in directions.items() if d is None],
        "n_series": int(scored["series"].nunique()),
        "n_clusters": n_clusters,
        "cluster_text": unit.description,
        "clusters": clusters,
        "n_rows": int(len(scored)),
        "predictors": out_predictors,
        "epoch_baseline": base,
        "noise": noise_info,
        "warnings": table_warnings(run, predictors, runs.excluded),
        "selection": table,
        "selection_skipped": skipped,
    }
    scale = float(pd.to_numeric(scored["dice"], errors="coerce").abs().max()) if len(scored) else 1.0
    out["stopping_sentence"] = stopping_sentence(table, out["settings"], scale=scale)
    return out
