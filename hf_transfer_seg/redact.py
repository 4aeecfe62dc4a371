"""Keep tokens out of logs, exception messages and cards (and local paths out of anything pushed)."""

from __future__ import annotations

import logging
import os
import re

# Hugging Face user/org tokens (hf_ + 34 characters; not words such as hf_transfer_seg), and anything sent
# as a bearer credential.
_TOKEN_PATTERNS = [
    re.compile(r"(?<![A-Za-z0-9_])hf_[A-Za-z0-9]{30,}"),
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._\-]+"),
    re.compile(r"(?i)(token[=:]\s*)[A-Za-z0-9._\-]{6,}"),
]


def _known_tokens() -> list[str]:
    tokens = [os.environ.get(name) for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_TRANSFER_SEG_HUB_TOKEN")]
    return [t for t in tokens if t and len(t) >= 4]


def redact(text: object, extra: list[str] | None = None) -> str:
    """Return ``str(text)`` with every token-looking substring replaced by ``***``."""
    out = str(text)
    for token in _known_tokens() + list(extra or []):
        if token:
            out = out.replace(token, "***")
    for pattern in _TOKEN_PATTERNS:
        out = pattern.sub(lambda m: (m.group(1) if m.groups() else "") + "***", out)
    return out


# An absolute local path (POSIX or Windows drive), or one under the home folder, inside a message.
_LOCAL_PATH = re.compile(r"(?<![\w.:/])(?:~|[A-Za-z]:)?[/\\][^\s'\"`,;)\]]+")


def public_text(text: object, limit: int = 400) -> str:
    """``text`` fit for a pushed card: tokens redacted, local paths reduced to their last part, one line, at most
    ``limit`` characters (an exception message may name files of the machine that trained the model)."""
    out = _LOCAL_PATH.sub(lambda m: "<local path>/" + os.path.basename(m.group(0).replace("\\", "/").rstrip("/")), redact(text))
    out = " ".join(out.split())
    return out if len(out) <= limit else out[: limit - 3] + "..."


class RedactingFilter(logging.Filter):
    """A logging filter that redacts tokens from every record's final message."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # malformed record: let logging report it
            return True
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


def install_log_redaction() -> None:
    """Attach the redacting filter to every handler of the root logger (idempotent)."""
    root = logging.getLogger()
    for handler in root.handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
