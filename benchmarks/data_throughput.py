"""Images/s per core of the pretraining data path: the project's fast path vs timm's loader, same transforms.

Loaders with ``--workers 0`` (default: everything in this process, one torch thread; images/s are also given
per CPU-second of this process, the per-core number that other processes on a shared machine do not distort)
or ``--workers 1`` (one worker process, as in training; wall time only); both recipes at the paper's 224 px on ``../shared/data/imagenet-sample`` (250 ImageNet JPEGs, 4 passes
per timed epoch); the clock starts after each epoch's first batch (worker start-up excluded). Pipelines, each producing
normalised float batches ready for the model (Mixup/CutMix for the advanced recipe applied by timm's Mixup in
all of them, and for the fast path its device step run on the CPU):

- ``fast``: this project's uint8 path (``pretrain.data_path``, ``--data-path fast``)
- ``timm``: ``timm.data.create_dataset`` + ``create_loader`` (its prefetcher, on the CPU: uint8 from the workers,
  normalisation and erasing on the batch) with the same RandomResizedCrop 0.8-1.0, flip, RandAugment m9-n2,
  RandomErasing 0.25
- ``timm-float``: the same with ``use_prefetcher=False`` (float ToTensor + Normalize + erasing per image)
- ``legacy``: this project's old path (``--data-path legacy``: PIL, timm transforms, float tensors)

Rounds alternate the pipelines; the ratios are medians over rounds (a shared machine's load hits all alike).
Also: reduced-size JPEG decoding (PIL ``draft``, DCT scaling) vs full ``decode_jpeg`` at 224 px on the sample
upscaled 2x (at its own size the recipe's crops almost never allow a scaled decode). Usage: ``python benchmarks/data_throughput.py [--rounds 3]``.
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


def _timm(recipe: str, root: Path, size: int = 224, batch: int = 32, prefetcher: bool = True):
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
        device=torch.device("cpu"), use_prefetcher=prefetcher,
    )
    mixup = recipes.mixup(config, 1000)

    def batches():
        for images, labels in loader:
            if mixup is not None:
                images, labels = mixup(images, labels)
            yield images

    return batches


def _rate(make_batches, n_images: int = 0) -> tuple[float, float | None]:
    """(images/s of wall time, images/s of this process's CPU time or None with workers) over one pass of the
    loader, the first batch (worker wake-up, prefetch fill) not counted. With ``--workers 0`` all the work is in
    this process, so the CPU-time rate is the per-core rate, insensitive to other processes on a shared machine."""
    seen, start, cpu = 0, None, None
    for images in make_batches():
        if start is None:
            start, cpu = time.perf_counter(), time.process_time()
            continue
        seen += len(images)
    wall = seen / (time.perf_counter() - start)
    return wall, (seen / (time.process_time() - cpu) if WORKERS == 0 else None)


def _compare(pipes: dict, rounds: int, label: str, base: str) -> None:
    rates: dict[str, list[tuple[float, float | None]]] = {k: [] for k in pipes}
    for r in range(rounds):
        for name in list(pipes) if r % 2 == 0 else list(reversed(pipes)):
            rates[name].append(_rate(pipes[name]))
        print(f"  {label} round {r + 1}: " + ", ".join(
            f"{k} {rates[k][-1][0]:.0f}" + (f" (cpu {rates[k][-1][1]:.0f})" if rates[k][-1][1] else "") for k in pipes
        ) + " images/s", flush=True)
    wall = {k: statistics.median(v[0] for v in vs) for k, vs in rates.items()}
    first = next(iter(pipes))
    others = [k for k in pipes if k != first]
    line = f"{label}: images/s (wall) " + ", ".join(f"{k} {wall[k]:.0f}" for k in pipes)
    line += " | " + ", ".join(f"{first}/{k} {wall[first] / wall[k]:.2f}x" for k in others)
    if WORKERS == 0:
        cpu = {k: statistics.median(v[1] for v in vs) for k, vs in rates.items()}
        line += "; per CPU-second " + ", ".join(f"{k} {cpu[k]:.0f}" for k in pipes)
        line += " | " + ", ".join(f"{first}/{k} {cpu[first] / cpu[k]:.2f}x" for k in others)
    print(line, flush=True)


def _upscaled(files, tmp: Path, factor: int = 2) -> list[tuple[str, int]]:
    """The sample at ``factor`` x its size (median 1000x750): where reduced-size decoding can apply at 224 px."""
    from PIL import Image

    out = []
    for path, label in files[: len(files) // 4]:
        with Image.open(path) as img:
            img = img.convert("RGB")
            big = img.resize((img.width * factor, img.height * factor), Image.BICUBIC)
        target = tmp / f"x{factor}_{Path(path).name}"
        big.save(target, quality=90)
        out.append((str(target), label))
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sample", default=str(SAMPLE))
    parser.add_argument("--recipes", default="simple,advanced")
    parser.add_argument("--workers", type=int, default=0, choices=(0, 1))
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
            pipes = {
                "fast": _ours(recipe, files, "fast"),
                "timm": _timm(recipe, root),
                "timm-float": _timm(recipe, root, prefetcher=False),
                "legacy": _ours(recipe, files, "legacy"),
            }
            _compare(pipes, args.rounds, f"{recipe} recipe 224 px", "timm")
        # reduced-size decode (DCT scaling with PIL's draft) where the crop allows it: large images
        big = _upscaled(files, Path(tmp))
        pipes = {"reduced": _ours("simple", big, "fast"), "full": _ours("simple", big, "fast", reduce=False)}
        _compare(pipes, args.rounds, "simple 224 px on the sample upscaled 2x: reduced-size decode vs full decode_jpeg", "full")
        print(f"loadavg after: {open('/proc/loadavg').read().split()[:3] if os.path.exists('/proc/loadavg') else '?'}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.exit(main())
