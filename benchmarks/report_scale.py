"""`report` on big tables: this tree against a baseline commit, measured in the same run.

Two constructed tables (pure noise, written to a temporary folder):

- wide: 8 series x 10 checkpoints x ``--predictors`` declared predictor columns (issue 19 item 10: 5,000);
- long: ``--series`` series x ``--checkpoints`` checkpoints (10^6 rows: 1,000 x 1,000) with a robustness
  score and top-1.

Each is reported by this tree and by the baseline commit's ``hf_transfer_seg`` (extracted with
``git archive`` into the temporary folder), each in its own process with ``--timeout`` seconds; the script
prints wall time, peak memory and the ratio baseline / this tree (a baseline that hit the timeout prints
">= timeout" and the ratio as a lower bound).

    python benchmarks/report_scale.py                       # full sizes, baseline ed89aae
    python benchmarks/report_scale.py --predictors 500 --series 100 --timeout 120
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
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, rc, h.__file__)")


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


def run(pythonpath: Path, table: Path, out: Path, extra: list[str], timeout: float) -> tuple[float, float | None, bool]:
    """(seconds, peak MiB, finished) of one report in a fresh process."""
    cmd = [sys.executable, "-c", WRAP, "timeout", str(int(timeout)), sys.executable, "-m", "hf_transfer_seg", "report",
           "--table", str(table), "--output", str(out), "--bootstrap", "200", *extra]
    start = time.perf_counter()
    # cwd: a folder without a package (``python -m`` puts the cwd before PYTHONPATH on sys.path)
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=out.parent,
                          env={"PYTHONPATH": str(pythonpath), "PATH": "/usr/bin:/bin"})
    seconds = time.perf_counter() - start
    try:
        rss, rc, package = done.stdout.split()
        assert package.startswith(str(pythonpath)), f"imported {package}, not the tree under test {pythonpath}"
        return seconds, int(rss) / 1024, int(rc) == 0
    except ValueError:
        return seconds, None, False


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline-ref", default="ed89aae", help="git commit whose report is the baseline")
    ap.add_argument("--predictors", type=int, default=5000)
    ap.add_argument("--series", type=int, default=1000)
    ap.add_argument("--checkpoints", type=int, default=1000)
    ap.add_argument("--timeout", type=float, default=300, help="seconds per report (the baseline may need more)")
    ap.add_argument("--skip-baseline", action="store_true")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="report-scale-") as tmp:
        tmp = Path(tmp)
        baseline = tmp / "baseline"
        if not args.skip_baseline:
            baseline.mkdir()
            archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.baseline_ref, "hf_transfer_seg"], check=True, capture_output=True).stdout
            subprocess.run(["tar", "-x", "-C", str(baseline)], input=archive, check=True)
        cases = [("wide", f"8 series x 10 checkpoints x {args.predictors} predictors", wide_table, (args.predictors,)),
                 ("long", f"{args.series} series x {args.checkpoints} checkpoints = {args.series * args.checkpoints:,} rows", long_table,
                  (args.series, args.checkpoints))]
        print(f"{'case':<6} {'table':<46} {'this tree':>12} {'peak MiB':>9} {'baseline ' + args.baseline_ref:>18} {'peak MiB':>9} {'ratio':>9}")
        for name, text, make, params in cases:
            table = tmp / f"{name}.csv"
            extra = make(table, *params)
            new_s, new_mb, new_ok = run(ROOT, table, tmp / f"{name}-new", extra, args.timeout)
            line = f"{name:<6} {text:<46} {new_s:>10.1f}s{'' if new_ok else '!'} {new_mb or 0:>9.0f}"
            if not args.skip_baseline:
                old_s, old_mb, old_ok = run(baseline, table, tmp / f"{name}-old", extra, args.timeout)
                old = f"{old_s:.1f}s" if old_ok else f">= {args.timeout:.0f}s"
                ratio = old_s / new_s
                line += f" {old:>18} {old_mb or 0:>9.0f} {('' if old_ok else '>= ') + f'{ratio:.1f}x':>9}"
            print(line, flush=True)
        print("('!': this tree did not finish within the timeout; ratio = baseline seconds / this tree's seconds)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
