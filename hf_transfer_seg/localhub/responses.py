"""Errors as the local hub answers them: a status, a JSON ``{"error": ...}`` body and the headers
``X-Error-Code`` / ``X-Error-Message`` that huggingface_hub turns into its typed exceptions."""

from __future__ import annotations

import json
import re
from typing import Any

from starlette import responses
from starlette.responses import Response

_UNSAFE_IN_HEADER = re.compile(r"[^\x20-\x7e]+")
MAX_HEADER_MESSAGE = 2000


class JSONResponse(responses.JSONResponse):
    """Starlette's JSON response, except that text UTF-8 cannot hold (a lone surrogate: a request value echoed in
    an error, a file name pushed with git that is not UTF-8) is written as a ``\\uXXXX`` escape, which JSON
    allows, instead of failing the answer with a 500 (or, inside an error answer, a bare text 500)."""

    def render(self, content: Any) -> bytes:
        try:
            return super().render(content)
        except UnicodeEncodeError:
            return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii")


class HTTPError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, body: dict | None = None,
                 headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.code = status, message, code
        self.body, self.headers = body, headers


def header_value(text: str, limit: int = MAX_HEADER_MESSAGE) -> str:
    """``text`` as a header value every HTTP stack accepts: printable ASCII only (control characters,
    newlines and non-ASCII become '?'), at most ``limit`` characters. The JSON body keeps the original."""
    return _UNSAFE_IN_HEADER.sub(lambda m: "?" if m.group().strip() else " ", str(text))[:limit]


def error_response(status: int, message: str, code: str | None = None, body: dict | None = None,
                   headers: dict | None = None) -> Response:
    out = {name: header_value(value) for name, value in (headers or {}).items()}
    out["X-Error-Message"] = header_value(message)
    if code:
        out["X-Error-Code"] = header_value(code)
    return JSONResponse({"error": message, **(body or {})}, status_code=status, headers=out)
