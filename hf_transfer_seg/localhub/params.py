"""A request as the local hub's handlers read it: :class:`Ctx`, query parameters (booleans, non-negative integers)
and byte ranges."""

from __future__ import annotations

import re

from starlette.requests import Request

from hf_transfer_seg.localhub import limits
from hf_transfer_seg.localhub.responses import HTTPError

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


class Ctx:
    """One request, as seen by a handler (running in a worker thread)."""

    def __init__(self, request: Request, segments: list[str], body: bytes, user: str):
        self.request = request
        self.segments = segments
        self.body = body
        self.user = user
        self.query = request.query_params
        self.base = str(request.base_url).rstrip("/")

    def json(self) -> dict:
        if not self.body.strip():
            return {}
        data = limits.loads(self.body, "request body")
        if not isinstance(data, dict):
            raise HTTPError(400, "request body must be a JSON object")
        return data


def truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def int_param(ctx, name: str, default: int) -> int:
    value = ctx.query.get(name)
    if value in (None, ""):
        return default
    try:
        number = int(value)
    except ValueError:
        raise HTTPError(400, f"query parameter {name!r} must be an integer") from None
    if number < 0:
        raise HTTPError(400, f"query parameter {name!r} must be >= 0")
    return number


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """A single ``bytes=a-b`` range as ``[start, end)``; None when it cannot be satisfied."""
    match = _RANGE.match(header.strip().replace(" ", ""))
    if not match or (not match.group(1) and not match.group(2)):
        return None
    first, last = match.group(1), match.group(2)
    if first:
        start = int(first)
        end = min(int(last) + 1, size) if last else size
    else:  # suffix range: the last N bytes
        start, end = max(size - int(last), 0), size
    if start >= size or end <= start:
        return None if size else (0, 0)
    return start, end
