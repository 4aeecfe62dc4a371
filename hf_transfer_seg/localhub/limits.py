"""Every bound the local hub puts on a request, in one place, and the JSON decoder that applies them.

A hostile or broken client must get a 4xx with a clean message, never a 500, a dropped connection,
or a server that swells: these bound what one request may cost.
"""

from __future__ import annotations

import asyncio
import json
import math
from typing import Any

from starlette.requests import ClientDisconnect, Request

from hf_transfer_seg.localhub.responses import HTTPError

MAX_JSON_BODY = 16 << 20  # every request body but a commit and an LFS upload
MAX_JSON_DEPTH = 64  # nesting of any JSON the hub decodes (request bodies, commit lines)
# a commit line held whole (not streamed) may be at most this long: huggingface_hub writes its
# file lines content-first, and those past commit_body.STREAM_LINE are decoded as they arrive
MAX_LINE = 16 << 20  # held ~3x while parsed (bytes, str, decoded): ~50 MiB per request at most
MAX_HEADER_BYTES = 64 << 10  # request line plus headers (answered 431 past it)
BODY_IDLE_SECONDS = 20.0  # a request body that sends nothing for this long is cut off (408)
# ... and one that averages less than BODY_MIN_RATE after BODY_GRACE_SECONDS: a body of N bytes must be
# in within BODY_GRACE_SECONDS + N / BODY_MIN_RATE seconds of waiting for it (100 MB: 30 min)
BODY_MIN_RATE = 64 << 10  # bytes per second
BODY_GRACE_SECONDS = 30.0


def loads(data: bytes | str, what: str) -> Any:
    """``json.loads`` with :data:`MAX_JSON_DEPTH`; errors are HTTP 400 naming ``what``."""
    try:
        value = json.loads(data)
    except RecursionError:
        raise HTTPError(400, f"{what} is nested deeper than {MAX_JSON_DEPTH} levels") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise HTTPError(400, f"{what} is not valid JSON: {str(exc)[:200]}") from None
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise HTTPError(400, f"{what} is nested deeper than {MAX_JSON_DEPTH} levels")
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values() if isinstance(v, (dict, list)))
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item if isinstance(v, (dict, list)))
    return value


class BodyTimeout(Exception):
    """The client's request body stalled or is too slow (:class:`BodyTimeouts`); the message says which."""


class BodyTimeouts:
    """ASGI middleware: two clocks run while a request body is incomplete.

    - **Gap**: each ``receive`` waits at most ``idle`` seconds for the next bytes.
    - **Rate**: the time spent waiting for the body may be at most ``grace + received / min_rate`` seconds:
      after the grace period a body must average ``min_rate`` bytes per second. With a ``Content-Length``
      of N bytes that is a total deadline of ``grace + N / min_rate`` seconds, scaled to the declared size;
      a body trickling one byte every 15 s (each gap short of ``idle``) is cut off after ``grace``.

    Only the time the app spends waiting in ``receive`` counts: time the server spends on what it already
    received is not the client's. Either clock raises :class:`BodyTimeout` (answered 408, connection
    closed). Once the body is in, ``receive`` is left alone: it then only waits for the client to
    disconnect, which may take as long as a download."""

    def __init__(self, app, seconds: float | None = None, min_rate: float | None = BODY_MIN_RATE,
                 grace: float = BODY_GRACE_SECONDS):
        self.app = app
        self.seconds = seconds
        self.min_rate = min_rate
        self.grace = grace

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        idle = self.seconds if self.seconds is not None else BODY_IDLE_SECONDS
        min_rate, grace = self.min_rate, self.grace
        declared = dict(scope.get("headers") or []).get(b"content-length", b"").decode("latin-1").strip()
        declared_text = f" of {declared}" if declared.isdigit() else ""
        loop = asyncio.get_running_loop()
        body_done = False
        waited = 0.0
        received = 0

        async def timed_receive():
            nonlocal body_done, waited, received
            if body_done:
                return await receive()
            allowed = grace + received / min_rate - waited if min_rate else math.inf
            timeout = min(idle, allowed)
            started = loop.time()
            try:
                if timeout <= 0:
                    raise asyncio.TimeoutError
                message = await asyncio.wait_for(receive(), timeout)
            except asyncio.TimeoutError:
                body_done = True  # no more waiting on this body (the error answer must not wait again)
                if timeout < idle:
                    raise BodyTimeout(
                        f"request body too slow: {received}{declared_text} bytes after {waited + loop.time() - started:.0f} s; "
                        f"a body must average at least {min_rate:g} bytes/s after its first {grace:g} s") from None
                raise BodyTimeout(f"request body incomplete: nothing received for {idle:g} s (a body shorter than "
                                  "its Content-Length?)") from None
            waited += loop.time() - started
            if message.get("type") == "http.request":
                received += len(message.get("body", b""))
            if message.get("type") != "http.request" or not message.get("more_body", False):
                body_done = True
            return message

        await self.app(scope, timed_receive, send)


async def read_body(request: Request, limit: int = MAX_JSON_BODY) -> bytes:
    """The whole body; past ``limit`` the rest is still read (and dropped) before answering 413."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size <= limit:
            chunks.append(chunk)
    if size > limit:
        raise HTTPError(413, f"request body larger than {limit} bytes")
    return b"".join(chunks)


async def drain(request: Request) -> None:
    try:
        async for _ in request.stream():
            pass
    except (ClientDisconnect, RuntimeError):  # RuntimeError: stream already consumed
        pass
