"""``report --results-repo``: a model zoo gets ranking statistics only.

Models are not checkpoints of one run: there is no training length, no "last checkpoint", nothing to stop.
Per target and predictor (oriented so that higher = better by the declared direction): the Spearman and
Kendall rank correlation with Dice across the models, a one-sided p-value (exact permutation test up to
8 models, else scipy's), whether the predictor's pick is the model with the best Dice (top-1 hit), and the
regret of the pick (best Dice - Dice of the pick). A predictor "predicts" (ranks the models) only with at
least ``MIN_MODELS`` models with Dice on every target, a (Holm-adjusted, for exploratory predictors)
p-value below alpha on every target (intersection-union: the claim must hold on each), and a mean
oriented Spearman at least the declared minimum effect.
"""

from __future__ import annotations

import itertools
import math
import warnings
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from hf_transfer_seg.report.analysis import ALPHA, HEADLINE, MIN_EFFECT
from hf_transfer_seg.report.stats import clean, holm
from hf_transfer_seg.report.table import predictor_columns
from hf_transfer_seg.selection import HIGHER, LOWER, resolve_directions

MIN_MODELS = 5
EXACT_UP_TO = 8
NOT_RANKED = ("model", "revision", "sha")


def rank_p(x: np.ndarray, y: np.ndarray) -> float | None:
    """One-sided p-value that the Spearman of x and y is positive (exact over all orderings up to 8)."""
    n = len(x)
    if n < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    rx, ry = stats.rankdata(x), stats.rankdata(y)
    observed = np.corrcoef(rx, ry)[0, 1]
    if n <= EXACT_UP_TO:
        perms = np.array(list(itertools.permutations(ry)))
        rp = perms - perms.mean(axis=1, keepdims=True)
        rxc = rx - rx.mean()
        r = (rp @ rxc) / np.sqrt((rp ** 2).sum(axis=1) * (rxc ** 2).sum())
        return float(np.mean(r >= observed - 1e-12))
    return clean(stats.spearmanr(x, y, alternative="greater").pvalue)


def _one(df: pd.DataFrame, predictor: str, direction: str) -> dict[str, Any]:
    sign = 1 if direction == HIGHER else -1
    g = df[["model", "dice", predictor]].dropna()
    x, y = sign * g[predictor].to_numpy(float), g["dice"].to_numpy(float)
    out: dict[str, Any] = {"n_models": int(len(g))}
    if len(g) < 2:
        return {**out, "spearman": None, "kendall": None, "p_value": None, "top1_hit": None, "regret": None, "pick": None}
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a constant column has no rank correlation: None below
        rho = clean(stats.spearmanr(x, y).statistic) if len(g) >= 3 else None
        tau = clean(stats.kendalltau(x, y).statistic) if len(g) >= 3 else None
    pick = int(np.argmax(x))  # the first of ties
    best = int(np.argmax(y))
    return {**out, "spearman": rho, "kendall": tau, "p_value": rank_p(x, y), "pick": str(g["model"].iloc[pick]),
            "pick_dice": float(y[pick]), "best_model": str(g["model"].iloc[best]), "best_dice": float(y[best]),
            "top1_hit": bool(y[pick] >= y[best]), "regret": float(y[best] - y[pick])}


def analyse_ranking(df: pd.DataFrame, *, lower=(), higher=(), headline: str | None = HEADLINE, min_effect: float = MIN_EFFECT,
                    n_boot: int = 0, seed: int = 0) -> dict[str, Any]:
    predictors = predictor_columns(df, exclude=NOT_RANKED)
    directions = resolve_directions(predictors, lower=list(lower), higher=list(higher))
    scored = df[df["dice"].notna()]
    targets = sorted(scored["series"].unique())
    ranking, raw_p = {}, {}
    for name in predictors:
        d = directions[name]
        if d is None:
            per = {t: {"n_models": int(scored[scored["series"] == t][name].notna().sum())} for t in targets}
        else:
            per = {t: _one(scored[scored["series"] == t], name, d) for t in targets}
        rhos = [v["spearman"] for v in per.values() if v.get("spearman") is not None]
        ps = [v["p_value"] for v in per.values() if v.get("p_value") is not None]
        enough = d is not None and per and all(v["n_models"] >= MIN_MODELS for v in per.values()) and len(ps) == len(per)
        if enough:
            raw_p[name] = max(ps)
        ranking[name] = {"targets": per, "mean_spearman": float(np.mean(rhos)) if rhos else None,
                         "top1_hits": sum(bool(v.get("top1_hit")) for v in per.values()),
                         "mean_regret": float(np.mean([v["regret"] for v in per.values() if v.get("regret") is not None]))
                         if any(v.get("regret") is not None for v in per.values()) else None}
    adjusted = holm({n: p for n, p in raw_p.items() if n != headline})
    preds = {}
    for name in predictors:
        r, d = ranking[name], directions[name]
        p = raw_p.get(name) if name == headline else adjusted.get(name)
        n_models = min((v["n_models"] for v in r["targets"].values()), default=0)
        rho = r["mean_spearman"]
        if d is None:
            verdict, text = "direction_unknown", f"direction not declared (pass --lower-is-better or --higher-is-better {name})."
        elif p is None:
            verdict, text = "insufficient_evidence", f"{n_models} models with Dice; a ranking verdict needs {MIN_MODELS} on every target."
        elif p < ALPHA and rho is not None and rho >= min_effect:
            verdict, text = "predicts", f"ranks the models by Dice: oriented Spearman {rho:+.2f}, p = {p:.3g} on every target."
        else:
            verdict, text = "does_not_predict", (f"does not rank the models by Dice: oriented Spearman {_fmt(rho)}, p = {p:.3g} "
                                                 f"(needs < {ALPHA} and |rho| >= {min_effect:g}).")
        raw_rho = None if rho is None else (rho if d != LOWER else -rho)  # back to the column's own sign, as in checkpoint mode
        preds[name] = {"direction": d, "verdict": verdict, "verdict_text": text, "headline": name == headline,
                       "mean_spearman": raw_rho, "partial_spearman": None, "p_value": raw_p.get(name),
                       "p_adjusted": None if name == headline else adjusted.get(name), "n_series": len(targets),
                       "series": {t: {"spearman": None if v.get("spearman") is None else (v["spearman"] if d != LOWER else -v["spearman"]),
                                      "kendall": None if v.get("kendall") is None else (v["kendall"] if d != LOWER else -v["kendall"]),
                                      "partial_spearman": None, "n": v["n_models"]} for t, v in r["targets"].items()}}
    head = headline if headline in preds else None
    return {"settings": {"mode": "ranking", "min_models": MIN_MODELS, "min_effect": min_effect, "alpha": ALPHA,
                         "test": "one-sided rank-correlation test per target (exact permutation up to 8 models); claim must hold on every target",
                         "correction": "Holm over exploratory predictors"},
            "headline": head, "headline_requested": headline, "undeclared": [n for n, d in directions.items() if d is None],
            "n_series": len(targets), "n_rows": int(len(scored)), "n_clusters": None, "clusters": None,
            "predictors": preds, "ranking": ranking, "selection": [], "selection_skipped": [], "warnings": [],
            "epoch_baseline": {"mean_spearman": None, "mean_spearman_ci": None, "n_series": 0},
            "noise": {"known": False, "reason": "a model zoo has no seeds per checkpoint in results.csv"},
            "headline_sentence_text": _sentence(head, headline, preds, ranking)}


def _fmt(v) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:+.2f}"


def _sentence(head, requested, preds, ranking) -> str:
    if not head:
        return f"The headline predictor {requested} is not in the results repo, so there is no headline verdict (model ranking only)."
    r, p = ranking[head], preds[head]
    hits = f"its pick has the best Dice on {r['top1_hits']} of {len(r['targets'])} target(s)"
    regret = f", mean regret {r['mean_regret']:.4f}" if r.get("mean_regret") is not None else ""
    return f"Headline {head} (model ranking, no stopping rules): {p['verdict_text'].rstrip('.')}; {hits}{regret}."


def ranking_markdown(analysis: dict[str, Any], *, title: str, source: str, plots: dict[str, str]) -> str:
    lines = [f"# {title}", "", f"Source: {source}. A model zoo: ranking statistics only (no epochs, no stopping rules).", "",
             "## Headline", "", analysis["headline_sentence_text"], "", "## Ranking", "",
             "| predictor | better when | target | models | Spearman (oriented) | Kendall (oriented) | p (one-sided) | pick | top-1 hit | regret | verdict |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in analysis["ranking"].items():
        p = analysis["predictors"][name]
        for t, v in r["targets"].items():
            hit = {True: "yes", False: "no"}.get(v.get("top1_hit"), "n/a")
            regret = "n/a" if v.get("regret") is None else f"{v['regret']:.4f}"
            pv = "n/a" if v.get("p_value") is None else f"{v['p_value']:.3g}"
            lines.append(f"| {name} | {p['direction'] or 'undeclared'} | {t} | {v['n_models']} | {_fmt(v.get('spearman'))} | "
                         f"{_fmt(v.get('kendall'))} | {pv} | {v.get('pick') or 'n/a'} | {hit} | {regret} | {p['verdict'].replace('_', ' ')} |")
    if plots:
        lines += ["", "## Plots", ""] + [f"![{k}]({v})" for k, v in plots.items()]
    return "\n".join(lines) + "\n"
