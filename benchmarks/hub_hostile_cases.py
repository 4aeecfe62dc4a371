"""Hostile cases of issue 24 (local hub items), counted by cause: how many end badly, on whichever code is imported.

Run it once against the code before the fixes and once after, and compare the tallies:

    PYTHONPATH=/path/to/old/checkout python benchmarks/hub_hostile_cases.py
    PYTHONPATH=. python benchmarks/hub_hostile_cases.py

Real servers (``local_hub`` in this process, limits scaled down where the code accepts them), the genuine
huggingface_hub client, raw sockets. Causes:

- **revision**: for every length 4..40, a branch and a tag named as that prefix of commit A, pointing at
  commit B, are asked for through the API, then ``hf_hub_download(revision=prefix)`` must return A's file;
  plus one 4-digit prefix shared by two commits (must be a 400 naming both).
- **numbers**: card YAML with every integer form and huge floats, through ``/api/validate-yaml`` and a raw
  commit: a 500 is bad, a 400 naming the value's path is good.
- **body deadline**: connections posting ``Content-Length: 10000000`` and one byte every 2 s, watched for 20 s:
  still open is bad, a 408 is good.
- **lockout**: 16 slow bodies held from 127.0.0.1 (the server's per-client cap) while another local user
  asks ``model_info`` 10 times: a failure is bad.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import inspect
import itertools
import json
import os
import selectors
import socket
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import httpx  # noqa: E402
from huggingface_hub import HfApi, hf_hub_download  # noqa: E402

import hf_transfer_seg  # noqa: E402
from hf_transfer_seg.localhub import local_hub  # noqa: E402
from hf_transfer_seg.localhub import storage as st  # noqa: E402


def _hub(root: Path, **wanted):
    """``local_hub`` with the keyword arguments this code knows (older code lacks the newer limits)."""
    from hf_transfer_seg.localhub import app, server

    known = set(inspect.signature(server._make_server).parameters) | set(inspect.signature(app.create_app).parameters)
    return local_hub(root, **{k: v for k, v in wanted.items() if k in known})


def _revision_cases(endpoint: str, root: Path, tally: Counter) -> None:
    api = HfApi(endpoint=endpoint)
    for kind in ("branch", "tag"):
        repo_id = f"cases/revisions-{kind}"
        api.create_repo(repo_id)
        first = api.upload_file(path_or_fileobj=b"A", path_in_repo="f.txt", repo_id=repo_id).oid
        second = api.upload_file(path_or_fileobj=b"B", path_in_repo="f.txt", repo_id=repo_id).oid
        with tempfile.TemporaryDirectory() as cache:
            for length in range(4, 41):
                name = first[:length]
                try:
                    if kind == "branch":
                        api.create_branch(repo_id, branch=name, revision=second)
                    else:
                        api.create_tag(repo_id, tag=name, revision=second)
                    created = "ref created"
                except Exception:  # noqa: BLE001 - refused (any 4xx)
                    created = "ref refused"
                try:
                    data = Path(hf_hub_download(repo_id, "f.txt", revision=name, endpoint=endpoint,
                                                cache_dir=f"{cache}/{length}")).read_bytes()
                    outcome = "served the commit" if data == b"A" else "SERVED OTHER CONTENT"
                except Exception as exc:  # noqa: BLE001
                    outcome = f"download failed ({type(exc).__name__})"
                tally[f"revision: {created}, {outcome}"] += 1
    # one 4-digit prefix shared by two commits
    repo = st.Storage(root).get("model", "cases/revisions-branch")
    tree = repo.root_tree_oid(repo.branch_head("main"))
    seen: dict[str, bytes] = {}
    for i in itertools.count():
        body = f"tree {tree}\nauthor a <a@x> 1 +0000\ncommitter a <a@x> 1 +0000\n\ncollision {i}\n".encode()
        sha = hashlib.sha1(b"commit %d\0" % len(body) + body).hexdigest()
        if sha[:4] in seen:
            break
        seen[sha[:4]] = body
    shas = [repo.git("hash-object", "-t", "commit", "-w", "--stdin", input=b).decode().strip() for b in (seen[sha[:4]], body)]
    response = httpx.get(f"{endpoint}/api/models/cases/revisions-branch/revision/{sha[:4]}", timeout=30)
    named = response.status_code == 400 and all(s in response.text for s in shas)
    tally[f"revision: ambiguous prefix -> {response.status_code}{' naming both commits' if named else ''}"] += 1


NUMBERS = {
    "decimal 401 digits": "9" * 401, "decimal 5,000 digits": "9" * 5000, "hex 5,000 digits": "0x" + "f" * 5000,
    "octal 5,000 digits": "0" + "7" * 5000, "binary 20,000 ones": "0b" + "1" * 20000,
    "binary 20,000 ones with underscores": "0b" + "_1" * 20000, "base 60, 3,000 groups": "1:" + ":".join(["30"] * 3000),
    "!!int binary 20,000": "!!int 0b" + "1" * 20000, "!!int 0o 5,000": "!!int 0o" + "7" * 5000,
    "float 1e+99999999999": "1.0e+99999999999", "float base 60, 3,000 groups": "1:" + ":".join(["30"] * 3000) + ".5",
    "!!float 1e400": "!!float 1e400", "!!int abc": "!!int abc", "!!float abc": "!!float abc",
    "date 2001-13-45": "2001-13-45", "!!timestamp abc": "!!timestamp abc",
}


def _number_cases(endpoint: str, tally: Counter) -> None:
    api = HfApi(endpoint=endpoint)
    api.create_repo("cases/numbers")
    for what, literal in NUMBERS.items():
        card = f"---\nlicense: mit\nextra:\n  scores:\n  - {literal}\n---\n# card\n"
        checked = httpx.post(f"{endpoint}/api/validate-yaml", json={"content": card, "repoType": "model"}, timeout=60)
        lines = [{"key": "header", "value": {"summary": "raw"}},
                 {"key": "file", "value": {"content": base64.b64encode(card.encode()).decode(), "path": "README.md",
                                           "encoding": "base64"}}]
        committed = httpx.post(f"{endpoint}/api/models/cases/numbers/commit/main",
                               content="".join(json.dumps(line) + "\n" for line in lines).encode(),
                               headers={"Content-Type": "application/x-ndjson"}, timeout=60)
        for route, response in (("validate-yaml", checked), ("commit", committed)):
            status = response.status_code
            said = response.headers.get("x-error-message", "") + response.text
            outcome = ("500" if status >= 500 else "400 naming extra.scores[0]" if status == 400 and "extra.scores[0]" in said
                       else f"{status} without the path" if status >= 400 else f"{status} ACCEPTED")
            tally[f"numbers: {route} {outcome}"] += 1


def _watch(socks: list[socket.socket], seconds: float, trickle: float) -> Counter:
    """Trickle one byte every ``trickle`` seconds on each socket for ``seconds``; how each one ended."""
    selector = selectors.DefaultSelector()
    for sock in socks:
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ, bytearray())
    ended: Counter = Counter()
    deadline = time.monotonic() + seconds
    next_byte = time.monotonic()
    while selector.get_map() and time.monotonic() < deadline:
        if time.monotonic() >= next_byte:
            next_byte += trickle
            for key in list(selector.get_map().values()):
                with contextlib.suppress(OSError):
                    key.fileobj.send(b"{")
        for key, _ in selector.select(timeout=0.2):
            try:
                chunk = key.fileobj.recv(4096)
            except BlockingIOError:
                continue
            except OSError:
                chunk = b""
            if chunk:
                key.data.extend(chunk)
                continue
            ended[bytes(key.data[:12]).decode("latin-1") or "closed silently"] += 1
            selector.unregister(key.fileobj)
    ended["STILL OPEN"] += len(selector.get_map())
    for key in list(selector.get_map().values()):
        key.fileobj.close()
    return ended


def _slow_body(port: int, source: str = "127.0.0.1") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))
    sock.sendall(b"POST /api/models/cases/slow/commit/main HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-ndjson\r\n"
                 b"Content-Length: 10000000\r\n\r\n{")
    return sock


def _body_cases(tmp: Path, tally: Counter) -> None:
    with _hub(tmp / "body", body_idle_seconds=5.0, body_min_rate=1000, body_grace_seconds=2.0) as endpoint:
        HfApi(endpoint=endpoint).create_repo("cases/slow")
        port = int(endpoint.rsplit(":", 1)[1])
        for outcome, n in _watch([_slow_body(port) for _ in range(10)], 20.0, 2.0).items():
            tally[f"body deadline: {outcome.strip()}"] += n


def _lockout_cases(tmp: Path, tally: Counter) -> None:
    with _hub(tmp / "lockout", max_connections_per_client=16, max_connections=32, reserved_connections=8) as endpoint:
        api = HfApi(endpoint=endpoint)
        api.create_repo("cases/slow")
        port = int(endpoint.rsplit(":", 1)[1])
        held = [_slow_body(port) for _ in range(16)] + [_slow_body(port, f"127.0.0.{2 + i}") for i in range(16)]
        try:
            for _ in range(10):
                with httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.1"), timeout=10) as other:
                    try:
                        ok = other.get(f"{endpoint}/api/models/cases/slow").status_code == 200
                    except httpx.HTTPError:
                        ok = False
                tally[f"lockout: other local user {'served' if ok else 'FAILED'}"] += 1
        finally:
            for sock in held:
                sock.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.parse_args()
    print(f"code under test: {Path(hf_transfer_seg.__file__).parent}", file=sys.stderr)
    tally: Counter = Counter()
    with tempfile.TemporaryDirectory(prefix="hub-cases-") as tmp:
        tmp = Path(tmp)
        with _hub(tmp / "root") as endpoint:
            _revision_cases(endpoint, tmp / "root", tally)
            _number_cases(endpoint, tally)
        _body_cases(tmp, tally)
        _lockout_cases(tmp, tally)
    for cause, n in sorted(tally.items()):
        print(f"{n:4d}  {cause}")


if __name__ == "__main__":
    main()
