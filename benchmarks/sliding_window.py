"""Sliding-window inference: hf-transfer-seg's ``sliding_window_probs`` vs MONAI's ``sliding_window_inference``.

Same model (a tiny smp U-Net on timm ``test_resnet``, eval mode, CPU), same images, same window (64 px), same
overlap (0.5), same batch of windows (16); MONAI is called as it would replace ours: the predictor returns
softmax probabilities, ``mode="constant"`` (plain average of overlapping windows), zero padding. Rounds
alternate (ours, monai, ours, monai...) so load from other processes hits both alike; medians are compared.
For each image size the script prints the largest absolute difference of the probabilities and the time ratio
monai / ours (above 1: MONAI slower). MONAI's import (seconds) is timed separately, once.

    .venv/bin/python benchmarks/sliding_window.py [--rounds 7] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--window", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from hf_transfer_seg.models.segmentation import SegmentationModel, sliding_window_probs

    start = time.perf_counter()
    from monai.inferers import sliding_window_inference

    print(f"monai.inferers import: {time.perf_counter() - start:.2f} s (paid once per process; ours: 0)")
    torch.manual_seed(0)
    model = SegmentationModel("test_resnet", 3).eval()

    def monai_probs(image: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            out = sliding_window_inference(image[None], (args.window, args.window), 16, lambda x: model(x).float().softmax(1),
                                           overlap=0.5, mode="constant", padding_mode="constant", cval=0.0)
        return out[0]

    for h, w in ((48, 40), (96, 80), (160, 150), (584, 565)):
        image = torch.rand(3, h, w)
        ours_t, monai_t = [], []
        for _ in range(args.rounds):
            t = time.perf_counter()
            ours = sliding_window_probs(model, image, args.window, overlap=0.5, batch_size=16)
            ours_t.append(time.perf_counter() - t)
            t = time.perf_counter()
            theirs = monai_probs(image)
            monai_t.append(time.perf_counter() - t)
        diff = (ours - theirs).abs().max().item()
        a, b = statistics.median(ours_t), statistics.median(monai_t)
        print(f"{h}x{w}: max |ours - monai| = {diff:.3g}; ours {a * 1e3:.1f} ms, monai {b * 1e3:.1f} ms, ratio monai/ours = {b / a:.2f}")


if __name__ == "__main__":
    main()
