"""``pretrain --early-stop RULE`` stops a real run with the report's rule objects; the card says which rule."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from huggingface_hub import ModelCard

from hf_transfer_seg.cards import get_namespace

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--encoder", "test_resnet", "--image-size", "32", "--train-size", "32", "--val-size", "16", "--batch-size", "8",
        "--lr", "2e-3", "--num-workers", "0", "--log-every", "0"]


def cli(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("HF_ENDPOINT",)}
    env.update({"PYTHONPATH": str(ROOT), "HF_HUB_DISABLE_PROGRESS_BARS": "1", "TQDM_DISABLE": "1"})
    return subprocess.run([sys.executable, "-m", "hf_transfer_seg", *args], env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)


@pytest.mark.slow
def test_fixed_fraction_rule_stops_the_run_and_the_card_records_it(tmp_path):
    out = tmp_path / "out"
    done = cli("pretrain", *TINY, "--epochs", "2", "--checkpoint-epochs", "0.5,1,1.5,2", "--early-stop", "epoch:fixed_fraction=0.5",
               "--output-dir", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    written = sorted(p.name for p in (out / "pending").iterdir())
    assert written == ["epoch-0000.5", "epoch-0001"]  # the latest checkpoint at or before half of 2 epochs; 1.5 and 2 never run
    stopped = get_namespace(ModelCard.load(out / "pending" / "epoch-0001" / "README.md").data, "early_stop")
    assert stopped["stopped_here"] and stopped["rule"] == "fixed_fraction" and stopped["params"] == {"fraction": 0.5}
    assert stopped["predictor"] == "epoch" and "fixed_fraction" in stopped["reason"]
    before = get_namespace(ModelCard.load(out / "pending" / "epoch-0000.5" / "README.md").data, "early_stop")
    assert before["stopped_here"] is False and before["spec"] == "epoch:fixed_fraction=0.5"
    assert json.loads((out / "early_stop.json").read_text())["seen"] == [[0.5, 0.5], [1.0, 1.0]]


def test_bad_early_stop_specs_fail_before_training(tmp_path):
    hindsight = cli("pretrain", *TINY, "--epochs", "1", "--early-stop", "lowest", "--output-dir", str(tmp_path / "a"))
    assert hindsight.returncode == 2 and "hindsight" in hindsight.stderr and "Traceback" not in hindsight.stderr
    no_score = cli("pretrain", *TINY, "--epochs", "1", "--early-stop", "patience=2", "--output-dir", str(tmp_path / "b"))
    assert no_score.returncode == 2 and "--score-target" in no_score.stderr
    assert not (tmp_path / "a" / "state").exists() and not (tmp_path / "b" / "state").exists()
