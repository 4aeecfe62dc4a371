"""Write ``report.json`` and ``report.md`` (plus the plots) for an analysed table.

The ``report.json`` contract is documented in docs/report-json.md; keep it stable.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from hf_transfer_seg import __version__
from hf_transfer_seg.report.analysis import ALPHA, HEADLINE, MIN_POINTS, MIN_SERIES, analyse, headline_sentence
from hf_transfer_seg.report.plots import make_plots

SCHEMA_VERSION = 2
RULE_TEXT = {
    "fixed_fraction": "stop at a fixed fraction of the schedule",
    "last": "always the last checkpoint",
    "oracle": "oracle: best Dice (hindsight bound)",
    "lowest": "best value",
    "within_tolerance": "earliest within tolerance of the best",
    "patience": "stop after P checkpoints without improvement",
    "threshold": "stop once the value reaches a threshold",
}
SELECTION_KEYS = ("predictor", "rule", "online", "params", "dice_lost_vs_last", "dice_lost_vs_oracle", "epochs_saved",
                  "chosen_epoch_mean", "cross_validated")


def primary_predictor(analysis: dict[str, Any], requested: str | None = None) -> tuple[str | None, str]:
    """The predictor the plots show, and why: the user's choice, else the headline (declared in advance)."""
    preds = analysis["predictors"]
    if requested:
        return (requested, "chosen by the user") if requested in preds else (None, f"{requested} is not in the table")
    if analysis.get("headline"):
        return analysis["headline"], "the headline predictor (declared before seeing the results)"
    return None, "no headline predictor in the table"


def _f(value: Any, fmt: str = "+.2f") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return format(value, fmt)


def _ci(ci: list[float] | None, fmt: str = "+.2f") -> str:
    return f" [{format(ci[0], fmt)}, {format(ci[1], fmt)}]" if ci else ""


def _params(params: dict) -> str:
    return ", ".join(f"{k}={v:g}" if isinstance(v, (int, float)) and not isinstance(v, bool) else f"{k}={v}" for k, v in params.items())


def _data_words(flag: bool | None) -> str:
    return {True: "SYNTHETIC", False: "real"}.get(flag, "not recorded")


def _no_dice_note(n: int | None) -> str:
    """Series where the rule chose a checkpoint that was never fine-tuned: left out of its figures, said here."""
    return f" (chose an un-fine-tuned checkpoint in {n} series: not counted)" if n else ""


def selection_markdown(selection: list[dict[str, Any]], settings: dict[str, Any]) -> list[str]:
    """The selection table (also pasted into summaries)."""
    cv = any(r.get("cross_validated") for r in selection)
    head = "| predictor | rule | params | online | Dice lost vs last [95% CI] | Dice lost vs oracle | epochs saved | chosen epoch (mean) |"
    sep = "|---|---|---|---|---|---|---|---|"
    if cv:
        head += f" out-of-sample ({settings.get('group_by')}): lost vs last / saved |"
        sep += "---|"
    lines = [head, sep]
    for r in selection:
        line = (f"| {r['predictor']} | {RULE_TEXT.get(r['rule'], r['rule'])} | {_params(r['params'])}"
                f"{' (tuned in-sample)' if r.get('tuned_in_sample') else ''} | {'online' if r['online'] else 'hindsight'} | "
                f"{_f(r['dice_lost_vs_last'], '+.4f')}{_ci(r.get('dice_lost_vs_last_ci'), '+.4f')} | {_f(r['dice_lost_vs_oracle'], '.4f')} | "
                f"{_f(r['epochs_saved'], '.0%')} | {_f(r['chosen_epoch_mean'], '.4g')}"
                f"{_no_dice_note(r.get('n_series_no_dice_at_choice'))} |")
        if cv:
            c = r.get("cross_validated")
            line += (f" {_f(c['dice_lost_vs_last'], '+.4f')}{_ci(c.get('dice_lost_vs_last_ci'), '+.4f')} / {_f(c['epochs_saved'], '.0%')} |"
                     if c else " – |")
        lines.append(line)
    return lines


def markdown(analysis: dict[str, Any], *, title: str, source: str, primary: str | None, why: str, plots: dict[str, str], synthetic: dict[str, bool | None]) -> str:
    preds = analysis["predictors"]
    s = analysis["settings"]
    lines = [f"# {title}", ""]
    if analysis["undeclared"]:
        names = " ".join(analysis["undeclared"])
        lines += [f"> **Directions not declared for {len(analysis['undeclared'])} predictor(s)**: {', '.join(analysis['undeclared'][:12])}"
                  f"{' ...' if len(analysis['undeclared']) > 12 else ''}. They get correlations only: no verdict and no selection rules. "
                  f"Declare them with `--lower-is-better COL ...` or `--higher-is-better COL ...` (e.g. `--lower-is-better {names.split()[0]}`).", ""]
    lines.append(f"Source: {source}. {analysis['n_series']} series, {analysis['n_rows']} checkpoints with a Dice value.")
    if any(v is not None for v in synthetic.values()):
        lines.append(f"Pretraining data: **{_data_words(synthetic.get('pretraining'))}**; target data: "
                     f"**{_data_words(synthetic.get('target'))}** (as recorded in the cards).")
    lines += ["", "## Headline", "", headline_sentence(analysis), "",
              f"Rules of evidence: a verdict needs at least {MIN_SERIES} series with at least {MIN_POINTS} checkpoints each; "
              f"the test is a one-sided Wilcoxon signed-rank test across series of the per-series Spearman (alpha {ALPHA}). "
              f"The headline predictor ({analysis.get('headline_requested') or HEADLINE}) was declared in advance and is tested alone; "
              "every other predictor is exploratory and Holm-corrected over all of them."]
    exploratory = [n for n, p in preds.items() if not p["headline"] and p["verdict"] == "predicts"]
    lines += ["", "## Verdicts", ""]
    if not preds:
        lines.append("No predictor columns: nothing to test.")
    counts = {v: sum(p["verdict"] == v for p in preds.values()) for v in ("predicts", "does_not_predict", "insufficient_evidence", "direction_unknown")}
    lines.append("Verdicts: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in counts.items()) + ".")
    for name in ([analysis["headline"]] if analysis.get("headline") else []) + exploratory:
        p = preds[name]
        beyond = {True: " Adds information beyond training length (partial Spearman interval excludes 0).",
                  False: " Does not add information beyond training length (partial Spearman interval includes 0).", None: ""}[p["adds_beyond_epoch"]]
        lines.append(f"- **{name}**{' (headline)' if p['headline'] else ' (exploratory)'} {p['verdict_text']}{beyond}")
    base = analysis["epoch_baseline"]
    lines += ["", f"Baseline: pretraining length alone (epoch) has mean Spearman {_f(base['mean_spearman'])}{_ci(base['mean_spearman_ci'])} with Dice."]
    n = analysis["noise"]
    lines += ["", "## Noise", ""]
    if n["known"]:
        lines.append(f"Seed SD of Dice per checkpoint (pooled over {n['checkpoints_with_seeds']} checkpoints, >= {n['num_seeds']} seeds): "
                     f"{n['seed_sd']:.4f}; SE of a difference between two checkpoints: {n['se_of_difference']:.4f}. Mean best-vs-last gap "
                     f"{_f(n['best_vs_last_gap_mean'], '.4f')}: {'larger than' if n['gap_exceeds_noise'] else 'within'} twice that SE.")
    else:
        lines.append(f"Noise unknown: {n['reason']}. Differences between checkpoints may be seed noise; fine-tune with several seeds (`sweep --seeds`).")
    lines += ["", "## Checkpoint selection", "",
              f"Dice lost in the table's own units (positive = worse than that reference). Epochs saved: the fraction of the last "
              f"checkpoint's pretraining epochs not run; online rules stop the run, hindsight rules only choose a checkpoint of a finished "
              f"run and save nothing. Tolerance {s['tolerance']} of each series' range; patience {s['patience']} checkpoints. "
              "Intervals: percentile bootstrap over series. Rules walk every checkpoint of a run (fine-tuned or not); a rule "
              "that chose a checkpoint without a Dice value is left out for that series and the table says so.", ""]
    lines += selection_markdown(analysis["selection"], s)
    lines += ["", "## Correlation with Dice (per series, then averaged)", "",
              "| predictor | better when | mean Spearman [95% CI] | partial (epoch-controlled) [95% CI] | mean Kendall | series | verdict |",
              "|---|---|---|---|---|---|---|"]
    for name, p in preds.items():
        lines.append(f"| {name} | {p['direction'] or 'undeclared'} | {_f(p['mean_spearman'])}{_ci(p['mean_spearman_ci'])} | "
                     f"{_f(p['partial_spearman'])}{_ci(p['partial_spearman_ci'])} | {_f(p['mean_kendall'])} | {p['n_series']} | {p['verdict']} |")
    lines += ["", f"## Plots{f' ({primary}: {why})' if primary else ''}", ""]
    for name, file in plots.items():
        lines.append(f"![{name}]({file})")
    lines += ["", f"Made with hf-transfer-seg {__version__}."]
    return "\n".join(lines) + "\n"


def contract(analysis: dict[str, Any]) -> dict[str, Any]:
    """The documented report.json keys (docs/report-json.md), plus per-series detail under ``detail``."""
    preds = {}
    for name, p in analysis["predictors"].items():
        preds[name] = {k: p[k] for k in ("direction", "verdict", "headline", "mean_spearman", "partial_spearman")}
        preds[name].update({k: p[k] for k in ("verdict_text", "mean_spearman_ci", "partial_spearman_ci", "mean_kendall", "n_series",
                                              "n_series_evidence", "p_value", "p_adjusted", "adds_beyond_epoch", "series")})
    selection = []
    for r in analysis["selection"]:
        row = {k: r[k] for k in SELECTION_KEYS}
        row.update({k: r[k] for k in ("dice_lost_vs_last_ci", "epochs_saved_ci", "n_series", "n_series_no_dice_at_choice") if k in r})
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
    tolerance: float = 0.05,
    patience: int = 2,
    n_boot: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """Analyse ``df`` and write report.json, report.md and the plots to ``output``; return the report."""
    output = Path(output)
    analysis = analyse(df, lower=lower or (), higher=higher or (), headline=headline, group_by=group_by, tolerance=tolerance,
                       patience=patience, n_boot=n_boot, seed=seed)
    output.mkdir(parents=True, exist_ok=True)
    primary, why = primary_predictor(analysis, predictor)
    rho = analysis["predictors"].get(primary, {}).get("mean_spearman") if primary else None
    plots = make_plots(df, primary, output, spearman=rho)
    synthetic = {"pretraining": _any_flag(df, "pretrain_synthetic"), "target": _any_flag(df, "target_synthetic")}
    report = {
        "schema_version": SCHEMA_VERSION,
        "source": source,
        "code_version": __version__,
        "headline": analysis["headline"],
        "headline_sentence": headline_sentence(analysis),
        "undeclared": analysis["undeclared"],
        "primary_predictor": primary,
        "primary_reason": why,
        "synthetic": synthetic,
        "settings": analysis["settings"],
        "n_series": analysis["n_series"],
        "n_rows": analysis["n_rows"],
        "epoch_baseline": analysis["epoch_baseline"],
        "noise": analysis["noise"],
        "plots": plots,
        **contract(analysis),
    }
    (output / "report.json").write_text(json.dumps(report, indent=2, default=_json_default))
    (output / "report.md").write_text(markdown(analysis, title=title, source=source, primary=primary, why=why, plots=plots, synthetic=synthetic))
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
