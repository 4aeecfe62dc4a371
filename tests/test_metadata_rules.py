"""The Hub's README metadata rules, enforced by the local hub (validate-yaml and the commit path)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from hf_transfer_seg.cards.dataset_ref import eval_dataset
from hf_transfer_seg.localhub.metadata_rules import check_metadata

ROOT = Path(__file__).resolve().parents[1]

GOOD_INDEX = [{"name": "m", "results": [{
    "task": {"type": "image-segmentation"},
    "dataset": {"type": "owner/data", "name": "owner/data", "split": "validation"},
    "metrics": [{"type": "dice", "value": 0.8}],
}]}]


def _front(text: str) -> dict:
    return yaml.safe_load(text.split("---")[1])


def test_rules_accept_good_and_name_each_problem():
    assert check_metadata({"license": "apache-2.0", "library_name": "timm", "model-index": GOOD_INDEX}) == []
    bad = {"license": "apache2", "model-index": [{"name": "m", "results": [{
        "task": {}, "dataset": {"type": "local:data/drive", "name": "x"}, "metrics": [{"type": "dice"}]}]}]}
    problems = check_metadata(bad)
    assert any("license" in p for p in problems)
    assert any("task.type" in p for p in problems)
    assert any("dataset.type" in p and "local:data/drive" in p for p in problems)
    assert any("metrics[0].value" in p for p in problems)
    space = {"sdk": "gradio", "colorFrom": "indigo", "short_description": "x" * 63, "python_version": 3.11, "pinned": "no"}
    problems = check_metadata(space, "space")
    assert any("short_description: 63 characters" in p for p in problems)
    assert any("python_version" in p for p in problems) and any("pinned" in p for p in problems)


def test_eval_dataset_types_are_hub_ids_or_loaders():
    for key in ("mni152-tissue", "local:data/drive-train", "nnunet:Dataset042_Brain", "synthetic", "digits"):
        assert eval_dataset(key) is None, key  # no Hub dataset id: no model-index entry at all
    for key in ("owner/data", "owner/data:test", "hub:owner/data"):
        ref = eval_dataset(key)
        index = [{"name": "m", "results": [{"task": {"type": "t"}, "dataset": {"type": ref["dataset_type"], "name": ref["dataset_name"]},
                                             "metrics": [{"type": "dice", "value": 1.0}]}]}]
        assert check_metadata({"model-index": index}) == [], key
    assert eval_dataset("owner/data:test") == {"dataset_type": "owner/data", "dataset_name": "owner/data:test", "dataset_split": "test"}


def test_shipped_space_readme_passes():
    meta = _front((ROOT / "spaces" / "segmentation-demo" / "README.md").read_text())
    assert check_metadata(meta, "space") == []
    assert isinstance(meta["python_version"], str)
    for line in (ROOT / "spaces" / "segmentation-demo" / "requirements.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            assert "<" in line, f"requirement without an upper bound: {line}"


def test_local_hub_refuses_what_the_hub_refuses(hub_endpoint, repo_id):
    from huggingface_hub import HfApi, ModelCard, SpaceCard
    from huggingface_hub.errors import HfHubHTTPError

    api = HfApi()
    bad_card = "---\nlicense: apache2\nlibrary_name: timm\n---\n# x\n"
    with pytest.raises(ValueError, match="license"):
        ModelCard(bad_card).validate("model")  # POST /api/validate-yaml
    ModelCard("---\nlicense: apache-2.0\nlibrary_name: timm\n---\n# x\n").validate("model")
    api.create_repo(repo_id)
    with pytest.raises((HfHubHTTPError, ValueError), match="Invalid metadata"):  # the client validates first
        api.upload_file(path_or_fileobj=bad_card.encode(), path_in_repo="README.md", repo_id=repo_id)
    _raw_commit_refused(hub_endpoint, repo_id, "model", bad_card, "license")
    space = repo_id + "-space"
    api.create_repo(space, repo_type="space", space_sdk="gradio")
    long = "---\nsdk: gradio\nshort_description: U-Net from the pretraining checkpoint a label-free score picked\n---\n"
    with pytest.raises((HfHubHTTPError, ValueError), match="short_description: 63 characters"):
        api.upload_file(path_or_fileobj=long.encode(), path_in_repo="README.md", repo_id=space, repo_type="space")
    _raw_commit_refused(hub_endpoint, space, "space", long, "short_description: 63 characters")
    with pytest.raises(ValueError, match="short_description"):
        SpaceCard(long + "# x\n").validate("space")
    api.upload_file(path_or_fileobj=(ROOT / "spaces" / "segmentation-demo" / "README.md"), path_in_repo="README.md",
                    repo_id=space, repo_type="space")


def _raw_commit_refused(endpoint: str, repo_id: str, repo_type: str, readme: str, message: str) -> None:
    """The commit path itself refuses (a client that skips validate-yaml gets the same answer)."""
    import base64
    import json

    import httpx

    body = "\n".join(json.dumps(line) for line in (
        {"key": "header", "value": {"summary": "card"}},
        {"key": "file", "value": {"path": "README.md", "content": base64.b64encode(readme.encode()).decode(), "encoding": "base64"}},
    ))
    prefix = "spaces/" if repo_type == "space" else "models/"
    response = httpx.post(f"{endpoint}/api/{prefix}{repo_id}/commit/main", content=body,
                          headers={"Content-Type": "application/x-ndjson"})
    assert response.status_code == 400 and message in response.text, response.text


def test_checkpoint_tag_names_the_revision(tmp_path):
    import json

    import timm

    from hf_transfer_seg.models.checkpoint import load_encoder, save_checkpoint

    save_checkpoint(timm.create_model("test_resnet", num_classes=10), tmp_path, tag="epoch-0003")
    cfg = json.loads((tmp_path / "config.json").read_text())["pretrained_cfg"]
    assert cfg["tag"] == "epoch-0003" and "hf_hub_id" not in cfg  # not timm's r160_in1k weights
    assert load_encoder(tmp_path, features_only=True) is not None
