"""Every bound the local hub puts on a request, in one place, and the JSON decoder that applies them.

A hostile or broken client must get a 4xx with a clean message, never a 500, a dropped connection,
or a server that swells: these bound what one request may cost.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from starlette.requests import ClientDisconnect, Request

from hf_transfer_seg.localhub.responses import HTTPError

MAX_JSON_BODY = 16 << 20  # every request body but a commit and an LFS upload
MAX_JSON_DEPTH = 64  # nesting of any JSON the hub decodes (request bodies, commit lines)
# a commit line held whole (not streamed) may be at most this long: huggingface_hub writes its
# file lines content-first, and those past commit_body.STREAM_LINE are decoded as they arrive
MAX_LINE = 64 << 20
MAX_HEADER_BYTES = 64 << 10  # request line plus headers (answered 431 past it)
BODY_IDLE_SECONDS = 20.0  # a request body that sends nothing for this long is cut off (408)


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
    """The client sent nothing of its request body for :data:`BODY_IDLE_SECONDS`."""


class BodyIdleTimeout:
    """ASGI middleware: while the request body is incomplete, each ``receive`` waits at most
    :data:`BODY_IDLE_SECONDS` (then :class:`BodyTimeout`). Once the body is in, ``receive`` is left
    alone: it then only waits for the client to disconnect, which may take as long as a download."""

    def __init__(self, app, seconds: float | None = None):
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        seconds = self.seconds if self.seconds is not None else BODY_IDLE_SECONDS
        body_done = False

        async def timed_receive():
            nonlocal body_done
            if body_done:
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), seconds)
            except asyncio.TimeoutError:
                body_done = True  # no more waiting on this body (the error answer must not wait again)
                raise BodyTimeout() from None
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
