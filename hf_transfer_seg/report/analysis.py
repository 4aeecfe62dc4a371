"""Did a predictor predict Dice? Correlations per series, tests over clusters, verdicts that cannot be false.

Per predictor and series (one encoder/target/setting across its checkpoints): Spearman and Kendall
(tau-b) of Dice with the predictor (:mod:`.correlate`). Series are grouped into *clusters*, the
independent units: pretraining runs (:mod:`.clusters`). Two questions, two quantities, two tests:

- **Does it track Dice?** The mean per-series Spearman, oriented so that positive = the declared
  direction; one-sided Wilcoxon signed-rank test over cluster means.
- **Does it add anything beyond training length?** The partial correlation from a two-way fixed-effects
  model (series + dataset x epoch) on within-series ranks, tested by a wild cluster bootstrap over runs
  (:mod:`.beyond`), and checked by a placebo self-check on the same table.

Verdicts (``VERDICTS``), each stated only when the numbers show it:

- ``predicts``: the epoch-controlled effect is significant (one-sided WCR p < alpha) and at least the
  declared floor (``min_effect``) in the declared direction, and placebo columns with nothing beyond
  training length are called "predicts" at most 5 % of the time on this table.
- ``tracks_training_length_only``: the raw Spearman is significant and at least the floor, the
  epoch-controlled effect is not shown.
- ``does_not_predict``: an equivalence test shows both quantities below the floor: one-sided signed-rank
  tests over clusters of (floor - cluster value) for the raw Spearman and the epoch-controlled effect, both
  significant (intersection-union: p = the larger). Absence of evidence is never this verdict.
- ``not_shown``: none of the above; the text gives the smallest p attainable with this many clusters
  and this correction, and "k of K runs in the declared direction".
- ``insufficient_evidence``: fewer than ``MIN_SERIES`` series with ``MIN_POINTS`` checkpoints in
  ``MIN_CLUSTERS`` clusters; ``direction_unknown``: no declared direction.

The headline predictor (declared in advance) is tested alone at ``ALPHA``; every other one is exploratory,
Holm-corrected (as statsmodels computes it) over the exploratory predictors, for each of the three tests.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from hf_transfer_seg.cards import schema
from hf_transfer_seg.report import beyond
from hf_transfer_seg.report.clusters import Clusters
from hf_transfer_seg.report.correlate import per_series
from hf_transfer_seg.report.stats import (  # noqa: F401 (partial_spearman re-exported)
    cluster_ids, cluster_mean_ci, cluster_means, holm, partial_spearman, signed_rank_p,
)
from hf_transfer_seg.selection import HIGHER, LOWER

MIN_POINTS = 4  # checkpoints per series for a series to count as evidence (Spearman over 3 points is noise)
MIN_SERIES = 5  # series needed before any verdict
MIN_CLUSTERS = beyond.MIN_CLUSTERS  # independent units needed; a one-sided Wilcoxon over 5 clusters can reach p = 1/32
MIN_EFFECT = 0.3  # declared floor: |mean Spearman| for "tracks", |epoch-controlled effect| for "predicts"
ALPHA = 0.05
HEADLINE = f"robustness:{schema.HEADLINE}"  # the tool's headline configuration, declared in advance
VERDICTS = ("predicts", "tracks_training_length_only", "does_not_predict", "not_shown", "insufficient_evidence", "direction_unknown")


def _none(v) -> float | None:
    return None if v is None or not np.isfinite(v) else float(v)


def correlations(names: list[str], per: dict[str, np.ndarray], predictors: list[str], directions: dict[str, str | None],
                 clusters: dict[str, str], *, n_boot: int, seed: int) -> dict[str, dict[str, Any]]:
    """Per predictor: means over series, cluster-bootstrap intervals and per-series detail."""
    ids = cluster_ids(names, clusters)
    rho, tau, partial, n = per["spearman"], per["kendall"], per["partial_spearman"], per["n"]
    # no interval from fewer than MIN_CLUSTERS clusters (a bootstrap over 2-4 clusters cannot leave their range)
    rho_ci = cluster_mean_ci(rho.T, ids, n_boot=n_boot, seed=seed, min_clusters=MIN_CLUSTERS) if len(names) else [None] * len(predictors)
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
            "fraction_expected_sign": float(np.mean(np.sign(r[ok]) == sign)) if ok.any() and sign else None,
            "n_series": int(ok.sum()),
            "n_series_evidence": int(evidence.sum()),
            "n_clusters_evidence": int(len(set(ids[evidence]))),
            "series": series,
            "_oriented": oriented,
        }
    return out


def seeds_text(counts: pd.Series) -> str:
    """'5 seeds', or '4–5 seeds, 5 at 303 of 324 checkpoints' when checkpoints differ."""
    lo, hi = int(counts.min()), int(counts.max())
    if lo == hi:
        return f"{lo} seeds"
    mode = int(counts.mode().iloc[0])
    return f"{lo}–{hi} seeds, {mode} at {int((counts == mode).sum())} of {len(counts)} checkpoints"


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
    counts = k[ok].astype(int)
    seeds = int(counts.min())
    mode = int(counts.mode().iloc[0])
    se_diff = seed_sd * math.sqrt(2.0 / mode)  # SE of a difference between two checkpoints' seed means (typical checkpoint)
    gaps, lengths = [], []
    for _, g in df[df["dice"].notna()].sort_values("epoch").groupby("series"):
        if len(g) >= 2:
            gaps.append(float(g["dice"].max() - g["dice"].iloc[-1]))
            lengths.append(len(g))
    gap = float(np.mean(gaps)) if gaps else None
    # what the mean gap would be from seed noise alone (flat curves): E[max of n seed means] - E[last], by simulation
    rng = np.random.default_rng(0)
    expected = {n: float(np.mean((lambda z: z.max(axis=1) - z[:, -1])(rng.normal(size=(4000, n))))) for n in sorted(set(lengths))}
    null_gap = float(np.mean([expected[n] for n in lengths])) * seed_sd / math.sqrt(mode) if lengths else None
    return {
        "known": True, "seed_sd": seed_sd, "num_seeds": seeds, "num_seeds_max": int(counts.max()), "num_seeds_mode": mode,
        "num_seeds_text": seeds_text(counts), "checkpoints_with_seeds": int(ok.sum()),
        "se_of_difference": se_diff, "best_vs_last_gap_mean": gap,
        "gap_from_noise_alone": null_gap, "gap_exceeds_noise": bool(gap is not None and null_gap is not None and gap > null_gap),
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


def _oriented_cluster_means(c: dict[str, Any], ids: np.ndarray) -> np.ndarray:
    return cluster_means(c["_oriented"], ids)


def smallest_p(k: int, m: int = 1) -> float:
    """Smallest one-sided p an exact signed-rank test over ``k`` clusters can give, times ``m`` (Holm's first step)."""
    return min(1.0, m / 2.0 ** k) if k else 1.0


def _tests(corrs: dict[str, dict[str, Any]], names: list[str], clusters: dict[str, str], fe: dict[str, dict], min_effect: float):
    """Per predictor with evidence: raw p (tracks), WCR p (beyond), equivalence p (both below the floor), and the
    cluster values behind them."""
    ids = cluster_ids(names, clusters)
    out = {}
    for name, c in corrs.items():
        if not (c["direction"] and c["n_series_evidence"] >= MIN_SERIES and c["n_clusters_evidence"] >= MIN_CLUSTERS):
            continue
        sign = -1.0 if c["direction"] == LOWER else 1.0
        raw = _oriented_cluster_means(c, ids)
        f = fe.get(name) or {}
        per = sign * np.asarray(f.get("per_cluster", []), dtype=float)
        per = per[np.isfinite(per)]
        p_beyond = f.get("p")
        p_beyond = None if p_beyond is None or not np.isfinite(p_beyond) or len(per) < MIN_CLUSTERS else float(p_beyond)
        eq_raw = float(signed_rank_p((min_effect - raw)[None, :], alternative="greater")[0])
        eq_beyond = float(signed_rank_p((min_effect - per)[None, :], alternative="greater")[0]) if len(per) >= MIN_CLUSTERS else 1.0
        out[name] = {"p_raw": float(signed_rank_p(raw[None, :], alternative="greater")[0]), "p_beyond": p_beyond,
                     "p_equivalence": max(eq_raw, eq_beyond), "raw_clusters": raw, "beyond_clusters": per,
                     "effect": None if f.get("effect") is None or not np.isfinite(f["effect"]) else float(f["effect"])}
    return out


def _verdict(name: str, c: dict[str, Any], t: dict[str, Any] | None, p: dict[str, float | None], headline: bool, min_effect: float,
             n_exploratory: int, placebo: dict | None, fe_entry: dict | None = None) -> tuple[str, str]:
    rho = c["mean_spearman"]
    rho_text = f"mean Spearman {rho:+.2f}" if rho is not None else "no Spearman (too few checkpoints)"
    if c["direction"] is None:
        return "direction_unknown", f"direction not declared: {rho_text}, no verdict (pass --lower-is-better or --higher-is-better {name})."
    if t is None:
        return "insufficient_evidence", (
            f"insufficient evidence: {c['n_series_evidence']} series with >= {MIN_POINTS} checkpoints in "
            f"{c['n_clusters_evidence']} clusters, where a verdict needs at least {MIN_SERIES} series in at least {MIN_CLUSTERS} "
            f"clusters: {rho_text}, no verdict.")
    sign = -1 if c["direction"] == LOWER else 1
    k_raw, k_all = int((t["raw_clusters"] > 0).sum()), len(t["raw_clusters"])
    which = "p" if headline else "Holm-adjusted p"
    raw_text = f"{rho_text}, {k_raw} of {k_all} runs in the declared direction, one-sided Wilcoxon {which} = {p['raw']:.3g}"
    eff = t["effect"]
    k_b = int((t["beyond_clusters"] > 0).sum())
    if (fe_entry or {}).get("too_large"):
        beyond_text = (f"no epoch-controlled test: the table is too large for its dataset x epoch effects (rows x cells above "
                       f"{beyond.MAX_DENSE:.0e}); report a subset of series or fewer checkpoints for it")
    elif eff is None or p["beyond"] is None:
        beyond_text = (f"no epoch-controlled effect (within every series its ranks follow the common epoch trend, or fewer than {MIN_CLUSTERS} "
                       "runs have one)")
    else:
        beyond_text = (f"epoch-controlled effect (fixed-effects partial r) {eff:+.2f}, {k_b} of {len(t['beyond_clusters'])} runs in the declared "
                       f"direction, wild cluster bootstrap {which} = {p['beyond']:.3g}")
    shown_beyond = p["beyond"] is not None and p["beyond"] < ALPHA and eff is not None and sign * eff >= min_effect
    calibrated = placebo is not None and placebo["rate"] <= beyond.PLACEBO_MAX
    placebo_text = (f"placebo columns with nothing beyond training length are called \"predicts\" in {placebo['rate']:.1%} of "
                    f"{placebo['n']} on this table" if placebo else "")
    if shown_beyond and calibrated:
        return "predicts", f"predicts Dice beyond training length: {beyond_text}; {placebo_text}; {raw_text}."
    shown_raw = p["raw"] < ALPHA and rho is not None and sign * rho >= min_effect
    veto = f" (the epoch-controlled test passed, but {placebo_text}, above {beyond.PLACEBO_MAX:.0%}: not calibrated here)" if shown_beyond else ""
    if shown_raw:
        return "tracks_training_length_only", f"tracks training length only: {raw_text}; {beyond_text}{veto}."
    if p["raw"] < ALPHA:
        raw_text += f" (significant, but below the declared minimum effect |rho| >= {min_effect:g} in the declared direction)"
    if p["beyond"] is not None and p["beyond"] < ALPHA and not shown_beyond:
        beyond_text += f" (significant, but below the declared minimum effect |r| >= {min_effect:g} in the declared direction)"
    if p["equivalence"] < ALPHA:
        return "does_not_predict", (f"does not predict Dice: an equivalence test over {k_all} runs excludes effects of "
                                    f"{min_effect:g} or more in the declared direction, for the raw Spearman and the epoch-controlled effect "
                                    f"({which} = {p['equivalence']:.3g}); {raw_text}; {beyond_text}.")
    m = 1 if headline else max(n_exploratory, 1)
    least = smallest_p(k_all, m)
    attain = (f"the smallest signed-rank p attainable with {k_all} clusters{'' if headline else f' and Holm over {m} exploratory predictors'} "
              f"is {least:.3g}{', above ' + format(ALPHA, 'g') + ': this table cannot show tracking or equivalence' if least >= ALPHA else ''}")
    return "not_shown", (f"not shown either way: {raw_text}; {beyond_text}{veto}; no test reached {ALPHA:g} ({attain}), "
                         f"and equivalence to below {min_effect:g} is not shown either ({which} = {p['equivalence']:.3g}).")


def verdicts(corrs: dict[str, dict[str, Any]], names: list[str], clusters: dict[str, str], headline: str | None,
             min_effect: float, fe: dict[str, dict] | None = None, *, seed: int = 0, placebo_for=()) -> dict[str, dict[str, Any]]:
    fe = fe or {}
    tests = _tests(corrs, names, clusters, fe, min_effect)
    explore = [n for n in tests if n != headline]
    adj = {key: holm({n: tests[n][f"p_{key}"] for n in explore if tests[n][f"p_{key}"] is not None})
           for key in ("raw", "beyond", "equivalence")}
    out = {}
    for name, c in corrs.items():
        is_headline = name == headline
        t = tests.get(name)
        p = {key: (t[f"p_{key}"] if is_headline else adj[key].get(name)) if t else None for key in ("raw", "beyond", "equivalence")}
        sign = -1 if c["direction"] == LOWER else 1
        placebo = None
        f = fe.get(name)
        candidate = t is not None and p["beyond"] is not None and p["beyond"] < ALPHA and t["effect"] is not None \
            and sign * t["effect"] >= min_effect
        if f is not None and t is not None and t["effect"] is not None and (candidate or name in placebo_for or is_headline):
            placebo = beyond.placebo_rate(f["_design"], f["_y"], f["_x"], f["_epochs"], float(sign), alpha=ALPHA, floor=min_effect, seed=seed)
        verdict, sentence = _verdict(name, c, t, p, is_headline, min_effect, len(explore), placebo, f)
        c = {k: v for k, v in c.items() if not k.startswith("_")}
        eff = t["effect"] if t else (None if f is None or not np.isfinite(f["effect"]) else float(f["effect"]))
        out[name] = {**c, "verdict": verdict, "verdict_text": sentence, "headline": is_headline,
                     "p_value": t["p_raw"] if t else None, "p_adjusted": None if is_headline else p["raw"],
                     "partial_spearman": eff,
                     "beyond_epoch": None if t is None else {
                         "effect": t["effect"], "p_value": t["p_beyond"], "p_adjusted": None if is_headline else p["beyond"],
                         "runs_in_direction": int((t["beyond_clusters"] > 0).sum()), "n_runs": int(len(t["beyond_clusters"])),
                         "equivalence_p": t["p_equivalence"], "equivalence_p_adjusted": None if is_headline else p["equivalence"],
                         "placebo": placebo},
                     "runs_in_direction": None if t is None else int((t["raw_clusters"] > 0).sum()),
                     "n_runs": None if t is None else int(len(t["raw_clusters"])),
                     "adds_beyond_epoch": None if verdict in ("direction_unknown", "insufficient_evidence") else verdict == "predicts"}
    return out


def assess(scored: pd.DataFrame, predictors: list[str], directions: dict[str, str | None], clusters: Clusters, *,
           headline: str | None, min_effect: float, n_boot: int, seed: int, progress=None, placebo_for=()) -> tuple[dict, dict]:
    """Correlations, the epoch-controlled test and the verdicts of every predictor; and the epoch baseline."""
    names, per = per_series(scored, predictors + ["epoch"], progress=progress)
    mapping = clusters.mapping
    corrs = correlations(names, per, predictors + ["epoch"], {**directions, "epoch": HIGHER}, mapping, n_boot=n_boot, seed=seed)
    base = corrs.pop("epoch")
    prepared, _ = beyond.prepare(scored, mapping)
    signs = {n: (-1 if d == LOWER else 1) for n, d in directions.items() if d is not None}
    fe = beyond.test_predictors(prepared, predictors, signs, seed=seed)
    out = verdicts(corrs, names, mapping, headline, min_effect, fe, seed=seed, placebo_for=placebo_for)
    return out, {"mean_spearman": base["mean_spearman"], "mean_spearman_ci": base["mean_spearman_ci"], "n_series": base["n_series"]}


def headline_sentence(report: dict[str, Any]) -> str:
    """One honest sentence on the headline predictor's verdict, the unit and the noise (for summaries)."""
    name = report.get("headline")
    n = report.get("noise") or {}
    unit = report.get("cluster_text") or ""
    unit = f" Unit: {report.get('n_clusters')} clusters, {unit}." if unit else ""
    if n.get("known"):
        gap = n.get("best_vs_last_gap_mean")
        null = n.get("gap_null_q95")
        noise_text = (f" Seed SD of Dice {n['seed_sd']:.4f} ({n.get('num_seeds_text') or str(n['num_seeds']) + ' seeds'}); the mean "
                      f"best-vs-last gap{f' ({gap:.4f})' if gap is not None else ''} "
                      f"{'exceeds' if n['gap_exceeds_noise'] else 'is within'} what seed noise alone gives that mean of maxima"
                      f"{f' (95th percentile {null:.4f})' if null is not None else ''}.")
    else:
        noise_text = f" Seed noise unknown ({n.get('reason', 'no seeds recorded')})."
    if not name:
        return f"The headline predictor {report.get('headline_requested')} is not in the table, so there is no headline verdict.{unit}{noise_text}"
    p = report["predictors"][name]
    return f"Headline {name}: {p['verdict_text']}{unit}{noise_text}"
