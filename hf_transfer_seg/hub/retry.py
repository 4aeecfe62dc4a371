"""Retries with exponential back-off for transient Hub failures, with huggingface_hub's own retry policy.

Why not ``huggingface_hub.utils.http_backoff`` itself: it retries *one raw HTTP request* (method, URL),
while every call retried here is a whole ``HfApi`` method (``create_commit`` alone is a preupload, a
validate-yaml and a commit request; ``create_branch``, ``list_repo_refs``, ``hf_hub_download``...), with
the client's typed errors. Using ``http_backoff`` would mean re-implementing those calls as raw requests
(about 15 call sites): more hand-written code, not less. What is taken from it is the policy:

- the status codes it retries by default: 408, 429, 500, 502, 503, 504 (not every 5xx: a 501 "not
  implemented" or a 507 "disk full" from the local hub will not change on the next try, and used to cost
  five attempts with 0.5-30 s waits before the error that said so);
- the transport errors it retries (timeouts, network errors, dropped connections), matched by class
  name across the HTTP backends huggingface_hub has used (requests, httpx, httpx2);
- the wait a server asks for: ``RateLimit`` headers on a 429 (``huggingface_hub.utils.parse_ratelimit_headers``)
  or ``Retry-After`` seconds, capped at ``max_delay``.
"""

from __future__ import annotations

import logging
import random
import time
from typing import Callable, TypeVar

from huggingface_hub.errors import HfHubHTTPError

from hf_transfer_seg.errors import HubError
from hf_transfer_seg.redact import redact

T = TypeVar("T")
log = logging.getLogger(__name__)

# huggingface_hub.utils._http._DEFAULT_RETRY_ON_STATUS_CODES (private there, so restated)
RETRY_STATUS = (408, 429, 500, 502, 503, 504)
_HTTP_BACKENDS = {"httpx", "httpx2", "requests", "urllib3"}
_TRANSIENT_NAMES = {"TransportError", "ConnectionError", "Timeout", "TimeoutException", "ProtocolError",
                    "NetworkError", "RemoteProtocolError"}


def _status(exc: BaseException) -> int | None:
    return getattr(getattr(exc, "response", None), "status_code", None)


def is_transient(exc: BaseException) -> bool:
    """True for errors worth retrying: the statuses in :data:`RETRY_STATUS`, dropped connections, timeouts."""
    if isinstance(exc, HfHubHTTPError):
        status = _status(exc)
        return status is None or status in RETRY_STATUS
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    # huggingface_hub's HTTP backend changed over versions (requests, httpx, httpx2): match by class name
    # rather than importing each one.
    for cls in type(exc).__mro__:
        if cls.__module__.split(".")[0] in _HTTP_BACKENDS and cls.__name__ in _TRANSIENT_NAMES:
            return True
    return False


def server_wait(exc: BaseException) -> float | None:
    """Seconds the server asked the client to wait (rate-limit headers on a 429, or Retry-After), if any."""
    headers = getattr(getattr(exc, "response", None), "headers", None)
    if not headers:
        return None
    if _status(exc) == 429:
        from huggingface_hub.utils import parse_ratelimit_headers

        info = parse_ratelimit_headers(headers)
        if info is not None and info.remaining == 0:
            return float(info.reset_in_seconds)
    value = headers.get("retry-after")
    if value is not None and value.strip().isdigit():
        return float(value.strip())
    return None


def with_retries(
    fn: Callable[[], T],
    *,
    what: str,
    attempts: int = 5,
    base_delay: float = 0.5,
    max_delay: float = 30.0,
) -> T:
    """Call ``fn`` until it succeeds, retrying transient failures with jittered exponential back-off
    (or the wait the server asked for, at most ``max_delay``).

    Non-transient errors (404, 401, 412, 501, 507...) are raised at once. After the last attempt a
    :class:`HubError` naming ``what`` is raised from the last failure.
    """
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - filtered by is_transient
            if not is_transient(exc):
                raise
            if attempt == attempts:
                raise HubError(
                    f"{what} failed after {attempts} attempts: {redact(exc)}. "
                    "Check that the Hub endpoint (HF_ENDPOINT) is reachable and retry."
                ) from exc
            asked = server_wait(exc)
            if asked is not None:
                delay = min(max_delay, asked)
            else:
                delay = min(max_delay, base_delay * 2 ** (attempt - 1)) * (0.5 + random.random())
            log.warning("%s failed (%s); retry %d/%d in %.1fs", what, redact(exc), attempt, attempts - 1, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")
