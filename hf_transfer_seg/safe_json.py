"""The one JSON loader for files that came from a repository (a card's robustness grid file, ...).

``json.loads`` recurses once per nesting level: a 200,000-deep ``[[[[...]]]]`` raises ``RecursionError`` (and
reading a file of any size holds it whole). :func:`loads` bounds both: the size of the text before parsing
(:data:`MAX_BYTES`), and the nesting depth (:data:`MAX_DEPTH`) of what was parsed, measured without recursion;
the parser's own ``RecursionError`` (a text nested deeper than Python's recursion limit) is the same refusal.
(Counting brackets outside strings before parsing needs a string-aware scan: a regular expression for JSON
strings backtracks quadratically on ``"\"\"\"...``, a Python loop costs seconds on 16 MB.) Every refusal is a :class:`JSONLimitError`, a ``ValueError`` as ``json`` raises for
text that is not JSON, so a caller handles both with one ``except ValueError``. Numbers: ``NaN``/``Infinity`` are
refused (not JSON), and an integer of more digits than :data:`MAX_INT_DIGITS` is refused before Python's
``int()`` would raise on it.
"""

from __future__ import annotations

import json
from typing import Any

MAX_BYTES = 16 << 20  # a robustness grid file is 40-400 KB
MAX_DEPTH = 64  # as safe_yaml: the deepest real file (a grid) is 5 levels
MAX_INT_DIGITS = 400  # beyond any double (1.8e308), as safe_yaml


class JSONLimitError(ValueError):
    """Well-formed or not, the text is over the size or depth this loader reads."""


def depth(value: Any) -> int:
    """The nesting depth of a parsed JSON value (a scalar is 0, ``[]`` is 1), measured without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        deepest = max(deepest, level)
        stack.extend((child, level + 1) for child in children if isinstance(child, (dict, list)))
    return deepest


def _int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise JSONLimitError(f"an integer of {len(text.lstrip('-')):,} digits (at most {MAX_INT_DIGITS})")
    return int(text)


def _no_constant(name: str):
    raise ValueError(f"{name} is not JSON (write null for a missing number)")


def loads(raw: bytes | str, *, max_bytes: int = MAX_BYTES, max_depth: int = MAX_DEPTH) -> Any:
    """``json.loads`` of ``raw`` within the bounds above; ``ValueError`` (:class:`JSONLimitError` for a bound)
    for anything else."""
    if len(raw) > max_bytes:
        raise JSONLimitError(f"{len(raw):,} bytes, over the {max_bytes:,} read")
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(f"not UTF-8 text (byte {exc.start})") from None
    try:
        value = json.loads(raw, parse_int=_int, parse_constant=_no_constant)
    except RecursionError:
        raise JSONLimitError(f"nested deeper than the {max_depth} levels read") from None
    found = depth(value)
    if found > max_depth:
        raise JSONLimitError(f"nested {found:,} levels deep, more than the {max_depth} read")
    return value
