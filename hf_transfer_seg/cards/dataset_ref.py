"""What a card's ``model-index`` says about the data: a Hub dataset id when there is one, else no invented id.

``dataset.type`` must be a dataset id on the Hub. Targets keys that are Hub ids (``owner/name``,
``owner/name:split``) give that id (the split goes to ``dataset.split``); data that lives elsewhere is
named by ``dataset.name`` (the target key, which holds no local path beyond the folder's own name) and
typed by the ``datasets`` loader that reads such data (``imagefolder``, ``niftifolder``) or ``custom``
for the built-in sets, so no card claims a Hub dataset that does not exist.
"""

from __future__ import annotations

import re

_HUB_KEY = re.compile(r"^([A-Za-z0-9][\w.-]*/[\w.-]+)(?::([\w.-]+))?$")
_LOADER = {"local": "imagefolder", "nifti": "niftifolder", "nnunet": "niftifolder", "dicom": "custom"}


def hub_dataset_id(key: str) -> str | None:
    """The Hub dataset id inside a target key, or None for data that is not on the Hub."""
    match = _HUB_KEY.match(str(key))
    return match.group(1) if match else None


def eval_dataset(key: str) -> dict[str, str | None]:
    """``dataset_type``/``dataset_name``/``dataset_split`` keyword arguments of an EvalResult for a target key."""
    match = _HUB_KEY.match(str(key))
    if match:
        return {"dataset_type": match.group(1), "dataset_name": key, "dataset_split": match.group(2)}
    kind = str(key).split(":", 1)[0] if ":" in str(key) else ""
    return {"dataset_type": _LOADER.get(kind, "custom"), "dataset_name": key, "dataset_split": None}
