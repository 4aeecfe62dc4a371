"""What failed in a Hub request and why: :func:`cause` (one line), :func:`explain` (the cause and the fix).

``explain`` is used by :func:`hf_transfer_seg.cli.main` for every subcommand, so a wrong token, a missing repo or
a Hub outage ends any command the same way: exit code 2, no traceback unless ``-v``. ``cause`` is what the
pretraining publisher records for a checkpoint it could not push, so the message that leaves it in ``pending/``
names the true cause (the Hub refused the card, the token, the network...), not a guess.
"""

from __future__ import annotations

import os
import sys

from hf_transfer_seg.redact import redact

_HTTP_BACKENDS = {"httpx", "httpx2", "requests", "urllib3", "httpcore"}
_CONNECTION_NAMES = {"ConnectError", "ConnectionError", "ConnectTimeout", "TransportError", "RemoteProtocolError",
                     "NewConnectionError", "MaxRetryError", "ReadTimeout", "Timeout", "TimeoutException"}


def _chain(exc: BaseException):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _endpoint() -> str:
    return os.environ.get("HF_ENDPOINT") or "https://huggingface.co"


def _http_error(exc: BaseException):
    errors = sys.modules.get("huggingface_hub.errors")
    if errors is None:
        return None
    return next((e for e in _chain(exc) if isinstance(e, errors.HfHubHTTPError)), None)


def _connection_error(exc: BaseException):
    for e in _chain(exc):
        if isinstance(e, ConnectionError):
            return e
        for cls in type(e).__mro__:
            if cls.__module__.split(".")[0] in _HTTP_BACKENDS and cls.__name__ in _CONNECTION_NAMES:
                return e
    return None


def _validation_error(exc: BaseException):
    errors = sys.modules.get("huggingface_hub.errors")
    if errors is None or not hasattr(errors, "HFValidationError"):
        return None
    return next((e for e in _chain(exc) if isinstance(e, errors.HFValidationError)), None)


def cause(exc: BaseException) -> str:
    """One line: what the Hub answered (status, request, its message), that it could not be reached, or the
    exception itself; never a token."""
    http = _http_error(exc)
    if http is not None:
        return _http_head(http).rstrip(".")
    conn = _connection_error(exc)
    if conn is not None:
        return redact(f"cannot reach the Hub at {_endpoint()} ({_conn_text(conn)})")
    return redact(f"{type(exc).__name__}: {' '.join(str(exc).split())[:400]}")


def is_refusal(exc: BaseException) -> bool:
    """True when the Hub answered and refused the request (4xx other than 408/429): retrying will not help."""
    http = _http_error(exc)
    status = getattr(getattr(http, "response", None), "status_code", None)
    return isinstance(status, int) and 400 <= status < 500 and status not in (408, 429)


def _http_head(http) -> str:
    response = getattr(http, "response", None)
    status = getattr(response, "status_code", None)
    request = getattr(response, "request", None)
    what = f"{request.method} {request.url}" if request is not None else "a Hub request"
    said = getattr(http, "server_message", None) or str(http).splitlines()[0]
    return redact(f"the Hub answered HTTP {status} to {what} ({' '.join(said.split())[:300]}).")


def _conn_text(conn) -> str:
    return f"{type(conn).__name__}: {str(conn).splitlines()[0][:300] if str(conn) else 'no answer'}"


def explain(exc: BaseException) -> str | None:
    """One paragraph for a failed Hub request (found anywhere in ``exc``'s chain), or for a repo id / revision
    the Hub client refused (``HFValidationError``, where a flag without an argtypes check passed one on);
    None for anything else."""
    invalid = _validation_error(exc)
    if invalid is not None:
        said = " ".join(str(invalid).split())[:300].rstrip(".")
        return redact(f"the Hub client refused a repository id or revision: {said}. Write repo ids as owner/name "
                      "(letters, digits, '-', '_', '.'; no spaces, no '..' or '--') and run the command again.")
    http = _http_error(exc)
    if http is not None:
        status = getattr(getattr(http, "response", None), "status_code", None)
        head = _http_head(http)
        if status == 401:
            fix = ("The token is missing, wrong or expired. Set a valid one (HF_TOKEN=hf_... or `hf auth login`; "
                   "for a local hub, the token it was started with) and run the command again.")
        elif status == 403:
            fix = ("The token is valid but may not do this: use a token with read access (write access to push) "
                   "to that repository, or accept the repository's conditions on the Hub.")
        elif status == 404:
            fix = ("Check the repository id, the --revision and the endpoint (HF_ENDPOINT="
                   f"{_endpoint()}); a private repository also answers 404 without a valid token.")
        elif status == 429 or (isinstance(status, int) and status >= 500):
            fix = ("The Hub is failing or rate-limiting; nothing was lost. Wait a little and run the command "
                   "again (what was already written is kept).")
        else:
            fix = "Check the arguments named above and run the command again."
        return redact(f"{head} {fix}")
    conn = _connection_error(exc)
    if conn is not None:
        return redact(
            f"cannot reach the Hub at {_endpoint()} ({_conn_text(conn)}). "
            "Check the network and HF_ENDPOINT (for a local hub: is `hf-transfer-seg hub serve` running?) "
            "and run the command again; nothing was lost."
        )
    return None
