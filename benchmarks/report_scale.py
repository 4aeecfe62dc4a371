"""`report` on big and small tables: this tree against a baseline commit, measured in the same run.

Constructed tables (written to a temporary folder):

- wide: 8 series x 10 checkpoints x ``--predictors`` declared predictor columns (issue 24 item 7: 5,000);
- long: ``--series`` series x ``--checkpoints`` checkpoints (10^6 rows: 1,000 x 1,000) with a robustness
  score and top-1;
- small (issue 25 item 6): the authors' structure, 36 series (6 pretraining runs x 3 datasets x frozen or
  not) x 9 checkpoints x 5 seeds, a robustness score and top-1: CPU seconds of the whole ``report`` process
  (``resource.getrusage(RUSAGE_CHILDREN)``: user + system, imports included), with plots and with
  ``--no-plots``, the least of ``--repeats`` runs (the host is shared; the least is the least disturbed).

Each is reported by this tree and by the baseline commit's ``hf_transfer_seg`` (extracted with
``git archive`` into the temporary folder; default: the ``main`` branch), each in its own process with
``--timeout`` seconds; the script prints wall time, CPU seconds, peak memory and the ratio baseline / this
tree (a baseline that hit the timeout prints ">= timeout" and the ratio as a lower bound).

Cost of the big cases (this tree): loading and correlations are linear in rows x predictors (series of the same
epochs are correlated as one array; Kendall of a series longer than 60 checkpoints is scipy's O(n log n) per
column; cluster sums are one bincount; the run inference and the "constant within every run" check read each
column once); selection rules run for at most 50 predictors (``--max-rule-predictors``), each a pass over every
checkpoint; intervals are one vectorised bootstrap per quantity; ``table.csv`` (a copy of the input) is not written above 200,000 rows.
Progress bars (tqdm) show on a terminal.

    python benchmarks/report_scale.py                       # full sizes, baseline main
    python benchmarks/report_scale.py --predictors 500 --series 100 --timeout 120 --cases small,wide
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
EPOCHS = [0, 1, 5, 20, 50, 100, 150, 200, 250, 300]
WRAP = ("import resource, subprocess, sys; import hf_transfer_seg as h; "
        "rc = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode; "
        "u = resource.getrusage(resource.RUSAGE_CHILDREN); "
        "print(u.ru_maxrss, rc, h.__file__, u.ru_utime + u.ru_stime)")


def wide_table(path: Path, predictors: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    n = 8 * len(EPOCHS)
    cols = {"series": np.repeat([f"s{i}" for i in range(8)], len(EPOCHS)), "epoch": np.tile(EPOCHS, 8), "dice": rng.uniform(0.5, 0.9, n)}
    cols.update({f"p{j}": rng.normal(size=n) for j in range(predictors)})
    pd.DataFrame(cols).to_csv(path, index=False)
    return ["--lower-is-better", ",".join(f"p{j}" for j in range(predictors))]


def long_table(path: Path, series: int, checkpoints: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    n = series * checkpoints
    pd.DataFrame({"series": np.repeat([f"s{i}" for i in range(series)], checkpoints), "epoch": np.tile(np.arange(checkpoints), series),
                  "dice": rng.uniform(0.5, 0.9, n), "robustness:x": rng.normal(size=n), "top1": rng.uniform(0, 80, n)}).to_csv(path, index=False)
    return []


def small_table(path: Path, seed: int = 0) -> list[str]:
    """The authors' structure: 6 runs (top-1 shared by a run's 6 series, the score by a frozen/unfrozen pair)."""
    rng = np.random.default_rng(seed)
    epochs = [1, 5, 20, 50, 100, 150, 200, 250, 300]
    t = np.log1p(epochs) / np.log1p(300)
    rows = []
    for run in range(6):
        top1 = 0.8 * t + rng.normal(0, 0.01, len(epochs))
        for dataset in range(3):
            score = -t + rng.normal(0, 0.05, len(epochs))
            for frozen in (False, True):
                base = 60 + 20 * dataset + 5 * t + rng.normal(0, 0.5, len(epochs))
                for i, e in enumerate(epochs):
                    for s in range(5):
                        rows.append({"series": f"r{run}-d{dataset}-{int(frozen)}", "model": f"m{run // 2}", "pretraining_scheme": f"s{run % 2}",
                                     "dataset": f"d{dataset}", "frozen": frozen, "epoch": e, "seed": s,
                                     "dice": base[i] + rng.normal(0, 0.4), "top1": top1[i], "robustness:cosine_m0.5_L-1_flat": score[i]})
    pd.DataFrame(rows).to_csv(path, index=False)
    return []


def run(pythonpath: Path, table: Path, out: Path, extra: list[str], timeout: float) -> tuple[float, float | None, bool, float | None]:
    """(seconds, peak MiB, finished, CPU seconds) of one report in a fresh process."""
    cmd = [sys.executable, "-c", WRAP, "timeout", str(int(timeout)), sys.executable, "-m", "hf_transfer_seg", "report",
           "--table", str(table), "--output", str(out), "--bootstrap", "200", *extra]
    start = time.perf_counter()
    # cwd: a folder without a package (``python -m`` puts the cwd before PYTHONPATH on sys.path)
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=out.parent,
                          env={"PYTHONPATH": str(pythonpath), "PATH": "/usr/bin:/bin"})
    seconds = time.perf_counter() - start
    try:
        rss, rc, package, cpu = done.stdout.split()
        assert package.startswith(str(pythonpath)), f"imported {package}, not the tree under test {pythonpath}"
        return seconds, int(rss) / 1024, int(rc) == 0, float(cpu)
    except ValueError:
        return seconds, None, False, None


def cpu_case(baseline: Path | None, tmp: Path, ref: str, repeats: int, timeout: float) -> None:
    """CPU seconds of `report` on the 36-series table: this tree with and without plots, and the baseline."""
    table = tmp / "small.csv"
    small_table(table)
    runs = [("this tree", ROOT, []), ("this tree --no-plots", ROOT, ["--no-plots"])]
    if baseline is not None:
        runs.append((f"baseline {ref}", baseline, []))
    best = {}
    for i in range(repeats):  # interleaved, so a burst of load hits every variant alike
        for name, tree, extra in runs:
            _, _, ok, cpu = run(tree, table, tmp / f"small-{i}-{len(best)}", extra, timeout)
            if ok and cpu is not None:
                best[name] = min(best.get(name, float("inf")), cpu)
    base = best.get(f"baseline {ref}")
    print(f"small  36 series x 9 checkpoints x 5 seeds (authors' structure), CPU seconds, least of {repeats}:")
    for name, _, _ in runs:
        cpu = best.get(name)
        ratio = f"  ratio baseline / this {base / cpu:.2f}x" if base and cpu and not name.startswith("baseline") else ""
        print(f"  {name:<28} {cpu if cpu is not None else float('nan'):6.2f} CPU-s{ratio}", flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline-ref", default="main", help="git commit (or branch) whose report is the baseline")
    ap.add_argument("--cases", default="small,wide,long", help="comma list of small, wide, long")
    ap.add_argument("--repeats", type=int, default=3, help="runs per variant of the small case (the least CPU time counts)")
    ap.add_argument("--predictors", type=int, default=5000)
    ap.add_argument("--series", type=int, default=1000)
    ap.add_argument("--checkpoints", type=int, default=1000)
    ap.add_argument("--timeout", type=float, default=300, help="seconds per report (the baseline may need more)")
    ap.add_argument("--skip-baseline", action="store_true")
    args = ap.parse_args(argv)
    cases = {c.strip() for c in args.cases.split(",")}
    args.baseline_ref = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", args.baseline_ref], check=True,
                                       capture_output=True, text=True).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="report-scale-") as tmp:
        tmp = Path(tmp)
        baseline = tmp / "baseline"
        if not args.skip_baseline:
            baseline.mkdir()
            archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.baseline_ref, "hf_transfer_seg"], check=True, capture_output=True).stdout
            subprocess.run(["tar", "-x", "-C", str(baseline)], input=archive, check=True)
        if "small" in cases:
            cpu_case(None if args.skip_baseline else baseline, tmp, args.baseline_ref, args.repeats, args.timeout)
        big = [("wide", f"8 series x 10 checkpoints x {args.predictors} predictors", wide_table, (args.predictors,)),
               ("long", f"{args.series} series x {args.checkpoints} checkpoints = {args.series * args.checkpoints:,} rows", long_table,
                (args.series, args.checkpoints))]
        big = [c for c in big if c[0] in cases]
        if big:
            print(f"{'case':<6} {'table':<46} {'this tree':>12} {'CPU-s':>7} {'peak MiB':>9} {'baseline ' + args.baseline_ref:>18} "
                  f"{'CPU-s':>7} {'peak MiB':>9} {'ratio':>9}")
        for name, text, make, params in big:
            table = tmp / f"{name}.csv"
            extra = make(table, *params)
            new_s, new_mb, new_ok, new_cpu = run(ROOT, table, tmp / f"{name}-new", extra, args.timeout)
            line = f"{name:<6} {text:<46} {new_s:>10.1f}s{'' if new_ok else '!'} {new_cpu or 0:>7.1f} {new_mb or 0:>9.0f}"
            if not args.skip_baseline:
                old_s, old_mb, old_ok, old_cpu = run(baseline, table, tmp / f"{name}-old", extra, args.timeout)
                old = f"{old_s:.1f}s" if old_ok else f">= {args.timeout:.0f}s"
                ratio = old_cpu / new_cpu if old_ok and old_cpu and new_cpu else old_s / new_s  # CPU: the host is shared
                line += f" {old:>18} {old_cpu or 0:>7.1f} {old_mb or 0:>9.0f} {('' if old_ok else '>= ') + f'{ratio:.1f}x':>9}"
            print(line, flush=True)
        if big:
            print("('!': this tree did not finish within the timeout; ratio = baseline CPU seconds / this tree's CPU seconds, "
                  "wall seconds where the baseline timed out)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
