"""Start-up cost of a fine-tune process, before and after: CPU-seconds of its imports beyond ``import torch, timm``.

Each round runs, for each source tree (``--before``, default the main checkout beside this one, and this
checkout), interleaved so both see the same load, a real, tiny ``python -m hf_transfer_seg finetune`` (a folder
target of generated PNGs, 1 epoch of 2 steps at 32 px on a test_resnet encoder, validation included: Dice/HD95
and MONAI's sliding window). The process first imports torch and timm, then runs the command; every outermost
import is timed in CPU-seconds (``time.process_time`` around ``importlib._bootstrap._find_and_load``, which the
import statement calls for each module it has not loaded yet), so compute is not counted. Printed per tree: the
CPU-seconds of ``import torch, timm`` and of every other import of the process (median over rounds), and which
heavy libraries it imported. ``python -X importtime`` of the same command shows the per-module tree. Usage::

    python benchmarks/import_time.py [--rounds 3] [--before ../main]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("monai", "nibabel", "pydicom", "skimage", "ignite", "evaluate", "datasets", "transformers", "sklearn", "pandas", "matplotlib", "scipy.stats", "scipy.signal")


WRAPPER = r"""
import atexit, importlib._bootstrap as bootstrap, runpy, sys, time
original, depth, spent = bootstrap._find_and_load, [0], [0.0]
def timed(name, import_):
    if depth[0]:
        return original(name, import_)
    depth[0], start = 1, time.process_time()
    try:
        return original(name, import_)
    finally:
        spent[0] += time.process_time() - start
        depth[0] = 0
bootstrap._find_and_load = timed
import torch, timm
base, spent[0] = spent[0], 0.0
atexit.register(lambda: print(f"IMPORTS {base:.3f} {spent[0]:.3f} " + ",".join(n for n in %r if n in sys.modules), file=sys.stderr))
sys.argv = ["hf_transfer_seg", *sys.argv[1:]]
runpy.run_module("hf_transfer_seg", run_name="__main__")
""" % (HEAVY,)


def _fixture(work: Path) -> tuple[Path, Path]:
    """A test_resnet checkpoint folder and a 6-image folder target (images/ + masks/)."""
    rng = np.random.default_rng(0)
    for i in range(6):
        (work / "target" / "images").mkdir(parents=True, exist_ok=True)
        (work / "target" / "masks").mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(work / "target" / "images" / f"{i}.png")
        mask = np.zeros((40, 40), np.uint8)
        mask[8 + i : 24 + i, 10:30] = 255
        Image.fromarray(mask).save(work / "target" / "masks" / f"{i}.png")
    code = ("import timm, torch, sys; from hf_transfer_seg.models.checkpoint import save_checkpoint; torch.manual_seed(0); "
            "save_checkpoint(timm.create_model('test_resnet', num_classes=10), sys.argv[1])")
    subprocess.run([sys.executable, "-c", code, str(work / "encoder")], check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    return work / "encoder", work / "target"


def run(tree: Path, encoder: Path, target: Path, out: Path) -> tuple[float, float, list[str]]:
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONWARNINGS": "ignore", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([
        sys.executable, "-c", WRAPPER, "finetune", "--encoder-folder", str(encoder), "--target", str(target),
        "--epochs", "1", "--image-size", "32", "--batch-size", "2", "--crops-per-image", "1", "--no-progress",
        "--output-dir", str(out),
    ], env=env, cwd=out.parent, capture_output=True, text=True, timeout=900)  # cwd: not a source tree (sys.path[0])
    found = re.search(r"IMPORTS (\S+) (\S+) ?(.*)", done.stderr)
    if done.returncode != 0 or not found:
        raise SystemExit(f"fine-tune failed in {tree}:\n{done.stderr[-3000:]}")
    return float(found.group(1)), float(found.group(2)), [n for n in found.group(3).split(",") if n]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--before", type=Path, default=ROOT.parent / "main", help="source tree of the baseline")
    args = parser.parse_args()
    trees = {"before": args.before.resolve(), "after": ROOT}
    results: dict[str, list] = {name: [] for name in trees}
    with tempfile.TemporaryDirectory(prefix="import-time-") as tmp:
        encoder, target = _fixture(Path(tmp))
        for _ in range(args.rounds):
            for name, tree in trees.items():
                results[name].append(run(tree, encoder, target, Path(tmp) / f"out-{name}"))
    print(f"load average {os.getloadavg()[0]:.1f}; {args.rounds} rounds; CPU-seconds (user + system), median over rounds")
    extra = {}
    for name, rows in results.items():
        base = statistics.median(r[0] for r in rows)
        extra[name] = statistics.median(r[1] for r in rows)
        print(f"{name:<7} {trees[name]}: import torch, timm {base:.2f}; the fine-tune process's other imports {extra[name]:.2f} "
              f"(rounds: {', '.join(f'{r[1]:.2f}' for r in rows)})")
        print(f"        heavy libraries imported: {', '.join(rows[-1][2]) or 'none'}")
    print(f"RESULT import_time: fine-tune imports beyond torch+timm: after {extra['after']:.2f} CPU-s vs before "
          f"{extra['before']:.2f} CPU-s = {extra['after'] / extra['before']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
