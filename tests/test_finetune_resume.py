"""A fine-tune killed mid-run resumes inside the run (--resume) and leaves no empty pushed repo (issue 26, item 6/5).

A real ``hf-transfer-seg finetune`` process is killed (SIGKILL) once its state after epoch 2 is on disk."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[1]


def _target(root: Path) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    for i in range(5):
        mask = np.zeros((64, 64), np.uint8)
        mask[10 + i : 40 + i, 12:44] = 1
        Image.fromarray((mask * 150 + rng.integers(0, 80, mask.shape)).astype(np.uint8)).save(root / "images" / f"{i}.png")
        Image.fromarray(mask).save(root / "masks" / f"{i}.png")
    return root


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO_ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["OMP_NUM_THREADS"] = "1"
    return env


def test_killed_finetune_resumes_after_its_last_epoch_and_pushes_only_at_the_end(tmp_path, hub_endpoint, repo_id):
    import timm
    from huggingface_hub import HfApi

    from hf_transfer_seg.models.checkpoint import save_checkpoint

    torch.manual_seed(0)
    save_checkpoint(timm.create_model("test_resnet", num_classes=10), tmp_path / "enc")
    target = _target(tmp_path / "target")
    out = tmp_path / "out"
    args = [sys.executable, "-m", "hf_transfer_seg", "finetune", "--encoder-folder", str(tmp_path / "enc"), "--target",
            str(target), "--epochs", "8", "--batch-size", "2", "--image-size", "32", "--crops-per-image", "4",
            "--eval-every", "100", "--no-card", "--no-progress", "--output-dir", str(out), "--push-to", repo_id]
    proc = subprocess.Popen(args, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    state = out / "resume" / "epoch-0002" / "state.json"
    try:
        while not state.exists() and proc.poll() is None:
            time.sleep(0.2)
        assert proc.poll() is None, f"the run ended before epoch 2 was saved: {proc.stdout.read()}"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    saved = sorted(p.name for p in (out / "resume").glob("epoch-*"))
    assert saved and all(n >= "epoch-0002" for n in saved)
    assert not HfApi().repo_exists(repo_id)  # the write check left no empty repo behind; nothing was pushed yet
    assert not (out / "metrics.json").exists()

    other = subprocess.run([*args, "--resume", "--lr", "0.01"], env=_env(), capture_output=True, text=True, timeout=600)
    assert other.returncode == 2, other.stderr
    assert "written by another run (different recipe)" in other.stderr.strip().splitlines()[-1]
    assert sorted(p.name for p in (out / "resume").glob("epoch-*")) == saved  # the refused resume lost nothing

    done = subprocess.run([*args, "--resume"], env=_env(), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    epoch = int(saved[-1].split("-")[1])
    assert f"resuming after epoch {epoch} of 8" in done.stderr
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["resumed_after_epoch"] == epoch
    assert [row["epoch"] for row in summary["history"]] == list(range(1, 9))  # epochs before the kill kept
    assert summary["pushed"]["repo"] == repo_id
    files = {f.rfilename for f in HfApi().model_info(repo_id).siblings}
    assert {"model.safetensors", "config.json", "README.md"} <= files
    assert not (out / "resume").exists()


def test_resume_state_is_safetensors_and_restores_the_optimizer(tmp_path):
    """The saved state holds no pickle and restores momentum, schedule and both random generators exactly."""
    from hf_transfer_seg.finetune import resume

    model = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.PolynomialLR(opt, total_iters=10, power=0.9)
    gen = torch.Generator().manual_seed(3)
    model(torch.rand(4, 3)).sum().backward()
    opt.step()
    sched.step()
    ident = {"seed": 0}
    resume.save(tmp_path, epoch=1, model=model, optimizer=opt, scheduler=sched, generator=gen, identity=ident, progress={"history": []})
    folder = resume.latest(tmp_path)
    assert sorted(p.name for p in folder.iterdir()) == ["model.safetensors", "optimizer.safetensors", "rng.safetensors", "state.json"]
    expected_draw, expected_gen = torch.rand(3), torch.rand(3, generator=gen)

    model2 = torch.nn.Linear(3, 2)
    opt2 = torch.optim.SGD(model2.parameters(), lr=0.1, momentum=0.9)
    sched2 = torch.optim.lr_scheduler.PolynomialLR(opt2, total_iters=10, power=0.9)
    gen2 = torch.Generator().manual_seed(99)
    state = resume.load(folder, model=model2, optimizer=opt2, scheduler=sched2, generator=gen2, identity=ident)
    assert state["epoch"] == 1
    assert torch.equal(model2.weight, model.weight)
    for p, p2 in zip(model.parameters(), model2.parameters()):
        assert torch.equal(opt.state[p]["momentum_buffer"], opt2.state[p2]["momentum_buffer"])
    assert sched2.get_last_lr() == sched.get_last_lr()
    assert torch.equal(torch.rand(3), expected_draw) and torch.equal(torch.rand(3, generator=gen2), expected_gen)
    from hf_transfer_seg.errors import ConfigError

    with pytest.raises(ConfigError, match="another run"):
        resume.load(folder, model=model2, optimizer=opt2, scheduler=sched2, generator=gen2, identity={"seed": 1})
