"""The local hub's connection budget: what a client is, how many connections it and everyone may hold, which go first.

**A client** is a source address, except that every loopback address (all of ``127.0.0.0/8``, ``::1`` and
their IPv4-mapped forms) is one client, *this machine*: any local process can pick any of 16 million
loopback addresses, so counting them apart separates nobody (80 addresses used to hold 16,506 connections).
An IPv6 client is its ``/64`` (one host is handed a whole /64). On a server bound to loopback every
connection is therefore one client, and the per-client cap is a cap for the machine; what keeps local users
apart there is *which* connection goes when the budget is full, below.

**The budget** (:class:`Budget`):

- a total cap below the process's open-file limit (:func:`total_cap`), so ``accept()`` never fails with
  EMFILE (asyncio then stops accepting anyone for a second at a time);
- a per-client cap for every client but this machine (whose share is the total: on a loopback-bound server
  it is every client);
- a reserve: connections *waiting* (nothing sent yet, a request head or body still arriving, or idle between
  requests) may hold at most ``total - reserve`` slots; the rest stay free for connections whose request is
  complete and being answered;
- when a new connection finds its client's cap, the total cap or the waiting share full, it is admitted and
  the *waiting* connection that has gone longest without sending a byte is closed (a 503 if it was
  mid-request): idle keep-alive connections and trickling clients go first, a fast upload and a request being
  answered never. A new connection is safe for :data:`FRESH_GRACE` seconds until the server has read from it:
  a flood of new connections cannot shed a well-behaved client's before its request is even read (it sends
  at once, and a complete request is being answered). Only when nothing can be shed is the new connection
  refused (503).

What it cannot do: a local process that opens a new connection for every one closed, as fast as it can,
keeps the kernel's accept queue full, and a well-behaved client's connection attempt then waits in (or is
dropped from) that queue before this server ever sees it (``benchmarks/hub_hostile.py --reconnect``). That
needs the operating system (a per-user connection limit in the firewall, or a socket only some users may
open); it is the same with every guard off.

Bookkeeping is O(1) per event (ordered dicts keyed by connection), so 16,000 held connections cost the
same per byte as 16.
"""

from __future__ import annotations

import ipaddress
import time
from collections import OrderedDict
from typing import Protocol

LOOPBACK = "this machine (loopback)"
# total cap: the open-file limit less FD_HEADROOM (each held connection costs ~10 KB of memory besides)
MAX_CONNECTIONS = 1 << 20
FD_HEADROOM = 256  # open files kept for the server itself: repositories, git pipes, worker threads, logs
MIN_TOTAL = 16
FRESH_GRACE = 0.5  # seconds a new connection is safe from shedding until the server has read from it


class Shedable(Protocol):
    def shed(self) -> None:
        """Close this connection to make room (the budget has already forgotten it)."""


def client_key(host: str | None) -> str:
    """The client a connection from ``host`` belongs to (see the module doc)."""
    if not host:
        return "unknown"
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_loopback:
        return LOOPBACK
    if isinstance(address, ipaddress.IPv6Address):
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


def total_cap(requested: int | None) -> int | None:
    """``requested`` (None: no total cap) lowered to leave :data:`FD_HEADROOM` of the open-file limit free."""
    if requested is None:
        return None
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (ImportError, OSError, ValueError):
        return requested
    if soft == resource.RLIM_INFINITY:
        return requested
    return max(MIN_TOTAL, min(requested, soft - FD_HEADROOM))


class _Line:
    """Connections that may be shed, in order: ``fresh`` (admitted, nothing read from them yet) by admission,
    ``waiting`` (sent something, or idle between requests) by last activity; least recent first in both."""

    def __init__(self):
        self.fresh: OrderedDict[Shedable, float] = OrderedDict()
        self.waiting: OrderedDict[Shedable, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self.fresh) + len(self.waiting)

    def add(self, conn: Shedable, now: float, fresh: bool) -> None:
        (self.fresh if fresh else self.waiting)[conn] = now

    def touch(self, conn: Shedable, now: float) -> None:
        if self.fresh.pop(conn, None) is not None or conn in self.waiting:
            self.waiting[conn] = now
            self.waiting.move_to_end(conn)

    def remove(self, conn: Shedable) -> None:
        self.fresh.pop(conn, None)
        self.waiting.pop(conn, None)

    def first(self, now: float, grace: float) -> Shedable | None:
        """The connection to shed: the quietest waiting one, or a fresh one silent for ``grace`` if quieter."""
        waiting = next(iter(self.waiting.items()), None)
        fresh = next(iter(self.fresh.items()), None)
        if fresh is not None and now - fresh[1] < grace:
            fresh = None  # too young: it has not had its chance to send yet
        if waiting is None or (fresh is not None and fresh[1] < waiting[1]):
            return fresh[0] if fresh is not None else None
        return waiting[0]


class Budget:
    """Open connections by client, and those that may be shed (see the module doc)."""

    def __init__(self, total: int | None, per_client: int | None, reserve: int = 0, grace: float = FRESH_GRACE,
                 clock=time.monotonic):
        self.total = total
        self.per_client = per_client
        self.waiting_cap = max(1, total - min(reserve, total // 4)) if total else None  # reserve: at most 1/4
        self.grace = grace
        self.clock = clock
        self.open = 0
        self.count: dict[str, int] = {}
        self.client: dict[Shedable, str] = {}
        self.line = _Line()
        self.lines: dict[str, _Line] = {}
        self.shed_count = 0

    def admit(self, conn: Shedable, key: str) -> str | None:
        """Count ``conn`` in, shedding others to make room; a refusal message when nothing could go."""
        now = self.clock()
        if self.per_client and key != LOOPBACK and self.count.get(key, 0) >= self.per_client:
            if not self._shed_first(self.lines.get(key), now):
                return (f"too many open connections from {key} (at most {self.per_client} per client), none of "
                        "them quiet: retry in a moment")
        if self.total and self.open >= self.total:
            if not self._shed_first(self.line, now):
                return f"the server holds its {self.total} connections, none of them quiet: retry in a moment"
        self.open += 1
        self.count[key] = self.count.get(key, 0) + 1
        self.client[conn] = key
        self._wait(conn, key, now, fresh=True)
        while self.waiting_cap and len(self.line) > self.waiting_cap:
            if not self._shed_first(self.line, now):
                break
        return None

    def touch(self, conn: Shedable) -> None:
        """``conn`` sent something: it goes to the back of the line."""
        mine = self.lines.get(self.client.get(conn))  # None: conn is busy, and so are its client's others
        if mine is not None:
            now = self.clock()
            self.line.touch(conn, now)
            mine.touch(conn, now)

    def busy(self, conn: Shedable) -> None:
        """``conn``'s request is complete and being answered: it is never shed."""
        key = self.client.get(conn)
        if key is not None:
            self._unwait(conn, key)

    def idle(self, conn: Shedable) -> None:
        """``conn``'s answer is sent: it waits for its next request (sheddable again)."""
        key = self.client.get(conn)
        if key is not None:
            self._unwait(conn, key)
            self._wait(conn, key, self.clock(), fresh=False)

    def release(self, conn: Shedable) -> None:
        """``conn`` is closed (idempotent)."""
        key = self.client.pop(conn, None)
        if key is None:
            return
        self._unwait(conn, key)
        self.open -= 1
        left = self.count[key] - 1
        if left:
            self.count[key] = left
        else:
            del self.count[key]

    def _wait(self, conn: Shedable, key: str, now: float, fresh: bool) -> None:
        self.line.add(conn, now, fresh)
        self.lines.setdefault(key, _Line()).add(conn, now, fresh)

    def _unwait(self, conn: Shedable, key: str) -> None:
        self.line.remove(conn)
        mine = self.lines.get(key)
        if mine is not None:
            mine.remove(conn)
            if not mine:
                del self.lines[key]

    def _shed_first(self, line: _Line | None, now: float) -> bool:
        victim = line.first(now, self.grace) if line else None
        if victim is None:
            return False
        self.release(victim)
        self.shed_count += 1
        victim.shed()
        return True
