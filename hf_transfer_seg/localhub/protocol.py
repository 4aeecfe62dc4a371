"""uvicorn's HTTP protocols with the guards a server facing careless or hostile clients needs.

- **Header size**: request line plus headers at most :data:`~.limits.MAX_HEADER_BYTES` (431). h11 has
  the limit built in (``h11_max_incomplete_event_size``); the httptools parser has none, so its
  subclass counts what it parses.
- **Header timeout**: a connection must deliver a complete request head within ``header_timeout``
  seconds of opening (and of the first byte of each later request on it). A connection that opens and
  sends nothing, or trickles a partial header, is closed (with a 408 when it sent something). uvicorn
  alone never closes a connection that has not completed a first request: ``timeout_keep_alive``
  only starts after a response.
- **Idle keep-alive**: uvicorn's ``timeout_keep_alive`` closes a connection idle between requests.
- **Connection budget** (:mod:`.budget`): a client is a source address, all of loopback being one; a
  per-client cap, a total cap below the open-file limit and a reserve for requests being answered. A new
  connection that finds a cap full closes the waiting connection that has gone longest without sending a
  byte (idle keep-alive, a trickled header or body); only when every connection is being answered is it
  refused (503). ``benchmarks/hub_hostile.py`` measures a well-behaved client while 16,000 are held.
- **Request bodies** have a gap and a rate deadline (:class:`~.limits.BodyTimeouts`, in the ASGI app).
"""

from __future__ import annotations

import asyncio

from hf_transfer_seg.localhub.budget import Budget, client_key, total_cap
from hf_transfer_seg.localhub.limits import MAX_HEADER_BYTES


def _raw_response(status: str, text: str) -> bytes:
    body = text.encode("ascii", "replace")
    return (f"HTTP/1.1 {status}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {len(body)}\r\n"
            f"connection: close\r\nx-error-message: {text}\r\n\r\n").encode("ascii", "replace") + body


def _limited_httptools():
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class _HeadersTooLarge(Exception):
        pass

    class LimitedHttpToolsProtocol(HttpToolsProtocol):
        _header_bytes = 0
        _too_large = False

        def on_message_begin(self) -> None:
            self._header_bytes = 0
            super().on_message_begin()

        def _count(self, size: int) -> None:
            self._header_bytes += size
            if self._header_bytes > MAX_HEADER_BYTES:
                self._too_large = True
                raise _HeadersTooLarge()  # stops the parser: uvicorn then calls send_400_response

        def on_url(self, url: bytes) -> None:
            self._count(len(url))
            super().on_url(url)

        def on_header(self, name: bytes, value: bytes) -> None:
            self._count(len(name) + len(value) + 4)
            super().on_header(name, value)

        def send_400_response(self, msg: str) -> None:
            if not self._too_large:
                return super().send_400_response(msg)
            self.transport.write(_raw_response("431 Request Header Fields Too Large",
                                               f"request line and headers larger than {MAX_HEADER_BYTES} bytes"))
            self.transport.close()

    return LimitedHttpToolsProtocol


def guarded(base: type, *, header_timeout: float | None, budget: Budget | None) -> type:
    """``base`` (a uvicorn HTTP protocol class) with the header timeout and the connection ``budget`` above.

    Each call makes a new class: call it once per server, with its own budget."""

    class Guarded(base):
        _guard_timer: asyncio.TimerHandle | None = None
        _guard_bytes = 0
        _refused = False

        def connection_made(self, transport) -> None:
            peer = transport.get_extra_info("peername")
            host = str(peer[0]) if isinstance(peer, (tuple, list)) and peer else None
            refusal = budget.admit(self, client_key(host)) if budget is not None else None
            if refusal:
                self._refused = True
                transport.write(_raw_response("503 Service Unavailable", refusal))
                transport.close()
                return
            super().connection_made(transport)
            self._guard_arm()

        def connection_lost(self, exc) -> None:
            if self._refused:
                return
            if budget is not None:
                budget.release(self)
            self._guard_disarm()
            super().connection_lost(exc)

        def shed(self) -> None:
            """Closed to make room for a new connection (called by the budget)."""
            if self.transport.is_closing():
                return
            if not self._between_requests() or self._guard_bytes:  # mid-request: say why
                self.transport.write(_raw_response(
                    "503 Service Unavailable",
                    "connection closed to make room: the server's connections are all taken and this one had gone "
                    "longest without sending anything; retry"))
            self.transport.close()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if budget is not None and not self.transport.is_closing():
                budget.idle(self)

        def _between_requests(self) -> bool:
            return self.cycle is None or self.cycle.response_complete

        def data_received(self, data: bytes) -> None:
            if self._refused:
                return
            if budget is not None:
                budget.touch(self)
            if self._between_requests():
                self._guard_bytes += len(data)
                if self._guard_timer is None:
                    self._guard_arm()
            super().data_received(data)
            if not self._between_requests():  # the request head is complete: its handler takes over
                self._guard_disarm()
                self._guard_bytes = 0
                if budget is not None and not self.cycle.more_body:  # and its body: being answered
                    budget.busy(self)

        def _guard_arm(self) -> None:
            if header_timeout and self._guard_timer is None:
                self._guard_timer = self.loop.call_later(header_timeout, self._guard_expired)

        def _guard_disarm(self) -> None:
            if self._guard_timer is not None:
                self._guard_timer.cancel()
                self._guard_timer = None

        def _guard_expired(self) -> None:
            self._guard_timer = None
            if self.transport.is_closing() or not self._between_requests():
                return
            if self._guard_bytes:
                self.transport.write(_raw_response(
                    "408 Request Timeout", f"request line and headers not complete within {header_timeout:g} s"))
            self.transport.close()

    Guarded.__name__ = Guarded.__qualname__ = f"Guarded{base.__name__}"
    return Guarded


def http_protocol(http: str, *, header_timeout: float | None, max_per_client: int | None,
                  max_connections: int | None = None, reserved: int = 0) -> type:
    """The protocol class for uvicorn's ``http`` setting: "auto" (httptools when installed, else h11),
    "httptools" or "h11", with the size limit and the guards above. ``max_connections`` is lowered to fit
    the open-file limit (:func:`~.budget.total_cap`); None turns a cap off (both None: no budget)."""
    if http not in ("auto", "httptools", "h11"):
        raise ValueError(f"unknown HTTP implementation {http!r}: expected auto, httptools or h11")
    base = None
    if http in ("auto", "httptools"):
        try:
            base = _limited_httptools()
        except ImportError:  # httptools not installed
            if http == "httptools":
                raise
    if base is None:
        from uvicorn.protocols.http.h11_impl import H11Protocol

        base = H11Protocol
    budget = None
    if max_per_client or max_connections:
        budget = Budget(total_cap(max_connections), max_per_client, reserved)
    return guarded(base, header_timeout=header_timeout, budget=budget)
