"""report.md (one page: headline, baselines, the selection rows that matter) and report-appendix.md
(the exploratory grid: every predictor's correlations and every rule)."""

from __future__ import annotations

import math
from typing import Any

from hf_transfer_seg import __version__
from hf_transfer_seg.report import beyond
from hf_transfer_seg.report.analysis import ALPHA, HEADLINE, MIN_CLUSTERS, MIN_POINTS, MIN_SERIES, headline_sentence
from hf_transfer_seg.report.rules import TOP1_NAMES
from hf_transfer_seg.report.trivial import markdown_lines as trivial_lines

APPENDIX = "report-appendix.md"
MAX_FIRST_PAGE = 12  # declared predictors whose verdicts report.md lists (the rest: the appendix)
RULE_TEXT = {
    "fixed_fraction": "fixed stop",
    "last": "always the last checkpoint",
    "oracle": "oracle: best Dice (hindsight bound)",
    "lowest": "best value",
    "within_tolerance": "earliest within tolerance of the best value",
    "patience": "stop after P checkpoints without improvement",
    "threshold": "stop once the value reaches a threshold",
}


def _f(value: Any, fmt: str = "+.2f") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return format(value, fmt)


def _ci(ci: list[float] | None, fmt: str = "+.2f") -> str:
    if not ci:
        return ""
    lo = "-inf" if ci[0] == -math.inf else format(ci[0], fmt)
    hi = "+inf" if ci[1] == math.inf else format(ci[1], fmt)
    return f" [{lo}, {hi}]"


def _params(params: dict) -> str:
    return ", ".join(f"{k}={v:g}" if isinstance(v, (int, float)) and not isinstance(v, bool) else f"{k}={v}" for k, v in params.items())


def rule_label(r: dict[str, Any]) -> str:
    """A row's rule in words, e.g. 'fixed stop at epoch 150', 'best value', 'patience 2'."""
    p = r.get("params") or {}
    if r["rule"] == "fixed_fraction":
        return f"fixed stop at epoch {p['epoch']:g}" if "epoch" in p else f"fixed stop at {p.get('fraction', 0):.0%} of the schedule"
    if r["rule"] == "patience":
        return f"stop after {p.get('patience')} checkpoints without improvement"
    if r["rule"] == "threshold":
        return f"stop once the value reaches {p.get('threshold'):g}" + (" (tuned in-sample)" if r.get("tuned_in_sample") else "")
    if r["rule"] == "within_tolerance":
        return f"earliest within {p.get('tolerance'):g} of the range of the best value"
    return RULE_TEXT.get(r["rule"], r["rule"])


def _no_dice_note(n: int | None) -> str:
    return f" (chose an un-fine-tuned checkpoint in {n} series: not counted)" if n else ""


def _noise_cell(sn: dict | None) -> str:
    if not sn:
        return "–"
    if sn.get("exceeds") is None:
        return "seed noise unknown"
    return ("exceeds" if sn["exceeds"] else "within") + f" seed noise ({sn['threshold']:.4f}: {sn.get('against', '2 SE')})"


def _equal_cell(e: dict | None) -> str:
    if not e:
        return "–"
    lo, hi = e["between_epochs"]
    where = f"epoch {e['epoch']:.4g}" + (f" (between {lo:g} and {hi:g})" if lo != hi else "")
    k = e.get("n_clusters")
    runs = f" (worse in {e.get('n_clusters_rule_worse')} of {k} clusters)" if k else ""
    return (f"{where}: lost {_f(e['dice_lost_vs_last'], '+.4f')}; rule − fixed {_f(e['difference'], '+.4f')}"
            f"{_ci(e.get('difference_ci_corrected'), '+.4f')}{runs}: {e.get('rule_vs_fixed', 'not testable')}")


def _corrected_note(r: dict[str, Any]) -> str:
    """' [no corrected CI: 6 clusters]' where the corrected level is not attainable (never [-inf, +inf])."""
    info = r.get("corrected_attainable")
    if "dice_lost_vs_last_ci_corrected" in r and r["dice_lost_vs_last_ci_corrected"] is None and info and info.get("clusters"):
        return f" [no corrected CI: {info['clusters']} clusters reach {info['attainable_level']:.1%} at most]"
    return ""


def _fold_note(c: dict[str, Any]) -> str:
    """How the out-of-sample folds were built, where it matters."""
    notes = []
    if c.get("trains_on_held_out_runs"):
        notes.append(f"folds {', '.join(c['trains_on_held_out_runs'])} train on the held-out runs' other-{c['group_by']} series "
                     "(every run spans every group: out of sample in the group, not in the run)")
    if c.get("groups_without_fold"):
        notes.append("no fold for " + ", ".join(c["groups_without_fold"]))
    if c.get("max_loss") is not None:
        notes.append(f"{'within' if c.get('within_cap') else 'over'} the cap {c['max_loss']:g}")
    return "; " + "; ".join(notes) if notes else ""


def selection_markdown(selection: list[dict[str, Any]], settings: dict[str, Any]) -> list[str]:
    """A selection table: rule, Dice lost vs last with its (corrected) interval, saved, the fixed stop
    saving the same share, seed noise, and with --group-by the in-sample and out-of-sample tuned figures."""
    cv = next((r["cross_validated"] for r in selection if r.get("cross_validated")), None)
    head = ("| predictor | rule | online | Dice lost vs last (mean) [corrected CI] | vs oracle | epochs saved | chosen epoch (mean) "
            "| fixed stop saving the same share | gain vs seed noise |")
    sep = "|---|---|---|---|---|---|---|---|---|"
    if cv:
        head += f" tuned in-sample / out-of-sample (leave-one-{cv['group_by']}-out): lost vs last, saved |"
        sep += "---|"
    lines = [head, sep]
    for r in selection:
        ci = r.get("dice_lost_vs_last_ci_corrected") if "dice_lost_vs_last_ci_corrected" in r else r.get("dice_lost_vs_last_ci")
        line = (f"| {r['predictor']} | {rule_label(r)} | {'online' if r['online'] else 'hindsight'} | "
                f"{_f(r['dice_lost_vs_last'], '+.4f')}{_ci(ci, '+.4f')}{_corrected_note(r)} | {_f(r['dice_lost_vs_oracle'], '.4f')} | "
                f"{_f(r['epochs_saved'], '.0%')} | {_f(r['chosen_epoch_mean'], '.4g')}{_no_dice_note(r.get('n_series_no_dice_at_choice'))} | "
                f"{_equal_cell(r.get('equal_savings'))} | {_noise_cell(r.get('seed_noise'))} |")
        if cv:
            c = r.get("cross_validated")
            if c:
                i = c["in_sample_tuned"]
                line += (f" in: {_params(i['params'])} → {_f(i['dice_lost_vs_last'], '+.4f')}, {_f(i['epochs_saved'], '.0%')}; "
                         f"out: {_f(c['dice_lost_vs_last'], '+.4f')}{_ci(c.get('dice_lost_vs_last_ci'), '+.4f')}, {_f(c['epochs_saved'], '.0%')}"
                         f"{_fold_note(c)} |")
            else:
                line += " – |"
        lines.append(line)
    return lines


def _key_rows(analysis: dict[str, Any]) -> list[dict[str, Any]]:
    keep = {analysis.get("headline")} | set(TOP1_NAMES) | {n for n in analysis["predictors"] if n.endswith(":top1")}
    return [r for r in analysis["selection"] if r["predictor"] in keep]


def _warnings(analysis: dict[str, Any]) -> list[str]:
    lines = []
    if analysis["undeclared"]:
        und = analysis["undeclared"]
        lines += [f"> **Directions not declared for {len(und)} predictor(s)**: {', '.join(und[:12])}{' ...' if len(und) > 12 else ''}. "
                  "They get correlations only: no verdict and no selection rules. Declare them with `--lower-is-better COL ...` or "
                  f"`--higher-is-better COL ...` (e.g. `--lower-is-better {und[0]}`).", ""]
    for w in analysis.get("warnings", []):
        lines += [f"> **Warning**: {w}.", ""]
    if analysis.get("selection_skipped"):
        n = len(analysis["selection_skipped"])
        lines += [f"> {n} declared predictor(s) got no selection rules (bound --max-rule-predictors "
                  f"{analysis['settings']['max_rule_predictors']}); their correlations are in the appendix.", ""]
    return lines


def verdict_counts(preds: dict[str, dict[str, Any]]) -> str:
    """'predicts: 1, does not predict: 3'; one phrase when the table is too small for any verdict."""
    if preds and all(p["verdict"] in ("insufficient_evidence", "direction_unknown") for p in preds.values()) \
            and any(p["verdict"] == "insufficient_evidence" for p in preds.values()):
        return f"none ({len(preds)} predictor(s); too little evidence for any verdict: too few series, checkpoints or clusters)"
    counts = {}
    for p in preds.values():
        counts[p["verdict"]] = counts.get(p["verdict"], 0) + 1
    return ", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in counts.items()) or "no predictors"


def _placebo_text(p: dict[str, Any]) -> str:
    pl = (p.get("beyond_epoch") or {}).get("placebo")
    return "–" if not pl else f"{pl['rate']:.1%} of {pl['n']}"


def _verdict_lines(analysis: dict[str, Any]) -> list[str]:
    """Every declared predictor's verdict, on the first page: a row each (headline, top-1 and decisive verdicts first,
    at most ``MAX_FIRST_PAGE`` rows), the rest named in one line per verdict. The full reasons are in the appendix."""
    preds = analysis["predictors"]
    declared = [n for n, p in preds.items() if p["direction"]]
    first = [n for n in declared if preds[n]["headline"]] + [n for n in declared if n in TOP1_NAMES or n.endswith(":top1")]
    decisive = [n for n in declared if preds[n]["verdict"] in ("predicts", "tracks_training_length_only", "does_not_predict")]
    order = list(dict.fromkeys(first + decisive + declared))
    rows, rest = order[:MAX_FIRST_PAGE], order[MAX_FIRST_PAGE:]
    lines = ["## Verdicts", "", f"{verdict_counts(preds)} (of {len(preds)} predictors; the reasons: [{APPENDIX}]({APPENDIX})).", "",
             "| predictor | verdict | mean Spearman | epoch-controlled effect | runs in the declared direction (raw; controlled) "
             "| p: tracks / beyond epoch / equivalence | placebo \"predicts\" rate |", "|---|---|---|---|---|---|---|"]
    for name in rows:
        p = preds[name]
        b = p.get("beyond_epoch") or {}
        runs = f"{p['runs_in_direction']} of {p['n_runs']}; " + (f"{b['runs_in_direction']} of {b['n_runs']}" if b["n_runs"] else "n/a") if b else "–"
        ps = " / ".join(_f(p.get(k1) if p["headline"] else p.get(k2), ".3g") if src is p else _f(b.get(k1) if p["headline"] else b.get(k2), ".3g")
                        for src, k1, k2 in ((p, "p_value", "p_adjusted"), (b, "p_value", "p_adjusted"), (b, "equivalence_p", "equivalence_p_adjusted")))
        lines.append(f"| {name}{' (headline)' if p['headline'] else ''} | {p['verdict'].replace('_', ' ')} | {_f(p['mean_spearman'])} | "
                     f"{_f(b.get('effect'))} | {runs} | {ps} | {_placebo_text(p)} |")
    by: dict[str, list[str]] = {}
    for name in rest:
        by.setdefault(preds[name]["verdict"], []).append(name)
    lines.append("")
    for verdict, names in by.items():
        lines.append(f"Also {verdict.replace('_', ' ')} ({len(names)}): {', '.join(names[:30])}{' …' if len(names) > 30 else ''}.")
    notes = [preds[n]["verdict_text"] for n in declared if preds[n]["verdict"] == "not_shown"]
    attain = next((t[t.index("the smallest signed-rank p"):].split(")")[0] for t in notes if "the smallest signed-rank p" in t), None)
    if attain:
        lines.append(f"Not shown = neither direction reached the evidence bar; {attain}. p-values of exploratory predictors are Holm-adjusted.")
    return lines + [""]


def markdown(analysis: dict[str, Any], *, title: str, source: str, primary: str | None, why: str, plots: dict[str, str],
             synthetic: dict[str, bool | None], trivial: dict[str, Any] | None = None) -> str:
    """The one-page report (``trivial``: :func:`hf_transfer_seg.report.trivial.trivial_floor` of the table)."""
    s = analysis["settings"]
    cl = analysis.get("cluster_text") or ", ".join(s.get("cluster_by") or []) or "none (each series is its own cluster)"
    trivial = trivial or {"recorded": False}
    lines = [f"# {title}", ""] + ([f"> **Warning: {trivial['warning']}.**", ""] if trivial.get("warning") else []) + _warnings(analysis)
    lines.append(f"Source: {source}. {analysis['n_series']} series in {analysis['n_clusters']} clusters (independent units; "
                 f"cluster by: {cl}), {analysis['n_rows']} checkpoints with a Dice value.")
    if any(v is not None for v in synthetic.values()):
        lines.append(f"Pretraining data: **{ {True: 'SYNTHETIC', False: 'real'}.get(synthetic.get('pretraining'), 'not recorded') }**; "
                     f"target data: **{ {True: 'SYNTHETIC', False: 'real'}.get(synthetic.get('target'), 'not recorded') }**.")
    lines += ["", "## Headline", "", headline_sentence(analysis), "",
              f"Evidence rules: a verdict needs at least {MIN_SERIES} series with at least {MIN_POINTS} checkpoints in at least "
              f"{MIN_CLUSTERS} clusters. \"Tracks\": one-sided Wilcoxon over cluster means of the per-series Spearman (alpha {ALPHA}) and "
              f"mean |rho| >= {s['min_effect']:g}. \"Predicts\" (beyond training length): {s.get('beyond_epoch_test', 'n/a')}, one-sided "
              f"p < {ALPHA} and partial |r| >= {s['min_effect']:g}, and at most {beyond.PLACEBO_MAX:.0%} of {beyond.PLACEBOS} placebo columns "
              "(nothing beyond training length, the predictor's own shape and noise levels) called \"predicts\" on this table. "
              f"\"Does not predict\": an equivalence test over clusters shows both effects below {s['min_effect']:g}; otherwise \"not shown\". "
              f"The headline predictor ({analysis.get('headline_requested') or HEADLINE}) was declared in advance and is tested alone; "
              "every other predictor is exploratory (Holm).", ""]
    if analysis.get("stopping_sentence"):
        lines += [f"**Stopping:** {analysis['stopping_sentence']}", ""]
    lines += _verdict_lines(analysis)
    base = analysis["epoch_baseline"]
    lines += ["## Baselines", "",
              f"Training length alone (epoch) has mean Spearman {_f(base['mean_spearman'])}{_ci(base['mean_spearman_ci'])} with Dice.", ""]
    lines += selection_markdown([r for r in analysis["selection"] if r["predictor"] == "epoch"], s) + [""]
    lines += trivial_lines(trivial)
    key = _key_rows(analysis)
    lines += ["## Selection rules that matter (headline and top-1)", ""]
    if key:
        lines += ["Positive = Dice lost against always training to the end. Hindsight rules only choose a checkpoint of a finished "
                  "run and save nothing. Corrected CI: Bonferroni-level signed-rank interval over cluster means, over every rule of "
                  "the table, shown only where that level is attainable with this many clusters (with K clusters a two-sided "
                  "signed-rank test cannot go below p = 2/2^K; elsewhere the attainable level is stated); a claim is made only "
                  "where the corrected interval excludes 0. "
                  f"Tuning objective: {s['tuning_objective']}.", ""]
        lines += selection_markdown(key, s)
    else:
        lines.append("Neither the headline predictor nor a top-1 column has selection rules in this table.")
    n = analysis["noise"]
    lines += ["", "## Noise", ""]
    if n["known"]:
        lines.append(f"Seed SD of Dice per checkpoint (pooled over {n['checkpoints_with_seeds']} checkpoints, "
                     f"{n.get('num_seeds_text') or str(n['num_seeds']) + ' seeds'}): "
                     f"{n['seed_sd']:.4f}; SE of a difference between two checkpoints: {n['se_of_difference']:.4f}. A claimed gain "
                     "\"exceeds seed noise\" when a mean of n paired differences is larger than twice its own SE under seed noise "
                     "(that SE / sqrt(n)); the oracle's gain, a mean of per-series maxima, is compared with the same mean of maxima "
                     "under seed noise alone" + (f" (95th percentile {n['gap_null_q95']:.4f}; observed {n['best_vs_last_gap_mean']:.4f})"
                                                   if n.get("gap_null_q95") is not None else "") + ".")
    else:
        lines.append(f"Seed noise unknown: {n['reason']}. Gains may be seed noise; fine-tune with several seeds (`sweep --seeds`) "
                     "or give the table a seed column.")
    lines += ["", f"Every predictor's correlations and every rule: [{APPENDIX}]({APPENDIX}).", ""]
    if plots:
        lines += [f"## Plots{f' ({primary}: {why})' if primary else ''}", ""] + [f"![{k}]({v})" for k, v in plots.items()]
    lines += ["", f"Made with hf-transfer-seg {__version__}."]
    return "\n".join(lines) + "\n"


def appendix(analysis: dict[str, Any], *, title: str) -> str:
    """The exploratory grid."""
    preds, s = analysis["predictors"], analysis["settings"]
    lines = [f"# Appendix: {title}", "", "Exploratory: every rule and every predictor. Intervals in the selection table are "
             f"corrected ({s['selection_correction']['method']}).", "", "## Every selection rule", ""]
    lines += selection_markdown(analysis["selection"], s)
    if analysis.get("selection_skipped"):
        lines += ["", f"No selection rules (bound {s['max_rule_predictors']}): {', '.join(analysis['selection_skipped'])}."]
    lines += ["", "## Correlation with Dice (per series, then averaged; intervals resample clusters)", "",
              "| predictor | better when | mean Spearman [95% CI] | epoch-controlled effect (FE partial r) | mean Kendall | series | clusters | p (adj.) | verdict |",
              "|---|---|---|---|---|---|---|---|---|"]
    for name, p in preds.items():
        pv = p.get("p_value") if p["headline"] else p.get("p_adjusted")
        lines.append(f"| {name} | {p['direction'] or 'undeclared'} | {_f(p['mean_spearman'])}{_ci(p['mean_spearman_ci'])} | "
                     f"{_f(p['partial_spearman'])} | {_f(p['mean_kendall'])} | {p['n_series']} | "
                     f"{p.get('n_clusters_evidence', '')} | {_f(pv, '.3g')} | {p['verdict'].replace('_', ' ')} |")
    lines += ["", "## Verdicts and their reasons", ""]
    lines += [f"- **{name}**{' (headline)' if p['headline'] else ''}: {p['verdict_text']}" for name, p in preds.items() if p["direction"]]
    clusters = analysis.get("clusters") or {}
    if clusters and len(set(clusters.values())) < len(clusters):
        lines += ["", "## Clusters", "", "| cluster | series |", "|---|---|"]
        by = {}
        for series, c in clusters.items():
            by.setdefault(c, []).append(series)
        lines += [f"| {c} | {', '.join(sorted(v))} |" for c, v in sorted(by.items())]
    return "\n".join(lines) + "\n"
