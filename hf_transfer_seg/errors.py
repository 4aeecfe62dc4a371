"""Every exception hf-transfer-seg raises on purpose lives here.

Messages name the problem and the fix. None of them ever carries a token: build messages with
:func:`hf_transfer_seg.redact.redact` when they may include text that came from a request.
"""

from __future__ import annotations


class HfTransferSegError(Exception):
    """Base class: a problem the user can fix; the CLI prints it without a traceback."""


class ConfigError(HfTransferSegError, ValueError):
    """A flag, recipe file or configuration name is wrong."""


class DataError(HfTransferSegError, ValueError):
    """A dataset or target cannot be used as given (missing column, too few images, bad masks...)."""


class HubError(HfTransferSegError):
    """A Hub operation failed after its retries."""


class HubWriteAccessError(HubError, PermissionError):
    """The token cannot write to the repository."""


class RevisionNotFound(HubError, LookupError):
    """A checkpoint revision (branch, tag or sha) does not exist in the repository."""


class CardConflictError(HubError):
    """A card edit kept losing the race against other writers (HTTP 412) and was given up."""


class WeightsError(HfTransferSegError):
    """A revision has no usable weights (no safetensors file, pickle-only, NaN/Inf, wrong architecture)."""


class LocalHubError(HfTransferSegError):
    """The local hub server could not start or was given a bad root."""


class DiskFullError(HfTransferSegError, OSError):
    """The disk filled up while saving; the message says what to free and how to continue."""


class NothingScored(HfTransferSegError):
    """A scoring or ranking run could score none of the models / revisions it was given (each one is named)."""
