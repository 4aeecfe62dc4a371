"""Did a predictor predict Dice? Correlations per series, one pre-declared test, honest verdicts.

Per predictor and series (one encoder/target/setting across its checkpoints): Spearman and Kendall
(tau-b) of Dice with the predictor over the checkpoints where both are known, and the *partial*
Spearman controlling for the pretraining epoch (rank correlations; the part of the link that is not
the shared trend with training length). Epoch alone is reported as the baseline.

Directions are declared (``lower``/``higher``), or known for the tool's own columns
(:func:`hf_transfer_seg.selection.known_direction`). A predictor without a direction gets its
correlations only: verdict ``direction_unknown``.

Verdicts (``predicts``, ``does_not_predict``, ``insufficient_evidence``, ``direction_unknown``):

- Minimum evidence: at least ``MIN_SERIES`` series with at least ``MIN_POINTS`` checkpoints each;
  below that the verdict is ``insufficient_evidence`` whatever the correlation.
- Test: one-sided Wilcoxon signed-rank test across series of the per-series Spearman oriented so that
  positive = "in the declared direction". The *headline* predictor (declared before seeing results)
  is tested alone at ``ALPHA``; every other predictor is exploratory and its p-value is Holm-corrected
  over all exploratory predictors tested. ``predicts`` needs the (adjusted) p-value below ``ALPHA``.
- Beyond training length: "adds information beyond training length" only when the bootstrap interval
  of the mean partial Spearman excludes 0 on the declared side.
- Noise: where Dice has several seeds per checkpoint (``dice_std`` with ``num_seeds`` >= 2), the
  seed SD and whether the best-vs-last gap exceeds it; otherwise the noise is unknown.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from hf_transfer_seg.cards import schema
from hf_transfer_seg.report.rules import bootstrap_mean, selection_table
from hf_transfer_seg.report.table import predictor_columns
from hf_transfer_seg.selection import HIGHER, LOWER, resolve_directions

MIN_POINTS = 4  # checkpoints per series for a series to count as evidence (Spearman over 3 points is noise)
MIN_SERIES = 5  # series needed before any verdict; a one-sided Wilcoxon over 5 series can reach p = 1/32
ALPHA = 0.05
HEADLINE = f"robustness:{schema.HEADLINE}"  # the tool's headline configuration, declared in advance
VERDICTS = ("predicts", "does_not_predict", "insufficient_evidence", "direction_unknown")


def _clean(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _spearman(x, y) -> float | None:
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _clean(stats.spearmanr(x, y).statistic)


def _kendall(x, y) -> float | None:
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _clean(stats.kendalltau(x, y).statistic)


def partial_spearman(x, y, z) -> float | None:
    """Spearman of x and y controlling for z (partial correlation of the ranks); None when undefined
    (fewer than 4 points, or x or y a monotone function of z)."""
    if len(x) < 4:
        return None
    rxy, rxz, ryz = _spearman(x, y), _spearman(x, z), _spearman(y, z)
    if rxy is None or rxz is None or ryz is None:
        return None
    den = (1 - rxz * rxz) * (1 - ryz * ryz)
    if den <= 1e-12:
        return None
    return _clean((rxy - rxz * ryz) / math.sqrt(den))


def series_points(df: pd.DataFrame, predictor: str) -> dict[str, pd.DataFrame]:
    """Per series: rows (epoch order) where both Dice and the predictor are known."""
    out = {}
    cols = ["epoch", "dice"] + ([predictor] if predictor != "epoch" else [])
    for name, group in df.groupby("series", sort=True):
        g = group[cols].apply(pd.to_numeric, errors="coerce").dropna().sort_values("epoch").reset_index(drop=True)
        if predictor == "epoch":
            g = g.assign(_value=g["epoch"])
        else:
            g = g.assign(_value=g[predictor])
        out[str(name)] = g
    return out


def correlations(df: pd.DataFrame, predictor: str, direction: str | None, *, n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
    sign = {LOWER: -1, HIGHER: 1}.get(direction)
    per_series = {}
    for name, p in series_points(df, predictor).items():
        x, y, e = p["_value"].to_numpy(float), p["dice"].to_numpy(float), p["epoch"].to_numpy(float)
        per_series[name] = {
            "spearman": _spearman(x, y), "kendall": _kendall(x, y),
            "partial_spearman": partial_spearman(x, y, e) if predictor != "epoch" else None, "n": int(len(p)),
        }
    rhos = [s["spearman"] for s in per_series.values() if s["spearman"] is not None]
    taus = [s["kendall"] for s in per_series.values() if s["kendall"] is not None]
    partial = [s["partial_spearman"] for s in per_series.values() if s["partial_spearman"] is not None]
    evidence = [s for s in per_series.values() if s["spearman"] is not None and s["n"] >= MIN_POINTS]
    return {
        "direction": direction,
        "mean_spearman": float(np.mean(rhos)) if rhos else None,
        "mean_spearman_ci": bootstrap_mean(rhos, n_boot=n_boot, seed=seed),
        "mean_kendall": float(np.mean(taus)) if taus else None,
        "partial_spearman": float(np.mean(partial)) if partial else None,
        "partial_spearman_ci": bootstrap_mean(partial, n_boot=n_boot, seed=seed),
        "fraction_expected_sign": float(np.mean([np.sign(r) == sign for r in rhos])) if rhos and sign else None,
        "n_series": len(rhos),
        "n_series_evidence": len(evidence),
        "series": per_series,
    }


def one_sided_p(corr: dict[str, Any]) -> float | None:
    """Wilcoxon signed-rank p-value that the per-series Spearman lies on the declared side of 0."""
    sign = {LOWER: -1, HIGHER: 1}[corr["direction"]]
    oriented = [sign * s["spearman"] for s in corr["series"].values() if s["spearman"] is not None and s["n"] >= MIN_POINTS]
    if not oriented:
        return None
    if all(v == 0 for v in oriented):
        return 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _clean(stats.wilcoxon(oriented, alternative="greater", zero_method="zsplit").pvalue)


def holm(pvalues: dict[str, float]) -> dict[str, float]:
    """Holm step-down adjusted p-values."""
    order = sorted(pvalues, key=pvalues.get)
    m, running, out = len(order), 0.0, {}
    for i, name in enumerate(order):
        running = max(running, min(1.0, (m - i) * pvalues[name]))
        out[name] = running
    return out


def noise(df: pd.DataFrame) -> dict[str, Any]:
    """Seed noise of Dice: pooled per-checkpoint seed SD, and the best-vs-last gap against it."""
    if "dice_std" not in df or "num_seeds" not in df:
        return {"known": False, "reason": "the table has no per-checkpoint seed SD (dice_std with num_seeds)"}
    k = pd.to_numeric(df["num_seeds"], errors="coerce")
    sd = pd.to_numeric(df["dice_std"], errors="coerce")
    ok = (k >= 2) & sd.notna()
    if not ok.any():
        return {"known": False, "reason": "every checkpoint has one seed"}
    seed_sd = float(np.sqrt(np.mean(sd[ok] ** 2)))
    seeds = int(k[ok].min())
    se_diff = seed_sd * math.sqrt(2.0 / seeds)  # SE of a difference between two checkpoints' seed means
    gaps = []
    for _, g in df[df["dice"].notna()].sort_values("epoch").groupby("series"):
        if len(g) >= 2:
            gaps.append(float(g["dice"].max() - g["dice"].iloc[-1]))
    gap = float(np.mean(gaps)) if gaps else None
    return {
        "known": True, "seed_sd": seed_sd, "num_seeds": seeds, "checkpoints_with_seeds": int(ok.sum()),
        "se_of_difference": se_diff, "best_vs_last_gap_mean": gap,
        "gap_exceeds_noise": bool(gap is not None and gap > 2 * se_diff),
    }


def _verdict(name: str, corr: dict[str, Any], p: float | None, headline: bool) -> tuple[str, str]:
    rho = corr["mean_spearman"]
    rho_text = f"mean Spearman {rho:+.2f}" if rho is not None else "no Spearman (too few checkpoints)"
    n_text = f"n = {corr['n_series_evidence']} series with >= {MIN_POINTS} checkpoints; needs {MIN_SERIES}"
    if corr["direction"] is None:
        return "direction_unknown", f"direction not declared: {rho_text}, no verdict (pass --lower-is-better or --higher-is-better {name})."
    if corr["n_series_evidence"] < MIN_SERIES or p is None:
        return "insufficient_evidence", f"insufficient evidence ({n_text}): {rho_text}, no verdict."
    which = "p" if headline else "Holm-adjusted p"
    if p < ALPHA and rho is not None and (rho < 0 if corr["direction"] == LOWER else rho > 0):
        return "predicts", f"predicts Dice: {rho_text}, one-sided Wilcoxon across {corr['n_series_evidence']} series {which} = {p:.3g}."
    return "does_not_predict", f"does not predict Dice: {rho_text}, {which} = {p:.3g} (needs < {ALPHA})."


def _beyond_epoch(corr: dict[str, Any], verdict: str) -> bool | None:
    if verdict in ("direction_unknown", "insufficient_evidence"):
        return None
    ci = corr["partial_spearman_ci"]
    if ci is None:
        return False
    return bool(ci[1] < 0) if corr["direction"] == LOWER else bool(ci[0] > 0)


def analyse(
    df: pd.DataFrame,
    *,
    predictors: list[str] | None = None,
    lower: list[str] | tuple = (),
    higher: list[str] | tuple = (),
    headline: str | None = HEADLINE,
    tolerance: float = 0.05,
    patience: int = 2,
    group_by: str | None = None,
    n_boot: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """Correlations, verdicts, noise and the selection table for ``df``; see the module docstring."""
    predictors = predictors or predictor_columns(df, exclude=[group_by] if group_by else ())
    run = df  # every checkpoint: selection rules walk the whole run, fine-tuned or not
    df = df[df["dice"].notna()]
    directions = resolve_directions(predictors, lower=list(lower), higher=list(higher))
    corrs = {name: correlations(df, name, directions[name], n_boot=n_boot, seed=seed) for name in predictors}
    raw_p = {name: one_sided_p(c) for name, c in corrs.items() if c["direction"] and c["n_series_evidence"] >= MIN_SERIES}
    exploratory = {n: p for n, p in raw_p.items() if n != headline and p is not None}
    adjusted = holm(exploratory) if exploratory else {}
    out_predictors = {}
    for name, corr in corrs.items():
        is_headline = name == headline
        p = raw_p.get(name) if is_headline else adjusted.get(name)
        verdict, sentence = _verdict(name, corr, p, is_headline)
        out_predictors[name] = {
            **corr, "verdict": verdict, "verdict_text": sentence, "headline": is_headline,
            "p_value": raw_p.get(name), "p_adjusted": None if is_headline else adjusted.get(name),
            "adds_beyond_epoch": _beyond_epoch(corr, verdict),
        }
    base = correlations(df, "epoch", HIGHER, n_boot=n_boot, seed=seed)
    return {
        "settings": {"tolerance": tolerance, "patience": patience, "bootstrap": n_boot, "seed": seed, "min_points": MIN_POINTS,
                     "min_series": MIN_SERIES, "alpha": ALPHA, "test": "one-sided Wilcoxon signed-rank over per-series Spearman",
                     "correction": "Holm over exploratory predictors", "group_by": group_by},
        "headline": headline if headline in corrs else None,
        "headline_requested": headline,
        "undeclared": [n for n, d in directions.items() if d is None],
        "n_series": int(df["series"].nunique()),
        "n_rows": int(len(df)),
        "predictors": out_predictors,
        "epoch_baseline": {k: base[k] for k in ("mean_spearman", "mean_spearman_ci", "n_series")},
        "noise": noise(df),
        "selection": selection_table(run, directions, tolerance=tolerance, patience=patience, group_by=group_by, n_boot=n_boot, seed=seed),
    }


def headline_sentence(report: dict[str, Any]) -> str:
    """One honest sentence on the headline predictor's verdict and the noise (for summaries)."""
    name = report.get("headline")
    n = report.get("noise") or {}
    if n.get("known"):
        gap = n.get("best_vs_last_gap_mean")
        noise = (f"; seed SD of Dice {n['seed_sd']:.4f} ({n['num_seeds']} seeds), and the best-vs-last gap"
                 f"{f' ({gap:.4f})' if gap is not None else ''} {'exceeds' if n['gap_exceeds_noise'] else 'is within'} seed noise")
    else:
        noise = "; seed noise unknown (one seed per checkpoint)"
    if not name:
        return f"The headline predictor {report.get('headline_requested')} is not in the table, so there is no headline verdict{noise}."
    p = report["predictors"][name]
    rho = f"mean Spearman {p['mean_spearman']:+.2f}" if p.get("mean_spearman") is not None else "no Spearman"
    if p["verdict"] == "insufficient_evidence":
        return (f"Headline {name}: insufficient evidence ({p['n_series_evidence']} series with >= {MIN_POINTS} fine-tuned checkpoints, "
                f"{MIN_SERIES} needed), so this run cannot say whether it predicts Dice{noise}.")
    if p["verdict"] == "direction_unknown":
        return f"Headline {name} has no declared direction, so no verdict ({rho}){noise}."
    pv = p.get("p_value")
    stat = f"{rho}, p = {pv:.3g}" if pv is not None else rho
    if p["verdict"] == "predicts":
        beyond = ("" if p.get("adds_beyond_epoch") is None else
                  ", adding information beyond training length" if p["adds_beyond_epoch"] else ", but not beyond training length")
        return f"Headline {name} predicts Dice across {p['n_series_evidence']} series ({stat}){beyond}{noise}."
    return f"Headline {name} does not predict Dice across {p['n_series_evidence']} series ({stat}){noise}."
