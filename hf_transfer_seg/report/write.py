"""Write ``report.json`` and ``report.md`` (plus the plots) for an analysed table.

The ``report.json`` contract is documented in docs/report-json.md; keep it stable.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from hf_transfer_seg import __version__
from hf_transfer_seg.report.analysis import HEADLINE, MIN_EFFECT, headline_sentence
from hf_transfer_seg.report.markdown import APPENDIX, appendix, markdown, rule_label
from hf_transfer_seg.report.pipeline import MAX_RULE_PREDICTORS, run_analysis
from hf_transfer_seg.report.trivial import trivial_floor

SCHEMA_VERSION = 2
TABLE_COPY_MAX_ROWS = 200_000  # table.csv (a copy of the analysed table) is written up to this many rows: ~1.5 s
SELECTION_KEYS = ("predictor", "rule", "online", "params", "dice_lost_vs_last", "dice_lost_vs_oracle", "epochs_saved",
                  "chosen_epoch_mean", "cross_validated")
SELECTION_EXTRA = ("dice_lost_vs_last_ci", "epochs_saved_ci", "n_series", "n_series_no_dice_at_choice", "n_clusters", "p_value",
                   "p_adjusted", "dice_lost_vs_last_ci_corrected", "corrected_attainable", "claim", "exploratory", "equal_savings",
                   "seed_noise", "tuned_to_cap")
PREDICTOR_EXTRA = ("verdict_text", "mean_spearman_ci", "mean_kendall", "n_series", "n_series_evidence", "n_clusters_evidence",
                   "runs_in_direction", "n_runs", "p_value", "p_adjusted", "beyond_epoch", "adds_beyond_epoch", "series")


def primary_predictor(analysis: dict[str, Any], requested: str | None = None) -> tuple[str | None, str]:
    """The predictor the plots show, and why: the user's choice, else the headline (declared in advance)."""
    preds = analysis["predictors"]
    if requested:
        return (requested, "chosen by the user") if requested in preds else (None, f"{requested} is not in the table")
    if analysis.get("headline"):
        return analysis["headline"], "the headline predictor (declared before seeing the results)"
    return None, "no headline predictor in the table"


def contract(analysis: dict[str, Any]) -> dict[str, Any]:
    """The documented report.json keys (docs/report-json.md), plus per-series detail."""
    preds = {}
    for name, p in analysis["predictors"].items():
        preds[name] = {k: p[k] for k in ("direction", "verdict", "headline", "mean_spearman", "partial_spearman")}
        preds[name].update({k: p[k] for k in PREDICTOR_EXTRA if k in p})
    selection = []
    for r in analysis["selection"]:
        row = {k: r[k] for k in SELECTION_KEYS}
        row.update({k: r[k] for k in SELECTION_EXTRA if k in r})
        row["label"] = rule_label(r)
        if r.get("tuned_in_sample"):
            row["tuned_in_sample"] = True
        row["series"] = r["series"]
        selection.append(row)
    return {"predictors": preds, "selection": selection}


def write_report(
    df: pd.DataFrame,
    output: str | Path,
    *,
    source: str,
    title: str = "Did the score predict downstream Dice?",
    predictor: str | None = None,
    lower: list[str] | None = None,
    higher: list[str] | None = None,
    headline: str | None = HEADLINE,
    group_by: str | None = None,
    cluster_by: list[str] | None = None,
    pretraining_columns: list[str] | None = None,
    min_effect: float = MIN_EFFECT,
    max_rule_predictors: int | None = MAX_RULE_PREDICTORS,
    tolerance: float = 0.05,
    patience: int = 2,
    n_boot: int = 2000,
    seed: int = 0,
    mode: str = "checkpoints",
    max_loss: float | None = None,
    plots: bool = True,
) -> dict[str, Any]:
    """Analyse ``df`` and write report.json, report.md and (unless ``plots`` is False: ``--no-plots``) the
    plots to ``output``; return the report. matplotlib is imported only when plots are drawn."""
    output = Path(output)
    if mode == "ranking":
        from hf_transfer_seg.report.ranking import analyse_ranking

        analysis = analyse_ranking(df, lower=lower or (), higher=higher or (), headline=headline, min_effect=min_effect,
                                   n_boot=n_boot, seed=seed)
    else:
        analysis = run_analysis(df, lower=lower or (), higher=higher or (), headline=headline, group_by=group_by,
                                cluster_by=cluster_by, pretraining_columns=pretraining_columns, min_effect=min_effect,
                                max_rule_predictors=max_rule_predictors, tolerance=tolerance, patience=patience, n_boot=n_boot,
                                seed=seed, max_loss=max_loss)
    output.mkdir(parents=True, exist_ok=True)
    primary, why = primary_predictor(analysis, predictor)
    rho = analysis["predictors"].get(primary, {}).get("mean_spearman") if primary else None
    if plots:
        from hf_transfer_seg.report.plots import make_plots

        plots = make_plots(df, primary, output, spearman=rho, epochs=mode != "ranking")
    else:
        plots = {}
    synthetic = {"pretraining": _any_flag(df, "pretrain_synthetic"), "target": _any_flag(df, "target_synthetic")}
    trivial = trivial_floor(df) if mode != "ranking" else None  # a model zoo has no last checkpoint
    report = {
        "schema_version": SCHEMA_VERSION,
        "source": source,
        "code_version": __version__,
        "headline": analysis["headline"],
        "headline_sentence": analysis.get("headline_sentence_text") or headline_sentence(analysis),
        "stopping_sentence": analysis.get("stopping_sentence"),
        "undeclared": analysis["undeclared"],
        "primary_predictor": primary,
        "primary_reason": why,
        "synthetic": synthetic,
        "settings": analysis["settings"],
        "n_series": analysis["n_series"],
        "n_rows": analysis["n_rows"],
        "epoch_baseline": analysis["epoch_baseline"],
        "trivial_baseline": trivial,
        "noise": analysis["noise"],
        "plots": plots,
        "mode": mode,
        "n_clusters": analysis.get("n_clusters"),
        "clusters": analysis.get("clusters"),
        "cluster_text": analysis.get("cluster_text"),
        "warnings": analysis.get("warnings", []),
        "selection_skipped": analysis.get("selection_skipped", []),
        "appendix": APPENDIX if mode != "ranking" else None,
        "table_csv": "table.csv" if len(df) <= TABLE_COPY_MAX_ROWS else None,
        # a copy of a 10^6-row input costs more than the whole analysis; the input itself is the table
        **({} if len(df) <= TABLE_COPY_MAX_ROWS else {"table_csv_skipped": f"{len(df):,} rows > {TABLE_COPY_MAX_ROWS:,}: no copy "
                                                       "written (the input is the analysed table; report.json holds every figure)"}),
        **contract(analysis),
    }
    if mode == "ranking":
        report["ranking"] = analysis["ranking"]
    (output / "report.json").write_text(json.dumps(report, indent=2, default=_json_default))
    if mode == "ranking":
        from hf_transfer_seg.report.ranking import ranking_markdown

        (output / "report.md").write_text(ranking_markdown(analysis, title=title, source=source, plots=plots))
    else:
        (output / "report.md").write_text(markdown(analysis, title=title, source=source, primary=primary, why=why, plots=plots,
                                                   synthetic=synthetic, trivial=trivial))
        (output / APPENDIX).write_text(appendix(analysis, title=title))
    if report["table_csv"]:
        df.to_csv(output / "table.csv", index=False)
    return report


def _any_flag(df: pd.DataFrame, column: str) -> bool | None:
    """True if any row is flagged, False if all known rows are not, None if nothing is recorded."""
    if column not in df:
        return None
    known = [bool(v) for v in df[column] if v is not None and v == v]
    return any(known) if known else None


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value)}")
