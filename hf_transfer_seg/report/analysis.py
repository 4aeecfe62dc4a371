"""Did a predictor predict Dice? Correlations per series, tests over clusters, honest verdicts.

Per predictor and series (one encoder/target/setting across its checkpoints): Spearman and Kendall
(tau-b) of Dice with the predictor over the checkpoints where both are known, and the *partial*
Spearman controlling for the pretraining epoch: the ranks of the predictor and of Dice are each
residualised on a cubic in log(1 + epoch) within the series and the residuals correlated
(:func:`hf_transfer_seg.report.stats.epoch_partial_columns`). That removes any smooth shared trend with
training length, saturating ones included, so what is left is the part of the link that is not training
length. A series with fewer than 7 checkpoints (the cubic plus 3 residual degrees of freedom), or whose
predictor or Dice is a monotone function of epoch, has no partial (undefined, and the verdict says so).
Epoch alone is reported as the baseline.

Series are grouped into *clusters*, the independent units (``--cluster-by``; by default the columns that
identify a pretraining run). Every interval resamples clusters and every test runs over cluster means
(:mod:`hf_transfer_seg.report.stats`).

Verdicts (``predicts``, ``tracks_training_length_only``, ``does_not_predict``, ``insufficient_evidence``,
``direction_unknown``):

- Minimum evidence: at least ``MIN_SERIES`` series with at least ``MIN_POINTS`` checkpoints each, in at
  least ``MIN_CLUSTERS`` clusters; below that no verdict, whatever the correlation.
- Test: one-sided Wilcoxon signed-rank test over clusters of the mean per-series Spearman, oriented so
  that positive = "in the declared direction". The headline predictor (declared in advance) is tested
  alone at ``ALPHA``; every other one is exploratory, Holm-corrected over all exploratory predictors.
- Effect floor: the mean oriented Spearman must reach the declared minimum effect (``min_effect``,
  default 0.3); a significant but smaller effect is ``does_not_predict`` (and says why).
- ``predicts`` needs, in addition, the epoch-controlled (partial) Spearman's interval to exclude 0 on the
  declared side; otherwise the verdict is ``tracks_training_length_only``.

The control was chosen by simulation (``benchmarks/report_epoch_control.py``): on constructed 36-series
tables (6 clusters) where predictor and Dice both saturate along training with independent noise, the
former control (a trend linear in the *ranks* of epoch) kept a partial of about -0.23 and said "predicts"
on 88.5 % of 200 null tables (10 checkpoints); the cubic in log epoch said it on 6.5 % (Monte Carlo SE
about 1.7 %, so not shown to be at or below the nominal 5 %) with power 100 % where the predictor's noise
carries Dice's (correlation 0.5). With 6 checkpoints every candidate reduces to a quadratic and said
"predicts" on 22 % of null tables, hence no partial below 7 checkpoints. A trend that a cubic in log epoch cannot follow within
a series (e.g. a sharp step at one checkpoint) can still leak into the partial.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np
import pandas as pd

from hf_transfer_seg.cards import schema
from hf_transfer_seg.report.stats import (  # noqa: F401 (partial_spearman re-exported)
    EPOCH_DEGREE, EPOCH_MIN_DEGREE, EPOCH_RESID_DOF, cluster_ids, cluster_mean_ci, cluster_wilcoxon, holm, partial_spearman,
)
from hf_transfer_seg.selection import HIGHER, LOWER

MIN_POINTS = 4  # checkpoints per series for a series to count as evidence (Spearman over 3 points is noise)
MIN_SERIES = 5  # series needed before any verdict
MIN_CLUSTERS = 5  # independent units needed; a one-sided Wilcoxon over 5 clusters can reach p = 1/32
MIN_EFFECT = 0.3  # declared minimum |mean Spearman| for a verdict of "predicts"
ALPHA = 0.05
CONTROL = f"within-series {({2: 'quadratic', 3: 'cubic'}).get(EPOCH_DEGREE, f'degree-{EPOCH_DEGREE} polynomial')} in log epoch"
PARTIAL_MIN_POINTS = EPOCH_MIN_DEGREE + 1 + EPOCH_RESID_DOF  # checkpoints a series needs for a partial (7)
HEADLINE = f"robustness:{schema.HEADLINE}"  # the tool's headline configuration, declared in advance
VERDICTS = ("predicts", "tracks_training_length_only", "does_not_predict", "insufficient_evidence", "direction_unknown")
RUN_COLUMNS = ("pretraining_run",)  # a column naming the pretraining run
RUN_PARTS = ("model", "encoder", "pretraining_scheme", "scheme", "recipe")  # else these, together


def _none(v) -> float | None:
    return None if v is None or not np.isfinite(v) else float(v)


def default_cluster_columns(df: pd.DataFrame) -> list[str]:
    """The columns that identify a pretraining run, when present (else each series is its own cluster)."""
    for col in RUN_COLUMNS:
        if col in df.columns:
            return [col]
    return [c for c in RUN_PARTS if c in df.columns]


def clusters_of(df: pd.DataFrame, columns: list[str]) -> dict[str, str]:
    """series -> cluster label from per-series columns (each series needs exactly one value of each)."""
    from hf_transfer_seg.report.rules import groups_of

    if not columns:
        return {str(s): str(s) for s in df["series"].unique()}
    parts = [groups_of(df, c, flag="--cluster-by") for c in columns]
    return {s: " / ".join(p[s] for p in parts) for s in parts[0]}


def correlations(names: list[str], per: dict[str, np.ndarray], predictors: list[str], directions: dict[str, str | None],
                 clusters: dict[str, str], *, n_boot: int, seed: int) -> dict[str, dict[str, Any]]:
    """Per predictor: means over series, cluster-bootstrap intervals and per-series detail."""
    ids = cluster_ids(names, clusters)
    rho, tau, partial, n = per["spearman"], per["kendall"], per["partial_spearman"], per["n"]
    rho_ci = cluster_mean_ci(rho.T, ids, n_boot=n_boot, seed=seed) if len(names) else [None] * len(predictors)
    partial_ci = cluster_mean_ci(partial.T, ids, n_boot=n_boot, seed=seed) if len(names) else [None] * len(predictors)
    out = {}
    for j, name in enumerate(predictors):
        direction = directions.get(name)
        sign = {LOWER: -1, HIGHER: 1}.get(direction)
        r = rho[:, j]
        ok = np.isfinite(r)
        evidence = ok & (n[:, j] >= MIN_POINTS)
        oriented = [sign * v if sign and e else None for v, e in zip(r, evidence)]
        series = {s: {"spearman": _none(r[i]), "kendall": _none(tau[i, j]), "partial_spearman": _none(partial[i, j]),
                      "n": int(n[i, j]), "cluster": clusters.get(s, s)} for i, s in enumerate(names)}
        out[name] = {
            "direction": direction,
            "mean_spearman": float(np.mean(r[ok])) if ok.any() else None,
            "mean_spearman_ci": rho_ci[j],
            "mean_kendall": float(np.nanmean(tau[:, j])) if np.isfinite(tau[:, j]).any() else None,
            "partial_spearman": float(np.nanmean(partial[:, j])) if np.isfinite(partial[:, j]).any() else None,
            "partial_spearman_ci": partial_ci[j],
            "fraction_expected_sign": float(np.mean(np.sign(r[ok]) == sign)) if ok.any() and sign else None,
            "n_series": int(ok.sum()),
            "n_series_evidence": int(evidence.sum()),
            "n_clusters_evidence": int(len(set(ids[evidence]))),
            "n_clusters_partial": int(len(set(ids[np.isfinite(partial[:, j])]))),
            "series": series,
            "_oriented": oriented,
        }
    return out


def noise(df: pd.DataFrame) -> dict[str, Any]:
    """Seed noise of Dice: pooled per-checkpoint seed SD, and the best-vs-last gap against it."""
    if "dice_std" not in df or "num_seeds" not in df:
        return {"known": False, "reason": "the table has neither a seed column (one row per seed) nor dice_std with num_seeds"}
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


def table_warnings(df: pd.DataFrame, predictors: list[str], excluded: dict[str, str]) -> list[str]:
    """Named problems of the table the figures depend on (shown in report.md and report.json)."""
    out = [f"series {name!r}: {why}; left out of the selection table (its 'last' reference is unknown)"
           for name, why in excluded.items()]
    last = df.sort_values("epoch").groupby("series", sort=True).tail(1)
    cols = [p for p in predictors if p != "epoch"]
    counts = last[cols].isna().sum(axis=0) if cols else pd.Series(dtype=int)  # one pass: a wide table has thousands
    for p in [c for c in cols if 0 < counts[c] < len(last)]:
        missing = last.loc[last[p].isna(), ["series", "epoch"]]
        names = ", ".join(f"{s!r} (epoch {e:g})" for s, e in missing.head(5).itertuples(index=False))
        out.append(f"{p} has no value at the last checkpoint of {len(missing)} series ({names}{' ...' if len(missing) > 5 else ''}): "
                   "rules on it treat that checkpoint as no improvement; 'last' stays the series' last checkpoint")
    return out


def _verdict(name: str, c: dict[str, Any], p: float | None, headline: bool, min_effect: float) -> tuple[str, str]:
    rho = c["mean_spearman"]
    rho_text = f"mean Spearman {rho:+.2f}" if rho is not None else "no Spearman (too few checkpoints)"
    if c["direction"] is None:
        return "direction_unknown", f"direction not declared: {rho_text}, no verdict (pass --lower-is-better or --higher-is-better {name})."
    if c["n_series_evidence"] < MIN_SERIES or c["n_clusters_evidence"] < MIN_CLUSTERS or p is None:
        return "insufficient_evidence", (
            f"insufficient evidence (n = {c['n_series_evidence']} series with >= {MIN_POINTS} checkpoints in "
            f"{c['n_clusters_evidence']} clusters; needs {MIN_SERIES} series in {MIN_CLUSTERS} clusters): {rho_text}, no verdict.")
    which = "p" if headline else "Holm-adjusted p"
    test = f"one-sided Wilcoxon over {c['n_clusters_evidence']} clusters {which} = {p:.3g}"
    if p >= ALPHA:
        return "does_not_predict", f"does not predict Dice: {rho_text}, {test} (needs < {ALPHA})."
    sign = -1 if c["direction"] == LOWER else 1
    if rho is None or sign * rho < min_effect:
        return "does_not_predict", (f"does not predict Dice: {test}, but {rho_text} is below the declared minimum effect "
                                    f"|rho| >= {min_effect:g} in the declared direction.")
    ci = c["partial_spearman_ci"]
    if c["partial_spearman"] is None or ci is None:
        short = sum(1 for v in c["series"].values() if v["n"] < PARTIAL_MIN_POINTS)
        where = (f"{short} of {len(c['series'])} series have fewer than {PARTIAL_MIN_POINTS} checkpoints, too few for the "
                 "control; in the others " if short else "")
        why = (f"epoch-controlled ({CONTROL}) partial Spearman undefined ({where}the predictor or Dice is a monotone "
               "function of epoch or nothing is left after the control)"
               if c["partial_spearman"] is None else
               f"epoch-controlled ({CONTROL}) partial Spearman defined in {c['n_clusters_partial']} cluster(s) only, too few "
               f"for an interval ({where}elsewhere the predictor or Dice is a monotone function of epoch or nothing is left "
               "after the control)")
        return "tracks_training_length_only", f"tracks training length only: {rho_text}, {test}; {why}."
    beyond = ci[1] < 0 if sign < 0 else ci[0] > 0
    partial = f"epoch-controlled ({CONTROL}) partial Spearman {c['partial_spearman']:+.2f} [{ci[0]:+.2f}, {ci[1]:+.2f}]"
    if not beyond:
        return "tracks_training_length_only", f"tracks training length only: {rho_text}, {test}; {partial} includes 0 or has the wrong sign."
    return "predicts", f"predicts Dice: {rho_text}, {test}; {partial} excludes 0."


def _beyond_epoch(c: dict[str, Any], verdict: str) -> bool | None:
    if verdict in ("direction_unknown", "insufficient_evidence"):
        return None
    ci = c["partial_spearman_ci"]
    if ci is None or c["partial_spearman"] is None:
        return False
    return bool(ci[1] < 0) if c["direction"] == LOWER else bool(ci[0] > 0)


def verdicts(corrs: dict[str, dict[str, Any]], names: list[str], clusters: dict[str, str], headline: str | None,
             min_effect: float) -> dict[str, dict[str, Any]]:
    ids = cluster_ids(names, clusters)
    raw_p = {}
    for name, c in corrs.items():
        if c["direction"] and c["n_series_evidence"] >= MIN_SERIES and c["n_clusters_evidence"] >= MIN_CLUSTERS:
            raw_p[name] = cluster_wilcoxon(c["_oriented"], ids, alternative="greater")
    adjusted = holm({n: p for n, p in raw_p.items() if n != headline and p is not None})
    out = {}
    for name, c in corrs.items():
        is_headline = name == headline
        p = raw_p.get(name) if is_headline else adjusted.get(name)
        verdict, sentence = _verdict(name, c, p, is_headline, min_effect)
        c = {k: v for k, v in c.items() if not k.startswith("_")}
        out[name] = {**c, "verdict": verdict, "verdict_text": sentence, "headline": is_headline, "p_value": raw_p.get(name),
                     "p_adjusted": None if is_headline else adjusted.get(name), "adds_beyond_epoch": _beyond_epoch(c, verdict)}
    return out


def analyse(df: pd.DataFrame, **kwargs) -> dict[str, Any]:
    """Correlations, verdicts, noise and the selection table for ``df`` (see :mod:`.pipeline`)."""
    from hf_transfer_seg.report.pipeline import run_analysis

    return run_analysis(df, **kwargs)


def headline_sentence(report: dict[str, Any]) -> str:
    """One honest sentence on the headline predictor's verdict and the noise (for summaries)."""
    name = report.get("headline")
    n = report.get("noise") or {}
    if n.get("known"):
        gap = n.get("best_vs_last_gap_mean")
        null = f" (95th percentile {n['gap_null_q95']:.4f})" if n.get("gap_null_q95") is not None else ""
        noise_text = (f"; seed SD of Dice {n['seed_sd']:.4f} ({n['num_seeds']} seeds), and the mean best-vs-last gap"
                      f"{f' ({gap:.4f})' if gap is not None else ''} {'exceeds' if n['gap_exceeds_noise'] else 'is within'} "
                      f"what seed noise alone gives that mean of maxima{null}")
    else:
        noise_text = f"; seed noise unknown ({n.get('reason', 'no seeds recorded')})"
    if not name:
        return f"The headline predictor {report.get('headline_requested')} is not in the table, so there is no headline verdict{noise_text}."
    p = report["predictors"][name]
    rho = f"mean Spearman {p['mean_spearman']:+.2f}" if p.get("mean_spearman") is not None else "no Spearman"
    where = f"{p['n_series_evidence']} series in {p.get('n_clusters_evidence', p['n_series_evidence'])} clusters"
    if p["verdict"] == "insufficient_evidence":
        return (f"Headline {name}: insufficient evidence ({where} with >= {MIN_POINTS} fine-tuned checkpoints; "
                f"{MIN_SERIES} series in {MIN_CLUSTERS} clusters needed), so this run cannot say whether it predicts Dice{noise_text}.")
    if p["verdict"] == "direction_unknown":
        return f"Headline {name} has no declared direction, so no verdict ({rho}){noise_text}."
    pv = p.get("p_value")
    stat = f"{rho}, p = {pv:.3g} over clusters" if pv is not None else rho
    if p["verdict"] == "predicts":
        ci = p.get("partial_spearman_ci") or [math.nan, math.nan]
        return (f"Headline {name} predicts Dice across {where} ({stat}; epoch-controlled ({CONTROL}) partial Spearman "
                f"{p['partial_spearman']:+.2f} [{ci[0]:+.2f}, {ci[1]:+.2f}] excludes 0), beyond a smooth trend in training length{noise_text}.")
    if p["verdict"] == "tracks_training_length_only":
        return (f"Headline {name} tracks training length only across {where} ({stat}; no epoch-controlled ({CONTROL}) "
                f"effect shown){noise_text}.")
    return f"Headline {name} does not predict Dice across {where} ({stat}){noise_text}."


ProgressFactory = Callable[..., Any]
