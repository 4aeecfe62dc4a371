"""``pretrain --data-path dali``: a real run on real JPEGs, the loader's epochs against the fast path's, bad input.

DALI is an extra (``pip install -e '.[dali]'``): the tests that run it skip without it; the one that checks the
message for a missing DALI hides the installed one from its process (``sys.modules``), as an absent package.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--encoder", "test_resnet", "--image-size", "32", "--batch-size", "8", "--lr", "2e-3", "--num-workers", "1",
        "--log-every", "0", "--epochs", "2", "--checkpoint-epochs", "1,2", "--data-path", "dali"]
pytestmark = pytest.mark.slow


def _dali():
    return pytest.importorskip("nvidia.dali", reason="DALI is an extra: pip install -e '.[dali]'")


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_DISABLE_PROGRESS_BARS": "1", "TQDM_DISABLE": "1"}


def cli(*args: str, hide_dali: bool = False) -> subprocess.CompletedProcess:
    code = ("import runpy, sys\n"
            + ("sys.modules['nvidia.dali'] = None  # as if DALI were not installed\n" if hide_dali else "")
            + "sys.argv = ['hf-transfer-seg', *sys.argv[1:]]\nrunpy.run_module('hf_transfer_seg', run_name='__main__')")
    return subprocess.run([sys.executable, "-c", code, *args], env=_env(), capture_output=True, text=True, timeout=400,
                          cwd=ROOT)


@pytest.fixture
def imagenet_folder(shared_dir, tmp_path) -> Path:
    """train/<class>/ and val/<class>/ from 40 real ImageNet JPEGs (4 classes: a tiny run, not a meaningful task)."""
    sample = shared_dir / "data" / "imagenet-sample"
    if not sample.is_dir():
        pytest.skip(f"{sample} is absent")
    root = tmp_path / "imagenet"
    for i, path in enumerate(sorted(sample.glob("*.JPEG"))[:40]):
        folder = root / ("val" if i >= 32 else "train") / f"class{i % 4}"
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, folder / path.name)
    return root


def _refused(run: subprocess.CompletedProcess, out: Path, said: str) -> None:
    assert run.returncode == 2, run.stderr[-2000:]
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and said in lines[0], run.stderr[-2000:]
    assert not any((out / part).exists() for part in ("state", "pending", "run_config.json"))


def test_a_tiny_pretraining_run_trains_from_dali_on_real_jpegs(imagenet_folder, tmp_path):
    _dali()
    out = tmp_path / "run"
    run = cli("pretrain", *TINY, "--dataset", str(imagenet_folder), "--output-dir", str(out))
    assert run.returncode == 0, run.stderr[-3000:]
    assert "data path dali" in run.stderr and "4 steps/epoch, 8 steps" in run.stderr
    assert json.loads((out / "run_config.json").read_text())["data_path"] == "dali"
    for revision in ("epoch-0001", "epoch-0002"):
        assert (out / "pending" / revision / "model.safetensors").stat().st_size > 0
    assert (out / "state" / "LATEST").read_text().strip() == "step-00000008"


def _labelled_jpegs(tmp_path: Path, n: int) -> list[tuple[str, int]]:
    """Solid-colour JPEGs whose red value encodes their label (the label = the file's index)."""
    files = []
    for label in range(n):
        path = tmp_path / f"{label}.jpg"
        Image.fromarray(np.full((36, 44, 3), (20 * label, 128, 60), np.uint8)).save(path, quality=95)
        files.append((str(path), label))
    return files


def test_each_process_trains_the_fast_paths_batches_of_each_epoch_and_resumes_mid_epoch(tmp_path):
    """The order and split Accelerate gives the fast path (EpochSampler, batches dealt to processes in turn)."""
    _dali()
    from accelerate.data_loader import BatchSamplerShard

    from hf_transfer_seg.data.classification import EpochSampler
    from hf_transfer_seg.data.dali import EpochLoader

    files = _labelled_jpegs(tmp_path, 12)
    for epoch in (0, 1):
        sampler = EpochSampler(len(files), seed=3)
        sampler.set_epoch(epoch)
        batches = torch.utils.data.BatchSampler(sampler, batch_size=2, drop_last=True)
        for rank in (0, 1):
            loader = EpochLoader(files, batch_size=2, seed=3, process_index=rank, num_processes=2, label_device="cpu",
                                 image_size=16, workers=1)
            loader.set_epoch(epoch)
            expected = [i for batch in BatchSamplerShard(batches, num_processes=2, process_index=rank) for i in batch]
            seen = []
            for images, labels, skipped in loader:
                red = images[:, 0].float().mean(dim=(1, 2))
                assert images.dtype == torch.uint8 and skipped == [] and torch.allclose(red, 20 * labels.float(), atol=3)
                seen += labels.tolist()
            assert len(loader) == 3 and seen == expected
            assert [int(v) for _, labels, _ in loader.from_batch(2) for v in labels] == expected[4:]  # resume after 2 batches


def test_bad_input_is_refused_in_one_line_before_training(tmp_path, imagenet_folder):
    out = tmp_path / "run"
    _refused(cli("pretrain", *TINY, "--dataset", str(imagenet_folder), "--output-dir", str(out), hide_dali=True),
             out, "pip install -e '.[dali]'")
    _dali()
    _refused(cli("pretrain", *TINY, "--recipe", "advanced", "--dataset", str(imagenet_folder), "--output-dir", str(out)),
             out, "--data-path dali builds the simple recipe only")
    _refused(cli("pretrain", *TINY, "--output-dir", str(out)), out, "not the synthetic set; use --data-path fast")
    (imagenet_folder / "train" / "class0" / "broken.JPEG").write_bytes(b"not a JPEG")
    run = cli("pretrain", *TINY, "--dataset", str(imagenet_folder), "--output-dir", str(out))
    errors = [line.split("error: ", 1)[1] for line in run.stderr.splitlines() if "error: " in line]  # after tqdm's \r
    assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr[-2000:]
    assert len(errors) == 1 and "--data-path dali does not skip unreadable images" in errors[0], run.stderr[-2000:]
