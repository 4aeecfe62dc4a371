"""Shared fixtures: one local Hub server per test session, reached by the genuine huggingface_hub client.

huggingface_hub reads ``HF_ENDPOINT`` (and ``HF_HOME``...) when it is imported, so the environment is
set here, at import time, before any test module imports it: a free port is chosen now and the
session server is started on exactly that port by the ``hub_endpoint`` fixture.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import uuid
from pathlib import Path

import pytest


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


_SESSION_TMP = Path(tempfile.mkdtemp(prefix="hf-transfer-seg-tests-"))
HUB_PORT = _free_port()
HUB_ENDPOINT = f"http://127.0.0.1:{HUB_PORT}"

os.environ["HF_ENDPOINT"] = HUB_ENDPOINT
os.environ["HF_HOME"] = str(_SESSION_TMP / "hf-home")
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
os.environ.pop("HF_HUB_OFFLINE", None)
for _name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_XET_CACHE"):
    os.environ.pop(_name, None)


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_SESSION_TMP, ignore_errors=True)


@pytest.fixture(scope="session")
def hub_root() -> Path:
    """Root folder of the session's local Hub (one bare git repository per Hub repository)."""
    root = _SESSION_TMP / "hub-root"
    root.mkdir(exist_ok=True)
    return root


@pytest.fixture(scope="session")
def hub_endpoint(hub_root: Path):
    """URL of the session's local Hub server, the one ``HF_ENDPOINT`` points at."""
    from hf_transfer_seg.localhub import local_hub

    with local_hub(hub_root, port=HUB_PORT) as endpoint:
        assert endpoint == HUB_ENDPOINT
        yield endpoint


@pytest.fixture
def repo_id(request) -> str:
    """A fresh, unique repository id for one test: ``test-org/<test name>-<uuid8>``."""
    name = "".join(c if c.isalnum() else "-" for c in request.node.name.lower())
    name = "-".join(part for part in name.split("-") if part)[:60] or "repo"
    return f"test-org/{name}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The ``../shared`` folder beside the repository (data and docs), or skip when it is absent."""
    path = Path(__file__).resolve().parents[1].parent / "shared"
    if not path.is_dir():
        pytest.skip(f"../shared is absent: {path} does not exist (data for this test lives there)")
    return path


@pytest.fixture
def fresh_logging():
    """cli.main's logging.basicConfig binds to the stderr pytest captures for one test: unbind it after."""
    import logging

    yield
    for handler in list(logging.root.handlers):
        logging.root.removeHandler(handler)
