"""Environment for benchmarks that run a local hub: import this module before anything imports huggingface_hub.

huggingface_hub reads ``HF_ENDPOINT`` and ``HF_HOME`` when it is imported, so a free port and a scratch
folder are chosen here, at import time; the benchmark starts its local hub on ``PORT`` and removes ``TMP``.
"""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import tempfile
from pathlib import Path


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


TMP = Path(tempfile.mkdtemp(prefix="hf-transfer-seg-bench-"))
atexit.register(shutil.rmtree, TMP, ignore_errors=True)  # also after --help or a failure
PORT = _free_port()
os.environ["HF_ENDPOINT"] = f"http://127.0.0.1:{PORT}"
os.environ["HF_HOME"] = str(TMP / "hf-home")
os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
for _name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE"):
    os.environ.pop(_name, None)
