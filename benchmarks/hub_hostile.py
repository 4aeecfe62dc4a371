"""Hostile clients against the local hub: idle connections, half-sent headers, cards too costly to read.

Two servers run in turn, each in its own process on a fresh root (loopback only): the default one
(header timeout, per-client connection cap) and, as the baseline measured in the same run, one with
both guards off. Each server process gets ``--server-fd-limit`` open files (default 1024, as many
systems' default ``ulimit -n``): a few thousand held connections then do to it what ~20,000 do to a
server with a 20,000-file limit, so the measurement stays small. For each:

1. a second client (source address 127.0.0.2) times ``GET /api/models/{repo}`` on fresh connections;
2. one client (127.0.0.1) opens ``--connections`` connections (half of them send half a header) and holds
   them; the second client is timed again while they are held, and its failures counted;
3. how many of the held connections the server refused (503) or closed, and when.

Then the card cases, on the default server: ``repo_info`` of a repository holding a 3.9 MB flat-list card
and one holding a 0.8 MB card (both put there with git, past the commit checks), and the time to refuse
each as a commit. Everything stops by itself; the sockets are closed and the servers stopped at the end.

    python benchmarks/hub_hostile.py [--connections 2000] [--requests 50] [--server-fd-limit 1024]
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import selectors
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REPO = "local/target"
VICTIM = "127.0.0.2"
_SERVE = """
import sys
from hf_transfer_seg.localhub.server import serve
guards = {} if sys.argv[2] == "on" else {"header_timeout": None, "max_connections_per_client": None}
serve(sys.argv[1], port=0, announce=lambda url: print(url, flush=True), **guards)
"""


def _start(root: Path, guards: str, fd_limit: int | None = None) -> tuple[subprocess.Popen, int]:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}

    def limit_files() -> None:
        if fd_limit:
            import resource

            hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
            resource.setrlimit(resource.RLIMIT_NOFILE, (fd_limit, hard))

    server = subprocess.Popen([sys.executable, "-c", _SERVE, str(root), guards], stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True, env=env, cwd=ROOT, preexec_fn=limit_files)
    url = server.stdout.readline().strip()
    if not url.startswith("http://127.0.0.1:"):
        server.kill()
        raise RuntimeError(f"the hub did not start: {url!r}")
    return server, int(url.rsplit(":", 1)[1])


def _request(port: int, method: str, path: str, body: bytes | None = None, source: str = VICTIM,
             timeout: float = 30) -> tuple[int, bytes, float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout, source_address=(source, 0))
    start = time.perf_counter()
    try:
        conn.request(method, path, body=body, headers={"Content-Type": "application/json"} if body else {})
        response = conn.getresponse()
        data = response.read()
        return response.status, data, time.perf_counter() - start
    finally:
        conn.close()


def _victim(port: int, requests: int) -> dict:
    """``requests`` timed GETs (3 s timeout each); after 5 failures in a row the rest count as failed untried."""
    times, failures, in_a_row = [], 0, 0
    for i in range(requests):
        if in_a_row >= 5:
            return {"failures": failures + requests - i, "served": len(times), "gave_up_after_5_in_a_row": True}
        try:
            status, _, seconds = _request(port, "GET", f"/api/models/{REPO}", timeout=3)
        except OSError:
            failures, in_a_row = failures + 1, in_a_row + 1
            continue
        if status == 200:
            times.append(seconds * 1000)
            in_a_row = 0
        else:
            failures, in_a_row = failures + 1, in_a_row + 1
    if not times:
        return {"failures": failures}
    times.sort()
    return {"median_ms": round(statistics.median(times), 2), "p95_ms": round(times[int(0.95 * (len(times) - 1))], 2),
            "failures": failures}


def _attack(port: int, connections: int, wait: float) -> dict:
    """Open ``connections`` from 127.0.0.1 (half send half a header), then watch them for ``wait`` seconds."""
    held, refused_at_connect, started = [], 0, time.perf_counter()
    for i in range(connections):
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout=5, source_address=("127.0.0.1", 0))
        except OSError:
            refused_at_connect += 1
            continue
        if i % 2:
            sock.sendall(b"GET /api/models HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        sock.setblocking(False)
        held.append(sock)
    return {"opened": len(held), "connect_failed": refused_at_connect, "sockets": held, "wait": wait,
            "started": started, "opening_s": round(time.perf_counter() - started, 1)}


def _watch(attack: dict) -> dict:
    """When the server answered or closed each held connection (503 refusals, 408s, silent closes), in seconds
    since the first one was opened, watched until ``wait`` seconds after that."""
    held, opened_at = attack["sockets"], attack["started"]
    selector = selectors.DefaultSelector()
    for sock in held:
        selector.register(sock, selectors.EVENT_READ, bytearray())
    counts = {"503": 0, "408": 0, "closed_silently": 0}
    last_close = None
    deadline = opened_at + attack["wait"]
    while selector.get_map() and time.perf_counter() < deadline:
        for key, _ in selector.select(timeout=0.2):
            try:
                chunk = key.fileobj.recv(4096)
            except (ConnectionResetError, BlockingIOError):
                chunk = b""
            if chunk:
                key.data.extend(chunk)
                continue
            answer = bytes(key.data)
            counts["503" if answer.startswith(b"HTTP/1.1 503") else "408" if answer.startswith(b"HTTP/1.1 408")
                   else "closed_silently"] += 1
            last_close = time.perf_counter() - opened_at
            selector.unregister(key.fileobj)
    counts["still_open"] = len(selector.get_map())
    counts["last_closed_after_s"] = round(last_close, 1) if last_close is not None else None
    selector.close()
    return counts


def _commit_body(path: str, data: bytes) -> bytes:
    lines = [{"key": "header", "value": {"summary": "bench"}},
             {"key": "file", "value": {"content": base64.b64encode(data).decode(), "path": path, "encoding": "base64"}}]
    return "".join(json.dumps(line) + "\n" for line in lines).encode()


def _flat_list_card(nbytes: int) -> bytes:
    return b"---\nvalues:\n" + b"".join(b"- %05d\n" % (i % 100000) for i in range(nbytes // 8)) + b"---\n# card\n"


def _connections_case(guards: str, connections: int, requests: int, wait: float, fd_limit: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="hub-hostile-") as tmp:
        server, port = _start(Path(tmp) / "root", guards, fd_limit)
        attack = None
        try:
            status, data, _ = _request(port, "POST", "/api/repos/create", json.dumps({"name": "target"}).encode())
            assert status == 200, data
            figures = {"before": _victim(port, requests)}
            attack = _attack(port, connections, wait)
            time.sleep(0.5)  # let the server accept (and refuse) the backlog
            figures["during"] = _victim(port, requests)
            figures["attacker"] = {k: attack[k] for k in ("opened", "connect_failed", "opening_s")}
            figures["attacker"].update(_watch(attack))
            figures["later"] = _victim(port, requests)
        finally:
            for sock in (attack or {}).get("sockets", []):
                sock.close()
            server.terminate()
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()
    return figures


def _cards_case() -> dict:
    sys.path.insert(0, str(ROOT))
    from hf_transfer_seg.localhub import storage as st

    figures = {}
    with tempfile.TemporaryDirectory(prefix="hub-hostile-cards-") as tmp:
        root = Path(tmp) / "root"
        server, port = _start(root, "on")
        try:
            for name, size in (("3.9 MB flat list", 3_900_000), ("0.8 MB flat list", 800_000)):
                card = _flat_list_card(size)
                repo_name = f"card-{size}"
                _request(port, "POST", "/api/repos/create", json.dumps({"name": repo_name}).encode(), source="127.0.0.1")
                status, _, commit_s = _request(port, "POST", f"/api/models/local/{repo_name}/commit/main",
                                               _commit_body("README.md", card), source="127.0.0.1", timeout=600)
                repo = st.Storage(root).get("model", f"local/{repo_name}")
                repo.commit("main", [st.FileOp("README.md", repo.write_blob(card))], summary="pushed with git")
                reads = []
                for _ in range(3):
                    read_status, body, seconds = _request(port, "GET", f"/api/models/local/{repo_name}",
                                                          source="127.0.0.1", timeout=600)
                    reads.append((read_status, round(seconds, 3), "cardData" in json.loads(body)))
                figures[name] = {"card_bytes": len(card), "commit_status": status, "commit_s": round(commit_s, 3),
                                 "repo_info (status, s, cardData)": reads}
        finally:
            server.terminate()
            server.wait(timeout=20)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=2000, help="connections the first client holds (<= 5000)")
    parser.add_argument("--requests", type=int, default=50, help="timed requests of the second client per phase")
    parser.add_argument("--wait", type=float, default=15.0, help="seconds to watch the held connections")
    parser.add_argument("--server-fd-limit", type=int, default=1024, help="open files of each server process")
    args = parser.parse_args()
    connections = max(1, min(args.connections, 5000))
    print(f"each server process: {args.server_fd_limit} open files at most; first client 127.0.0.1, "
          f"second client {VICTIM}")
    for guards in ("off", "on"):
        label = "guards on (default server)" if guards == "on" else "guards off (baseline)"
        figures = _connections_case(guards, connections, args.requests, args.wait, args.server_fd_limit)
        phases = {"before": f"before the first client opens {connections} connections",
                  "during": "while it holds them",
                  "later": f"{args.wait:g} s after it opened them (those the server did not close still held)"}
        for phase, words in phases.items():
            print(f"{label}: second client {words}: {figures[phase]}")
        print(f"{label}: first client's connections: {figures['attacker']}")
        before, during = figures["before"], figures["during"]
        if "median_ms" in before and "median_ms" in during:
            print(f"{label}: second client's median while held / before: {during['median_ms'] / before['median_ms']:.2f}x")
        else:
            print(f"{label}: second client while held: {during.get('served', 0)} of {args.requests} requests served")
    for name, figures in _cards_case().items():
        print(f"card {name}: {figures}")


if __name__ == "__main__":
    main()
