"""The GPU check script runs end to end on the CPU (--cpu-smoke) and every section prints a result with a ratio."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ("train_step", "data_path", "gpu_decode", "train_fed_cpu", "train_fed_gpu", "scoring", "score_run",
           "finetune_epoch", "compile")


@pytest.mark.slow
def test_gpu_check_cpu_smoke_prints_every_section():
    env = {**os.environ, "PYTHON": sys.executable, "CUDA_VISIBLE_DEVICES": ""}
    env.pop("HF_ENDPOINT", None)
    done = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--cpu-smoke"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-3000:]
    assert "FAILED" not in out, out[-3000:]
    for name in RESULTS:
        lines = [line for line in out.splitlines() if line.startswith(f"RESULT {name}: ")]
        assert len(lines) == 1, f"no result line for {name}:\n{out[-3000:]}"
        assert re.search(r"= \d+\.\d\dx", lines[0]), lines[0]  # a ratio against a same-run baseline
    try:
        import nvidia.dali  # noqa: F401
    except ImportError:  # DALI absent: the section says so instead of failing
        assert any(line.startswith("SKIPPED train_fed_dali: nvidia-dali is not installed") for line in out.splitlines()), out[-3000:]
    else:  # DALI present: its CPU pipeline feeds the training step in the smoke
        assert re.search(r"^RESULT train_fed_dali: .*= \d+\.\d\dx", out, re.M), out[-3000:]
