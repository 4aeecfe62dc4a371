"""``hf-transfer-seg pretrain`` end to end: real processes (hf-transfer-seg launch, 2 gloo ranks), the real local hub.

Tiny on purpose: test_resnet at 32 px on 64 synthetic images, batch 8, fractional checkpoint epochs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from huggingface_hub import HfApi, ModelCard, hf_hub_download
from PIL import Image
from safetensors.torch import load_file

from hf_transfer_seg import hub
from hf_transfer_seg.cards import get_namespace
from hf_transfer_seg.localhub import local_hub
from hf_transfer_seg.pretrain.loop import DEBUG_DIR_ENV, STEP_DELAY_ENV

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "--encoder", "test_resnet", "--image-size", "32", "--train-size", "64", "--val-size", "32",
    "--batch-size", "8", "--lr", "2e-3", "--num-workers", "0", "--log-every", "0",
]
pytestmark = pytest.mark.slow


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"PYTHONPATH": str(ROOT), "HF_HUB_DISABLE_PROGRESS_BARS": "1", "TQDM_DISABLE": "1"})
    env.update(extra)
    return env


def cli(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "hf_transfer_seg", *args], env=env or _env(), capture_output=True, text=True,
        timeout=timeout, cwd=ROOT,
    )


def start_cli(*args: str, env: dict, log: Path) -> subprocess.Popen:
    handle = open(log, "w")
    return subprocess.Popen([sys.executable, "-m", "hf_transfer_seg", *args], env=env, stdout=handle, stderr=subprocess.STDOUT, cwd=ROOT)


def accelerate_launch(num_processes: int, *args: str, env: dict, timeout: float = 400) -> subprocess.CompletedProcess:
    """``hf-transfer-seg launch`` (Accelerate's launcher; torchrun binds the rendezvous port itself)."""
    command = [
        sys.executable, "-m", "hf_transfer_seg", "launch", "--config_file", str(ROOT / "accelerate_configs" / "multi_gpu.yaml"),
        "--num_processes", str(num_processes), "--mixed_precision", "no", "--", *args,
    ]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def _wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the run ended (rc {proc.returncode}) before {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def _latest_step(out: Path) -> str | None:
    pointer = out / "state" / "LATEST"
    return pointer.read_text().strip() if pointer.is_file() else None


def checkpoint_commits(api: HfApi, repo_id: str, branch: str) -> list[str]:
    return [c.title for c in api.list_repo_commits(repo_id, revision=branch) if c.title.startswith("Checkpoint ")]


def test_two_process_run_pushes_one_loadable_revision_per_checkpoint(hub_endpoint, repo_id, tmp_path):
    import timm
    from transformers import AutoModel

    out, debug = tmp_path / "out", tmp_path / "debug"
    # global batch 8 = 2 processes x 2 images x 2 accumulation steps
    done = accelerate_launch(
        2, "pretrain", *TINY, "--grad-accum", "2", "--epochs", "1.5", "--checkpoint-epochs", "0.5,1,1.5", "--repo-id", repo_id,
        "--output-dir", str(out), env=_env(**{DEBUG_DIR_ENV: str(debug)}),
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "distributed: MULTI_CPU, 2 process(es) on 1 machine(s), device cpu, precision no" in done.stderr
    names = ["epoch-0000.5", "epoch-0001", "epoch-0001.5"]
    revisions = hub.list_revisions(repo_id)
    assert [r.name for r in revisions] == names

    api = HfApi()
    x = torch.rand(2, 3, 32, 32)
    for step, info in zip((4, 8, 12), revisions):
        # the weights on the Hub are the ones of that checkpoint, and both processes held the same weights
        local = load_file(str(out / "checkpoints" / info.name / "model.safetensors"))
        ranks = {(debug / f"rank{r}-{info.name}.sha256").read_text() for r in (0, 1)}
        assert len(ranks) == 1, f"weights differ between ranks at {info.name}"
        model = timm.create_model(f"hf-hub:{repo_id}@{info.name}", pretrained=True).eval()
        assert all(torch.equal(model.state_dict()[k], v) for k, v in local.items())
        assert list(model.pretrained_cfg["mean"]) == [0.0] * 3 and list(model.pretrained_cfg["std"]) == [1.0] * 3
        wrapped = AutoModel.from_pretrained(repo_id, revision=info.name).eval()
        with torch.no_grad():
            assert torch.allclose(wrapped(x).pooler_output, model.forward_head(model.forward_features(x), pre_logits=True), atol=1e-5)
        card, _ = hub.read_card(repo_id, info.name)
        training = get_namespace(card.data, "training")
        assert (training["epoch"], training["global_step"], training["images_seen"]) == (info.epoch, step, step * 8)
        assert training["num_processes"] == 2 and training["synthetic"] is True and training["recipe"] == "simple"
        assert 0 <= training["top1"] <= training["top5"] <= 100 and "imagenet_top1" not in training and training["train_loss"] > 0
        assert {"wall_clock_hours", "code_version", "dataset", "skipped_images"} <= set(training)
        assert card.data.library_name == "timm" and "synthetic-data" in card.data.tags
        assert not card.data.eval_results  # synthetic data has no Hub dataset id: no model-index (top-1 in `training`)
        assert card.data.license == "apache-2.0"  # no --license: synthetic data made by this code carries the code's licence
        assert "Synthetic data" in card.text
        # exactly one checkpoint commit per branch: nobody else pushed, nothing was pushed twice
        assert checkpoint_commits(api, repo_id, info.name) == [f"Checkpoint {info.name} (epoch {info.epoch:g}, step {step})"]
        ledger = json.loads((out / "pushed" / f"{info.name}.json").read_text())
        assert ledger["sha"] == info.sha and ledger["pushed_by"]["rank"] == 0

    summary, _ = hub.read_card(repo_id, "main")
    rows = get_namespace(summary.data, "checkpoints")
    assert [(r["revision"], r["sha"]) for r in rows] == [(r.name, r.sha) for r in revisions]
    main_titles = [c.title for c in api.list_repo_commits(repo_id) if c.title.startswith("Summary: add")]
    assert len(main_titles) == 3
    latest = load_file(hf_hub_download(repo_id, "model.safetensors"))
    final = load_file(str(out / "checkpoints" / "epoch-0001.5" / "model.safetensors"))
    assert all(torch.equal(latest[k], final[k]) for k in final)
    assert not list((out / "pending").iterdir())


def test_sigkill_and_sigterm_then_resume_continue_exactly(hub_endpoint, repo_id, tmp_path):
    args = [*TINY, "--epochs", "5", "--checkpoint-epochs", "0.5,3,5"]  # optimizer steps 4, 24, 40
    reference = cli("pretrain", *args, "--output-dir", str(tmp_path / "ref"))
    assert reference.returncode == 0, reference.stderr[-3000:]

    # SIGKILL between the first and the second checkpoint: the run continues from the first one.
    # 50 ms per step keep the 20 steps between checkpoints longer than the time it takes us to react.
    out, slow = tmp_path / "out", _env(**{STEP_DELAY_ENV: "0.05"})
    proc = start_cli("pretrain", *args, "--repo-id", repo_id, "--output-dir", str(out), env=slow, log=tmp_path / "killed.log")
    _wait_for(lambda: _latest_step(out) == "step-00000004", 120, "the first checkpoint", proc)
    time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert _latest_step(out) == "step-00000004", "the run passed the second checkpoint before it was killed"

    # SIGTERM after the second checkpoint: the state is saved where the run stands (mid-epoch), exit 143
    proc = start_cli("pretrain", *args, "--repo-id", repo_id, "--output-dir", str(out), "--resume", env=slow, log=tmp_path / "resumed.log")
    _wait_for(lambda: _latest_step(out) == "step-00000024", 120, "the second checkpoint", proc)
    time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 143, (tmp_path / "resumed.log").read_text()[-3000:]
    log = (tmp_path / "resumed.log").read_text()
    assert "resumed from" in log and "step 4, epoch 0, batch 4" in log and "received SIGTERM" in log
    stopped = json.loads((out / "state" / _latest_step(out) / "trainer_state.json").read_text())
    assert 24 < stopped["global_step"] < 40 and not stopped["finished"]

    resumed = cli("pretrain", *args, "--repo-id", repo_id, "--output-dir", str(out), "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"step {stopped['global_step']}, epoch {stopped['epoch']}, batch {stopped['batch_in_epoch']}" in resumed.stderr
    api = HfApi()
    names = [r.name for r in hub.list_revisions(repo_id)]
    assert names == ["epoch-0000.5", "epoch-0003", "epoch-0005"]
    for name in names:
        assert len(checkpoint_commits(api, repo_id, name)) == 1, f"{name} pushed {checkpoint_commits(api, repo_id, name)}"
    rows = get_namespace(hub.read_card(repo_id, "main")[0].data, "checkpoints")
    assert [r["revision"] for r in rows] == names
    # bit for bit the weights of the uninterrupted run: model, optimizer, schedule, data order and RNG all resumed
    for name in ("epoch-0003", "epoch-0005"):
        pushed = load_file(hf_hub_download(repo_id, "model.safetensors", revision=name))
        expected = load_file(str(tmp_path / "ref" / "pending" / name / "model.safetensors"))
        assert all(torch.equal(pushed[k], expected[k]) for k in expected), name
    state = json.loads((out / "state" / _latest_step(out) / "trainer_state.json").read_text())
    assert state["finished"] and state["global_step"] == 40
    again = cli("pretrain", *args, "--repo-id", repo_id, "--output-dir", str(out), "--resume")
    assert again.returncode == 0 and "already finished" in again.stderr, again.stderr[-2000:]


def test_hub_down_during_the_run_then_push_pending_delivers(tmp_path):
    root, out = tmp_path / "hub2", tmp_path / "out"
    repo = "test-org/hub-down"
    # steps 4, 64, 72; 50 ms per step leave the hub seconds to go down before the second checkpoint
    args = [*TINY, "--epochs", "9", "--checkpoint-epochs", "0.5,8,9", "--push-attempts", "1", "--push-retry-delay", "0"]
    with local_hub(root) as endpoint:
        env = _env(HF_ENDPOINT=endpoint, **{STEP_DELAY_ENV: "0.05"})
        proc = start_cli("pretrain", *args, "--repo-id", repo, "--output-dir", str(out), env=env, log=tmp_path / "run.log")
        _wait_for(lambda: (out / "pushed" / "epoch-0000.5.json").is_file(), 120, "the first push", proc)
    # the hub is down now: training goes on, the later checkpoints wait in pending/
    # the run finishes training but exits 2: its checkpoints are not all delivered, and it says how to deliver them
    assert proc.wait(timeout=240) == 2, (tmp_path / "run.log").read_text()[-3000:]
    log = (tmp_path / "run.log").read_text()
    assert "are not on the Hub yet" in log and "hf-transfer-seg push-pending" in log and "Traceback" not in log
    assert sorted(p.name for p in (out / "pending").iterdir()) == ["epoch-0008", "epoch-0009"]
    state = json.loads((out / "state" / _latest_step(out) / "trainer_state.json").read_text())
    assert state["finished"] and state["global_step"] == 72

    with local_hub(root) as endpoint:
        delivered = cli("push-pending", "--output-dir", str(out), "--repo-id", repo, env=_env(HF_ENDPOINT=endpoint))
        assert delivered.returncode == 0, delivered.stderr[-3000:]
        api = HfApi(endpoint=endpoint)
        names = [r.name for r in hub.list_revisions(repo, api=api)]
        assert names == ["epoch-0000.5", "epoch-0008", "epoch-0009"]
        assert all(len(checkpoint_commits(api, repo, n)) == 1 for n in names)
        readme = hf_hub_download(repo, "README.md", endpoint=endpoint, cache_dir=tmp_path / "cache")
        assert [r["revision"] for r in get_namespace(ModelCard.load(readme).data, "checkpoints")] == names
        again = cli("push-pending", "--output-dir", str(out), "--repo-id", repo, env=_env(HF_ENDPOINT=endpoint))
        assert again.returncode == 0 and "nothing pending" in again.stdout
        assert all(len(checkpoint_commits(api, repo, n)) == 1 for n in names)
    assert not list((out / "pending").iterdir())


def test_unknown_encoder_and_dataset_without_labels_fail_with_the_fix(tmp_path):
    import datasets

    bad = cli("pretrain", "--encoder", "resnet5O", "--output-dir", str(tmp_path / "a"))
    assert bad.returncode == 2 and "unknown encoder 'resnet5O'" in bad.stderr and "resnet50" in bad.stderr
    assert "Traceback" not in bad.stderr

    images = [Image.fromarray(np.full((16, 16, 3), i * 20, np.uint8)) for i in range(4)]
    datasets.Dataset.from_dict({"image": images}, features=datasets.Features({"image": datasets.Image()})).save_to_disk(
        str(tmp_path / "unlabelled")
    )
    nolabel = cli("pretrain", *TINY, "--dataset", str(tmp_path / "unlabelled"), "--output-dir", str(tmp_path / "b"))
    assert nolabel.returncode == 2 and "no label column" in nolabel.stderr and "--label-column" in nolabel.stderr


def test_repo_the_token_cannot_write_fails_before_training(tmp_path):
    token, wrong = "hf_pretrainTestToken12345678", "hf_wrongPretrainToken87654321"
    with local_hub(tmp_path / "root", token=token) as endpoint:
        denied = cli(
            "pretrain", *TINY, "--epochs", "1", "--repo-id", "test-org/locked", "--output-dir", str(tmp_path / "out"),
            env=_env(HF_ENDPOINT=endpoint, HF_TOKEN=wrong),
        )
    assert denied.returncode == 2, denied.stderr[-3000:]
    assert "cannot push checkpoints to test-org/locked" in denied.stderr and "HF_TOKEN" in denied.stderr
    assert wrong not in denied.stderr + denied.stdout and token not in denied.stderr + denied.stdout
    # before training: nothing trained, nothing staged (no state, checkpoints or pending folder)
    assert not any((tmp_path / "out" / d).exists() for d in ("state", "checkpoints", "pending"))


def test_folder_with_a_corrupt_jpeg_trains_and_the_card_counts_it(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "imagenet-like"
    for split, n in (("train", 8), ("val", 2)):
        for cls in ("a", "b"):
            (root / split / cls).mkdir(parents=True)
            for i in range(n - (split == "train" and cls == "b")):  # 15 good + 1 broken = 4 batches of 4
                Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(root / split / cls / f"{i}.jpg")
    (root / "train" / "b" / "broken.jpg").write_bytes((root / "train" / "b" / "0.jpg").read_bytes()[:200])
    # options from a recipe file (the advanced recipe: RandAugment, Mixup/CutMix, RandomErasing, drop path), flags on top
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("recipe: advanced\nimage-size: 32\nbatch_size: 4\nepochs: 2\ncheckpoint_epochs: [2]\nencoder: resnet18\n")
    done = cli(
        "pretrain", "--config", str(recipe), "--encoder", "test_resnet", "--lr", "1e-3", "--num-workers", "0",
        "--dataset", str(root), "--output-dir", str(tmp_path / "out"),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "test_resnet, advanced recipe" in done.stderr
    first = next(line for line in done.stderr.splitlines() if " INFO " in line or " WARNING " in line)
    assert "distributed: NO, 1 process(es) on 1 machine(s), device cpu, precision no" in first, first  # the run's first line
    assert "skipping unreadable image" in done.stderr and "broken.jpg" in done.stderr
    assert "checkpoints stay local" in done.stderr
    card = ModelCard.load(tmp_path / "out" / "pending" / "epoch-0002" / "README.md")
    training = get_namespace(card.data, "training")
    assert training["skipped_images"] == 1 and training["synthetic"] is False and training["dataset"] == str(root)
    assert training["recipe"] == "advanced" and training["global_step"] == 8
    assert "Real data" in card.text and training["num_classes"] == 2


def test_streaming_hub_dataset_detects_columns_splits_and_size(hub_endpoint, repo_id, tmp_path):
    import datasets

    rng = np.random.default_rng(1)
    features = datasets.Features({"jpg": datasets.Image(), "cls": datasets.ClassLabel(names=["x", "y", "z"])})
    (tmp_path / "ds" / "data").mkdir(parents=True)
    for split, n in (("train", 24), ("validation", 6)):
        images = [Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)) for _ in range(n)]
        datasets.Dataset.from_dict({"jpg": images, "cls": [i % 3 for i in range(n)]}, features=features).to_parquet(
            str(tmp_path / "ds" / "data" / f"{split}-00000-of-00001.parquet")
        )
    # split sizes in the dataset card, as ImageNet's has them: streaming needs them to know the epoch length
    (tmp_path / "ds" / "README.md").write_text(
        "---\ndataset_info:\n  splits:\n  - name: train\n    num_examples: 24\n  - name: validation\n    num_examples: 6\n---\n"
    )
    api = HfApi()
    api.create_repo(repo_id, repo_type="dataset")
    api.upload_folder(folder_path=tmp_path / "ds", repo_id=repo_id, repo_type="dataset")
    done = cli(
        "pretrain", "--encoder", "test_resnet", "--image-size", "32", "--batch-size", "4", "--lr", "1e-3",
        "--num-workers", "0", "--epochs", "1", "--dataset", repo_id, "--streaming", "--output-dir", str(tmp_path / "out"),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "3 classes" in done.stderr and "6 steps/epoch" in done.stderr  # ClassLabel column, 24 // 4 from the split info
    training = get_namespace(ModelCard.load(tmp_path / "out" / "pending" / "epoch-0001" / "README.md").data, "training")
    assert training["dataset"] == repo_id and training["synthetic"] is False and training["top1"] is not None


def test_an_exception_in_training_still_delivers_every_checkpoint_written(hub_endpoint, repo_id, tmp_path):
    """The publisher is a context manager: however training fails, the checkpoints already written are on the Hub
    by the time the exception leaves ``run_pretraining``, or staged in pending/; none is lost, none half-written.

    The run is interrupted in its second checkpoint's card step (a callback exits): epoch-0000.5 was pushed by the
    publisher before the exception left; epoch-0001's weights were complete, so they are staged with a minimal
    card saying why (held back from the publisher), and ``push-pending`` delivers them."""
    from hf_transfer_seg.pretrain.config import build_config
    from hf_transfer_seg.pretrain.loop import run_pretraining
    from hf_transfer_seg.pretrain.publisher import list_pending, read_ledger

    out = tmp_path / "out"
    options = {
        "encoder": "test_resnet", "image_size": 32, "train_size": 64, "val_size": 32, "batch_size": 8, "lr": 2e-3,
        "num_workers": 0, "log_every": 0, "epochs": 1, "checkpoint_epochs": "0.5,1", "output_dir": str(out),
        "push_retry_delay": 0, "repo_id": repo_id,
    }

    def exit_at_the_second_checkpoint(folder: Path, epoch: float, revision: str) -> None:
        if epoch == 1:
            raise SystemExit(f"on_checkpoint exited at {revision}")

    with pytest.raises(SystemExit, match="on_checkpoint exited at epoch-0001"):
        run_pretraining(build_config(options), [exit_at_the_second_checkpoint])
    # the publisher's exit ran: its thread has stopped, with every queued push confirmed
    assert not [t for t in threading.enumerate() if t.name == "hf-transfer-seg-publisher"]
    assert set(read_ledger(out, repo_id)) == {"epoch-0000.5"}
    assert [r.name for r in hub.list_revisions(repo_id)] == ["epoch-0000.5"]
    assert (out / "checkpoints" / "epoch-0000.5" / "model.safetensors").is_file()
    assert list_pending(out) == ["epoch-0001"]
    assert sorted(p.name for p in (out / "pending").iterdir()) == ["epoch-0001"]  # nothing half-written
    staged = out / "pending" / "epoch-0001"
    assert {"model.safetensors", "config.json", "README.md"} <= {p.name for p in staged.iterdir()}
    card = ModelCard.load(staged / "README.md")
    assert "card-failed" in card.data.tags and "SystemExit: on_checkpoint exited at epoch-0001" in card.text

    delivered = cli("push-pending", "--output-dir", str(out), "--repo-id", repo_id, "--attempts", "1")
    assert delivered.returncode == 0, delivered.stderr[-3000:] + delivered.stdout
    assert [r.name for r in hub.list_revisions(repo_id)] == ["epoch-0000.5", "epoch-0001"]
    weights = hf_hub_download(repo_id, "model.safetensors", revision="epoch-0001", cache_dir=tmp_path / "cache")
    local = load_file(out / "checkpoints" / "epoch-0001" / "model.safetensors")
    assert all(torch.equal(local[k], v) for k, v in load_file(weights).items()) and local.keys() == load_file(weights).keys()
    assert not list((out / "pending").iterdir())
