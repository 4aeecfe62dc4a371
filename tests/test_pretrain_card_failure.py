"""A checkpoint whose card fails to build is never lost; a full disk while writing one loses nothing either.

Tiny real runs (test_resnet, 64 synthetic images, checkpoints at epochs 0.5 and 1) against the session's local
hub. The card fails through the ``on_checkpoint`` hook, as a live scorer's would: a value a card cannot hold (a
numpy scalar), or a plot drawn into a folder that does not exist. The weights and config are staged in
``pending/`` with a minimal card stating the failure (no local path), the run names the cause and the exact
``push-pending`` command, training goes on, and ``push-pending`` (a real process) delivers the checkpoint. A real
full disk (a small tmpfs, root only) at the second checkpoint's weights keeps the training state and the
checkpoints staged before it, and says to free space and ``--resume``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import huggingface_hub  # noqa: F401 - imported now: its log handler binds to the real stderr, not a test's capture
import numpy as np
import pytest
import torch
from huggingface_hub import ModelCard, hf_hub_download
from safetensors.torch import load_file

from hf_transfer_seg import hub
from hf_transfer_seg.cards import get_namespace
from hf_transfer_seg.cli import main as cli_main
from hf_transfer_seg.pretrain.loop import STEP_DELAY_ENV

from test_pretrain_inputs import ROOT, _env, cli  # the same tiny runs' environment (no licence variable) and CLI

TINY = [
    "--encoder", "test_resnet", "--image-size", "32", "--train-size", "64", "--val-size", "32", "--batch-size", "8",
    "--lr", "2e-3", "--num-workers", "0", "--log-every", "0", "--epochs", "1", "--checkpoint-epochs", "0.5,1",
    "--push-attempts", "1", "--push-retry-delay", "0",
]
pytestmark = pytest.mark.slow


def _assert_fallback(readme: Path, revision: str, said: str, tmp_path: Path) -> ModelCard:
    text = readme.read_text()
    card = ModelCard(text)
    assert "card-failed" in card.data.tags and "could not be built" in card.text and said in card.text, text
    facts = get_namespace(card.data, "training")
    assert facts["epoch"] == float(revision.split("-")[1]) and facts["encoder"] == "test_resnet" and facts["global_step"]
    assert str(tmp_path) not in text and "/tmp" not in text  # no local path of the training machine
    return card


def _delivered(out: Path, repo_id: str, tmp_path: Path) -> None:
    """``push-pending`` in a real process delivers every staged checkpoint, weights byte-identical."""
    run = cli("push-pending", "--output-dir", str(out), "--repo-id", repo_id, "--attempts", "1", env=_env())
    assert run.returncode == 0, run.stderr[-3000:] + run.stdout
    assert [r.name for r in hub.list_revisions(repo_id)] == ["epoch-0000.5", "epoch-0001"]
    for name in ("epoch-0000.5", "epoch-0001"):
        remote = load_file(hf_hub_download(repo_id, "model.safetensors", revision=name, cache_dir=tmp_path / "cache"))
        local = load_file(out / "checkpoints" / name / "model.safetensors")
        assert local.keys() == remote.keys() and all(torch.equal(local[k], remote[k]) for k in local)
    summary = ModelCard.load(hf_hub_download(repo_id, "README.md", cache_dir=tmp_path / "cache"))
    assert [r["revision"] for r in get_namespace(summary.data, "checkpoints")] == ["epoch-0000.5", "epoch-0001"]
    assert not list((out / "pending").iterdir())


def test_a_card_value_that_cannot_be_written_keeps_the_checkpoint_and_names_the_command(
        hub_endpoint, repo_id, tmp_path, capsys, monkeypatch):
    """The ``pretrain`` command: its callbacks (here in place of the live scorer's) give epoch-0000.5's card a numpy
    scalar; exit 2 with one line naming the value and the push-pending command; epoch-0001's card is whole."""
    from hf_transfer_seg.scoring import live_cli

    def scorer(folder: Path, epoch: float, revision: str) -> dict:
        return {"robustness": {"score": np.float64(0.5) if epoch == 0.5 else 0.75}}

    monkeypatch.setattr(live_cli, "make_callbacks", lambda args, config: [scorer])
    out = tmp_path / "out"
    code = cli_main(["pretrain", *TINY, "--output-dir", str(out)])
    err = capsys.readouterr().err
    assert code == 2, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: ") and "Traceback" not in err, err[-3000:]
    assert "epoch-0000.5" in last and "hf_transfer_seg.robustness.score is a numpy.float64" in last, last
    assert f"hf-transfer-seg push-pending --output-dir {out} --repo-id <namespace/name>" in last, last
    assert sorted(p.name for p in (out / "pending").iterdir()) == ["epoch-0000.5", "epoch-0001"]  # nothing half-written
    staged = out / "pending" / "epoch-0000.5"
    assert {"model.safetensors", "config.json", "README.md"} <= {p.name for p in staged.iterdir()}
    _assert_fallback(staged / "README.md", "epoch-0000.5", "numpy.float64", tmp_path)
    whole = ModelCard.load(out / "pending" / "epoch-0001" / "README.md")  # training went on, with whole cards
    assert get_namespace(whole.data, "robustness") == {"score": 0.75} and "card-failed" not in whole.data.tags
    _delivered(out, repo_id, tmp_path)
    pushed = ModelCard.load(hf_hub_download(repo_id, "README.md", revision="epoch-0000.5", cache_dir=tmp_path / "cache"))
    assert "card-failed" in pushed.data.tags and pushed.data.license == "apache-2.0"


def test_a_plot_that_cannot_be_drawn_holds_its_checkpoint_back_and_the_others_are_pushed(hub_endpoint, repo_id, tmp_path):
    """With --repo-id: epoch-0000.5's card edit draws a plot into a folder that does not exist (the error names a
    local path); that checkpoint stays in pending/ with the cause (path removed), epoch-0001 is pushed during the run."""
    from hf_transfer_seg.plotting import new_figure
    from hf_transfer_seg.pretrain.config import build_config
    from hf_transfer_seg.pretrain.loop import run_pretraining

    def plot_into(folder: Path):
        def edit(card: ModelCard) -> ModelCard:
            fig, ax = new_figure((3, 2))
            ax.plot([0, 1], [0.2, 0.4])
            fig.savefig(folder / "plots" / "robustness.png")  # plots/ was never made
            return card
        return edit

    def scorer(folder: Path, epoch: float, revision: str) -> dict:
        return {"card_edit": plot_into(folder)} if epoch == 0.5 else {}

    out = tmp_path / "out"
    options = {
        "encoder": "test_resnet", "image_size": 32, "train_size": 64, "val_size": 32, "batch_size": 8, "lr": 2e-3,
        "num_workers": 0, "log_every": 0, "epochs": 1, "checkpoint_epochs": "0.5,1", "output_dir": str(out),
        "push_retry_delay": 0, "repo_id": repo_id,
    }
    result = run_pretraining(build_config(options), [scorer])
    assert result.finished and result.revisions == ["epoch-0000.5", "epoch-0001"]
    assert result.pending == ["epoch-0000.5"] and list(result.causes) == ["epoch-0000.5"]
    why = result.causes["epoch-0000.5"]
    assert "could not be built" in why and "FileNotFoundError" in why and "robustness.png" in why, why
    assert str(tmp_path) not in why
    assert [r.name for r in hub.list_revisions(repo_id)] == ["epoch-0001"]  # the other one was not held back
    _assert_fallback(out / "pending" / "epoch-0000.5" / "README.md", "epoch-0000.5", "FileNotFoundError", tmp_path)
    _delivered(out, repo_id, tmp_path)
    main = hf_hub_download(repo_id, "model.safetensors", cache_dir=tmp_path / "cache")  # main keeps the newest weights
    newest = load_file(out / "checkpoints" / "epoch-0001" / "model.safetensors")
    assert all(torch.equal(newest[k], v) for k, v in load_file(main).items())


def _mount_tmpfs(where: Path, size: str) -> None:
    where.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode(errors='replace').strip()[:100]})")


def _wait_for(predicate, proc: subprocess.Popen, what: str) -> None:
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"the run ended (rc {proc.returncode}) before {what}")
        time.sleep(0.02)


def test_a_full_disk_at_the_weights_keeps_the_state_and_the_staged_checkpoints(tmp_path):
    """A real full disk: the run is stopped (SIGTERM) after epoch-0000.5, the disk is filled, and the resumed run
    cannot write epoch-0001's weights: exit 2, one line (free space, then --resume) naming what is kept; the saved
    state and epoch-0000.5 are untouched; freed, --resume finishes and stages epoch-0001."""
    disk = tmp_path / "disk"
    _mount_tmpfs(disk, "64m")
    try:
        out = disk / "out"
        args = ["pretrain", *TINY, "--output-dir", str(out)]
        log = open(tmp_path / "run.log", "w")
        proc = subprocess.Popen([sys.executable, "-m", "hf_transfer_seg", *args], env=_env(**{STEP_DELAY_ENV: "0.5"}),
                                stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        _wait_for(lambda: (out / "pending" / "epoch-0000.5" / "README.md").is_file() and (out / "state" / "LATEST").is_file(),
                  proc, "the first checkpoint and its state")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == 143, (tmp_path / "run.log").read_text()[-3000:]
        state = (out / "state" / "LATEST").read_text()
        first = (out / "pending" / "epoch-0000.5" / "model.safetensors").read_bytes()
        stat = os.statvfs(disk)  # fill the disk, leaving room for small files but not for one checkpoint's weights
        (disk / "ballast").write_bytes(b"\0" * (stat.f_bavail * stat.f_frsize - len(first) // 2))

        full = cli(*args, "--resume", env=_env())
        assert full.returncode == 2, full.stderr[-3000:]
        assert full.stderr.count("error: ") == 1 and "Traceback" not in full.stderr, full.stderr[-3000:]
        said = full.stderr[full.stderr.index("error: "):].split("\n")[0]  # after the progress bar's last \r
        assert "full" in said and "Free space" in said and "--resume" in said, said
        assert f"the training state {state}" in said and "epoch-0000.5" in said, said
        assert (out / "state" / "LATEST").read_text() == state and (out / "state" / state / "trainer_state.json").is_file()
        assert sorted(p.name for p in (out / "pending").iterdir()) == ["epoch-0000.5"]  # no half-written epoch-0001
        assert (out / "pending" / "epoch-0000.5" / "model.safetensors").read_bytes() == first

        (disk / "ballast").unlink()
        done = cli(*args, "--resume", env=_env())
        assert done.returncode == 0, done.stderr[-3000:]
        assert sorted(p.name for p in (out / "pending").iterdir()) == ["epoch-0000.5", "epoch-0001"]
        assert (out / "pending" / "epoch-0000.5" / "model.safetensors").read_bytes() == first
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)
