"""Pretraining speed, measured against baselines run in the same process on the same model, data and batch.

1. Images/s of ``hf_transfer_seg.pretrain`` (Accelerate loop: seeded augmentation, corrupt-image handling,
   gradient-accumulation context, per-step scheduler) against a bare PyTorch loop (timm model, AdamW, the same
   transforms and synthetic images, a plain DataLoader). Goal on CPU: ratio >= 0.95.
2. Wall time of an epoch whose mid-epoch checkpoint is pushed to a local hub (background thread) against the same
   epoch with the checkpoint kept local. Goal: <= 1.05x (training does not wait for the network).

    python benchmarks/pretrain_throughput.py            # CPU: resnet18 at 64 px
    python benchmarks/pretrain_throughput.py --gpu      # resnet50 at 224, bf16, channels_last vs a timm-style loop

Checkpoint evaluation/writing time is excluded from images/s but included in the epoch times of (2).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_hub(root: Path) -> tuple[subprocess.Popen, str]:
    """A local hub in its own process (so its work does not share our interpreter's GIL)."""
    port = _free_port()
    proc = subprocess.Popen(
        # LFS uploads (raw bytes, deduplicated), as the real Hub takes large weights; not base64 inside the commit
        [sys.executable, "-m", "hf_transfer_seg", "hub", "serve", "--root", str(root), "--port", str(port), "--lfs-uploads"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT,
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"{endpoint}/api/models", timeout=1)
            return proc, endpoint
        except Exception:  # noqa: BLE001 - not up yet
            time.sleep(0.2)
    proc.terminate()
    raise SystemExit("the local hub did not start")


def make_config(args, **over):
    from hf_transfer_seg.pretrain.config import build_config

    values = dict(
        encoder=args.encoder, image_size=args.image_size, batch_size=args.batch_size, train_size=args.steps * args.batch_size,
        val_size=args.batch_size, epochs=1.0, checkpoint_epochs=[1.0], lr=1e-3, num_workers=args.num_workers,
        channels_last=args.gpu, log_every=0,
    )
    values.update(over)
    return build_config(values)


def ours(args, tmp: Path, tag: str, **over) -> "PretrainResult":  # noqa: F821
    from hf_transfer_seg.pretrain.loop import run_pretraining

    return run_pretraining(make_config(args, output_dir=str(tmp / f"run-{tag}-{time.monotonic_ns()}"), **over))


def bare(args) -> tuple[float, float]:
    """(images per wall second, images per CPU second) of a plain loop: timm model, torch AdamW, the same
    transform and images, a plain DataLoader."""
    import timm
    import torch
    from timm.loss import LabelSmoothingCrossEntropy

    from hf_transfer_seg.data.classification import SyntheticClassification
    from hf_transfer_seg.pretrain import recipes

    config = make_config(args)

    class Plain(torch.utils.data.Dataset):
        def __init__(self):
            self.source = SyntheticClassification(config.train_size, 10, config.image_size, seed=0)
            self.transform = recipes.train_transform(config)

        def __len__(self):
            return len(self.source)

        def __getitem__(self, i):
            image, label = self.source._load(i)
            return self.transform(image), label

    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    torch.manual_seed(0)
    model = timm.create_model(config.encoder, num_classes=10).to(device)
    if args.gpu:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.999), weight_decay=0.05, **({"fused": True} if cuda else {}))
    crit = LabelSmoothingCrossEntropy(0.1)
    workers = args.num_workers
    loader = torch.utils.data.DataLoader(
        Plain(), batch_size=config.batch_size, shuffle=True, drop_last=True, num_workers=workers,
        persistent_workers=workers > 0, pin_memory=cuda,
    )
    model.train()
    start, cpu_start, images = time.perf_counter(), time.process_time(), 0
    for x, y in loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if args.gpu:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.gpu):
            loss = crit(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        images += len(x)
    if cuda:
        torch.cuda.synchronize()
    return images / (time.perf_counter() - start), images / (time.process_time() - cpu_start)


def timm_style(args) -> float:
    """GPU baseline shaped like timm's train.py: create_loader with the GPU prefetcher, fused AdamW, bf16 autocast."""
    import timm
    import torch
    from timm.data import create_loader
    from timm.loss import LabelSmoothingCrossEntropy
    from timm.optim import create_optimizer_v2

    from hf_transfer_seg.data.classification import SyntheticClassification

    class Images(torch.utils.data.Dataset):
        def __init__(self, n):
            self.source, self.transform = SyntheticClassification(n, 10, args.image_size, seed=0), None

        def __len__(self):
            return len(self.source)

        def __getitem__(self, i):
            image, label = self.source._load(i)
            return (self.transform(image) if self.transform else image), label

    loader = create_loader(
        Images(args.steps * args.batch_size), input_size=(3, args.image_size, args.image_size), batch_size=args.batch_size,
        is_training=True, use_prefetcher=True, scale=(0.8, 1.0), hflip=0.5, color_jitter=None, mean=(0, 0, 0), std=(1, 1, 1),
        num_workers=args.num_workers, persistent_workers=True, pin_memory=True, device=torch.device("cuda"),
    )
    model = timm.create_model(args.encoder, num_classes=10).cuda().to(memory_format=torch.channels_last)
    opt = create_optimizer_v2(model, "adamw", lr=1e-3, weight_decay=0.05, fused=True)
    crit = LabelSmoothingCrossEntropy(0.1)
    start, images = time.perf_counter(), 0
    for x, y in loader:
        x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = crit(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        images += len(x)
    torch.cuda.synchronize()
    return images / (time.perf_counter() - start), float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gpu", action="store_true", help="resnet50 at 224, bf16, channels_last on CUDA")
    parser.add_argument("--encoder", default=None)
    parser.add_argument("--image-size", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps per measured epoch")
    parser.add_argument("--num-workers", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (CPU default 1: multi-threaded kernels spin-wait on a busy shared machine, which "
                             "makes both wall and CPU time erratic)")
    args = parser.parse_args()
    gpu_defaults = dict(encoder="resnet50", image_size=224, batch_size=256, steps=60, num_workers=12)
    cpu_defaults = dict(encoder="resnet18", image_size=64, batch_size=32, steps=30, num_workers=0)
    for key, value in (gpu_defaults if args.gpu else cpu_defaults).items():
        if getattr(args, key) is None:
            setattr(args, key, value)

    tmp = Path(tempfile.mkdtemp(prefix="pretrain-bench-"))
    hub_proc, endpoint = start_hub(tmp / "hub")
    os.environ.update(
        HF_ENDPOINT=endpoint, HF_HOME=str(tmp / "hf-home"), HF_HUB_DISABLE_PROGRESS_BARS="1", TQDM_DISABLE="1",
        HF_HUB_DISABLE_XET="1",  # the local hub speaks LFS, not Xet
    )
    os.environ["ACCELERATE_MIXED_PRECISION"] = "bf16" if args.gpu else "no"
    import logging

    logging.basicConfig(level=logging.WARNING)
    import torch

    if args.gpu and not torch.cuda.is_available():
        raise SystemExit("--gpu needs CUDA")
    if args.threads or not args.gpu:
        torch.set_num_threads(args.threads or 1)
    try:
        where = f"{args.encoder} {args.image_size}px batch {args.batch_size}, {args.steps} steps, {args.num_workers} workers, " + (
            "CUDA bf16 channels_last" if args.gpu else f"CPU {torch.get_num_threads()} threads"
        )
        print(f"# pretrain throughput: {where}", flush=True)
        # Alternate baseline and ours so that drifting machine load hits both; ratios are medians over the pairs.
        # On a shared CPU, images per CPU-second of this process (all threads; use --num-workers 0 so the data
        # work is in-process too) is the steadier figure; wall-clock images/s is what a user sees.
        wall, cpu = [], []
        for _ in range(args.repeats):
            base = timm_style(args) if args.gpu else bare(args)
            run = ours(args, tmp, "speed")
            train_cpu = run.loop_cpu_seconds - run.checkpoint_cpu_seconds
            wall.append((run.images_per_second, base[0]))
            cpu.append((run.images_trained / train_cpu if train_cpu > 0 else float("nan"), base[1]))
        base_name = "timm-style loop" if args.gpu else "bare PyTorch loop"
        goal = "1.0" if args.gpu else "0.95"
        for label, pairs in (("images/s (wall)", wall), ("images/CPU-s", cpu)):
            if any(b != b for _, b in pairs):  # NaN: not measured (GPU mode)
                continue
            ratio = statistics.median(o / b for o, b in pairs)
            print(
                f"{label}  ours {statistics.median(o for o, _ in pairs):.1f}  {base_name} "
                f"{statistics.median(b for _, b in pairs):.1f}  ratio {ratio:.3f}  (goal >= {goal}; median of "
                f"{args.repeats} alternating pairs: {', '.join(f'{o:.1f}/{b:.1f}' for o, b in pairs)})"
            )

        walls, cpus = [], []
        for i in range(args.repeats):
            half = dict(checkpoint_epochs=[0.5])
            local = ours(args, tmp, "local", **half)
            pushed = ours(args, tmp, "push", repo_id=f"bench/pretrain-{i}", **half)
            walls.append((pushed.loop_seconds, local.loop_seconds))
            cpus.append((pushed.loop_cpu_seconds, local.loop_cpu_seconds))
            if pushed.pending:
                print(f"warning: push did not complete: {pushed.pending}")
        for label, pairs in (("wall", walls), ("CPU", cpus)):
            ratio = statistics.median(p / q for p, q in pairs)
            print(
                f"epoch {label} time with checkpoint push {statistics.median(p for p, _ in pairs):.2f}s  without "
                f"{statistics.median(q for _, q in pairs):.2f}s  ratio {ratio:.3f}  (goal <= 1.05; median of "
                f"{args.repeats} alternating pairs: {', '.join(f'{p:.1f}/{q:.1f}' for p, q in pairs)})"
            )
    finally:
        hub_proc.terminate()
        hub_proc.wait(timeout=30)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
