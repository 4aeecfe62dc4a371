"""Sliding-window inference: ``sliding_window_probs`` (MONAI's ``sliding_window_inference`` behind it) vs the
hand-written version it replaced, same run.

Same model (a tiny smp U-Net on timm ``test_resnet``, eval mode, CPU), same images, window 64 px, overlap 0.5,
16 windows per batch. The baseline is the replaced code (``_handwritten_probs`` in tests/test_metrics_monai.py,
which also checks the two agree to 1e-6). Rounds alternate (baseline, current, baseline, current...) so load from
other processes hits both alike; medians are compared. Per image size it prints the largest absolute difference
and the time ratio current / baseline (above 1: the MONAI-backed version is slower). MONAI's import is timed
once, separately (the fine-tuning loop pays it anyway for ``monai.metrics``).

    .venv/bin/python benchmarks/sliding_window.py [--rounds 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--window", type=int, default=64)
    parser.add_argument("--sizes", default="48x40,96x80,160x150,584x565", help="HxW list (584x565: a DRIVE fundus image)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from hf_transfer_seg.models.segmentation import SegmentationModel, sliding_window_probs

    start = time.perf_counter()
    import monai.inferers  # noqa: F401

    print(f"monai.inferers import: {time.perf_counter() - start:.2f} s (once per process, lazy; shared with monai.metrics)")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from test_metrics_monai import _handwritten_probs
    torch.manual_seed(0)
    model = SegmentationModel("test_resnet", 3).eval()
    for size in args.sizes.split(","):
        h, w = (int(v) for v in size.split("x"))
        image = torch.rand(3, h, w)
        base_t, cur_t = [], []
        for _ in range(args.rounds):
            t = time.perf_counter()
            base = _handwritten_probs(model, image, args.window, batch_size=16)
            base_t.append(time.perf_counter() - t)
            t = time.perf_counter()
            cur = sliding_window_probs(model, image, args.window, overlap=0.5, batch_size=16)
            cur_t.append(time.perf_counter() - t)
        diff = (base - cur).abs().max().item()
        a, b = statistics.median(base_t), statistics.median(cur_t)
        print(f"{h}x{w}: max |monai-backed - hand-written| = {diff:.2g}; hand-written {a * 1e3:.1f} ms, "
              f"monai-backed {b * 1e3:.1f} ms, ratio monai-backed/hand-written = {b / a:.2f}")


if __name__ == "__main__":
    main()
