"""Whole-process pretraining on a JPEG folder, data-bound (a tiny encoder): ``--data-path legacy`` vs ``fast``.

Each run is a fresh ``python -m hf_transfer_seg pretrain`` process on an ImageNet-style folder made of
``../shared/data/imagenet-sample`` (250 JPEGs, 2 % held out for validation), test_resnet at 32 px (every JPEG
is still decoded in full; the small crop keeps the model's share small on a CPU), the same
``--num-workers`` for both paths, alternating. Printed per path: the loop's images/s (from the run's own log
line; checkpoint time excluded) and the whole process's wall time, then the ratios fast/legacy (medians).
Data-bound only where the model is cheap next to decoding: on a shared 2-core CPU machine test_resnet's backward
pass still takes most of the main process (profiled with cProfile: ~60-80 % at 32-64 px, waiting for batches
~2-5 %), and run-to-run load swings move both numbers by 2x, so read the ratio there with that in mind.

    python benchmarks/pretrain_data_path.py [--rounds 2] [--epochs 16] [--num-workers 1] [--recipe simple] [--image-size 32]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT.parent / "shared" / "data" / "imagenet-sample"


def run(root: Path, out: Path, data_path: str, args) -> tuple[float, float]:
    cmd = [
        sys.executable, "-m", "hf_transfer_seg", "pretrain", "--dataset", str(root), "--encoder", "test_resnet",
        "--recipe", args.recipe, "--image-size", str(args.image_size), "--batch-size", "32", "--epochs", str(args.epochs),
        "--checkpoint-epochs", str(args.epochs), "--num-workers", str(args.num_workers), "--lr", "1e-3",
        "--data-path", data_path, "--output-dir", str(out), "--log-every", "0",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), "HF_HUB_OFFLINE": "1"}
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{data_path} run failed:\n{done.stderr[-3000:]}")
    match = re.search(r"\(([\d.]+) images/s;", done.stderr)
    if not match:
        raise SystemExit(f"no images/s line in the {data_path} run's log:\n{done.stderr[-2000:]}")
    return float(match.group(1)), wall


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=16, help="enough steps that worker start-up and the checkpoint do not dominate")
    parser.add_argument("--num-workers", type=int, default=1)
    parser.add_argument("--recipe", default="simple")
    parser.add_argument("--image-size", type=int, default=32, help="crop size (small: the tiny model stays cheaper than the data)")
    args = parser.parse_args()
    if not SAMPLE.is_dir():
        print(f"SKIPPED: the ImageNet sample {SAMPLE} is absent")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "imagenet-like"
        for p in sorted(SAMPLE.iterdir()):
            (root / "train" / p.name.split("_")[0]).mkdir(parents=True, exist_ok=True)
            (root / "train" / p.name.split("_")[0] / p.name).symlink_to(p)
        print(f"loadavg {open('/proc/loadavg').read().split()[:3]}; {args.recipe} recipe, test_resnet {args.image_size} px, batch 32, "
              f"{args.epochs} epochs of ~245 images, --num-workers {args.num_workers}")
        results: dict[str, list[tuple[float, float]]] = {"legacy": [], "fast": []}
        for r in range(args.rounds):
            for path in ("legacy", "fast") if r % 2 == 0 else ("fast", "legacy"):
                rate, wall = run(root, Path(tmp) / f"out-{path}-{r}", path, args)
                results[path].append((rate, wall))
                print(f"  round {r + 1} {path}: loop {rate:.1f} images/s, process {wall:.1f}s", flush=True)
        rate = {k: statistics.median(v[0] for v in vs) for k, vs in results.items()}
        wall = {k: statistics.median(v[1] for v in vs) for k, vs in results.items()}
        print(
            f"whole-process pretraining ({args.recipe}): loop images/s fast {rate['fast']:.1f} vs legacy {rate['legacy']:.1f} "
            f"= {rate['fast'] / rate['legacy']:.2f}x; process wall legacy/fast {wall['legacy']:.1f}s/{wall['fast']:.1f}s "
            f"= {wall['legacy'] / wall['fast']:.2f}x"
        )
        print(f"loadavg after {open('/proc/loadavg').read().split()[:3]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
