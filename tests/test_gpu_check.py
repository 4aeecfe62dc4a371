"""The GPU check script runs end to end on the CPU (--cpu-smoke) and every section prints a result."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ("train_step", "data_path", "gpu_decode", "scoring", "compile")


def test_gpu_check_cpu_smoke_prints_every_section():
    env = {**os.environ, "PYTHON": sys.executable, "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--cpu-smoke"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-3000:]
    assert "FAILED" not in out, out[-3000:]
    for name in SECTIONS:
        lines = [line for line in out.splitlines() if line.startswith(f"RESULT {name}: ")]
        assert len(lines) == 1, f"no result line for {name}:\n{out[-3000:]}"
        assert " vs " in lines[0] and lines[0].rstrip().split("=")[-1].split("x")[0].strip(), lines[0]
