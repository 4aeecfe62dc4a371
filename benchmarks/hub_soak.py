"""Soak the local hub: mixed requests from several client threads against `hf-transfer-seg hub serve`.

The server runs in its own process (the real CLI), so its memory is read from /proc/PID/status: VmRSS
after a warm-up and VmHWM (peak) at the end. Every commit that answered 200 must be in main's history
with its file. Only 127.0.0.1 is used.

    python benchmarks/hub_soak.py [--requests 2000] [--threads 8]

Prints one line per figure; tests/test_hub_soak.py runs it smaller and checks the same figures.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
REPO = "local/soak"


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


class _Conn:
    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.conn = http.client.HTTPConnection(host, port, timeout=60)

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
        for attempt in (1, 2):
            try:
                self.conn.request(method, path, body=body, headers=headers or {})
                response = self.conn.getresponse()
                data = response.read()
                if response.getheader("connection", "").lower() == "close":
                    self.conn.close()
                return response.status, data
            except (http.client.HTTPException, ConnectionError):  # a closed keep-alive connection: reconnect once
                self.conn.close()
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")


def _commit_body(path: str, data: bytes) -> bytes:
    header = json.dumps({"key": "header", "value": {"summary": f"soak {path}"}})
    line = json.dumps({"key": "file", "value": {"content": base64.b64encode(data).decode(), "path": path,
                                                "encoding": "base64"}})
    return f"{header}\n{line}\n".encode()


def _worker(index: int, count: int, host: str, port: int, seed: int, out: dict, lock: threading.Lock) -> None:
    rng = random.Random(seed * 1000 + index)
    conn = _Conn(host, port)
    local = {"requests": 0, "by_status": {}, "commits_ok": {}, "commits_tried": 0, "dropped": 0, "errors_5xx": 0}
    big = os.urandom((1 << 20) + 4096)  # past the streaming threshold: decoded into ROOT/.tmp as it arrives
    for i in range(count):
        roll = rng.random()
        try:
            if roll < 0.15:  # a small commit
                path = f"t{index}/f{i}.txt"
                local["commits_tried"] += 1
                status, data = conn.request("POST", f"/api/models/{REPO}/commit/main", _commit_body(path, f"{index}-{i}".encode()))
                if status == 200:
                    local["commits_ok"][path] = json.loads(data)["commitOid"]
            elif roll < 0.17:  # a streamed 1 MiB commit line
                path = f"t{index}/big{i}.bin"
                local["commits_tried"] += 1
                status, data = conn.request("POST", f"/api/models/{REPO}/commit/main", _commit_body(path, big))
                if status == 200:
                    local["commits_ok"][path] = json.loads(data)["commitOid"]
            elif roll < 0.35:
                status, _ = conn.request("GET", f"/api/models/{REPO}")
            elif roll < 0.50:
                status, _ = conn.request("GET", f"/api/models/{REPO}/tree/main?recursive=true")
            elif roll < 0.60:
                status, _ = conn.request("GET", f"/api/models/{REPO}/commits/main?limit=20")
            elif roll < 0.70:
                status, _ = conn.request("GET", f"/{REPO}/resolve/main/README.md")
            elif roll < 0.75:
                status, _ = conn.request("POST", f"/api/models/{REPO}/preupload/main",
                                         json.dumps({"files": [{"path": "a.txt", "size": 3}]}).encode(),
                                         {"Content-Type": "application/json"})
            elif roll < 0.80:
                status, _ = conn.request("POST", "/api/validate-yaml", json.dumps({"content": "---\na: 1\n---\n"}).encode(),
                                         {"Content-Type": "application/json"})
            else:  # hostile: deep JSON, control characters, alias bombs, unknown routes
                kind = rng.randrange(4)
                if kind == 0:
                    status, _ = conn.request("POST", f"/api/models/{REPO}/commit/main", b"[" * 50_000)
                elif kind == 1:
                    status, _ = conn.request("DELETE", f"/api/models/{REPO}/branch/x%00%0A")
                elif kind == 2:
                    bomb = "---\na: &a [x,x,x,x,x,x,x,x,x]\n" + "".join(
                        f"{chr(98 + k)}: &{chr(98 + k)} [" + ",".join([f"*{chr(97 + k)}"] * 9) + "]\n" for k in range(8)) + "---\n"
                    status, _ = conn.request("POST", "/api/validate-yaml", json.dumps({"content": bomb}).encode(),
                                             {"Content-Type": "application/json"})
                else:
                    status, _ = conn.request("GET", f"/api/nothing%01/{i}")
        except (http.client.HTTPException, OSError):
            local["dropped"] += 1
            conn = _Conn(host, port)
            continue
        local["requests"] += 1
        local["by_status"][status] = local["by_status"].get(status, 0) + 1
        if status >= 500:
            local["errors_5xx"] += 1
    conn.conn.close()
    with lock:
        out["requests"] += local["requests"]
        out["dropped"] += local["dropped"]
        out["errors_5xx"] += local["errors_5xx"]
        out["commits_tried"] += local["commits_tried"]
        out["commits_ok"].update(local["commits_ok"])
        for status, n in local["by_status"].items():
            out["by_status"][status] = out["by_status"].get(status, 0) + n


def _history(conn: _Conn) -> tuple[set[str], set[str]]:
    shas, page = set(), 0
    while True:
        status, data = conn.request("GET", f"/api/models/{REPO}/commits/main?limit=1000&p={page}")
        assert status == 200, data[:200]
        items = json.loads(data)
        shas.update(item["id"] for item in items)
        if len(items) < 1000:
            break
        page += 1
    status, data = conn.request("GET", f"/api/models/{REPO}/tree/main?recursive=true&limit=10000")
    files = {e["path"] for e in json.loads(data) if e["type"] == "file"}
    return shas, files


def run_soak(requests: int = 2000, threads: int = 8, seed: int = 0) -> dict:
    """Serve a fresh root with the real CLI, soak it, and return the figures (see the module docstring)."""
    with tempfile.TemporaryDirectory(prefix="hub-soak-") as tmp:
        env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        env.pop("HF_TRANSFER_SEG_HUB_TOKEN", None)
        server = subprocess.Popen(
            [sys.executable, "-m", "hf_transfer_seg", "hub", "serve", "--root", str(Path(tmp) / "root"), "--port", "0"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT,
        )
        try:
            url = server.stdout.readline().strip()
            if not url.startswith("http://127.0.0.1:"):
                raise RuntimeError(f"hub serve did not start: {url!r} {server.stderr.read()[:2000]}")
            parts = urlsplit(url)
            setup = _Conn(parts.hostname, parts.port)
            status, data = setup.request("POST", "/api/repos/create", json.dumps({"name": "soak"}).encode(),
                                         {"Content-Type": "application/json"})
            assert status == 200, data
            status, _ = setup.request("POST", f"/api/models/{REPO}/commit/main", _commit_body("README.md", b"# soak\n"))
            assert status == 200
            rss_start = _status_kib(server.pid, "VmRSS")
            out = {"requests": 0, "dropped": 0, "errors_5xx": 0, "commits_tried": 0, "commits_ok": {}, "by_status": {}}
            lock = threading.Lock()
            per = [requests // threads + (1 if i < requests % threads else 0) for i in range(threads)]
            start = time.perf_counter()
            workers = [threading.Thread(target=_worker, args=(i, per[i], parts.hostname, parts.port, seed, out, lock))
                       for i in range(threads)]
            for w in workers:
                w.start()
            for w in workers:
                w.join()
            seconds = time.perf_counter() - start
            shas, files = _history(setup)
            alive = setup.request("GET", "/")[0] == 200
            figures = {
                "requests": out["requests"],
                "threads": threads,
                "seconds": round(seconds, 1),
                "dropped_connections": out["dropped"],
                "http_5xx": out["errors_5xx"],
                "by_status": dict(sorted(out["by_status"].items())),
                "commits_attempted": out["commits_tried"],
                "commits_200": len(out["commits_ok"]),
                "commits_200_in_history": sum(sha in shas for sha in out["commits_ok"].values()),
                "files_200_in_tree": sum(path in files for path in out["commits_ok"]),
                "server_rss_start_mib": round(rss_start / 1024, 1),
                "server_rss_end_mib": round(_status_kib(server.pid, "VmRSS") / 1024, 1),
                "server_rss_peak_mib": round(_status_kib(server.pid, "VmHWM") / 1024, 1),
                "server_alive": alive,
                "tmp_left": len(list((Path(tmp) / "root" / ".tmp").iterdir())),
            }
        finally:
            server.terminate()
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args()
    figures = run_soak(args.requests, args.threads)
    for key, value in figures.items():
        print(f"{key}: {value}")
    print(f"requests/s: {figures['requests'] / max(figures['seconds'], 1e-9):.0f}")


if __name__ == "__main__":
    main()
