"""Does the score's tie verdict survive another view seed? (issue 26, "ties that hold")

For each target, the same stand-in revisions are scored with 5 view seeds (every image of the target is used,
so a seed changes only the colour-jittered views and the negatives). For every pair of revisions the paired
test says tied / not tied; a pair *agrees* when its verdict is the same under all 5 seeds.

Two tests are compared on the same forward passes (the first draw of views of a plan is bit for bit the
single-draw plan of earlier versions):

- ``before``: one draw of views, bootstrap over slices/images as if independent (the earlier test);
- ``after``:  ``--view-draws`` draws averaged, two-level bootstrap (units, then draws within each image), units =
  volumes or blocks of neighbouring slices for a volume target (``scoring.ties``).

Stand-in revisions: a random-init timm ``test_resnet`` (seed 0) and copies whose weights carry Gaussian noise
of growing scale (consecutive checkpoints drift apart the same way: some pairs close, some far). Nothing is
downloaded. Targets: the DRIVE training images in ../shared (skipped when absent) and the built-in MNI152
target (59 axial slices of one brain volume).

    python benchmarks/tie_stability.py [--seeds 5] [--draws 3,8] [--image-size 64] [--targets drive,mni152]

On an idle machine a target takes a few minutes at 64 px; on the shared 2-core machine at load ~12 the DRIVE run took
734 s and the MNI152 run 1632 s (the numbers in ``cards/schema.py`` come from those runs).
"""

from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path

import timm
import torch

from hf_transfer_seg.data.registry import resolve_target
from hf_transfer_seg.scoring.configs import parse_config
from hf_transfer_seg.scoring.features import plan_distances
from hf_transfer_seg.scoring.plan import build_plan
from hf_transfer_seg.scoring.ties import paired_difference
from hf_transfer_seg.cards.schema import HEADLINE

NOISE = (0.0, 0.01, 0.02, 0.04, 0.08)  # weight noise (relative to each tensor's std) of the stand-in revisions


def revisions() -> list[torch.nn.Module]:
    torch.manual_seed(0)
    base = timm.create_model("test_resnet", features_only=True).eval()
    out = []
    for k, scale in enumerate(NOISE):
        model = timm.create_model("test_resnet", features_only=True).eval()
        model.load_state_dict(base.state_dict())
        g = torch.Generator().manual_seed(100 + k)
        with torch.no_grad():
            for p in model.parameters():
                if p.ndim > 1:
                    p.add_(torch.randn(p.shape, generator=g) * scale * p.std())
        out.append(model.requires_grad_(False))
    return out


def verdicts(values: list[torch.Tensor], units, draws: int) -> dict[tuple[int, int], bool]:
    """Tied (True) / not (False) for every pair, from the [draws, M] per-image values of each revision."""
    out = {}
    for i, j in itertools.combinations(range(len(values)), 2):
        d = paired_difference(values[i][:draws].numpy(), values[j][:draws].numpy(), units=units, seed=0)
        out[(i, j)] = bool(d["ci_low"] <= 0.0 <= d["ci_high"])
    return out


def agreement(per_seed: list[dict]) -> tuple[float, float, int]:
    """(share of pairs with one verdict under every seed, mean agreement over seed pairs, pairs tied under some seed)."""
    pairs = list(per_seed[0])
    unanimous = sum(len({v[p] for v in per_seed}) == 1 for p in pairs) / len(pairs)
    seed_pairs = list(itertools.combinations(range(len(per_seed)), 2))
    pairwise = sum(per_seed[a][p] == per_seed[b][p] for a, b in seed_pairs for p in pairs) / (len(seed_pairs) * len(pairs))
    return unanimous, pairwise, sum(any(v[p] for v in per_seed) for p in pairs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--draws", default="3", help="comma list of view draws to compare with the single-draw test, e.g. 3,8")
    ap.add_argument("--targets", default="drive,mni152", help="comma list: drive, mni152")
    ap.add_argument("--image-size", type=int, default=None, help="default: chosen from the target")
    args = ap.parse_args()
    torch.set_num_threads(2)
    models = revisions()
    config = parse_config(HEADLINE)
    draw_counts = [int(k) for k in args.draws.split(",")]
    targets = []
    drive = Path(__file__).resolve().parents[2] / "shared" / "data" / "drive-train" / "images"
    if "drive" in args.targets and drive.is_dir():
        targets.append(("DRIVE train (20 images)", str(drive)))
    elif "drive" in args.targets:
        print("DRIVE images not found at ../shared/data/drive-train/images: skipped")
    if "mni152" in args.targets:
        targets.append(("MNI152 (59 slices, 1 volume)", "mni152-tissue"))
    print(f"{len(models)} stand-in revisions (weight noise {NOISE}), {len(models) * (len(models) - 1) // 2} pairs, "
          f"{args.seeds} view seeds, headline {HEADLINE}\n")
    print("| target | size | test | pairs with one verdict under all seeds | mean agreement between two seeds | pairs tied under some seed |")
    print("|---|---|---|---|---|---|")
    for name, spec in targets:
        start = time.perf_counter()
        target = resolve_target(spec)
        before, after = [], {k: [] for k in draw_counts}
        for seed in range(args.seeds):
            plan = build_plan(target, num_images=len(target), seed=seed, image_size=args.image_size, progress=False,
                              view_draws=max(draw_counts))
            values = [plan_distances(m, plan, batch_size=32).draw_values(config) for m in models]
            before.append(verdicts(values, None, 1))
            for k in draw_counts:
                after[k].append(verdicts(values, plan.units, k))
        tests = [("before", before, "1 draw, images independent")]
        tests += [("after", after[k], f"{k} draws, {plan.units_text.split(' (')[0]}") for k in draw_counts]
        for label, per_seed, what in tests:
            unanimous, pairwise, tied = agreement(per_seed)
            print(f"| {name} | {plan.image_size} px | {label}: {what} | {unanimous:.0%} | {pairwise:.0%} | {tied} |")
        print(f"<!-- {name}: {time.perf_counter() - start:.0f} s -->")


if __name__ == "__main__":
    main()
