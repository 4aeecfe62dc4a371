"""Fine-tuning from local-Hub revisions: training improves Dice, pushed models load back, cards, sweep, report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import torch

from hf_transfer_seg.cards import get_section_text
from hf_transfer_seg.errors import WeightsError

TINY = dict(batch_size=8, image_size=64, eval_every=1, num_workers=0)


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(1)  # many test processes share two cores


@pytest.fixture(scope="module")
def encoder_repo(hub_endpoint, tmp_path_factory):
    """A repo with three checkpoint revisions of a tiny timm encoder (epoch-0001..0003)."""
    import timm

    from hf_transfer_seg import hub
    from hf_transfer_seg.models.checkpoint import save_checkpoint

    repo = f"test-org/ft-encoder-{uuid.uuid4().hex[:8]}"
    for epoch in (1, 2, 3):
        torch.manual_seed(epoch)
        folder = tmp_path_factory.mktemp(f"ckpt{epoch}")
        save_checkpoint(timm.create_model("test_resnet", num_classes=10), folder)
        hub.push_revision(folder, repo, epoch)
    return repo


def _config(repo, revision="epoch-0001", **kw):
    from hf_transfer_seg.finetune import FinetuneConfig

    base = dict(encoder_repo=repo, revision=revision, target="mni152-tissue", resize_longest=64, epochs=4, **TINY)
    base.update(kw)
    return FinetuneConfig(**base)


def test_mni_finetune_improves_pushes_and_loads_back_with_one_call(encoder_repo, repo_id):
    from hf_transfer_seg import hub
    from hf_transfer_seg.cards import get_namespace
    from hf_transfer_seg.finetune import finetune, load_segmentation_model
    from hf_transfer_seg.finetune.push import push_segmentation_model, record_downstream

    result = finetune(_config(encoder_repo), progress=False)
    first, last = result.first_metrics["dice_mean"], result.metrics["dice_mean"]
    assert last > first + 0.05, (first, last)
    assert result.encoder["sha"] == hub.branch_sha(encoder_repo, "epoch-0001")
    assert set(result.metrics["per_class"]) == {"background", "grey_matter", "white_matter"}

    pushed = push_segmentation_model(result, repo_id)
    model = load_segmentation_model(repo_id)  # the one documented call: no other repo needed
    image = load_image_of(result)
    torch.testing.assert_close(model.predict_proba(image), result.model.predict_proba(image))
    assert torch.equal(model.predict(image), result.model.predict(image))

    card, _ = hub.read_card(repo_id)
    assert card.data.base_model == encoder_repo
    assert get_namespace(card.data, "base")["sha"] == result.encoder["sha"]
    assert get_namespace(card.data, "synthetic") is False and "**Data: real images" in card.text
    # mni152-tissue is no Hub dataset: the figures are in the card's metadata and text, with no model-index
    assert card.data.eval_results is None and get_namespace(card.data, "metrics")["dice_mean"] == pytest.approx(last)
    assert card.data.license == "other" and card.data.license_name == "not-set"  # no --license and none on the encoder
    assert "License" in get_section_text(card.text, "license")
    assert "load_segmentation_model" in card.text

    record_downstream(result, seg_push=pushed)
    enc_card, _ = hub.read_card(encoder_repo, "epoch-0001")
    entry = get_namespace(enc_card.data, "downstream")["mni152-tissue"]
    assert entry["dice_mean"] == pytest.approx(last) and entry["seeds"] == [0] and entry["frozen"] is False
    assert entry["seg_repo"] == f"{repo_id}@main"
    assert not enc_card.data.eval_results  # a U-Net's Dice is not the encoder's: no model-index entry here
    assert "U-Nets fine-tuned from this checkpoint" in get_section_text(enc_card.text, "downstream")
    assert "<!-- hf-transfer-seg:downstream -->" in enc_card.text


def load_image_of(result):
    from hf_transfer_seg.data.registry import load_target

    target = load_target("mni152-tissue", resize_longest=64)
    name = result.split["val"][0]
    return next(s.image for s in target.samples if s.name == name)


@pytest.mark.shared
def test_drive_finetune_from_revision_improves(encoder_repo, shared_dir):
    from hf_transfer_seg.finetune import finetune

    config = _config(encoder_repo, target=str(shared_dir / "data" / "drive-train"), resize_longest=256,
                     epochs=4, crops_per_image=8, eval_every=0, seed=0)
    result = finetune(config, progress=False)
    assert result.target["key"] == "local:data/drive-train" and result.target["num_images"] == 20
    assert len(result.split["val"]) == 4
    first, last = result.first_metrics["dice_mean"], result.metrics["dice_mean"]
    assert last > first + 0.02, (first, last)


def test_revision_without_safetensors_fails_before_training(hub_endpoint, repo_id, tmp_path):
    from huggingface_hub import HfApi

    from hf_transfer_seg import hub
    from hf_transfer_seg.finetune import finetune

    (tmp_path / "config.json").write_text(json.dumps({"architecture": "test_resnet", "num_classes": 10}))
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x04pickle that must never be loaded")
    hub.push_revision(tmp_path, repo_id, 5)
    with pytest.raises(WeightsError, match=r"no model\.safetensors.*pickle"):
        finetune(_config(repo_id, revision="epoch-0005"), progress=False)
    assert "pytorch_model.bin" in HfApi().list_repo_files(repo_id, revision="epoch-0005")


def test_finetune_cli_writes_the_encoder_card_and_metrics(encoder_repo, tmp_path, capsys):
    from hf_transfer_seg import hub
    from hf_transfer_seg.cards import get_namespace
    from hf_transfer_seg.cli import main

    out = tmp_path / "run"
    code = main(["finetune", "--encoder-repo", encoder_repo, "--revision", "epoch-0002", "--target", "mni152-wm",
                 "--resize-longest", "64", "--epochs", "1", "--batch-size", "8", "--image-size", "64",
                 "--freeze-encoder", "--seed", "4", "--output-dir", str(out), "--no-progress"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "mni152-wm: Dice" in printed and "white_matter" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["recipe"]["frozen"] is True and metrics["seed"] == 4
    card, _ = hub.read_card(encoder_repo, "epoch-0002")
    entry = get_namespace(card.data, "downstream")["mni152-wm@frozen"]
    assert entry["seeds"] == [4] and entry["frozen"] is True
    assert not card.data.eval_results and "| frozen |" in get_section_text(card.text, "downstream")


def _add_scores(repo, target_key, scores):
    """Record robustness scores in revision cards, as `hf-transfer-seg score` writes them (shared card schema)."""
    from hf_transfer_seg import hub
    from hf_transfer_seg.cards import get_namespace, set_namespace

    for revision, score in scores.items():
        def edit(card, score=score):
            robustness = get_namespace(card.data, "robustness", {}) or {}
            robustness[target_key] = {"cosine_m0.5_L-1_flat": {"score": score, "status": "ok", "num_images": 8, "seed": 0}}
            set_namespace(card.data, "robustness", robustness)
            return card

        hub.update_card(repo, revision, edit, commit_message="score")


def test_sweep_records_mean_and_spread_resumes_and_feeds_the_report(encoder_repo, tmp_path, capsys):
    from hf_transfer_seg import hub
    from hf_transfer_seg.cards import get_namespace
    from hf_transfer_seg.cli import main

    args = ["sweep", "--repo-id", encoder_repo, "--target", "mni152-tissue", "--resize-longest", "64", "--limit", "10",
            "--epochs", "1", "--batch-size", "8", "--image-size", "64", "--seeds", "2", "--transfer-pixels", "200",
            "--no-progress"]
    assert main(args) == 0
    assert "trivial baselines on the same images: all-background Dice 0.0000" in capsys.readouterr().out
    for revision in ("epoch-0001", "epoch-0002", "epoch-0003"):
        card, _ = hub.read_card(encoder_repo, revision)
        entry = get_namespace(card.data, "downstream")["mni152-tissue"]
        assert entry["baselines"]["majority_class_name"] == "background"  # the floor stored beside every seed's Dice
        assert "best trivial Dice" in card.text
        dice = [r["dice"] for r in entry["runs"]]
        assert entry["seeds"] == [0, 1] and entry["epochs"] == 1
        assert entry["dice_mean"] == pytest.approx(sum(dice) / 2)
        assert entry["dice_std"] == pytest.approx(abs(dice[0] - dice[1]) / 2**0.5)
        transfer = get_namespace(card.data, "transferability")["mni152-tissue"]
        assert transfer["pixels"] > 0 and transfer["logme"] == transfer["logme"]  # finite
        assert 0.0 <= transfer["linear_probe_dice"] <= 1.0
    main_card, _ = hub.read_card(encoder_repo, "main")
    summary = get_namespace(main_card.data, "downstream_summary")["mni152-tissue"]
    assert [r["revision"] for r in summary["rows"]] == ["epoch-0001", "epoch-0002", "epoch-0003"]
    assert "plots/downstream_mni152-tissue.png" in main_card.text
    from huggingface_hub import HfApi

    assert "plots/downstream_mni152-tissue.png" in HfApi().list_repo_files(encoder_repo)

    capsys.readouterr()
    assert main(args + ["--no-transferability", "--no-summary"]) == 0  # resumes: every seed is recorded already
    assert "skipped 6 already recorded" in capsys.readouterr().out

    _add_scores(encoder_repo, "mni152-tissue", {"epoch-0001": 0.9, "epoch-0002": 0.5, "epoch-0003": 0.7})
    out = tmp_path / "report"
    assert main(["report", "--repo-id", encoder_repo, "--target", "mni152-tissue", "--output", str(out), "--bootstrap", "100"]) == 0
    report = json.loads((out / "report.json").read_text())
    preds = report["predictors"]
    assert {"robustness:cosine_m0.5_L-1_flat", "logme", "linear_probe_dice"} <= set(preds)
    score = preds["robustness:cosine_m0.5_L-1_flat"]
    assert score["series"][encoder_repo]["n"] == 3 and score["direction"] == "lower"
    assert report["n_rows"] == 3 and report["synthetic"] == {"pretraining": None, "target": False}
    assert (out / "score_vs_dice.png").is_file() and (out / "report.md").read_text().startswith("# ")


@pytest.mark.slow
def test_finetune_runs_under_accelerate_launch(encoder_repo, tmp_path):
    from hf_transfer_seg import hub
    from hf_transfer_seg.cards import get_namespace

    accelerate = Path(sys.executable).with_name("accelerate")
    cmd = [str(accelerate), "launch", "--num_processes", "1", "--cpu", "--num_machines", "1", "--mixed_precision", "no",
           "--dynamo_backend", "no", "-m", "hf_transfer_seg", "finetune", "--encoder-repo", encoder_repo,
           "--revision", "epoch-0003", "--target", "mni152-wm", "--resize-longest", "64", "--limit", "8", "--epochs", "1",
           "--batch-size", "4", "--image-size", "64", "--seed", "9", "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "mni152-wm: Dice" in proc.stdout
    card, _ = hub.read_card(encoder_repo, "epoch-0003")
    assert 9 in get_namespace(card.data, "downstream")["mni152-wm"]["seeds"]


def test_hub_dataset_target_with_image_and_mask_columns(hub_endpoint, repo_id, tmp_path):
    import datasets
    import numpy as np
    from huggingface_hub import HfApi
    from PIL import Image

    from hf_transfer_seg.data.registry import load_target
    from hf_transfer_seg.errors import DataError

    rng = np.random.default_rng(0)
    images, labels = [], []
    for _ in range(5):
        images.append(Image.fromarray(rng.integers(0, 255, (40, 36, 3), dtype=np.uint8)))
        mask = np.zeros((40, 36), np.uint8)
        mask[5:20, 3:9] = 255
        labels.append(Image.fromarray(mask))
    features = datasets.Features({"image": datasets.Image(), "label": datasets.Image(), "note": datasets.Value("string")})
    ds = datasets.Dataset.from_dict({"image": images, "label": labels, "note": ["x"] * 5}, features=features)
    (tmp_path / "data").mkdir()
    ds.to_parquet(str(tmp_path / "data" / "train-00000-of-00001.parquet"))
    api = HfApi()
    api.create_repo(repo_id, repo_type="dataset")
    api.upload_folder(repo_id=repo_id, folder_path=tmp_path, repo_type="dataset")

    target = load_target(repo_id)
    assert target.key == repo_id and target.num_classes == 2 and len(target.samples) == 5
    assert int(target.samples[0].mask.sum()) == 15 * 6  # 0/255 read as background/foreground
    assert target.samples[0].image.shape == (3, 40, 36)
    with pytest.raises(DataError, match="mask column"):
        load_target(repo_id, mask_column="nope")
    with pytest.raises(DataError, match="cannot load dataset"):
        load_target("test-org/no-such-dataset-anywhere")
