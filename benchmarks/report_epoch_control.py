"""Which epoch control keeps `report`'s "predicts" honest? A simulation over constructed tables.

Each table: 36 series in 6 clusters (pretraining runs), one row per checkpoint on a realistic grid. Dice
and a lower-is-better predictor are both *saturating* functions of epoch (exponential or logistic-in-log
saturation, random rates; the predictor's curve is shared by a run's series, Dice's differs per series)
plus noise:

- null: independent noise. The predictor carries nothing beyond training length, so "predicts" is a
  false claim; its rate should be at most the nominal 5 %.
- alternative: the predictor's noise is correlated (``--noise-corr``, oriented) with Dice's noise: real
  information beyond epoch. The rate of "predicts" is the power.

The verdict is the report's own (``analysis.correlations`` + ``analysis.verdicts``: Wilcoxon over clusters,
effect floor, cluster-bootstrap BCa interval of the partial); only the per-series partial changes between
candidates, all computed by ``stats.epoch_partial_columns``:

- old: ranks residualised on a line in the epoch rank (the first-order rank partial the report used);
- rank-quad / rank-cubic: polynomial of degree 2 / 3 in the epoch rank, within each series;
- log-quad / log-cubic: polynomial of degree 2 / 3 in log(1 + epoch).

The degree drops to leave 3 residual degrees of freedom, never below min(degree, 3) (else undefined:
the report now needs 7 checkpoints for a partial; with 6 the cubic candidates were a quadratic before).

    python benchmarks/report_epoch_control.py                     # 200 tables per scenario, 10-point grid
    python benchmarks/report_epoch_control.py --grid 1,10,50,100,200,300 --tables 100
    python benchmarks/report_epoch_control.py --write-table /tmp/sat.csv --seed 3   # one null table as CSV
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

from hf_transfer_seg.report.analysis import correlations, verdicts
from hf_transfer_seg.report.stats import epoch_partial_columns, spearman_columns
from hf_transfer_seg.selection import LOWER

GRID = (1, 5, 10, 20, 50, 100, 150, 200, 250, 300)
CANDIDATES = {"old (linear in epoch rank)": dict(degree=1, basis="rank"),
              "rank-quad (within-series quadratic in epoch rank)": dict(degree=2, basis="rank"),
              "rank-cubic (within-series cubic in epoch rank)": dict(degree=3, basis="rank"),
              "log-quad (within-series quadratic in log epoch)": dict(degree=2, basis="log"),
              "log-cubic (within-series cubic in log epoch)": dict(degree=3, basis="log")}
SCORE = "robustness:cosine_m0.5_L-1_flat"


def _curve(rng: np.random.Generator, epochs: np.ndarray) -> np.ndarray:
    """A saturating curve from ~0 to 1 along training: exponential or logistic in log epoch, random rate."""
    if rng.random() < 0.5:
        tau = np.exp(rng.uniform(np.log(3), np.log(80)))
        return 1 - np.exp(-epochs / tau)
    mid, width = rng.uniform(np.log(5), np.log(60)), rng.uniform(0.3, 1.0)
    return 1 / (1 + np.exp(-(np.log1p(epochs) - mid) / width))


def constructed_table(seed: int, *, grid=GRID, noise_corr: float = 0.0, runs: int = 6, per_run: int = 6) -> pd.DataFrame:
    """36 series (6 runs x 6) whose Dice rises and whose score falls, both saturating, plus noise; the score's
    noise is ``noise_corr``-correlated with minus Dice's noise (0 = nothing beyond training length)."""
    rng = np.random.default_rng(seed)
    epochs = np.asarray(grid, dtype=float)
    rows = []
    for r in range(runs):
        score_curve = _curve(rng, epochs)  # a run's robustness curve, shared by its series
        for s in range(per_run):
            dice_sd, score_sd = rng.uniform(0.004, 0.015), rng.uniform(0.01, 0.04)
            zd = rng.normal(size=len(epochs))
            zs = noise_corr * zd + np.sqrt(1 - noise_corr ** 2) * rng.normal(size=len(epochs))
            dice = 0.6 + rng.uniform(0.05, 0.2) * _curve(rng, epochs) + dice_sd * zd
            score = 0.9 - rng.uniform(0.2, 0.5) * score_curve * rng.uniform(0.8, 1.2) - score_sd * zs  # lower is better
            rows += [{"series": f"run{r}-s{s}", "model": f"m{r // 2}", "pretraining_scheme": f"sch{r % 2}", "dataset": f"d{s // 2}",
                      "frozen": bool(s % 2), "epoch": e, "dice": d, SCORE: v} for e, d, v in zip(grid, dice, score)]
    return pd.DataFrame(rows)


def verdict(df: pd.DataFrame, control: dict, *, n_boot: int, seed: int) -> tuple[str, float | None]:
    """The report's verdict on SCORE with the per-series partial computed by ``control``."""
    names, rho, part, n = [], [], [], []
    clusters = {}
    for name, g in df.groupby("series", sort=True):
        g = g.sort_values("epoch")
        x, y, e = g[[SCORE]].to_numpy(float), g["dice"].to_numpy(float), g["epoch"].to_numpy(float)
        names.append(name)
        rho.append(spearman_columns(x, y)[0])
        part.append(epoch_partial_columns(x, y, e, **control)[0])
        n.append(len(g))
        clusters[name] = f"{g['model'].iloc[0]} / {g['pretraining_scheme'].iloc[0]}"
    per = {"spearman": np.asarray(rho)[:, None], "kendall": np.full((len(names), 1), np.nan),
           "partial_spearman": np.asarray(part)[:, None], "n": np.asarray(n)[:, None]}
    corrs = correlations(names, per, [SCORE], {SCORE: LOWER}, clusters, n_boot=n_boot, seed=seed)
    out = verdicts(corrs, names, clusters, SCORE, 0.3)[SCORE]
    return out["verdict"], out["partial_spearman"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tables", type=int, default=200)
    ap.add_argument("--grid", default=",".join(map(str, GRID)))
    ap.add_argument("--noise-corr", type=float, default=0.5)
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--write-table", type=Path, help="write one null table (--seed) as CSV and stop")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    grid = tuple(int(v) for v in args.grid.split(","))
    if args.write_table:
        constructed_table(args.seed, grid=grid).to_csv(args.write_table, index=False)
        print(f"wrote {args.write_table}")
        return
    t0 = time.perf_counter()
    print(f"{args.tables} tables per scenario, 36 series in 6 clusters, grid {grid}; alternative noise corr {args.noise_corr}; "
          f"'predicts' = the report's verdict (alpha 0.05, |rho| >= 0.3, BCa {args.n_boot} resamples)")
    for label, control in CANDIDATES.items():
        rates = {}
        for scenario, corr in (("null", 0.0), ("alt", args.noise_corr)):
            hits, partials = 0, []
            for t in range(args.tables):
                v, p = verdict(constructed_table(10_000 * (corr > 0) + t, grid=grid, noise_corr=corr), control, n_boot=args.n_boot, seed=t)
                hits += v == "predicts"
                if p is not None:
                    partials.append(p)
            rates[scenario] = (hits / args.tables, float(np.mean(partials)) if partials else float("nan"))
        (fp, pn), (pw, pa) = rates["null"], rates["alt"]
        print(f"{label:52s} false 'predicts' under null {fp:6.1%} (mean partial {pn:+.3f})   power under alternative {pw:6.1%} "
              f"(mean partial {pa:+.3f})")
    print(f"({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
