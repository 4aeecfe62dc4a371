"""Soak the local hub (bounded: 2,000 mixed requests from 8 client threads, loopback only).

The server is the real CLI (`hf-transfer-seg hub serve`) in its own process, so its memory is read
from /proc. The figures are printed (run with ``-s``); benchmarks/hub_soak.py computes the same ones.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _soak_module():
    spec = importlib.util.spec_from_file_location("hub_soak", ROOT / "benchmarks" / "hub_soak.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="reads the server's memory from /proc")
def test_soak_keeps_every_commit_and_bounded_memory():
    figures = _soak_module().run_soak(requests=2000, threads=8)
    print("\n" + "\n".join(f"{k}: {v}" for k, v in figures.items()), file=sys.stderr)
    assert figures["requests"] == 2000 and figures["dropped_connections"] == 0 and figures["http_5xx"] == 0
    assert figures["server_alive"]
    # every commit answered 200 is in main's history with its file; none was refused (no parent given)
    assert figures["commits_200"] == figures["commits_attempted"] > 0
    assert figures["commits_200_in_history"] == figures["files_200_in_tree"] == figures["commits_200"]
    # memory stays bounded: 1 MiB streamed uploads and hostile bodies are not held (measured peak ~75 MiB)
    assert figures["server_rss_peak_mib"] < 300
    assert figures["tmp_left"] == 0  # streamed uploads leave nothing in ROOT/.tmp
