"""The code version written into every card: package version, plus the git commit in a checkout."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

from hf_transfer_seg import __version__


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """``0.1.0+g1234abcd56`` from a git checkout, ``0.1.0`` from an installed wheel."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short=10", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = ""
    return f"{__version__}+g{sha}" if sha else __version__
