"""``hf-transfer-seg score`` end to end on the local hub, with tiny real timm checkpoints pushed as revisions."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from huggingface_hub import HfApi, ModelCard, hf_hub_download
from PIL import Image

from hf_transfer_seg import hub
from hf_transfer_seg.cards import get_namespace, get_section_text
from hf_transfer_seg.cli import main as cli_main
from hf_transfer_seg.data.unlabelled import BUILTIN_RETINA
from hf_transfer_seg.data.registry import resolve_target
from hf_transfer_seg.models.checkpoint import save_checkpoint
from hf_transfer_seg.scoring import HEADLINE
from hf_transfer_seg.scoring.plan import build_plan
from hf_transfer_seg.scoring.scorer import score_folder

ROOT = Path(__file__).resolve().parents[1]
# --device cpu: the same fp32 numbers on a machine with a GPU (which would default to cuda + bf16)
FAST = ["--num-images", "8", "--image-size", "64", "--batch-size", "8", "--no-progress", "--device", "cpu", "--view-draws", "2"]
PLOT = "plots/robustness_skimage-retina.png"


def push_checkpoints(repo_id: str, tmp_path: Path, epochs=(1, 5, 20), top1=True) -> dict[str, tuple[hub.RevisionInfo, Path]]:
    """One tiny test_resnet per epoch (different random inits), pushed as revisions with a training card."""
    pushed = {}
    for i, epoch in enumerate(epochs):
        torch.manual_seed(100 + i)
        folder = save_checkpoint(timm.create_model("test_resnet", num_classes=10), tmp_path / f"ckpt-{epoch}")
        training = {"epoch": epoch, "synthetic": True}
        if top1:
            training["imagenet_top1"] = round(10.0 + i, 2)
        card = ModelCard(f"---\nlibrary_name: timm\nhf_transfer_seg:\n  training: {json.dumps(training)}\n---\n# checkpoint {epoch}\n")
        card.save(folder / "README.md")
        info = hub.push_revision(folder, repo_id, epoch)
        pushed[info.name] = (info, folder)
    return pushed


def push_pickle_only(repo_id: str, tmp_path: Path, epoch: int) -> hub.RevisionInfo:
    torch.manual_seed(7)
    folder = save_checkpoint(timm.create_model("test_resnet", num_classes=10), tmp_path / f"pickle-{epoch}")
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")  # safetensors bytes, but a pickle name
    return hub.push_revision(folder, repo_id, epoch)


def namespace(repo_id: str, revision: str) -> dict:
    card, _ = hub.read_card(repo_id, revision)
    return get_namespace(card.data)


def test_score_every_revision_records_cards_summary_plot_and_best(hub_endpoint, repo_id, tmp_path, capsys):
    pushed = push_checkpoints(repo_id, tmp_path)
    bad = push_pickle_only(repo_id, tmp_path, 10)

    assert cli_main(["score", "--repo-id", repo_id, "--target", BUILTIN_RETINA, *FAST]) == 0
    printed = capsys.readouterr().out

    # every good revision: the whole grid, model-index, a readable section; values match a local score
    plan = build_plan(resolve_target(BUILTIN_RETINA), num_images=8, seed=0, image_size=64, progress=False, view_draws=2)  # as FAST
    for name, (info, folder) in pushed.items():
        card, _ = hub.read_card(repo_id, name)
        entries = get_namespace(card.data, "robustness")[BUILTIN_RETINA]
        assert len(entries) == 5 * 3 * 5 * 2
        headline = entries[HEADLINE]
        assert headline["status"] == "ok" and headline["seed"] == 0 and headline["num_images"] == 8
        assert headline["image_size"] == 64 and headline["code_version"]
        assert headline["ci_low"] <= headline["score"] <= headline["ci_high"]
        local = score_folder(folder, plan, batch_size=8).scores[HEADLINE].score
        assert headline["score"] == pytest.approx(local, rel=1e-5)
        assert card.data.eval_results is None  # a built-in target is no Hub dataset: no model-index (no `custom`)
        # the card's YAML holds the headline; the whole grid is the JSON file committed with it
        stored = Path(hf_hub_download(repo_id, "README.md", revision=name)).read_text()
        yaml_bytes = len(stored.split("\n---", 1)[0].encode())
        assert yaml_bytes < 8192 and "per_image" not in stored
        grid = json.loads(Path(hf_hub_download(repo_id, f"robustness/grid_{BUILTIN_RETINA}.json", revision=name)).read_text())
        assert grid["robustness"][HEADLINE]["score"] == headline["score"] and len(grid["robustness"]) == len(entries)
        assert hub.read_card(repo_id, name, grid=False)[0].data.hf_transfer_seg["robustness"][BUILTIN_RETINA].keys() < entries.keys()
        section = get_section_text(card.text, "robustness")
        assert HEADLINE in section and "Lower is better" in section and "synthetic data" in section
        assert get_namespace(card.data, "training")["epoch"] == info.epoch  # pretraining's facts kept

    # the pickle-only revision: recorded failed, its .bin never downloaded
    failed = namespace(repo_id, bad.name)["robustness"][BUILTIN_RETINA][HEADLINE]
    assert failed["status"] == "failed" and "pytorch_model.bin" in failed["reason"]
    cache = Path(os.environ["HF_HOME"])
    assert not list(cache.rglob("pytorch_model.bin"))

    # main: summary rows, best revision with its sha, table, plot in the same commit
    card, _ = hub.read_card(repo_id, "main")
    assert (card.data.license, card.data.license_name) == ("other", "not-set")  # no license before: the stated default
    summary = get_namespace(card.data, "robustness_summary")[BUILTIN_RETINA]
    rows = {r["revision"]: r for r in summary["rows"]}
    assert set(rows) == set(pushed) | {bad.name}
    assert rows[bad.name]["status"] == "failed"
    scores = {n: rows[n]["score"] for n in pushed}
    best = min(scores, key=scores.get)
    assert summary["config"] == HEADLINE and summary["best_revision"] == best
    assert summary["best_sha"] == pushed[best][0].sha
    assert rows["epoch-0005"]["top1"] == 11.0
    section = get_section_text(card.text, "robustness")
    assert f"| {best} | " in section and "**best**" in section and PLOT in section
    assert all(f"| {n} |" in section for n in rows)
    png = Path(hf_hub_download(repo_id, PLOT)).read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    commits = HfApi().list_repo_commits(repo_id, revision="main")
    files_in_summary_commit = HfApi().list_repo_files(repo_id, revision=commits[0].commit_id)
    assert PLOT in files_in_summary_commit and "README.md" in files_in_summary_commit
    # ties: per-image values stored (revision card and main), every scored row tested against the best, paired
    per_image = json.loads(Path(hf_hub_download(repo_id, f"robustness/per_image_{BUILTIN_RETINA}.json")).read_text())
    assert set(per_image) == set(pushed) and len({p["plan"] for p in per_image.values()}) == 1
    assert len(namespace(repo_id, best)["robustness"][BUILTIN_RETINA][HEADLINE]["per_image"]) == len(per_image[best]["values"])
    assert rows[best]["tied_with_best"] is True and rows[bad.name]["tied_with_best"] is None
    assert all(isinstance(rows[n]["tied_with_best"], bool) for n in pushed)
    assert summary["tied_with_best"] == [n for n in rows if rows[n]["tied_with_best"]] and summary["lowest_revision"] == best
    # the terminal shows the same table
    assert f"| {best} |" in printed and "**best**" in printed and pushed[best][0].sha[:10] in printed

    # re-scoring one revision with another seed replaces its entry; other revisions and rows stay
    before = namespace(repo_id, "epoch-0001")["robustness"][BUILTIN_RETINA][HEADLINE]
    assert cli_main(["score", "--repo-id", repo_id, "--revisions", "epoch-0020", "--seed", "3", *FAST]) == 0
    assert namespace(repo_id, "epoch-0020")["robustness"][BUILTIN_RETINA][HEADLINE]["seed"] == 3
    assert namespace(repo_id, "epoch-0001")["robustness"][BUILTIN_RETINA][HEADLINE] == before
    rows_after = get_namespace(hub.read_card(repo_id, "main")[0].data, "robustness_summary")[BUILTIN_RETINA]["rows"]
    assert len(rows_after) == 4


def test_unknown_config_and_too_few_images_are_clear_errors(hub_endpoint, repo_id, tmp_path, capsys):
    push_checkpoints(repo_id, tmp_path, epochs=(1,))
    assert cli_main(["score", "--repo-id", repo_id, "--config", "cosine_m0.3_L-1_flat", *FAST]) == 2
    err = capsys.readouterr().err
    assert "unknown score configuration" in err and "cosine_m0_L-1_flat" in err
    few = tmp_path / "few"
    few.mkdir()
    for i in range(3):
        Image.fromarray(np.full((20, 20, 3), 60 * i, np.uint8)).save(few / f"{i}.png")
    assert cli_main(["score", "--repo-id", repo_id, "--target", str(few), *FAST]) == 2
    assert "at least 4" in capsys.readouterr().err
    # nothing was written to the revision by the failed attempts
    assert "robustness" not in namespace(repo_id, "epoch-0001")


def _retina_folder(folder: Path, n: int = 8) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    target = resolve_target(BUILTIN_RETINA)
    for i in range(n):
        array = (target.load(i * 7).permute(1, 2, 0).numpy() * 255).astype(np.uint8)
        Image.fromarray(array).convert("L").save(folder / f"tile{i}.png")  # grayscale target
    return folder


def _score_process(repo_id: str, target: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "hf_transfer_seg", "score", "--repo-id", repo_id, "--target", target, *FAST],
        cwd=ROOT,
        env=dict(os.environ),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.mark.slow
def test_two_scorers_at_once_lose_no_entry(hub_endpoint, repo_id, tmp_path):
    pushed = push_checkpoints(repo_id, tmp_path, top1=False)
    folder = _retina_folder(tmp_path / "gray" / "tiles")
    procs = [_score_process(repo_id, BUILTIN_RETINA), _score_process(repo_id, str(folder))]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    folder_key = "local:gray/tiles"
    for name in pushed:
        robustness = namespace(repo_id, name)["robustness"]
        assert set(robustness) == {BUILTIN_RETINA, folder_key}
        assert all(robustness[k][HEADLINE]["status"] == "ok" for k in robustness)
    card, _ = hub.read_card(repo_id, "main")
    summary = get_namespace(card.data, "robustness_summary")
    assert set(summary) == {BUILTIN_RETINA, folder_key}
    assert all(len(summary[k]["rows"]) == 3 for k in summary)
    files = HfApi().list_repo_files(repo_id)
    assert PLOT in files and "plots/robustness_local_gray_tiles.png" in files
    section = get_section_text(card.text, "robustness")
    assert BUILTIN_RETINA in section and folder_key in section


@pytest.mark.slow
def test_accelerate_launch_spreads_revisions_with_identical_results(hub_endpoint, repo_id, tmp_path, capsys):
    push_checkpoints(repo_id, tmp_path, epochs=(1, 2, 5), top1=False)
    # one process, nothing written: the reference scores. (CPU processes: --multi_gpu without GPUs uses gloo;
    # `--cpu --num_processes N` would start a single process.)
    assert cli_main(["score", "--repo-id", repo_id, "--dry-run", *FAST]) == 0
    reference = capsys.readouterr().out
    assert "robustness" not in namespace(repo_id, "epoch-0001")
    launched = subprocess.run(
        [sys.executable, "-m", "hf_transfer_seg", "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
         "--mixed_precision", "no", "--dynamo_backend", "no", "--", "score", "--repo-id", repo_id, *FAST],
        cwd=ROOT, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""}, capture_output=True, text=True, timeout=400,
    )  # fmt: skip
    assert launched.returncode == 0, launched.stdout + launched.stderr
    summary = get_namespace(hub.read_card(repo_id, "main")[0].data, "robustness_summary")[BUILTIN_RETINA]
    for row in summary["rows"]:
        assert f"| {row['revision']} | {row['epoch']:g} | – | {row['score']:.4f} |" in reference
        entry = namespace(repo_id, row["revision"])["robustness"][BUILTIN_RETINA][HEADLINE]
        assert entry["score"] == pytest.approx(row["score"], abs=1e-6)
    assert launched.stdout.count("Robustness score on") == 1  # only the main process prints the table
    assert "3 revisions scored by 2 processes" in launched.stdout


@pytest.mark.shared
def test_real_fundus_target_from_drive(hub_endpoint, repo_id, tmp_path, shared_dir):
    images = shared_dir / "data" / "drive-train" / "images"
    if not images.is_dir():
        pytest.skip(f"DRIVE images are absent: {images} does not exist")
    push_checkpoints(repo_id, tmp_path, epochs=(1, 5), top1=False)
    assert cli_main(["score", "--repo-id", repo_id, "--target", str(images), *FAST]) == 0
    ours = namespace(repo_id, "epoch-0005")
    entry = ours["robustness"]["local:drive-train/images"][HEADLINE]
    assert entry["status"] == "ok" and entry["num_images"] == 8 and 0.0 <= entry["score"] <= 2.5
    assert "20 real images" in ours["robustness_targets"]["local:drive-train/images"]["description"]
    files = HfApi().list_repo_files(repo_id)
    assert "plots/robustness_local_drive-train_images.png" in files


def test_hub_dataset_target_uses_its_image_column_and_ignores_masks(hub_endpoint, repo_id, tmp_path):
    import datasets

    push_checkpoints(repo_id, tmp_path, epochs=(1,), top1=False)
    target = resolve_target(BUILTIN_RETINA)
    rng = np.random.default_rng(0)
    rows = {
        "image": [Image.fromarray((target.load(i).permute(1, 2, 0).numpy() * 255).astype(np.uint8)).resize((64, 64)) for i in range(6)],
        "mask": [Image.fromarray((rng.random((64, 64)) > 0.5).astype(np.uint8) * 255) for _ in range(6)],
    }
    features = datasets.Features({"image": datasets.Image(), "mask": datasets.Image()})
    dataset_id = repo_id.replace("test-org/", "test-org/ds-")
    # the Hub's layout for a pushed dataset: data/<split>-NNNNN-of-NNNNN.parquet
    (tmp_path / "ds" / "data").mkdir(parents=True)
    datasets.Dataset.from_dict(rows, features=features).to_parquet(tmp_path / "ds" / "data" / "train-00000-of-00001.parquet")
    api = HfApi()
    api.create_repo(dataset_id, repo_type="dataset")
    api.upload_folder(repo_id=dataset_id, folder_path=tmp_path / "ds", repo_type="dataset")
    assert cli_main(["score", "--repo-id", repo_id, "--target", dataset_id, *FAST]) == 0
    ours = namespace(repo_id, "epoch-0001")
    assert ours["robustness"][dataset_id][HEADLINE]["num_images"] == 6
    assert "column image" in ours["robustness_targets"][dataset_id]["description"]
    # a Hub dataset target: model-index entries name the dataset by its id
    results = hub.read_card(repo_id, "epoch-0001")[0].data.eval_results
    assert results and {r.metric_config for r in results} >= {HEADLINE}
    assert all(r.dataset_type == dataset_id and r.task_type == "image-feature-extraction" for r in results)
