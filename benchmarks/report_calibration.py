"""Is `report`'s "predicts" calibrated, and does it have power? Acceptance by simulation (issue 23).

Tables with the authors' structure (Hidy et al., arXiv 2410.18677): 6 pretraining runs (3 models x 2
schemes), each fine-tuned on 3 datasets frozen and unfrozen (36 series), 9 checkpoints at epochs
1..300, and no run column (the report must find the runs from top-1, identical across a run's series).
Top-1 follows each run's saturating curve; Dice follows each series' own saturating curve (random rate and
shape, exponential or logistic in log epoch), plus a run x epoch component shared by a run's series (the
checkpoint itself) and the mean of 5 seeds' noise per checkpoint. A column ``x`` is added:

- ``run sd S``: top-1's run curve + run-level noise (one draw per run and epoch) with SD S: nothing beyond
  training length (the run's own curve). Declared higher-is-better. False "predicts" is an error.
- ``series``: top-1's run curve + noise per series and epoch (SD 0.02). Higher-is-better. Null.
- ``-log epoch``: -log(epoch) + noise per series and epoch (SD 0.3). Lower-is-better. Null.
- ``power``: lower-is-better: minus the run curve, minus Dice's within-series deviation from its curve (its
  checkpoint and seed noise), plus noise (SD 0.008); the mean epoch-controlled partial is printed (issue: <= -0.5).
  "predicts" is the right answer; its rate is the power. ``power, weaker``: the same with noise SD 0.016.

Each table runs the report's own verdict code (``analysis.assess`` with ``x`` as the headline, clusters from
``clusters.resolve`` without a run column). Printed per scenario: the rate of "predicts" with its Monte
Carlo SE, the rate the epoch-controlled test alone would give (p < 0.05 and effect >= 0.3, before the
placebo self-check), the rate of p < 0.05 alone (the wild bootstrap's size, without the floor), the mean effect, the mean per-series partial Spearman of the former control (ranks
residualised on a within-series cubic in log epoch, for comparison with issue 23's "partial <= -0.5"), the
mean placebo rate, and the clusters found.

    python benchmarks/report_calibration.py                 # 100 tables per scenario (~3 min on one core)
    python benchmarks/report_calibration.py --tables 40     # quicker
    HF_TRANSFER_SEG_AUTHORS_TABLE=/tmp/authors-long.csv python benchmarks/report_calibration.py --authors
        # also: the verdicts on the authors' long table (docs/authors-table.md), skipped when absent
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import pandas as pd

from hf_transfer_seg.report.analysis import MIN_EFFECT, assess
from hf_transfer_seg.report.clusters import resolve
from hf_transfer_seg.selection import HIGHER, LOWER

EPOCHS = np.array([1, 2, 5, 10, 20, 50, 100, 200, 300], dtype=float)
SCENARIOS = [("run sd 0.01", "run", 0.01), ("run sd 0.02", "run", 0.02), ("run sd 0.05", "run", 0.05),
             ("run sd 0.1", "run", 0.1), ("series sd 0.02", "series", 0.02), ("-log epoch", "minuslog", 0.3),
             ("power", "power", 0.008), ("power, weaker", "power", 0.016)]


def curve(rng: np.random.Generator, epochs: np.ndarray = EPOCHS) -> np.ndarray:
    """A saturating curve from ~0 to 1: exponential or logistic in log epoch, random rate."""
    if rng.random() < 0.5:
        tau = np.exp(rng.uniform(np.log(3), np.log(80)))
        return 1 - np.exp(-epochs / tau)
    mid, width = rng.uniform(np.log(5), np.log(60)), rng.uniform(0.3, 1.0)
    return 1 / (1 + np.exp(-(np.log1p(epochs) - mid) / width))


def authors_structure(seed: int, columns, run_level: float = 0.02) -> pd.DataFrame:
    """36 series (3 models x 2 schemes x 3 datasets x frozen/unfrozen), 9 checkpoints, columns series, model, dataset,
    frozen, epoch, dice, top1 and whatever ``columns(rng, top1, dev, run_noise, m, sch)`` returns for a series (name ->
    array over the checkpoints; ``dev`` is Dice's deviation from the series' curve, ``run_noise`` a run-level draw with
    SD ``run_level``)."""
    rng = np.random.default_rng(seed)
    rows = []
    k = len(EPOCHS)
    for m in range(3):
        for sch in range(2):
            top1 = 0.76 * curve(rng) + rng.normal(0, 0.002, k)
            shared = rng.normal(0, 0.004, k)  # the checkpoint's own quality, seen by every series of the run
            run_noise = rng.normal(0, run_level, k)
            for d in range(3):
                for frozen in (False, True):
                    dev = shared + rng.normal(0, 0.015, (5, k)).mean(axis=0)  # + the mean of 5 seeds' noise
                    dice = 0.55 + 0.1 * d + rng.uniform(0.05, 0.15) * curve(rng) + dev
                    cols = columns(rng, top1, dev, run_noise, m, sch)
                    name = f"m{m} | s{sch} | d{d} | {'frozen' if frozen else 'unfrozen'}"
                    rows += [{"series": name, "model": f"m{m}", "dataset": f"d{d}", "frozen": frozen, "epoch": e, "dice": dice[i],
                              "top1": top1[i], **{c: v[i] for c, v in cols.items()}} for i, e in enumerate(EPOCHS)]
    return pd.DataFrame(rows)


def table(seed: int, family: str, level: float) -> tuple[pd.DataFrame, str]:
    """One constructed table with the predictor column ``x``; returns (table, direction of x)."""
    def x(rng, top1, dev, run_noise, m, sch):
        k = len(EPOCHS)
        if family == "run":
            return {"x": top1 + run_noise}
        if family == "series":
            return {"x": top1 + rng.normal(0, level, k)}
        if family == "minuslog":
            return {"x": -np.log(EPOCHS) + rng.normal(0, level, k)}
        return {"x": -0.1 * top1 - 1.5 * dev + rng.normal(0, level, k)}

    return authors_structure(seed, x, level if family == "run" else 0.0), LOWER if family in ("minuslog", "power") else HIGHER


def one(seed: int, family: str, level: float) -> dict:
    df, direction = table(seed, family, level)
    unit = resolve(df, None)
    preds, _ = assess(df, ["x"], {"x": direction}, unit, headline="x", min_effect=MIN_EFFECT, n_boot=0, seed=seed)
    p = preds["x"]
    b = p["beyond_epoch"] or {}
    sign = -1 if direction == LOWER else 1
    test_only = b.get("p_value") is not None and b["p_value"] < 0.05 and b["effect"] is not None and sign * b["effect"] >= MIN_EFFECT
    cubic = [v["partial_spearman"] for v in p["series"].values() if v["partial_spearman"] is not None]
    p_only = b.get("p_value") is not None and b["p_value"] < 0.05
    return {"predicts": p["verdict"] == "predicts", "test_only": test_only, "p_only": p_only, "effect": b.get("effect"), "n_clusters": unit.n,
            "cubic": float(np.mean(cubic)) if cubic else None,
            "placebo": (b.get("placebo") or {}).get("rate"), "verdict": p["verdict"]}


def mc(rate: float, n: int) -> float:
    return float(np.sqrt(rate * (1 - rate) / n))


def authors(path: str) -> None:
    from hf_transfer_seg.report.pipeline import run_analysis
    from hf_transfer_seg.report.table import load_csv

    df = load_csv(path)
    for headline in (None, "top1"):
        kw = {"headline": headline} if headline else {}
        t0 = time.perf_counter()
        rep = run_analysis(df, n_boot=200, **kw)
        counts: dict[str, int] = {}
        for p in rep["predictors"].values():
            counts[p["verdict"]] = counts.get(p["verdict"], 0) + 1
        print(f"authors' table, headline {rep['headline_requested']}: {rep['n_clusters']} clusters ({rep['cluster_text']}); "
              f"verdicts {counts}; {time.perf_counter() - t0:.1f} s")
        for name, p in rep["predictors"].items():
            b = p.get("beyond_epoch") or {}
            pl = (b.get("placebo") or {}).get("rate")
            print(f"  {name}: {p['verdict']}; rho {p['mean_spearman']}, effect {b.get('effect')}, placebo {pl}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tables", type=int, default=100)
    ap.add_argument("--only", default=None, help="comma list of scenario labels to run (default: all)")
    ap.add_argument("--authors", action="store_true", help="also run the authors' table from $HF_TRANSFER_SEG_AUTHORS_TABLE")
    args = ap.parse_args()
    print(f"{args.tables} tables per scenario; 36 series, 6 runs (inferred from top1), 9 checkpoints; floor {MIN_EFFECT}")
    print(f"{'scenario':<16} {'predicts':>16} {'test alone':>16} {'p < 0.05':>16} {'mean effect':>12} {'cubic partial':>14} {'placebo rate':>13} "
          f"{'clusters':>9} {'s':>6}")
    only = set(args.only.split(",")) if args.only else None
    for label, family, level in SCENARIOS:
        if only and label not in only:
            continue
        t0 = time.perf_counter()
        res = [one(1000 * i + 17, family, level) for i in range(args.tables)]
        rate = float(np.mean([r["predicts"] for r in res]))
        alone = float(np.mean([r["test_only"] for r in res]))
        p_only = float(np.mean([r["p_only"] for r in res]))
        eff = np.nanmean([np.nan if r["effect"] is None else r["effect"] for r in res])
        pl = np.nanmean([np.nan if r["placebo"] is None else r["placebo"] for r in res])
        cubic = np.nanmean([np.nan if r["cubic"] is None else r["cubic"] for r in res])
        ncl = sorted({r["n_clusters"] for r in res})
        print(f"{label:<16} {rate:>8.1%} ± {mc(rate, len(res)):.1%} {alone:>8.1%} ± {mc(alone, len(res)):.1%} {p_only:>8.1%} ± {mc(p_only, len(res)):.1%} {eff:>+12.3f} "
              f"{cubic:>+14.3f} {pl:>13.1%} {','.join(map(str, ncl)):>9} {time.perf_counter() - t0:>6.1f}", flush=True)
    if args.authors:
        path = os.environ.get("HF_TRANSFER_SEG_AUTHORS_TABLE")
        if not path or not os.path.isfile(path):
            print("authors' table: skipped (set HF_TRANSFER_SEG_AUTHORS_TABLE to the long table of docs/authors-table.md)")
        else:
            authors(path)


if __name__ == "__main__":
    main()
