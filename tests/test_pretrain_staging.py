"""Issue 19.11: a pretraining run killed between a revision's staging commit and the staging branch's deletion
leaves ``hf-transfer-seg-staging-<run>-<revision>-<hex>`` behind. ``--resume`` (and ``push-pending``) remove the
staging branches of THIS run (its ``<output-dir>/RUN_ID``), never another run's or a user's, and the checkpoint
revision stays intact. Real processes against the session's local hub."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from huggingface_hub import HfApi, hf_hub_download

from hf_transfer_seg import hub
from hf_transfer_seg.hub.revisions import STAGING_PREFIX

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--encoder", "test_resnet", "--image-size", "32", "--train-size", "32", "--val-size", "16", "--batch-size", "8",
        "--lr", "2e-3", "--num-workers", "0", "--log-every", "0", "--epochs", "1", "--checkpoint-epochs", "1"]
pytestmark = pytest.mark.slow


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_DISABLE_PROGRESS_BARS": "1", "TQDM_DISABLE": "1"}
    return subprocess.run([sys.executable, "-m", "hf_transfer_seg", *args], env=env, capture_output=True, text=True,
                          timeout=300, cwd=ROOT)


def _branches(api: HfApi, repo_id: str) -> dict[str, str]:
    return {b.name: b.target_commit for b in api.list_repo_refs(repo_id).branches}


def test_resume_removes_only_this_runs_staging_leftovers(hub_endpoint, repo_id, tmp_path):
    api, out = HfApi(), tmp_path / "out"
    first = _cli("pretrain", *TINY, "--repo-id", repo_id, "--output-dir", str(out))
    assert first.returncode == 0, first.stderr[-3000:]
    owner = (out / "RUN_ID").read_text().strip()
    assert owner.startswith("run-")
    epoch_sha = _branches(api, repo_id)["epoch-0001"]
    assert not [b for b in _branches(api, repo_id) if b.startswith(STAGING_PREFIX)]  # a clean push leaves none
    pushed_weights = Path(hf_hub_download(repo_id, "model.safetensors", revision=epoch_sha)).read_bytes()

    # the state a kill during the staging -> epoch promotion leaves: the staging branch at the checkpoint's commit,
    # the checkpoint still in pending/ (its ledger entry never written)
    leftover = f"{STAGING_PREFIX}{owner}-epoch-0001-0123abcd"
    others = [
        f"{STAGING_PREFIX}run-000000000000-epoch-0001-0123abcd",  # another run's staging branch
        f"{STAGING_PREFIX}epoch-0001-89abcdef",  # an older release's (no run identity): not provably ours
        f"{STAGING_PREFIX}{owner}-notes",  # a user's branch that merely starts alike
    ]
    for name in [leftover, *others]:
        api.create_branch(repo_id, branch=name, revision=epoch_sha)
    shutil.move(out / "checkpoints" / "epoch-0001", out / "pending" / "epoch-0001")
    (out / "pushed" / "epoch-0001.json").unlink()

    resumed = _cli("pretrain", *TINY, "--repo-id", repo_id, "--output-dir", str(out), "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "removed 1 staging branch(es)" in resumed.stderr and leftover in resumed.stderr
    branches = _branches(api, repo_id)
    assert leftover not in branches
    assert all(name in branches for name in others)  # never another run's or a user's
    # the epoch revision is intact: same commit, same weights, one checkpoint commit, and delivered (ledger written)
    assert branches["epoch-0001"] == epoch_sha
    assert Path(hf_hub_download(repo_id, "model.safetensors", revision="epoch-0001")).read_bytes() == pushed_weights
    titles = [c.title for c in api.list_repo_commits(repo_id, revision="epoch-0001") if c.title.startswith("Checkpoint ")]
    assert len(titles) == 1, titles
    assert json.loads((out / "pushed" / "epoch-0001.json").read_text())["sha"] == epoch_sha
    assert [r.name for r in hub.list_revisions(repo_id)] == ["epoch-0001"]

    # push-pending cleans up too, even with nothing pending
    api.create_branch(repo_id, branch=leftover, revision=epoch_sha)
    again = _cli("push-pending", "--output-dir", str(out), "--repo-id", repo_id)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"removed leftover staging branch {repo_id}@{leftover}" in again.stdout
    branches = _branches(api, repo_id)
    assert leftover not in branches and all(name in branches for name in others)
    assert branches["epoch-0001"] == epoch_sha
