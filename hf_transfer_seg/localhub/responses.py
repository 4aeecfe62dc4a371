"""Errors as the local hub answers them: a status, a JSON ``{"error": ...}`` body and the headers
``X-Error-Code`` / ``X-Error-Message`` that huggingface_hub turns into its typed exceptions."""

from __future__ import annotations

from starlette.responses import JSONResponse, Response


class HTTPError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, body: dict | None = None,
                 headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.code = status, message, code
        self.body, self.headers = body, headers


def error_response(status: int, message: str, code: str | None = None, body: dict | None = None,
                   headers: dict | None = None) -> Response:
    header_message = message.encode("ascii", "replace").decode().replace("\r", " ").replace("\n", " ")[:2000]
    out = {"X-Error-Message": header_message, **(headers or {})}
    if code:
        out["X-Error-Code"] = code
    return JSONResponse({"error": message, **(body or {})}, status_code=status, headers=out)
