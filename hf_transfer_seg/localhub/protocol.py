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
- **Connections per client**: at most ``max_per_client`` open connections per client IP address; one
  more is answered 503 and closed at once, before anything is read. One client holding thousands of
  idle connections then costs the others nothing (``benchmarks/hub_hostile.py`` measures it).
  uvicorn's own ``limit_concurrency`` is a global cap: it would make that client's connections turn
  everyone else away.
"""

from __future__ import annotations

import asyncio

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


def guarded(base: type, *, header_timeout: float | None, max_per_client: int | None) -> type:
    """``base`` (a uvicorn HTTP protocol class) with the header timeout and the per-client cap above.

    Each call makes a new class with its own connection counts: call it once per server."""
    counts: dict[str, int] = {}

    class Guarded(base):
        _guard_ip: str | None = None
        _guard_timer: asyncio.TimerHandle | None = None
        _guard_bytes = 0
        _refused = False

        def connection_made(self, transport) -> None:
            peer = transport.get_extra_info("peername")
            ip = str(peer[0]) if isinstance(peer, (tuple, list)) and peer else None
            if max_per_client and ip is not None and counts.get(ip, 0) >= max_per_client:
                self._refused = True
                transport.write(_raw_response(
                    "503 Service Unavailable",
                    f"too many open connections from {ip} (at most {max_per_client} per client): "
                    "close idle connections and retry"))
                transport.close()
                return
            if ip is not None:
                counts[ip] = counts.get(ip, 0) + 1
                self._guard_ip = ip
            super().connection_made(transport)
            self._guard_arm()

        def connection_lost(self, exc) -> None:
            if self._refused:
                return
            ip, self._guard_ip = self._guard_ip, None
            if ip is not None:
                left = counts.get(ip, 0) - 1
                if left > 0:
                    counts[ip] = left
                else:
                    counts.pop(ip, None)
            self._guard_disarm()
            super().connection_lost(exc)

        def _between_requests(self) -> bool:
            return self.cycle is None or self.cycle.response_complete

        def data_received(self, data: bytes) -> None:
            if self._refused:
                return
            if self._between_requests():
                self._guard_bytes += len(data)
                if self._guard_timer is None:
                    self._guard_arm()
            super().data_received(data)
            if not self._between_requests():  # the request head is complete: its handler takes over
                self._guard_disarm()
                self._guard_bytes = 0

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


def http_protocol(http: str, *, header_timeout: float | None, max_per_client: int | None) -> type:
    """The protocol class for uvicorn's ``http`` setting: "auto" (httptools when installed, else h11),
    "httptools" or "h11", with the size limit and the guards above."""
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
    return guarded(base, header_timeout=header_timeout, max_per_client=max_per_client)
