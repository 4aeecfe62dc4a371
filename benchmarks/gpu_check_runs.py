"""Sections of the GPU check (benchmarks/gpu_check.py) that train on real loaders or run the real commands.

- ``train_fed``: the project's training step (section ``train_step``'s, same model, batch and precision) fed by
  each data engine instead of one in-memory batch: the fast CPU path (``--decode cpu``, one worker per core),
  ``--decode gpu`` (nvJPEG) and DALI ``mixed`` (skipped with a line naming why when DALI or its data path is
  absent). Each prints its images/s as a fraction of the synthetic-data ceiling measured in the same run.
- ``runs``: a child process (it must set ``HF_ENDPOINT`` before huggingface_hub is imported; the sections before
  imported it) starts a local hub, pushes two revisions of the encoder (random weights, two seeds) and runs the
  commands a user runs: ``score`` on both revisions, then ``finetune`` for one epoch from the first. Printed: the
  scoring run's images/s against the bare bf16 forward of section ``scoring`` (or its own), and the fine-tune
  epoch's training time as a fraction of the command's wall time.

``python benchmarks/gpu_check_runs.py --child SETTINGS_JSON`` is the child; nothing else calls it directly.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


# ---------------------------------------------------------------------------------------------- train_fed


def _fed_rate(s, step, loader, prep, steps: int) -> float:
    """Images/s of ``step`` on batches from ``loader`` (after one warm-up batch that pays for worker start-up)."""
    import torch

    from gpu_check import sync

    seen, start, done = 0, None, 0
    for batch in loader:
        images, labels = batch[0], batch[1]
        x = prep(images if not torch.is_tensor(images) else images.to(s.device, non_blocking=True))
        step(x, labels.to(s.device, non_blocking=True))
        if start is None:
            sync(s.device)
            start = time.perf_counter()
            continue
        seen += len(labels)
        done += 1
        if done >= steps:
            break
    sync(s.device)
    return seen / (time.perf_counter() - start) if start and seen else 0.0


def dali_loader(s, files):
    """The project's DALI data path, or the reason there is none (a string)."""
    try:
        import nvidia.dali  # noqa: F401
    except ImportError:
        return "nvidia-dali is not installed (pip install -e '.[dali]')"
    try:
        from hf_transfer_seg.data import dali  # the optional engine of issue 25 item 4
    except ImportError:
        return "hf_transfer_seg has no DALI data path in this checkout (hf_transfer_seg.data.dali)"
    # 'mixed' (nvJPEG) on a GPU; the CPU smoke runs the same pipeline with DALI's CPU decoder
    device = "mixed" if s.device.type == "cuda" else "cpu"
    return dali.train_loader(files, image_size=s.size, batch_size=s.batch, device=device, workers=s.workers, seed=0)


def section_train_fed(s, store: dict, files) -> None:
    from gpu_check import _fast_loader, _project_step, result, timed

    step, precision = _project_step(s)
    ceiling = store.get("ceiling") or s.batch / timed(step, s.steps, s.warmup, s.device)
    steps = max(2, min(s.steps * 2, len(files) // s.batch - 2))
    from hf_transfer_seg.data.gpu_augment import DevicePrep, GpuDecoder

    def prep_for(decode: str):
        prep = DevicePrep((0.485, 0.456, 0.406), (0.229, 0.224, 0.225), s.device, channels_last=True)
        if decode == "gpu" and prep.decoder is None:  # CPU smoke: the same code with decode_jpeg on the CPU
            prep.decoder = GpuDecoder(s.device)
        return prep

    for decode, name in (("cpu", "fast CPU path (--decode cpu)"), ("gpu", "--decode gpu")):
        rate = _fed_rate(s, step, _fast_loader(s, files, decode), prep_for(decode), steps)
        result(f"train_fed_{decode}", f"{s.model} {precision} fed by the {name}, {s.workers} workers: {rate:.0f} images/s vs "
               f"synthetic-data ceiling {ceiling:.0f} images/s = {rate / ceiling:.2f}x")
    loader = dali_loader(s, files)
    if isinstance(loader, str):
        print(f"SKIPPED train_fed_dali: {loader}", flush=True)
        return
    dali_prep = prep_for("cpu")  # uint8 batches, normalised on the device like the fast path's
    rate = _fed_rate(s, step, loader, dali_prep, steps)
    where = "mixed (nvJPEG)" if s.device.type == "cuda" else "cpu (smoke)"
    result("train_fed_dali", f"{s.model} {precision} fed by DALI {where}: {rate:.0f} images/s vs synthetic-data ceiling "
           f"{ceiling:.0f} images/s = {rate / ceiling:.2f}x")


# ---------------------------------------------------------------------------------------------- runs (child)


def section_runs(s, store: dict) -> None:
    """Run the child and relay its lines (RESULT / FAILED / progress)."""
    settings = {
        "smoke": s.smoke, "model": s.model, "score_images": s.score_images, "score_size": s.size,
        "score_batch": s.score_batch, "bare_forward": store.get("bare_forward"),
        "seg_size": 32 if s.smoke else 256, "seg_batch": 4 if s.smoke else 32, "seg_limit": 6 if s.smoke else None,
    }
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    for name in ("HF_ENDPOINT", "HF_HOME", "HF_TOKEN"):
        env.pop(name, None)
    done = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(settings)], env=env,
                          capture_output=True, text=True, timeout=420)
    lines = [line for line in done.stdout.splitlines() if line.startswith(("RESULT", "FAILED", "SKIPPED", "  "))]
    print("\n".join(lines), flush=True)
    if done.returncode != 0:
        raise RuntimeError(f"the runs child exited {done.returncode}: {done.stderr.strip().splitlines()[-1:]}")


def _timed_command(args: list[str]) -> float:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "hf_transfer_seg", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"`hf-transfer-seg {' '.join(args[:3])} ...` exited {done.returncode}: {done.stderr[-1500:]}")
    return time.perf_counter() - start


def _targets(smoke: bool, n: int, work: Path) -> tuple[str, int, str, str]:
    """(score target, images, fine-tune target, its description): the samples in ../shared on a GPU machine,
    else nilearn's MNI152 slices (59) for scoring and, for the smoke's fine-tune, six generated 48 px images."""
    sample, drive = SHARED / "imagenet-sample", SHARED / "drive-train"
    score = (str(sample), min(n, len(list(sample.iterdir())))) if sample.is_dir() and not smoke else ("mni152-tissue", min(n, 59))
    if drive.is_dir() and not smoke:
        return (*score, str(drive), "DRIVE training images (../shared)")
    if not smoke:
        return (*score, "mni152-tissue", "mni152-tissue (nilearn's MNI152 slices)")
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for sub in ("images", "masks"):
        (work / "seg" / sub).mkdir(parents=True, exist_ok=True)
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(work / "seg" / "images" / f"{i}.png")
        mask = np.zeros((48, 48), np.uint8)
        mask[10 + i : 30 + i, 12:36] = 255
        Image.fromarray(mask).save(work / "seg" / "masks" / f"{i}.png")
    return (*score, str(work / "seg"), "six generated 48 px images (smoke)")


def child(settings: dict) -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _hub_env import PORT, TMP  # sets HF_ENDPOINT / HF_HOME before huggingface_hub is imported

    import timm
    import torch

    from hf_transfer_seg import hub
    from hf_transfer_seg.localhub import local_hub
    from hf_transfer_seg.models.checkpoint import save_checkpoint

    smoke = settings["smoke"]
    repo = "gpu-check/encoder"
    with local_hub(TMP / "hub", port=PORT):
        revisions = []
        for i, epoch in enumerate((1, 2)):
            torch.manual_seed(i)
            folder = save_checkpoint(timm.create_model(settings["model"], num_classes=10), TMP / f"ckpt{i}")
            revisions.append(hub.push_revision(folder, repo, epoch).name)
        score_target, n, target, described = _targets(smoke, settings["score_images"], TMP)
        try:
            seconds = _timed_command([
                "score", "--repo-id", repo, "--target", score_target, "--no-progress",
                "--revisions", ",".join(revisions), "--num-images", str(n), "--image-size", str(settings["score_size"]),
                "--batch-size", str(settings["score_batch"]), "--seed", "0",
            ])
            rate = 2 * 2 * n / seconds  # 2 revisions x 2 views
            bare = settings.get("bare_forward")
            versus = f" vs the bare forward of section scoring {bare:.0f} images/s = {rate / bare:.2f}x" if bare else ""
            print(f"RESULT score_run: `score` on 2 revisions x {n} images at {settings['score_size']} px: {seconds:.1f}s wall, "
                  f"{rate:.0f} images/s end to end (download, plan, forward, grid, cards){versus}", flush=True)
        except Exception as exc:  # noqa: BLE001 - one line, then the fine-tune still runs
            print(f"FAILED score_run: {exc}", flush=True)
        out = TMP / "finetune"
        try:
            seconds = _timed_command([
                "finetune", "--encoder-repo", repo, "--revision", revisions[0], "--target", target, "--epochs", "1",
                "--image-size", str(settings["seg_size"]), "--batch-size", str(settings["seg_batch"]), "--no-progress",
                "--no-card", "--output-dir", str(out), *(["--limit", str(settings["seg_limit"])] if settings["seg_limit"] else []),
                *(["--mixed-precision", "bf16", "--num-workers", "8"] if torch.cuda.is_available() and not smoke else []),
            ])
            metrics = json.loads((out / "metrics.json").read_text())
            inside = float(metrics.get("wall_clock_seconds") or float("nan"))
            print(f"RESULT finetune_epoch: one epoch on {described}, {settings['seg_size']} px crops: {seconds:.1f}s wall, "
                  f"{metrics.get('train_images_per_second', float('nan')):.1f} training images/s; the run itself (data, "
                  f"training, validation) {inside:.1f}s = {inside / seconds:.2f}x of the command's wall time (the rest: "
                  f"process start-up, download, push)", flush=True)
        except Exception as exc:  # noqa: BLE001
            print(f"FAILED finetune_epoch: {exc}", flush=True)
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        sys.exit(child(json.loads(sys.argv[2])))
    print(__doc__)
    sys.exit(2)
