"""Hostile clients against the local hub: 16,000 slow connections from 80 loopback addresses, and costly cards.

Two servers run in turn, each in its own process on a fresh root (loopback only): the default one
(connection budget, header timeout, body deadlines) and, as the baseline measured in the same run, one with
every connection guard off. Each server process gets ``--server-fd-limit`` open files (default: this
process's own soft limit). For each:

1. a well-behaved client (127.0.0.1) times ``GET /api/models/{repo}`` on fresh connections, quiet;
2. an attacker process (its open-file limit raised with ``resource.setrlimit``) opens ``--connections``
   connections round-robin from 80 loopback addresses (127.0.0.2 to 127.0.0.81): half send a commit head
   with ``Content-Length: 10000000`` and then one body byte every 12 s, half half a request header and one
   more header byte every 12 s. It holds them (with ``--reconnect``, every connection the server closes is
   opened again at once: a connect flood, which keeps the kernel's accept queue full whatever the server
   does once the budget is full);
3. while they are held, the well-behaved client is timed again (5 s timeout per request; after 5 failures
   in a row the rest count as failed untried): median, p95, failures;
4. what the attacker saw: connections opened, closed by the server (503, 408, silently), still held.

Then the card cases, on the default server: ``repo_info`` of a repository holding a 3.9 MB flat-list card
and one holding a 0.8 MB card (both put there with git, past the commit checks), and the time to refuse
each as a commit. Everything stops by itself (at most ``--hold`` seconds of attack per server); the sockets
are closed and the processes stopped at the end.

    python benchmarks/hub_hostile.py [--connections 16000] [--requests 60] [--hold 90] [--server-fd-limit N]
"""

from __future__ import annotations

import argparse
import base64
import errno
import http.client
import json
import os
import resource
import select
import selectors
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REPO = "local/target"
VICTIM = "127.0.0.1"
ADDRESSES = [f"127.0.0.{i}" for i in range(2, 82)]  # 80 loopback source addresses
TRICKLE_SECONDS = 12.0
_SERVE = """
import sys
from hf_transfer_seg.localhub.server import serve
off = {"header_timeout": None, "max_connections_per_client": None, "max_connections": None, "body_min_rate": None}
serve(sys.argv[1], port=0, announce=lambda url: print(url, flush=True), **({} if sys.argv[2] == "on" else off))
"""


def _start(root: Path, guards: str, fd_limit: int | None = None) -> tuple[subprocess.Popen, int]:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}

    def limit_files() -> None:
        if fd_limit:
            hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(fd_limit, hard), hard))

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
    """``requests`` timed GETs (5 s timeout each); after 5 failures in a row the rest count as failed untried."""
    times, failures, in_a_row = [], 0, 0
    for i in range(requests):
        if in_a_row >= 5:
            return {"served": len(times), "failures": failures + requests - i, "gave_up_after_5_in_a_row": True}
        try:
            status, _, seconds = _request(port, "GET", f"/api/models/{REPO}", timeout=5)
        except OSError:
            failures, in_a_row = failures + 1, in_a_row + 1
            continue
        if status == 200:
            times.append(seconds * 1000)
            in_a_row = 0
        else:
            failures, in_a_row = failures + 1, in_a_row + 1
    if not times:
        return {"served": 0, "failures": failures}
    times.sort()
    return {"served": len(times), "median_ms": round(statistics.median(times), 2),
            "p95_ms": round(times[int(0.95 * (len(times) - 1))], 2), "failures": failures}


# --------------------------------------------------------------------------------------------------
# the attacker (its own process: ``hub_hostile.py --attacker PORT CONNECTIONS``)


class _Attacker:
    """Non-blocking sockets, opened at most 256 at a time, each trickling one byte every TRICKLE_SECONDS and
    opened again whenever the server closes it."""

    def __init__(self, port: int, connections: int, reconnect: bool):
        self.port = port
        self.reconnect = reconnect
        self.wanted = connections
        self.selector = selectors.DefaultSelector()
        self.next_id = 0
        self.connecting = 0
        self.stats = {"opened": 0, "connect_failed": 0, "closed_503": 0, "closed_408": 0, "closed_silently": 0}
        self.stop = False

    def _open(self) -> None:
        n = self.next_id
        self.next_id += 1
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            sock.bind((ADDRESSES[n % len(ADDRESSES)], 0))
            code = sock.connect_ex(("127.0.0.1", self.port))
        except OSError:
            code = errno.EADDRNOTAVAIL
        if code not in (0, errno.EINPROGRESS):
            sock.close()
            self.stats["connect_failed"] += 1
            return
        self.connecting += 1
        self.selector.register(sock, selectors.EVENT_WRITE, {"n": n, "state": "connecting", "answer": b""})

    def _connected(self, key) -> None:
        sock, data = key.fileobj, key.data
        self.connecting -= 1
        if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
            self.selector.unregister(sock)
            sock.close()
            self.stats["connect_failed"] += 1
            return
        if data["n"] % 2:
            head = (f"POST /api/models/{REPO}/commit/main HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-ndjson\r\n"
                    "Content-Length: 10000000\r\n\r\n{").encode()
        else:
            head = b"GET /api/models HTTP/1.1\r\nHost: x\r\nX-Slow: a"
        try:
            sock.send(head)
        except OSError:
            pass
        self.stats["opened"] += 1
        data.update(state="held", last=time.monotonic())
        self.selector.modify(sock, selectors.EVENT_READ, data)

    def _closed(self, key) -> None:
        answer = key.data["answer"]
        cause = "closed_503" if answer.startswith(b"HTTP/1.1 503") else "closed_408" if answer.startswith(
            b"HTTP/1.1 408") else "closed_silently"
        self.stats[cause] += 1
        self.selector.unregister(key.fileobj)
        key.fileobj.close()

    def run(self) -> dict:
        announced = False
        started = time.monotonic()
        while not self.stop:
            held = len(self.selector.get_map()) - self.connecting
            while (self.next_id if not self.reconnect else held + self.connecting) < self.wanted \
                    and self.connecting < 256:
                self._open()
            if not announced and self.stats["opened"] + self.stats["connect_failed"] >= self.wanted:
                print(json.dumps({"opening_s": round(time.monotonic() - started, 1)}), flush=True)
                announced = True
            now = time.monotonic()
            for key, events in self.selector.select(timeout=0.2):
                if key.data["state"] == "connecting":
                    self._connected(key)
                    continue
                try:
                    chunk = key.fileobj.recv(4096)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    chunk = b""
                if chunk:
                    key.data["answer"] += chunk[:64]
                else:
                    self._closed(key)
            for key in list(self.selector.get_map().values()):  # the trickle (a few thousand sends a second)
                if key.data["state"] == "held" and now - key.data["last"] >= TRICKLE_SECONDS:
                    key.data["last"] = now
                    try:
                        key.fileobj.send(b"a")
                    except OSError:
                        pass
        self.stats["held_at_end"] = len(self.selector.get_map()) - self.connecting
        return self.stats


def _attacker_main(port: int, connections: int, reconnect: bool) -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    attacker = _Attacker(port, min(connections, hard - 64), reconnect)

    def stop(*_):
        attacker.stop = True

    signal.signal(signal.SIGTERM, stop)
    print(json.dumps(attacker.run()), flush=True)


def _connections_case(guards: str, connections: int, requests: int, hold: float, fd_limit: int,
                      reconnect: bool) -> dict:
    with tempfile.TemporaryDirectory(prefix="hub-hostile-") as tmp:
        server, port = _start(Path(tmp) / "root", guards, fd_limit)
        attacker = None
        try:
            status, data, _ = _request(port, "POST", "/api/repos/create", json.dumps({"name": "target"}).encode())
            assert status == 200, data
            figures = {"quiet": _victim(port, requests)}
            attacker = subprocess.Popen([sys.executable, __file__, "--attacker", str(port), str(connections),
                                         str(int(reconnect))],
                                        stdout=subprocess.PIPE, text=True)
            deadline = time.monotonic() + hold
            ready, _, _ = select.select([attacker.stdout], [], [], hold)  # once every connection was tried
            opened = attacker.stdout.readline() if ready else ""
            figures["opening"] = json.loads(opened) if opened.strip() else {"not done after": hold}
            figures["held"] = _victim(port, requests)
            time.sleep(max(0.0, min(5.0, deadline - time.monotonic())))
            attacker.send_signal(signal.SIGTERM)
            out, _ = attacker.communicate(timeout=60)
            figures["attacker"] = json.loads(out.strip().splitlines()[-1]) if out.strip() else {}
        finally:
            if attacker is not None and attacker.poll() is None:
                attacker.kill()
            server.terminate()
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()
    return figures


def _commit_body(path: str, data: bytes) -> bytes:
    lines = [{"key": "header", "value": {"summary": "bench"}},
             {"key": "file", "value": {"content": base64.b64encode(data).decode(), "path": path, "encoding": "base64"}}]
    return "".join(json.dumps(line) + "\n" for line in lines).encode()


def _flat_list_card(nbytes: int) -> bytes:
    return b"---\nvalues:\n" + b"".join(b"- %05d\n" % (i % 100000) for i in range(nbytes // 8)) + b"---\n# card\n"


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
    if len(sys.argv) == 5 and sys.argv[1] == "--attacker":
        return _attacker_main(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=16000, help="slow connections the attacker holds")
    parser.add_argument("--requests", type=int, default=60, help="timed requests of the well-behaved client per phase")
    parser.add_argument("--hold", type=float, default=90.0, help="at most this many seconds to open the connections")
    parser.add_argument("--server-fd-limit", type=int, default=resource.getrlimit(resource.RLIMIT_NOFILE)[0],
                        help="open files of each server process (default: this process's soft limit)")
    parser.add_argument("--reconnect", action="store_true",
                        help="the attacker opens every connection the server closes again at once")
    parser.add_argument("--skip-cards", action="store_true", help="only the connection cases")
    args = parser.parse_args()
    print(f"each server process: {args.server_fd_limit} open files at most; attacker: {args.connections} slow "
          f"connections from {len(ADDRESSES)} loopback addresses"
          f"{', each closed one opened again at once' if args.reconnect else ''}; well-behaved client {VICTIM}")
    results = {}
    for guards in ("off", "on"):
        label = "guards on (default server)" if guards == "on" else "guards off (baseline)"
        figures = results[guards] = _connections_case(guards, args.connections, args.requests, args.hold,
                                                      args.server_fd_limit, args.reconnect)
        print(f"{label}: well-behaved client, quiet: {figures['quiet']}")
        print(f"{label}: attacker opening: {figures['opening']}")
        print(f"{label}: well-behaved client while held: {figures['held']}")
        print(f"{label}: attacker saw: {figures['attacker']}")
    on, off = results["on"]["held"], results["off"]["held"]
    if "p95_ms" in on and "p95_ms" in off:
        print(f"while held, p95 guards on / guards off: {on['p95_ms'] / off['p95_ms']:.2f}x; "
              f"served {on['served']} vs {off['served']} of {args.requests}")
    else:
        print(f"while held: served {on.get('served', 0)} (guards on) vs {off.get('served', 0)} (guards off) "
              f"of {args.requests}")
    if not args.skip_cards:
        for name, figures in _cards_case().items():
            print(f"card {name}: {figures}")


if __name__ == "__main__":
    main()
