"""Write ``report.json`` and ``report.md`` (plus the plots) for an analysed table."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from hf_transfer_seg import __version__
from hf_transfer_seg.cards.schema import HEADLINE, SCORE_PREFIXES
from hf_transfer_seg.report.analysis import RULES, analyse
from hf_transfer_seg.report.plots import make_plots

RULE_TEXT = {
    "lowest": "best value (lowest score)",
    "within_tolerance": "earliest within tolerance of the best",
    "patience": "stop when no improvement for P checkpoints",
}


def primary_predictor(analysis: dict[str, Any], requested: str | None = None) -> tuple[str | None, str]:
    """The predictor the plots show, and why it was picked."""
    preds = analysis["predictors"]
    if requested:
        return (requested, "chosen by the user") if requested in preds else (None, f"{requested} is not in the table")
    robust = [p for p in preds if p.lower().startswith(SCORE_PREFIXES)]
    headline = [p for p in robust if p.endswith(HEADLINE) and preds[p]["mean_spearman"] is not None]
    if headline:  # chosen before seeing the results, unlike the best-correlated one
        return headline[0], "the headline configuration (cosine, margin 0.5, deepest level, not pooled)"
    pool = robust or list(preds)
    scored = [p for p in pool if preds[p]["mean_spearman"] is not None]
    if not scored:
        return (pool[0], "the only candidate") if pool else (None, "no predictors")
    sign = {p: (-1 if preds[p]["lower_is_better"] else 1) for p in scored}
    best = max(scored, key=lambda p: sign[p] * preds[p]["mean_spearman"])
    why = "the best-correlated of the robustness configurations (picked after seeing the results: optimistic)" if robust and len(scored) > 1 else "the only scored robustness configuration" if robust else "the best-correlated predictor"
    return best, why


def key_predictors(predictors: dict[str, Any], shown: int = 8, headline: str = HEADLINE) -> list[str]:
    """The predictors worth a verdict line: the headline score, every non-robustness predictor, then the
    strongest correlations (by |mean Spearman|), ``shown`` in all."""
    first = [n for n in predictors if headline in n or not n.lower().startswith(SCORE_PREFIXES)]

    def strength(name: str) -> float:
        rho = predictors[name].get("mean_spearman")
        return -abs(rho) if rho is not None else 1.0

    rest = sorted((n for n in predictors if n not in first), key=strength)
    return (first + rest)[:shown]


def _f(value: Any, fmt: str = "+.2f") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return format(value, fmt)


def _ci(ci: list[float] | None, fmt: str = "+.2f") -> str:
    return f" [{format(ci[0], fmt)}, {format(ci[1], fmt)}]" if ci else ""


def _data_words(flag: bool | None) -> str:
    return {True: "SYNTHETIC", False: "real"}.get(flag, "not recorded")


def markdown(analysis: dict[str, Any], *, title: str, source: str, primary: str | None, why: str, plots: dict[str, str], synthetic: dict[str, bool | None]) -> str:
    preds = analysis["predictors"]
    lines = [f"# {title}", "", f"Source: {source}. {analysis['n_series']} series, {analysis['n_rows']} checkpoints with a Dice value."]
    if any(v is not None for v in synthetic.values()):
        lines.append(f"Pretraining data: **{_data_words(synthetic.get('pretraining'))}**; target data: "
                     f"**{_data_words(synthetic.get('target'))}** (as recorded in the cards).")
    lines += ["", "## Verdict", ""]
    if not preds:
        lines.append("No predictor columns: nothing to test.")
    shown = key_predictors(preds)
    for name in shown:
        lines.append(f"- **{name}** {preds[name]['verdict']}")
    if len(preds) > len(shown):
        lines.append(f"- {len(preds) - len(shown)} other predictors: see the table below.")
    base = analysis.get("epoch_baseline") or {}
    if base.get("mean_spearman") is not None:
        lines += ["", f"Baseline: pretraining length alone (epoch) has mean Spearman {_f(base['mean_spearman'])} with Dice. "
                  "A score that does no better than that adds little beyond the shared trend with training time."]
    lines += ["", "## Correlation with Dice (per series, then averaged)", "",
              "| predictor | better when | mean Spearman [95% CI] | mean Kendall | series with expected sign | series |",
              "|---|---|---|---|---|---|"]
    for name, p in preds.items():
        lines.append(f"| {name} | {'lower' if p['lower_is_better'] else 'higher'} | {_f(p['mean_spearman'])}{_ci(p['mean_spearman_ci'])} | "
                     f"{_f(p['mean_kendall'])} | {_f(p['fraction_expected_sign'], '.0%')} | {p['n_series']} |")
    s = analysis["settings"]
    lines += ["", "## Checkpoint selection rules", "",
              f"Tolerance {s['tolerance']} of each series' score range; patience {s['patience']} checkpoints. Dice lost is in Dice "
              "units (positive = worse); epochs saved is the fraction of the last checkpoint's epochs not needed.", "",
              "| predictor | rule | Dice lost vs oracle | Dice lost vs last | epochs saved |", "|---|---|---|---|---|"]
    for name, p in preds.items():
        for rule in RULES:
            r = p["rules"][rule]
            lines.append(f"| {name} | {RULE_TEXT[rule]} | {_f(r['mean_lost_vs_oracle'], '.4f')}{_ci(r['mean_lost_vs_oracle_ci'], '.4f')} | "
                         f"{_f(r['mean_lost_vs_last'], '+.4f')}{_ci(r['mean_lost_vs_last_ci'], '+.4f')} | "
                         f"{_f(r['mean_epochs_saved'], '.0%')}{_ci(r['mean_epochs_saved_ci'], '.0%')} |")
    if primary:
        lines += ["", f"## Plots ({primary}: {why})", ""]
    else:
        lines += ["", "## Plots", ""]
    for name, file in plots.items():
        lines.append(f"![{name}]({file})")
    lines += ["", "## Per series", "", "| predictor | series | checkpoints | Spearman | Kendall |", "|---|---|---|---|---|"]
    for name, p in preds.items():
        for series, row in p["series"].items():
            lines.append(f"| {name} | {series} | {row['n']} | {_f(row['spearman'])} | {_f(row['kendall'])} |")
    lines += ["", f"Made with hf-transfer-seg {__version__}."]
    return "\n".join(lines) + "\n"


def write_report(
    df: pd.DataFrame,
    output: str | Path,
    *,
    source: str,
    title: str = "Did the score predict downstream Dice?",
    predictor: str | None = None,
    lower: list[str] | None = None,
    higher: list[str] | None = None,
    tolerance: float = 0.05,
    patience: int = 2,
    n_boot: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """Analyse ``df`` and write report.json, report.md and the plots to ``output``; return the report."""
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    analysis = analyse(df, lower=lower or (), higher=higher or (), tolerance=tolerance, patience=patience, n_boot=n_boot, seed=seed)
    primary, why = primary_predictor(analysis, predictor)
    rho = analysis["predictors"].get(primary, {}).get("mean_spearman") if primary else None
    plots = make_plots(df, primary, output, spearman=rho)
    synthetic = {"pretraining": _any_flag(df, "pretrain_synthetic"), "target": _any_flag(df, "target_synthetic")}
    report = {
        "source": source,
        "code_version": __version__,
        "primary_predictor": primary,
        "primary_reason": why,
        "synthetic": synthetic,
        "direction_rule": "lower is better when the name starts with robustness/score or contains loss/error/hd95; higher otherwise",
        "plots": plots,
        **analysis,
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
