"""The GPU check: what one accelerator gets from this project's pretraining and scoring, each beside a baseline.

Sections (each prints ``RESULT <name>: ...`` or ``FAILED <name>: ...`` and the script goes on):

1. ``train_step``: ResNet-50, bf16 autocast, channels-last, the project's step (Accelerate, fused AdamW,
   uint8 batch normalised on the device, label-smoothing loss) vs timm's own training step (the core of timm
   train.py's ``train_one_epoch``: autocast forward, loss, backward, AdamW step) on the same in-memory batch.
2. ``data_path``: the fast data path's images/s with all cores (one worker per core) on the ImageNet sample,
   looped, simple recipe at 224 px, delivered to the device and normalised, vs timm's ``create_loader``
   (its prefetcher, same transforms, same workers).
3. ``gpu_decode``: ``--decode gpu`` (workers read bytes and plan crops; nvJPEG batch decode, crop, resize,
   flip on the device) vs ``--decode cpu`` (the data_path number), same workers.
4. ``scoring``: the robustness score's forward passes + full grid (``scoring.scorer.score_model``, bf16) vs a
   bare bf16 ``features_only`` forward of the same batches.
5. ``train_fed``, ``runs``: see ``gpu_check_runs.py`` (training fed by each data engine vs the synthetic ceiling
   of section 1; a 2-revision ``score`` and a one-epoch ``finetune`` through a local hub).
6. ``compile``: the training step of section 1 with ``torch.compile`` (what ``--compile`` asks Accelerate for)
   vs without.

``--cpu-smoke`` runs every section tiny on the CPU (test_resnet, 32 px, a few images; the GPU-decode code path
with ``decode_jpeg`` on the CPU) in well under a minute; the test suite runs it.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import gpu_check_runs  # noqa: E402 - sections that train on real loaders and run the real commands
SAMPLE = ROOT.parent / "shared" / "data" / "imagenet-sample"


class Settings:
    def __init__(self, smoke: bool):
        self.smoke = smoke
        self.device = torch.device("cpu" if smoke or not torch.cuda.is_available() else "cuda")
        self.model = "test_resnet" if smoke else "resnet50"
        self.size = 32 if smoke else 224
        self.batch = 4 if smoke else 256
        self.steps, self.warmup = (1, 1) if smoke else (30, 5)
        self.data_images = 32 if smoke else 6000
        self.workers = 1 if smoke else len(os.sched_getaffinity(0))
        self.score_images = 8 if smoke else 1024
        self.score_batch = 4 if smoke else 128
        self.compile_steps = (2, 1) if smoke else (20, 10)
        # bf16 on the GPU; the CPU smoke runs fp32 (CPU bf16 kernels are emulated: minutes) and compiles with the
        # "eager" backend (dynamo tracing without inductor's C++ build)
        self.amp = not smoke
        self.compile_backend = "eager" if smoke else "inductor"


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, steps: int, warmup: int, device) -> float:
    """Seconds per call of ``fn`` after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    sync(device)
    return (time.perf_counter() - start) / steps


def result(name: str, text: str) -> None:
    print(f"RESULT {name}: {text}", flush=True)


# ---------------------------------------------------------------------------------------------- 1 + 5: training


def _batch(s: Settings):
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (s.batch, 3, s.size, s.size), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 1000, (s.batch,), generator=g)
    return images.to(s.device), labels.to(s.device)


def _timm_step(s: Settings, compile_model: bool = False):
    import timm
    from timm.loss import LabelSmoothingCrossEntropy
    from timm.optim import create_optimizer_v2

    model = timm.create_model(s.model, num_classes=1000).to(s.device).to(memory_format=torch.channels_last)
    if compile_model:
        model = torch.compile(model, backend=s.compile_backend)
    opt = create_optimizer_v2(model, "adamw", lr=1e-3, weight_decay=0.05)
    loss_fn = LabelSmoothingCrossEntropy(0.1)
    images, labels = _batch(s)
    x = (images.float() / 255.0).contiguous(memory_format=torch.channels_last)

    def step():
        with torch.autocast(s.device.type, dtype=torch.bfloat16, enabled=s.amp):
            loss = loss_fn(model(x), labels)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def _project_step(s: Settings):
    os.environ["ACCELERATE_MIXED_PRECISION"] = "bf16" if s.amp else "no"
    from hf_transfer_seg.pretrain import recipes
    from hf_transfer_seg.pretrain.config import build_config
    from hf_transfer_seg.pretrain.data_path import batch_prep

    config = build_config({"encoder": s.model, "image_size": s.size, "batch_size": s.batch, "channels_last": True})
    try:  # the loop's own Accelerator settings
        from hf_transfer_seg.pretrain.loop import _make_accelerator

        accelerator = _make_accelerator(config)
    except ImportError:  # renamed: the same mixed precision from the environment
        from accelerate import Accelerator

        accelerator = Accelerator(step_scheduler_with_optimizer=False)
    model = recipes.create_model(config, 1000).to(memory_format=torch.channels_last)
    opt = recipes.optimizer(config, model)
    model, opt = accelerator.prepare(model, opt)
    criterion = recipes.criterion(config)
    prep = batch_prep(config, accelerator.device)
    images, labels = _batch(s)
    images, labels = images.to(accelerator.device), labels.to(accelerator.device)

    def step(x=None, y=None):  # no arguments: the in-memory batch (the synthetic-data ceiling)
        if x is None:
            x, y = prep(images), labels
        with accelerator.accumulate(model):
            with accelerator.autocast():
                loss = criterion(model(x), y)
            accelerator.backward(loss)
            opt.step()
            opt.zero_grad(set_to_none=True)

    return step, "bf16" if accelerator.mixed_precision == "bf16" else "fp32"


def section_train_step(s: Settings, store: dict) -> None:
    step, precision = _project_step(s)
    ours = s.batch / timed(step, s.steps, s.warmup, s.device)
    store["ceiling"] = ours
    del step
    baseline = s.batch / timed(_timm_step(s), s.steps, s.warmup, s.device)
    store["timm_step"] = baseline
    result(
        "train_step",
        f"{s.model} {s.size}px batch {s.batch} ({precision}, channels-last): project {ours:.0f} images/s vs timm's "
        f"step {baseline:.0f} images/s = {ours / baseline:.2f}x",
    )


def section_compile(s: Settings, store: dict) -> None:
    steps, warmup = s.compile_steps
    start = time.perf_counter()
    compiled = _timm_step(s, compile_model=True)
    compiled()  # compiles
    compile_seconds = time.perf_counter() - start
    on = s.batch / timed(compiled, steps, warmup, s.device)
    off = store.get("timm_step") or s.batch / timed(_timm_step(s), steps, warmup, s.device)
    result(
        "compile",
        f"{s.model} training step: torch.compile ({s.compile_backend}) {on:.0f} images/s vs eager {off:.0f} images/s = {on / off:.2f}x "
        f"(first step incl. compilation {compile_seconds:.0f}s)",
    )


# ---------------------------------------------------------------------------------------------- 2 + 3: data


def _files(s: Settings, tmp: Path) -> list[tuple[str, int]]:
    from PIL import Image

    if SAMPLE.is_dir() and not s.smoke:
        files = sorted(str(p) for p in SAMPLE.iterdir() if p.suffix.lower() in (".jpeg", ".jpg"))
    else:  # smoke, or no sample: a few generated JPEGs (and one PNG for the fallback)
        rng = np.random.default_rng(0)
        files = []
        for i in range(8):
            path = tmp / (f"{i}.png" if i == 3 else f"{i}.jpg")
            Image.fromarray(rng.integers(0, 255, (48 + 8 * i, 64, 3), dtype=np.uint8)).save(path)
            files.append(str(path))
    repeats = max(1, -(-s.data_images // len(files)))
    return [(f, i % 1000) for i, f in enumerate(files * repeats)][: s.data_images]


def _consume(loader, prep, device, n: int) -> float:
    seen, start = 0, None
    for batch in loader:
        images = batch[0]
        if prep is not None:
            images = prep(images if not torch.is_tensor(images) else images.to(device, non_blocking=True))
        else:
            images = images.to(device, non_blocking=True)
        if start is None:  # the first batch pays for worker start-up
            sync(device)
            start = time.perf_counter()
            continue
        seen += len(images)
        if seen >= n:
            break
    sync(device)
    return seen / (time.perf_counter() - start) if start and seen else 0.0


def _fast_loader(s: Settings, files, decode: str):
    import functools

    from hf_transfer_seg.data.classification import FolderClassification, collate
    from hf_transfer_seg.data.gpu_augment import EncodingTrainTransform, collate_encoded
    from hf_transfer_seg.data.uint8_transforms import TrainTransformU8

    cls = EncodingTrainTransform if decode == "gpu" else TrainTransformU8
    ds = FolderClassification(files, [str(i) for i in range(1000)], transform=cls(s.size, scale=(0.8, 1.0)), seed=0)
    fn = functools.partial(collate_encoded, size=s.size) if decode == "gpu" else collate
    return torch.utils.data.DataLoader(
        ds, batch_size=s.batch, shuffle=True, drop_last=True, num_workers=s.workers, collate_fn=fn,
        pin_memory=s.device.type == "cuda", persistent_workers=True, prefetch_factor=4,
    )


def section_data_path(s: Settings, store: dict, files) -> None:
    from timm.data import create_loader
    from timm.data.dataset import ImageDataset

    from hf_transfer_seg.data.gpu_augment import DevicePrep

    prep = DevicePrep((0.485, 0.456, 0.406), (0.229, 0.224, 0.225), s.device, channels_last=True)
    n = len(files) - 2 * s.batch
    ours = _consume(_fast_loader(s, files, "cpu"), prep, s.device, n)
    store["cpu_decode"] = ours
    folder = Path(tempfile.mkdtemp(prefix="gpu-check-timm-"))
    for i, (path, _) in enumerate(files):
        (folder / "c").mkdir(exist_ok=True)
        (folder / "c" / f"{i}{Path(path).suffix}").symlink_to(path)
    timm_loader = create_loader(
        ImageDataset(str(folder)), s.size, s.batch, is_training=True, scale=(0.8, 1.0), hflip=0.5, color_jitter=None,
        interpolation="bilinear", num_workers=s.workers, device=s.device, use_prefetcher=True,
        pin_memory=s.device.type == "cuda",
    )
    baseline = _consume(timm_loader, None, s.device, n)
    result(
        "data_path",
        f"{s.workers} workers, {len(files)} images ({'ImageNet sample, looped' if SAMPLE.is_dir() and not s.smoke else 'generated'}), "
        f"{s.size}px simple recipe to the device: fast path {ours:.0f} images/s vs timm create_loader {baseline:.0f} "
        f"images/s = {ours / max(baseline, 1e-9):.2f}x",
    )


def section_gpu_decode(s: Settings, store: dict, files) -> None:
    from hf_transfer_seg.data.gpu_augment import DevicePrep, GpuDecoder

    prep = DevicePrep((0.485, 0.456, 0.406), (0.229, 0.224, 0.225), s.device, channels_last=True)
    if prep.decoder is None:  # CPU smoke: the same code with decode_jpeg on the CPU
        prep.decoder = GpuDecoder(s.device)
    n = len(files) - 2 * s.batch
    gpu = _consume(_fast_loader(s, files, "gpu"), prep, s.device, n)
    cpu = store.get("cpu_decode") or _consume(_fast_loader(s, files, "cpu"), prep, s.device, n)
    where = "nvJPEG" if s.device.type == "cuda" else "decode_jpeg on the CPU (smoke)"
    result(
        "gpu_decode",
        f"--decode gpu ({where}) {gpu:.0f} images/s vs --decode cpu {cpu:.0f} images/s = {gpu / max(cpu, 1e-9):.2f}x "
        f"({prep.decoder.failures} images fell back to the CPU decoder)",
    )


# ---------------------------------------------------------------------------------------------- 4: scoring


def section_scoring(s: Settings, store: dict) -> None:
    import timm

    from hf_transfer_seg.scoring.features import feature_levels
    from hf_transfer_seg.scoring.plan import ScoringPlan, bootstrap_weights
    from hf_transfer_seg.scoring.scorer import score_model

    m = s.score_images
    g = torch.Generator().manual_seed(0)
    plan = ScoringPlan(
        target_key="random", target_description="random views", target_synthetic=True, seed=0, image_size=s.size,
        jitter="image", image_indices=list(range(m)), negative=torch.roll(torch.arange(m), 1),
        view1=torch.rand(m, 3, s.size, s.size, generator=g), view2=torch.rand(m, 3, s.size, s.size, generator=g),
        weights=bootstrap_weights(m, g, 100),
    )
    model = timm.create_model(s.model, features_only=True).eval().requires_grad_(False).to(s.device)
    if s.device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)

    def project():
        score_model(model, plan, batch_size=s.score_batch, device=s.device, precision="bf16" if s.amp else "fp32")

    x1, x2 = plan.view1.to(s.device), plan.view2.to(s.device)

    def bare():
        with torch.inference_mode(), torch.autocast(s.device.type, dtype=torch.bfloat16, enabled=s.amp):
            for start in range(0, m, s.score_batch):
                feature_levels(model, torch.cat([x1[start : start + s.score_batch], x2[start : start + s.score_batch]]))

    ours = 2 * m / timed(project, 2 if not s.smoke else 1, 1, s.device)
    baseline = 2 * m / timed(bare, 2 if not s.smoke else 1, 1, s.device)
    store["bare_forward"] = baseline
    result(
        "scoring",
        f"{s.model} features_only {'bf16' if s.amp else 'fp32'}, {m} image pairs: score_model (forward + full grid) {ours:.0f} images/s vs bare "
        f"forward {baseline:.0f} images/s = {ours / baseline:.2f}x",
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu-smoke", action="store_true", help="every section tiny on the CPU (under a minute)")
    parser.add_argument("--sections", default="train_step,data_path,gpu_decode,train_fed,scoring,runs,compile")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    s = Settings(args.cpu_smoke)
    if s.smoke:
        torch.set_num_threads(1)
    if s.device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        print(f"device: {torch.cuda.get_device_name(s.device)}, {len(os.sched_getaffinity(0))} cores, torch {torch.__version__}")
    else:
        print(f"device: cpu{' (smoke)' if s.smoke else ' (no CUDA: sizes as on a GPU, expect slowness)'}, torch {torch.__version__}")
    store: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        files = None
        for name in args.sections.split(","):
            start = time.perf_counter()
            try:
                if name in ("data_path", "gpu_decode", "train_fed") and files is None:
                    files = _files(s, Path(tmp))
                fn = {
                    "train_step": lambda: section_train_step(s, store),
                    "data_path": lambda: section_data_path(s, store, files),
                    "gpu_decode": lambda: section_gpu_decode(s, store, files),
                    "train_fed": lambda: gpu_check_runs.section_train_fed(s, store, files),
                    "scoring": lambda: section_scoring(s, store),
                    "runs": lambda: gpu_check_runs.section_runs(s, store),
                    "compile": lambda: section_compile(s, store),
                }[name]
                fn()
            except Exception as exc:  # noqa: BLE001 - report and go on with the next section
                print(f"FAILED {name}: {type(exc).__name__}: {exc}", flush=True)
                traceback.print_exc(limit=4, file=sys.stdout)
            print(f"  ({name}: {time.perf_counter() - start:.1f}s)", flush=True)
            if s.device.type == "cuda":
                torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
