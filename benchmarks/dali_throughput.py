"""Images per CPU-second of the DALI engine (CPU mode, ROI decode) vs the fast path vs timm's loader, same run.

Simple recipe at 224 px (RandomResizedCrop scale 0.08-1, ratio 3/4-4/3, flip) on ``../shared/data/imagenet-sample``
(``--passes`` passes per timed epoch), every pipeline in this process on one thread (DALI: ``num_threads=1``;
the fast path and timm: ``num_workers=0``, one torch thread), each ending in normalised float batches (the fast
path and DALI through ``DevicePrep`` on the CPU, timm through its prefetcher). CPU-seconds are this process's
(``time.process_time``: DALI's thread included), so other load on a shared machine does not distort them. Rounds
alternate the pipelines; medians over rounds. Usage: ``python benchmarks/dali_throughput.py [--rounds 3]``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SAMPLE = ROOT.parent / "shared" / "data" / "imagenet-sample"
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def per_cpu_second(loader, prep, passes: int) -> float:
    images, start = 0, time.process_time()
    for _ in range(passes):
        for batch in loader:
            x = batch[0] if prep is None else prep(batch[0])
            images += len(x)
    return images / (time.process_time() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--passes", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    if not SAMPLE.is_dir():
        print(f"{SAMPLE} is absent: nothing to measure")
        return 2
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    from timm.data import create_loader
    from timm.data.dataset import ImageDataset

    from hf_transfer_seg.data import dali
    from hf_transfer_seg.data.classification import FolderClassification, collate
    from hf_transfer_seg.data.gpu_augment import DevicePrep
    from hf_transfer_seg.data.uint8_transforms import TrainTransformU8

    if not dali.available():
        print("nvidia-dali is not installed (pip install -e '.[dali]'): nothing to compare")
        return 2
    files = [(str(p), i) for i, p in enumerate(sorted(SAMPLE.iterdir()))]
    prep = DevicePrep(MEAN, STD, torch.device("cpu"), channels_last=False)
    fast = torch.utils.data.DataLoader(
        FolderClassification(files, [str(i) for i in range(len(files))], transform=TrainTransformU8(224, scale=(0.08, 1.0)), seed=0),
        batch_size=args.batch, shuffle=True, drop_last=True, num_workers=0, collate_fn=collate,
    )
    dali_cpu = dali.train_loader(files, image_size=224, batch_size=args.batch, device="cpu", workers=1, scale=(0.08, 1.0))
    folder = Path(tempfile.mkdtemp(prefix="dali-bench-"))
    (folder / "c").mkdir()
    for i, (path, _) in enumerate(files):
        (folder / "c" / f"{i}.JPEG").symlink_to(path)
    timm_loader = create_loader(ImageDataset(str(folder)), 224, args.batch, is_training=True, scale=(0.08, 1.0), hflip=0.5,
                                color_jitter=None, interpolation="bilinear", num_workers=0, device=torch.device("cpu"),
                                use_prefetcher=True)
    pipelines = {"fast": (fast, prep), "dali-cpu": (dali_cpu, prep), "timm": (timm_loader, None)}
    rates: dict[str, list[float]] = {name: [] for name in pipelines}
    for _ in range(args.rounds):
        for name, (loader, p) in pipelines.items():
            rates[name].append(per_cpu_second(loader, p, args.passes))
    median = {name: statistics.median(v) for name, v in rates.items()}
    print(f"{len(files)} JPEGs x {args.passes} passes, 224 px, RandomResizedCrop 0.08-1 + flip, one thread each, {args.rounds} rounds")
    for name, values in rates.items():
        print(f"{name:<9} {median[name]:7.0f} images per CPU-second (rounds: {', '.join(f'{v:.0f}' for v in values)})")
    print(f"RESULT dali_throughput: DALI CPU {median['dali-cpu']:.0f} vs fast path {median['fast']:.0f} images per CPU-second = "
          f"{median['dali-cpu'] / median['fast']:.2f}x; vs timm {median['timm']:.0f} = {median['dali-cpu'] / median['timm']:.2f}x; "
          f"fast path vs timm = {median['fast'] / median['timm']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
