"""Images/s per core of the pretraining data path: the project's fast path vs timm's loader, same transforms.

Loaders with ``--workers 1`` (default: one worker process with one torch thread, as DataLoader workers have; the
main process only collates, normalises and mixes) or ``--workers 0`` (everything in this process, one torch
thread: the strictest per-core number), so the number is images/s per worker; both recipes at the paper's 224 px on ``../shared/data/imagenet-sample`` (250 ImageNet JPEGs, 4 passes
per timed epoch); the clock starts after each epoch's first batch (worker start-up excluded). Pipelines, each producing
normalised float batches ready for the model (Mixup/CutMix for the advanced recipe applied by timm's Mixup in
all of them, and for the fast path its device step run on the CPU):

- ``fast``: this project's uint8 path (``pretrain.data_path``, ``--data-path fast``)
- ``timm``: ``timm.data.create_dataset`` + ``create_loader`` (its prefetcher, on the CPU) with the same
  RandomResizedCrop 0.8-1.0, flip, RandAugment m9-n2, RandomErasing 0.25
- ``legacy``: this project's old path (``--data-path legacy``: PIL, timm transforms, float tensors)

Rounds alternate the pipelines; the ratios are medians over rounds (a shared machine's load hits all alike).
Also: reduced-size JPEG decoding (PIL ``draft``, DCT scaling) vs full ``decode_jpeg`` at 112 px, where the
crops of this sample allow it. Usage: ``python benchmarks/data_throughput.py [--rounds 3]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

SAMPLE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "imagenet-sample"


def _folder(sample: Path, tmp: Path, repeats: int = 4) -> tuple[Path, list[tuple[str, int]]]:
    """An ImageFolder view (train/<wnid>/<k>_file, each file ``repeats`` times) of the flat sample."""
    files = sorted(p for p in sample.iterdir() if p.suffix.lower() in (".jpeg", ".jpg", ".png"))
    classes = sorted({p.name.split("_")[0] for p in files})
    index = {c: i for i, c in enumerate(classes)}
    out = []
    for p in files:
        target = tmp / "train" / p.name.split("_")[0]
        target.mkdir(parents=True, exist_ok=True)
        for k in range(repeats):
            (target / f"{k}_{p.name}").symlink_to(p)
            out.append((str(target / f"{k}_{p.name}"), index[p.name.split("_")[0]]))
    return tmp / "train", out


WORKERS = 1


def _loader_kwargs() -> dict:
    if WORKERS == 0:
        return {"num_workers": 0}
    return {"num_workers": WORKERS, "persistent_workers": True, "prefetch_factor": 4}


def _ours(recipe: str, files, data_path: str, size: int = 224, batch: int = 32, reduce: bool = True):
    from hf_transfer_seg.data.classification import FolderClassification, collate
    from hf_transfer_seg.pretrain import data_path as dp
    from hf_transfer_seg.pretrain import recipes
    from hf_transfer_seg.pretrain.config import build_config

    config = build_config({"recipe": recipe, "data_path": data_path, "image_size": size, "normalize": "imagenet"})
    train_tf, _ = dp.transforms(config)
    if hasattr(train_tf, "reduce"):
        train_tf.reduce = reduce
    ds = FolderClassification(files, [str(i) for i in range(1000)], transform=train_tf, seed=0)
    loader = torch.utils.data.DataLoader(
        ds, batch_size=batch, shuffle=True, drop_last=True, collate_fn=collate, **_loader_kwargs()
    )
    prep = dp.batch_prep(config, "cpu")
    mixup = recipes.mixup(config, 1000)

    def batches():
        for images, labels, _ in loader:
            if prep is not None:
                images = prep(images)
            if mixup is not None:
                images, labels = mixup(images, labels)
            yield images

    return batches


def _timm(recipe: str, root: Path, size: int = 224, batch: int = 32):
    from timm.data import create_dataset, create_loader

    from hf_transfer_seg.pretrain import recipes
    from hf_transfer_seg.pretrain.config import build_config

    config = build_config({"recipe": recipe, "image_size": size, "normalize": "imagenet"})
    advanced = recipe == "advanced"
    dataset = create_dataset("", root=str(root), split="train", is_training=True)
    loader = create_loader(
        dataset, size, batch, is_training=True, scale=(0.8, 1.0), hflip=0.5, color_jitter=None,
        auto_augment=recipes.RAND_AUGMENT if advanced else None, interpolation=recipes.INTERPOLATION,
        re_prob=0.25 if advanced else 0.0, re_mode="pixel", re_count=1,
        mean=config.mean_std[0], std=config.mean_std[1], num_workers=WORKERS, persistent_workers=WORKERS > 0,
        device=torch.device("cpu"), use_prefetcher=True,
    )
    mixup = recipes.mixup(config, 1000)

    def batches():
        for images, labels in loader:
            if mixup is not None:
                images, labels = mixup(images, labels)
            yield images

    return batches


def _rate(make_batches, n_images: int) -> float:
    """Images/s over one pass of the loader, the first batch (worker wake-up, prefetch fill) not counted."""
    seen, start = 0, None
    for images in make_batches():
        if start is None:
            start = time.perf_counter()
            continue
        seen += len(images)
    return seen / (time.perf_counter() - start)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sample", default=str(SAMPLE))
    parser.add_argument("--recipes", default="simple,advanced")
    parser.add_argument("--workers", type=int, default=1, choices=(0, 1))
    args = parser.parse_args(argv)
    global WORKERS
    WORKERS = args.workers
    sample = Path(args.sample)
    if not sample.is_dir():
        print(f"SKIPPED: the ImageNet sample {sample} is absent (it lives in ../shared/data/imagenet-sample)")
        return 0
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        root, files = _folder(sample, Path(tmp))
        print(f"{len(files) // 4} JPEGs from {sample} x 4 per pass; {WORKERS} loader worker(s), 1 torch thread; loadavg "
              f"{open('/proc/loadavg').read().split()[:3] if os.path.exists('/proc/loadavg') else '?'}")
        for recipe in args.recipes.split(","):
            pipes = {"fast": _ours(recipe, files, "fast"), "timm": _timm(recipe, root), "legacy": _ours(recipe, files, "legacy")}
            rates: dict[str, list[float]] = {k: [] for k in pipes}
            for r in range(args.rounds):
                order = list(pipes) if r % 2 == 0 else list(reversed(pipes))
                for name in order:
                    rates[name].append(_rate(pipes[name], 0))
                print(f"  {recipe} round {r + 1}: " + ", ".join(f"{k} {rates[k][-1]:.0f}" for k in pipes) + " images/s")
            med = {k: statistics.median(v) for k, v in rates.items()}
            print(
                f"{recipe:8s} images/s per core: fast {med['fast']:.0f}, timm {med['timm']:.0f}, legacy {med['legacy']:.0f}"
                f" | fast/timm {med['fast'] / med['timm']:.2f}x, fast/legacy {med['fast'] / med['legacy']:.2f}x"
            )
        # reduced-size decode: only where the crop, scaled down 2x or more, still covers the output size
        full, reduced = _ours("simple", files, "fast", size=112, reduce=False), _ours("simple", files, "fast", size=112)
        rates = {"full": [], "reduced": []}
        for r in range(args.rounds):
            for name, pipe in ((("full", full), ("reduced", reduced)) if r % 2 == 0 else (("reduced", reduced), ("full", full))):
                rates[name].append(_rate(pipe, 0))
        full_rate, reduced_rate = statistics.median(rates["full"]), statistics.median(rates["reduced"])
        print(
            f"112 px simple: reduced-size decode (PIL draft where the crop allows) {reduced_rate:.0f} vs full "
            f"decode_jpeg {full_rate:.0f} images/s: {reduced_rate / full_rate:.2f}x (torchvision 0.29 has no size hint)"
        )
        print(f"loadavg after: {open('/proc/loadavg').read().split()[:3] if os.path.exists('/proc/loadavg') else '?'}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.exit(main())
