"""Retries with exponential back-off for transient Hub failures (5xx, connection errors)."""

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


def is_transient(exc: BaseException) -> bool:
    """True for errors worth retrying: server errors, rate limits, dropped connections."""
    if isinstance(exc, HfHubHTTPError):
        response = getattr(exc, "response", None)
        status = getattr(response, "status_code", None)
        return status is None or status >= 500 or status == 429
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    # huggingface_hub's HTTP backend changed over versions (requests, httpx, httpx2): match by class name
    # rather than importing each one.
    for cls in type(exc).__mro__:
        if cls.__module__.split(".")[0] in _HTTP_BACKENDS and cls.__name__ in _TRANSIENT_NAMES:
            return True
    return False


_HTTP_BACKENDS = {"httpx", "httpx2", "requests", "urllib3"}
_TRANSIENT_NAMES = {"TransportError", "ConnectionError", "Timeout", "TimeoutException", "ProtocolError"}


def with_retries(
    fn: Callable[[], T],
    *,
    what: str,
    attempts: int = 5,
    base_delay: float = 0.5,
    max_delay: float = 30.0,
) -> T:
    """Call ``fn`` until it succeeds, retrying transient failures with jittered exponential back-off.

    Non-transient errors (404, 401, 412...) are raised at once. After the last attempt a
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
            delay = min(max_delay, base_delay * 2 ** (attempt - 1)) * (0.5 + random.random())
            log.warning("%s failed (%s); retry %d/%d in %.1fs", what, redact(exc), attempt, attempts - 1, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")
