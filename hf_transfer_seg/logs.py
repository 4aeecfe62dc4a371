"""Logging of the command line: one place that quiets the libraries whose per-request lines drown our progress bars."""

from __future__ import annotations

import logging

# one log line per HTTP request
NOISY = ("httpx", "httpx2", "httpcore", "urllib3")


def quiet_libraries(*more: str) -> None:
    """Set the HTTP clients (and ``more`` loggers) to WARNING, unless hf_transfer_seg logs at DEBUG (``-v``)."""
    if logging.getLogger("hf_transfer_seg").isEnabledFor(logging.DEBUG):
        return
    for name in NOISY + more:
        logging.getLogger(name).setLevel(logging.WARNING)
