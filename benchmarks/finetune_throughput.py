"""Training images/s of hf-transfer-seg's fine-tuning loop vs a bare PyTorch loop, same model and data, same run.

Ours: ``hf_transfer_seg.finetune.loop.train_epoch`` on the model, optimizer and DataLoader prepared by
Accelerate, with the poly schedule stepped every step (what ``hf-transfer-seg finetune`` runs each epoch).
Bare: ``for x, y in loader: zero_grad; loss(model(x), y).backward(); step`` on an identical copy of the
model and a plain DataLoader over the same crops. Rounds alternate (bare, ours, bare, ours...) so that
load from other processes hits both alike; the medians are compared. Goal: ratio >= 0.95.

    .venv/bin/python benchmarks/finetune_throughput.py [--arch resnet18] [--image-size 128] [--rounds 9] [--threads 2]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="test_resnet")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--images", type=int, default=48, help="training crops per epoch")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: steadier on a shared CPU)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    import timm
    from accelerate import Accelerator

    from hf_transfer_seg.data.registry import load_target
    from hf_transfer_seg.finetune.config import FinetuneConfig
    from hf_transfer_seg.finetune.loop import build_training, poly_schedule, train_epoch
    from hf_transfer_seg.models.segmentation import build_model
    from hf_transfer_seg.models.checkpoint import save_checkpoint

    torch.manual_seed(0)
    folder = tempfile.mkdtemp()
    save_checkpoint(timm.create_model(args.arch, num_classes=10), folder)
    target = load_target("mni152-tissue", resize_longest=args.image_size)
    samples = target.samples[: args.images]
    config = FinetuneConfig(encoder_folder=folder, batch_size=args.batch_size, image_size=args.image_size, crops_per_image=1, epochs=args.rounds + 1)

    # ours: exactly what finetune() builds
    model = build_model(folder, target.num_classes)
    bare_model = copy.deepcopy(model)
    loader, loss_fn, optimizer = build_training(model, samples, config, generator=torch.Generator().manual_seed(0))
    accelerator = Accelerator()
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    scheduler = poly_schedule(optimizer, len(loader) * config.epochs, config.poly_power)

    # bare: same data, same loss, same optimizer settings, no Accelerate, no scheduler, no bookkeeping
    device = accelerator.device
    bare_model.to(device)
    bare_loader, bare_loss, bare_opt = build_training(bare_model, samples, config, generator=torch.Generator().manual_seed(0))

    def bare_epoch() -> tuple[int, float]:
        bare_model.train()
        start, n = time.perf_counter(), 0
        for x, y in bare_loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            bare_opt.zero_grad(set_to_none=True)
            loss = bare_loss(bare_model(x), y)
            loss.backward()
            bare_opt.step()
            n += x.shape[0]
        if device.type == "cuda":
            torch.cuda.synchronize()
        return n, time.perf_counter() - start

    def our_epoch() -> tuple[int, float]:
        start = time.perf_counter()
        stats = train_epoch(model, loader, loss_fn, optimizer, scheduler, accelerator=accelerator)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return stats["images"], time.perf_counter() - start

    bare_epoch(), our_epoch()  # warm-up
    bare, ours = [], []
    for _ in range(args.rounds):
        n, s = bare_epoch()
        bare.append(n / s)
        n, s = our_epoch()
        ours.append(n / s)
    b, o = statistics.median(bare), statistics.median(ours)
    print(f"finetune_throughput: {args.arch} U-Net, {args.image_size}px crops, batch {args.batch_size}, "
          f"{len(samples)} images/epoch, {args.rounds} alternating rounds, {torch.get_num_threads()} threads, device {accelerator.device}")
    print(f"bare PyTorch loop:        {b:8.1f} images/s  (rounds: {', '.join(f'{v:.1f}' for v in bare)})")
    print(f"hf-transfer-seg loop:     {o:8.1f} images/s  (rounds: {', '.join(f'{v:.1f}' for v in ours)})")
    print(f"ratio ours/bare: {o / b:.3f} (goal >= 0.95)")


if __name__ == "__main__":
    main()
