"""Query parameters and headers as the local hub reads them (booleans, non-negative integers, byte ranges)."""

from __future__ import annotations

import re

from hf_transfer_seg.localhub.responses import HTTPError

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


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
