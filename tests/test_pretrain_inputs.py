"""A bad value from any source is refused before training; what fails after training loses nothing.

Real ``hf-transfer-seg pretrain`` processes (tiny test_resnet, 64 synthetic images) against the real local hub. A
licence comes from a flag, ``HF_TRANSFER_SEG_LICENSE`` or a recipe file: all three are checked at start (exit 2,
no state, no checkpoint, nothing trained). A licence the Hub refuses after training (its list changed: the local
hub, serving in this process, is given a shorter list, so its own metadata rule answers 400) leaves every
checkpoint in ``pending/`` with that cause and the command that delivers them, and that command does.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from huggingface_hub import HfApi, ModelCard, hf_hub_download

from hf_transfer_seg import hub
from hf_transfer_seg.localhub import local_hub, metadata_rules

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "--encoder", "test_resnet", "--image-size", "32", "--train-size", "64", "--val-size", "32",
    "--batch-size", "8", "--lr", "2e-3", "--num-workers", "0", "--log-every", "0", "--epochs", "1",
    "--checkpoint-epochs", "0.5,1", "--push-attempts", "2", "--push-retry-delay", "0",
]
pytestmark = pytest.mark.slow


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "HF_TRANSFER_SEG_LICENSE"}
    env.update({"PYTHONPATH": str(ROOT), "HF_HUB_DISABLE_PROGRESS_BARS": "1", "TQDM_DISABLE": "1"})
    env.update(extra)
    return env


def cli(*args: str, env: dict, timeout: float = 400) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hf_transfer_seg", *args], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def _refused_before_training(run: subprocess.CompletedProcess, out: Path, said: str) -> None:
    assert run.returncode == 2, run.stderr[-2000:]
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and said in lines[0], run.stderr[-2000:]
    assert "Traceback" not in run.stderr and "pretrain" not in run.stdout
    assert not any((out / part).exists() for part in ("state", "pending", "checkpoints", "run_config.json"))


@pytest.mark.parametrize("value", ["nonsense!!", "other:x y", "0", "a" * 5000, "mit:x"])
def test_a_bad_licence_in_the_environment_is_refused_before_training(value, tmp_path):
    out = tmp_path / "out"
    run = cli("pretrain", *TINY, "--repo-id", "test-org/never", "--output-dir", str(out),
              env=_env(HF_TRANSFER_SEG_LICENSE=value, HF_ENDPOINT="http://127.0.0.1:9"))
    _refused_before_training(run, out, "HF_TRANSFER_SEG_LICENSE=")
    assert len(run.stderr) < 1000  # a 5,000-character value is shortened in the message


@pytest.mark.parametrize("line", ['license: "nonsense!!"', 'license: "other:x y"', "license: 0", "license: [mit]"])
def test_a_bad_licence_in_the_recipe_file_is_refused_before_training(line, tmp_path):
    recipe, out = tmp_path / "recipe.yaml", tmp_path / "out"
    recipe.write_text(f"epochs: 1\n{line}\n")
    run = cli("pretrain", *TINY, "--config", str(recipe), "--output-dir", str(out), env=_env())
    _refused_before_training(run, out, f"in recipe file {recipe}")


def test_the_flag_wins_over_the_recipe_and_the_recipe_over_the_environment(tmp_path):
    from hf_transfer_seg.pretrain.config import build_config

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("license: cc-by-4.0\n")
    os.environ["HF_TRANSFER_SEG_LICENSE"] = "mit"
    try:
        assert build_config({"encoder": "test_resnet"}).license == "mit"
        assert build_config({"encoder": "test_resnet"}, recipe).license == "cc-by-4.0"
        assert build_config({"encoder": "test_resnet", "license": "apache-2.0"}, recipe).license == "apache-2.0"
    finally:
        del os.environ["HF_TRANSFER_SEG_LICENSE"]


def test_binary_and_oversized_recipe_files_are_one_clean_line(tmp_path):
    binary, big, out = tmp_path / "weights.bin", tmp_path / "big.yaml", tmp_path / "out"
    binary.write_bytes(bytes(range(256)) * 8)
    big.write_text("# x\n" * 300_000)
    nul = tmp_path / "nul.yaml"
    nul.write_bytes(b"epochs: 1\x00\n")
    _refused_before_training(cli("pretrain", *TINY, "--config", str(binary), "--output-dir", str(out), env=_env()),
                             out, "is not UTF-8 text")
    _refused_before_training(cli("pretrain", *TINY, "--config", str(big), "--output-dir", str(out), env=_env()),
                             out, "KiB: not a recipe")
    _refused_before_training(cli("pretrain", *TINY, "--config", str(nul), "--output-dir", str(out), env=_env()),
                             out, "binary file")


def test_a_licence_the_hub_refuses_after_training_stays_pending_with_its_cause(tmp_path, monkeypatch):
    """The run's licence is valid here, but the Hub's list no longer holds it: its metadata rule answers 400."""
    root, out, repo = tmp_path / "hub", tmp_path / "out", "test-org/refused-licence"
    monkeypatch.setattr(metadata_rules, "LICENSES", metadata_rules.LICENSES - {"cc-by-2.5"})
    with local_hub(root) as endpoint:
        env = _env(HF_ENDPOINT=endpoint)
        run = cli("pretrain", *TINY, "--repo-id", repo, "--output-dir", str(out), "--license", "cc-by-2.5", env=env)
        assert run.returncode == 2, run.stderr[-3000:]
        last = run.stderr.strip().splitlines()[-1]
        # the true cause (the Hub's answer, naming the licence) and the exact command that delivers them
        assert "HTTP 400" in last and "cc-by-2.5" in last and "once the Hub is reachable" not in last, last
        assert f"hf-transfer-seg push-pending --output-dir {out} --repo-id {repo} --license ID" in last, last
        assert "Traceback" not in run.stderr
        assert sorted(p.name for p in (out / "pending").iterdir()) == ["epoch-0000.5", "epoch-0001"]
        assert all((out / "pending" / r / "model.safetensors").is_file() for r in ("epoch-0000.5", "epoch-0001"))
        assert hub.list_revisions(repo, api=HfApi(endpoint=endpoint)) == []  # nothing half-pushed

        again = cli("push-pending", "--output-dir", str(out), "--repo-id", repo, "--attempts", "1", env=env)
        assert again.returncode == 1 and "HTTP 400" in again.stdout and "--license ID" in again.stdout
        delivered = cli("push-pending", "--output-dir", str(out), "--repo-id", repo, "--license", "cc-by-4.0", env=env)
        assert delivered.returncode == 0, delivered.stderr[-3000:] + delivered.stdout
        names = [r.name for r in hub.list_revisions(repo, api=HfApi(endpoint=endpoint))]
        assert names == ["epoch-0000.5", "epoch-0001"]
        for name in names + ["main"]:
            card = ModelCard.load(hf_hub_download(repo, "README.md", revision=name, endpoint=endpoint,
                                                  cache_dir=tmp_path / "cache"))
            assert card.data.license == "cc-by-4.0"
    assert not list((out / "pending").iterdir())


def test_a_good_licence_from_the_recipe_reaches_every_card(tmp_path):
    root, out, repo = tmp_path / "hub", tmp_path / "out", "test-org/recipe-licence"
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("license: other:my-lab-terms\n")
    with local_hub(root) as endpoint:
        run = cli("pretrain", *TINY, "--config", str(recipe), "--repo-id", repo, "--output-dir", str(out),
                  env=_env(HF_ENDPOINT=endpoint, HF_TRANSFER_SEG_LICENSE="mit"))
        assert run.returncode == 0, run.stderr[-3000:]
        for name in ("epoch-0001", "main"):
            card = ModelCard.load(hf_hub_download(repo, "README.md", revision=name, endpoint=endpoint,
                                                  cache_dir=tmp_path / "cache"))
            assert (card.data.license, card.data.license_name) == ("other", "my-lab-terms")


@pytest.mark.parametrize("value", ["abc", "-5", "0", "1e99"])
def test_a_bad_size_cap_in_the_environment_is_refused_before_training(value, tmp_path):
    out = tmp_path / "out"
    run = cli("pretrain", *TINY, "--output-dir", str(out), env=_env(HF_TRANSFER_SEG_MAX_VOXELS=value))
    _refused_before_training(run, out, "HF_TRANSFER_SEG_MAX_VOXELS=")
