"""What a card's ``model-index`` says about the data: a Hub dataset id, or no model-index entry at all.

The Hub reads ``model-index[].results[].dataset.type`` as a dataset id (it links it and builds leaderboards
from it), so an entry is only written when the data *is* a Hub dataset: target keys ``owner/name``,
``owner/name:split`` or ``hub:owner/name`` give that id (the split goes to ``dataset.split``). Everything else
(built-in targets, local folders, NIfTI / DICOM / nnU-Net data, the digits or synthetic pretraining sets, a
local ImageNet sample) has no id: the figures stay in the card's own ``hf_transfer_seg`` metadata and text,
and no model-index entry is written for them (earlier cards said ``custom``, ``imagefolder`` or
``niftifolder`` there; :data:`NOT_DATASET_IDS` lists those so they can be removed).
"""

from __future__ import annotations

import re

_HUB_KEY = re.compile(r"^(?:(?:hub|hf-dataset|hub-dataset):)?([A-Za-z0-9][\w.-]*/[\w.-]+?)(?:@[\w.-]+)?(?::([\w.-]+))?$")
NOT_DATASET_IDS = frozenset({"custom", "imagefolder", "niftifolder"})


def hub_dataset_id(key: str) -> str | None:
    """The Hub dataset id inside a target key, or None for data that is not on the Hub."""
    match = _HUB_KEY.match(str(key))
    return match.group(1) if match else None


def eval_dataset(key: str) -> dict[str, str | None] | None:
    """``dataset_type``/``dataset_name``/``dataset_split`` keyword arguments of an EvalResult for a target key,
    or None when the data has no Hub dataset id (then no model-index entry is written)."""
    match = _HUB_KEY.match(str(key))
    if not match:
        return None
    return {"dataset_type": match.group(1), "dataset_name": str(key), "dataset_split": match.group(2)}


# ------------------------------------------------------------------------------------------ local paths
# A card, a results file or a log line that is pushed must not carry a local absolute path (a hospital's folder
# names are themselves data): local data is named by its folder's name and a short hash of its full path, which
# tells two folders of the same name apart without saying where they are.

_ABSOLUTE_PATH = re.compile(r"(?<![\w.:/~-])(?:~|[A-Za-z]:)?/(?:[^\s/'\"`|,;()\[\]<>]+/)+[^\s/'\"`|,;()\[\]<>]*")


def local_name(path) -> str:
    """``<name>#<6 hex>``: a local file or folder named without its absolute path (the hash is of the resolved path)."""
    import hashlib
    from pathlib import Path

    resolved = Path(path).expanduser().resolve()
    return f"{resolved.name or 'root'}#{hashlib.sha256(str(resolved).encode()).hexdigest()[:6]}"


def hide_local_paths(text: str) -> str:
    """``text`` with every absolute local path (``/a/b/c``, ``~/x``, ``C:/x``) replaced by :func:`local_name` of it,
    for reasons and messages that are written into a card or a results file."""
    if not text:
        return text
    return _ABSOLUTE_PATH.sub(lambda m: local_name(m.group(0).rstrip(".")) + ("." if m.group(0).endswith(".") else ""), str(text))
