"""Every card the pipeline pushes passes the Hub's metadata rules (issue 20.9).

A tiny end-to-end run on the local hub: pretraining with live scoring (2 checkpoints), ``score``, ``finetune
--push-to`` with ``--license``, ``rank --results-repo`` and ``space deploy``. Then every README.md of every
branch of every repo it pushed must: carry a ``license`` (``license_name`` with ``other``), keep its YAML under
8 KB, have no model-index entry whose ``dataset.type`` is not a dataset id (``custom``...), parse back through
huggingface_hub's ``model_index_to_eval_results`` and pass ``RepoCard.validate`` (the local hub's
``/api/validate-yaml``, the Hub's rules); encoder cards carry no segmentation result in their model-index, and
the whole robustness grid is a JSON file beside the card.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import yaml
from huggingface_hub import DatasetCard, HfApi, ModelCard, SpaceCard, hf_hub_download
from huggingface_hub.repocard_data import model_index_to_eval_results

from hf_transfer_seg.cards.dataset_ref import NOT_DATASET_IDS
from hf_transfer_seg.cards.license import ENV as LICENSE_ENV
from hf_transfer_seg.cli import main as cli_main

ROOT = Path(__file__).resolve().parents[1]
TARGET = "skimage-retina"
CARD_CLASS = {"model": ModelCard, "dataset": DatasetCard, "space": SpaceCard}
PRETRAIN = [
    "pretrain", "--encoder", "test_resnet", "--image-size", "32", "--train-size", "64", "--val-size", "32", "--batch-size", "8",
    "--lr", "2e-3", "--num-workers", "0", "--log-every", "0", "--epochs", "1", "--checkpoint-epochs", "0.5,1",
    "--score-target", TARGET, "--score-num-images", "8", "--score-image-size", "32", "--score-device", "cpu",
]  # fmt: skip
SCORE = ["--num-images", "8", "--image-size", "32", "--batch-size", "8", "--no-progress", "--device", "cpu"]


def _cli(*args: str, cwd: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_DISABLE_PROGRESS_BARS="1", TQDM_DISABLE="1")
    env.pop(LICENSE_ENV, None)
    done = subprocess.run([sys.executable, "-m", "hf_transfer_seg", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]


def _cards(repo_id: str, repo_type: str) -> dict[str, str]:
    """README.md text of every branch of a repo."""
    api = HfApi()
    out = {}
    for branch in api.list_repo_refs(repo_id, repo_type=repo_type).branches:
        if repo_id and branch.name.startswith("hf-transfer-seg-staging-"):
            continue
        path = hf_hub_download(repo_id, "README.md", revision=branch.target_commit, repo_type=repo_type)
        out[branch.name] = Path(path).read_text()
    return out


def _check(repo_id: str, repo_type: str, branch: str, text: str) -> dict:
    where = f"{repo_type} {repo_id}@{branch}"
    assert text.startswith("---\n"), where
    block = text[4:].split("\n---", 1)[0]
    assert len(block.encode()) < 8 * 1024, f"{where}: {len(block.encode())} bytes of YAML"
    meta = yaml.safe_load(block) or {}
    assert meta.get("license"), f"{where}: no license"
    if meta["license"] == "other":
        assert meta.get("license_name"), f"{where}: license other without license_name"
    for model in meta.get("model-index") or []:
        for result in model.get("results") or []:
            assert result["dataset"]["type"] not in NOT_DATASET_IDS, f"{where}: dataset.type {result['dataset']['type']}"
    if meta.get("model-index"):
        _, results = model_index_to_eval_results(meta["model-index"])
        assert results, where
    CARD_CLASS[repo_type](text).validate(repo_type)  # the Hub's metadata rules (raises ValueError)
    return meta


def test_every_pushed_card_has_a_license_small_yaml_and_real_dataset_ids(hub_endpoint, tmp_path, monkeypatch):
    ns = f"test-org/cards-{uuid.uuid4().hex[:8]}"
    encoder, seg, results, space = f"{ns}-enc", f"{ns}-unet", f"{ns}-ranking", f"{ns}-space"
    monkeypatch.delenv(LICENSE_ENV, raising=False)

    _cli(*PRETRAIN, "--repo-id", encoder, "--output-dir", str(tmp_path / "pretrain"), cwd=tmp_path)
    assert cli_main(["score", "--repo-id", encoder, "--target", TARGET, *SCORE]) == 0
    monkeypatch.setenv(LICENSE_ENV, "")  # restored at teardown: `--license` below sets it in this process
    assert cli_main(["finetune", "--encoder-repo", encoder, "--revision", "epoch-0001", "--target", "mni152-tissue",
                     "--resize-longest", "64", "--epochs", "1", "--batch-size", "4", "--image-size", "64",
                     "--output-dir", str(tmp_path / "ft"), "--no-progress", "--push-to", seg, "--license", "mit"]) == 0  # fmt: skip
    monkeypatch.delenv(LICENSE_ENV)
    _cli("rank", "--models", f"{encoder}@epoch-0001", "--target", TARGET, "--num-images", "8", "--image-size", "32",
         "--results-repo", results, "--no-progress", cwd=tmp_path)
    assert cli_main(["space", "deploy", "--space-id", space, "--model-repo", encoder, "--target", TARGET]) == 0

    metas = {}
    for repo_id, repo_type in ((encoder, "model"), (seg, "model"), (results, "dataset"), (space, "space")):
        cards = _cards(repo_id, repo_type)
        assert cards, f"{repo_id} has no card"
        for branch, text in cards.items():
            metas[(repo_id, branch)] = _check(repo_id, repo_type, branch, text)

    # defaults are stated; the setting wins where it was given
    revision = metas[(encoder, "epoch-0001")]  # trained on the built-in synthetic set: the code's license
    assert revision["license"] == "apache-2.0" and "license_name" not in revision
    assert metas[(seg, "main")]["license"] == "mit" and metas[(space, "main")]["license"] == "apache-2.0"
    assert metas[(results, "main")]["license"] == "other"
    # encoder revision: downstream Dice in its own section, not in model-index; the whole grid beside the card
    ours = revision["hf_transfer_seg"]
    assert ours["downstream"]["mni152-tissue"]["dice_mean"] is not None and not revision.get("model-index")
    grid_file = ours["robustness_targets"][TARGET]["grid_file"]
    grid = json.loads(Path(hf_hub_download(encoder, grid_file, revision="epoch-0001")).read_text())["robustness"]
    assert len(grid) > 50 and set(ours["robustness"][TARGET]) < set(grid)
    # the Space card names the pretraining dataset the checkpoints recorded, not ImageNet
    space_text = _cards(space, "space")["main"]
    assert "`synthetic`" in space_text.split("## This deployment", 1)[1] and "ImageNet top-1" not in space_text


def test_readers_get_the_grid_from_its_file_or_from_an_older_cards_yaml(hub_endpoint, repo_id):
    from hf_transfer_seg import hub
    from hf_transfer_seg.cards.grid import grid_bytes, target_info
    from hf_transfer_seg.cards.schema import HEADLINE

    HfApi().create_repo(repo_id)
    old = {"cosine_m0_L-2_pooled": {"score": 0.1, "status": "ok"}, HEADLINE: {"score": 0.2, "status": "ok", "per_image": [0.1, 0.3]}}
    ModelCard("---\nlibrary_name: timm\nhf_transfer_seg:\n  robustness:\n    t: " + json.dumps(old) + "\n---\n# old\n").push_to_hub(repo_id)
    assert hub.robustness_grid(repo_id) == {"t": old}  # an older card: the grid is its YAML

    def edit(card):  # the new layout, with a failed re-score of the headline in the YAML only
        card.data.hf_transfer_seg = {"robustness": {"t": {HEADLINE: {"score": None, "status": "failed", "reason": "x"}}},
                                     "robustness_targets": {"t": target_info("d", False, "t")}}
        return card

    grid = {**old, "l2_m1_L-1_flat": {"score": 0.4, "status": "ok"}}
    hub.update_card(repo_id, "main", edit, commit_message="grid", extra_files={"robustness/grid_t.json": grid_bytes("t", grid)})
    merged = hub.robustness_grid(repo_id)["t"]
    assert merged["l2_m1_L-1_flat"]["score"] == 0.4 and merged[HEADLINE]["status"] == "failed" and len(merged) == 3
    stored = hub.read_card(repo_id, grid=False)[0].data.hf_transfer_seg["robustness"]["t"]
    assert set(stored) == {HEADLINE}  # writers see the card as stored: the grid never goes back into the YAML
    assert hub.read_card(repo_id)[0].data.hf_transfer_seg["robustness"]["t"] == merged


def test_a_failed_rescore_of_an_older_card_keeps_its_yaml_grid():
    from types import SimpleNamespace

    from hf_transfer_seg.cards.schema import HEADLINE
    from hf_transfer_seg.scoring.card import grid_files_of, revision_card_edit
    from hf_transfer_seg.scoring.scorer import RevisionScore

    plan = SimpleNamespace(target_key="t", target_description="d", target_synthetic=False,
                           facts=lambda: {"num_images": 8, "seed": 0, "image_size": 32})
    old = {f"cosine_m0_L-{i}_pooled": {"score": 0.1 * i, "status": "ok"} for i in range(1, 5)}
    card = ModelCard("---\nhf_transfer_seg:\n  robustness:\n    t: " + json.dumps({**old, HEADLINE: {"score": 0.2}}) + "\n---\n# c\n")
    failed = RevisionScore(revision="epoch-0001", epoch=1.0, sha="0" * 40, status="failed", reason="no weights")
    edited = revision_card_edit(plan, failed, "m", {})(card)
    kept = edited.data.hf_transfer_seg["robustness"]["t"]
    assert set(old) < set(kept) and kept[HEADLINE]["status"] == "failed"  # no file holds them: nothing is dropped
    assert grid_files_of(plan, failed) == {} and "grid_file" not in edited.data.hf_transfer_seg["robustness_targets"]["t"]


def test_a_bad_license_setting_is_one_clear_line(capsys, monkeypatch):
    monkeypatch.delenv(LICENSE_ENV, raising=False)
    for argv in (["--license", "Apache 2", "score", "--repo-id", "test-org/none"],
                 ["score", "--repo-id", "test-org/none", "--license", "Apache 2"]):  # before or after the subcommand
        assert cli_main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: argument --license: 'Apache 2' is not a license identifier the Hub accepts"), err
        assert "\n" not in err and "apache-2.0" in err
        assert LICENSE_ENV not in os.environ
    for value in ("0", "nonsense!!", "other:x y", "x" * 5000):
        assert cli_main(["score", "--repo-id", "test-org/none", "--license", value]) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and len(err) < 800 and "is not" in err
    monkeypatch.setenv(LICENSE_ENV, "other:x y")  # the variable: the same check, before any work, naming it
    assert cli_main(["score", "--repo-id", "test-org/none"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {LICENSE_ENV}='other:x y'") and "\n" not in err


def test_built_in_data_has_a_known_license():
    from hf_transfer_seg.cards.license import choose_license, data_license
    from hf_transfer_seg.localhub.metadata_rules import check_license

    assert data_license("digits").license == "bsd-3-clause" and data_license("synthetic").license == "apache-2.0"
    assert data_license("skimage-retina").license == "cc0-1.0"
    assert (data_license("mni152-tissue").license, data_license("mni152-wm").name) == ("other", "mni-icbm152-2009")
    assert data_license("org/imagenet") is None and choose_license(data="org/imagenet").name == "not-set"
    for key in ("digits", "synthetic", "skimage-retina", "mni152-tissue"):  # each one the Hub accepts
        known = data_license(key)
        assert check_license({"license": known.license, "license_name": known.name}) == []
