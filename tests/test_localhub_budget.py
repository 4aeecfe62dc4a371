"""The local hub's connection budget and body deadlines (issue 24, items 3 and 4), with raw sockets and the
genuine client against a real server whose limits are scaled down so each case takes a second or two.

Nothing here asserts a timing: a case either ends as it must (408, 503, served) or its socket timeout fails it.
``benchmarks/hub_hostile.py`` measures the figures (16,000 held connections from 80 loopback addresses).
"""

from __future__ import annotations

import socket

import pytest
from huggingface_hub import HfApi

from hf_transfer_seg.localhub import local_hub
from hf_transfer_seg.localhub.budget import LOOPBACK, Budget, client_key
from test_bad_inputs_hub import _connect, _read_until_closed

TOTAL = 24  # connections in all (all of loopback is one client, whose share is the total)
RESERVED = 4  # of them, for requests being answered: waiting connections hold at most TOTAL - RESERVED
WAITING = TOTAL - RESERVED
RATE = 2000  # bytes/s a body must average after GRACE
GRACE = 1.0
IDLE = 5.0  # gap between body bytes, header and keep-alive timeouts


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    root = tmp_path_factory.mktemp("budget-hub")
    with local_hub(root, header_timeout=IDLE, keep_alive_timeout=IDLE, max_connections_per_client=2,
                   max_connections=TOTAL, reserved_connections=RESERVED, body_idle_seconds=IDLE, body_min_rate=RATE,
                   body_grace_seconds=GRACE) as endpoint:
        api = HfApi(endpoint=endpoint)
        api.create_repo("budget/target")
        yield endpoint, api


def _slow_commit_head(length: int) -> bytes:
    return (f"POST /api/models/budget/target/commit/main HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-ndjson\r\n"
            f"Content-Length: {length}\r\n\r\n").encode()


def test_a_body_trickling_one_byte_at_a_time_is_cut_off_by_its_deadline(hub):
    """Content-Length 10,000,000, one byte per 0.3 s: every gap is short of the gap limit, and yet it ends (408)."""
    endpoint, api = hub
    with _connect(endpoint) as sock:
        sock.sendall(_slow_commit_head(10_000_000))
        answer = b""
        sock.settimeout(0.3)
        for _ in range(200):  # at most 60 s; the deadline is GRACE + 10 MB / RATE of waiting
            try:
                sock.sendall(b"{")
                chunk = sock.recv(65536)
            except socket.timeout:
                continue
            except (BrokenPipeError, ConnectionResetError):
                break
            if not chunk:
                break
            answer += chunk
        sock.settimeout(30)
        answer += _read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 408") and b"too slow" in answer, answer[:400]
    assert api.model_info("budget/target").id == "budget/target"  # and the server serves on


def test_a_body_at_full_speed_is_not_cut_off(hub):
    _, api = hub
    data = bytes(range(256)) * 8192  # 2 MiB: 1,000 s at the minimum rate, a fraction of a second here
    commit = api.upload_file(path_or_fileobj=data, path_in_repo="big.bin", repo_id="budget/target")
    assert api.model_info("budget/target").sha == commit.oid


def _fill(endpoint: str, api: HfApi, first: bytes, sources: list[str]) -> list[socket.socket]:
    """len(sources) connections, the first sending ``first`` (read by the server before the others connect),
    the others half a header each."""
    held = [_connect(endpoint, sources[0])]
    held[0].sendall(first)
    assert api.model_info("budget/target").id == "budget/target"  # the server has read ``first`` by now
    held += [_connect(endpoint, source) for source in sources[1:]]
    for sock in held[1:]:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    return held


def test_loopback_addresses_are_one_client_and_the_quietest_connection_makes_room(hub):
    """Connections from WAITING + 1 different loopback addresses (the per-client cap of 2 does not apply to
    loopback) overfill the waiting share; a well-behaved client is still served, and the connection quiet for
    longest is the one closed for it, told why."""
    endpoint, api = hub
    held = _fill(endpoint, api, b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ", [f"127.0.0.{2 + i}" for i in range(WAITING + 1)])
    try:
        assert api.model_info("budget/target").id == "budget/target"
        answer = _read_until_closed(held[0])
        assert answer.startswith(b"HTTP/1.1 503") and b"to make room" in answer, answer[:300]
        held[-1].settimeout(0.5)  # the latest are still open (nothing to read, not closed)
        with pytest.raises(socket.timeout):
            held[-1].recv(1)
    finally:
        for sock in held:
            sock.close()


def test_a_slow_body_is_shed_before_quicker_connections(hub):
    endpoint, api = hub
    held = _fill(endpoint, api, _slow_commit_head(1000) + b"{", ["127.0.0.1"] * (WAITING + 1))
    try:
        assert api.model_info("budget/target").id == "budget/target"
        answer = _read_until_closed(held[0])
        assert answer.startswith(b"HTTP/1.1 503") and b"to make room" in answer, answer[:300]
    finally:
        for sock in held:
            sock.close()


class _Conn:
    def __init__(self, name: str):
        self.name = name
        self.closed = False

    def shed(self) -> None:
        self.closed = True

    def __repr__(self) -> str:
        return self.name


class _Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_budget_sheds_the_least_recently_active_waiting_connection_and_never_a_busy_one():
    clock = _Clock()
    budget = Budget(total=4, per_client=3, reserve=1, grace=0.5, clock=clock)  # waiting: at most 3
    a, b, c, d, e, f = (_Conn(n) for n in "abcdef")
    for conn in (a, b, c):
        assert budget.admit(conn, "x") is None
        budget.touch(conn)
    clock.now = 1.0
    budget.touch(a)  # b is now the quietest
    assert budget.admit(d, "x") is None and b.closed and not a.closed  # per-client cap: x's quietest goes
    for conn in (c, d, a):
        budget.busy(conn)  # all of x's connections are being answered: nothing of x can go
    assert "none of them quiet" in budget.admit(e, "x") and not e.closed
    assert budget.admit(e, "y") is None  # another client still fits in the total
    budget.busy(e)
    assert "none of them quiet" in budget.admit(f, "z")  # total full, every other conn busy
    budget.idle(c)  # c answered, waits for its next request: sheddable again
    assert budget.admit(f, "z") is None and c.closed and not e.closed
    budget.touch(e)  # more bytes on a connection being answered (its client has no waiting one): still busy
    assert e in budget.client and e not in budget.line.waiting
    budget.release(c)  # its connection_lost after the shedding: idempotent
    assert budget.open == 4 and budget.count == {"x": 2, "y": 1, "z": 1}


def test_a_new_connection_is_safe_until_read_or_its_grace_is_over_and_loopback_has_no_per_client_cap():
    clock = _Clock()
    budget = Budget(total=3, per_client=1, reserve=0, grace=0.5, clock=clock)
    a, b, c, d = (_Conn(n) for n in "abcd")
    assert budget.admit(a, LOOPBACK) is None and budget.admit(b, LOOPBACK) is None  # no per-client cap of 1
    assert budget.admit(c, LOOPBACK) is None
    assert "none of them quiet" in budget.admit(d, LOOPBACK)  # all three are fresh: a flood sheds nobody
    budget.touch(b)  # read from: no longer fresh, sheddable
    assert budget.admit(d, LOOPBACK) is None and b.closed and not a.closed
    clock.now = 0.6  # a's and c's grace is over: the older fresh one goes next
    e = _Conn("e")
    assert budget.admit(e, LOOPBACK) is None and a.closed and not c.closed and not d.closed


@pytest.mark.parametrize("host, key", [
    ("127.0.0.1", LOOPBACK), ("127.45.6.7", LOOPBACK), ("::1", LOOPBACK), ("::ffff:127.0.0.9", LOOPBACK),
    ("10.0.0.1", "10.0.0.1"), ("::ffff:10.0.0.1", "10.0.0.1"),
    ("2001:db8:1:2::1", "2001:db8:1:2::/64"), ("2001:db8:1:2:ffff::9", "2001:db8:1:2::/64"),
])
def test_what_a_client_is(host, key):
    assert client_key(host) == key
