"""What the Space serves: encoder repo, target, optional segmentation repo, input limits.

Read from, in increasing priority: built-in defaults, ``space_config.json`` beside ``app.py``
(written by ``hf-transfer-seg space deploy``), environment variables, explicit overrides (CLI
flags). So one ``app.py`` runs on the Hub, locally and against the local hub unchanged.
``HF_ENDPOINT`` and ``HF_TOKEN`` are read by huggingface_hub itself and are never written anywhere.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from hf_transfer_seg.errors import ConfigError

EXAMPLES_MANIFEST = "examples.json"  # examples/<this>: which target the example images come from, and how
CONFIG_FILE = "space_config.json"

# field -> environment variable
ENV_VARS = {
    "model_repo": "HTS_MODEL_REPO",
    "target": "HTS_TARGET",
    "seg_repo": "HTS_SEG_REPO",
    "seg_revision": "HTS_SEG_REVISION",
    "max_side": "HTS_MAX_SIDE",
    "max_megapixels": "HTS_MAX_MEGAPIXELS",
    "results_repo": "HTS_RESULTS_REPO",
}


@dataclass(frozen=True)
class SpaceConfig:
    model_repo: str
    """Encoder repo whose ``main`` card holds the checkpoint table and robustness summary."""
    target: str | None = None
    """Robustness target key to rank revisions by (None: the only one scored)."""
    seg_repo: str | None = None
    """Segmentation model repo to serve instead of the one found in ``downstream_summary``."""
    seg_revision: str | None = None
    """Branch, tag or sha of ``seg_repo`` (resolved to a commit sha at start; default ``main``)."""
    max_side: int = 1024
    """Longer images are downscaled to this many pixels on their longest side, with a notice."""
    max_megapixels: float = 40.0
    """Images with more pixels than this are refused before decoding."""
    results_repo: str | None = None
    """Dataset repo written by ``hf-transfer-seg rank``: its model ranking is shown in the Leaderboard tab."""

    def __post_init__(self) -> None:
        if not self.model_repo or "/" not in self.model_repo.strip("/"):
            raise ConfigError(
                f"encoder repo {self.model_repo!r} is not an 'owner/name' repo id: set HTS_MODEL_REPO "
                "(or --model-repo) to the repo that pretraining pushed its revisions to"
            )
        if self.seg_repo is not None and "/" not in self.seg_repo.strip("/"):
            raise ConfigError(f"segmentation repo {self.seg_repo!r} is not an 'owner/name' repo id (HTS_SEG_REPO)")
        if not 64 <= self.max_side <= 8192:
            raise ConfigError(f"max_side must be between 64 and 8192 pixels, got {self.max_side} (HTS_MAX_SIDE)")
        if not 0.1 <= self.max_megapixels <= 400:
            raise ConfigError(
                f"max_megapixels must be between 0.1 and 400, got {self.max_megapixels} (HTS_MAX_MEGAPIXELS)"
            )

    @property
    def max_pixels(self) -> int:
        return int(self.max_megapixels * 1_000_000)

    def to_json(self) -> dict[str, Any]:
        """The fields worth committing to a Space (no None values; never a token: there is none here)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

    @classmethod
    def load(
        cls,
        app_dir: str | Path | None = None,
        *,
        env: Mapping[str, str] | None = None,
        **overrides: Any,
    ) -> "SpaceConfig":
        """Defaults < ``app_dir/space_config.json`` < environment < ``overrides`` (None values ignored)."""
        values: dict[str, Any] = {}
        if app_dir is not None:
            values.update(read_config_file(Path(app_dir) / CONFIG_FILE))
        env = os.environ if env is None else env
        for field, var in ENV_VARS.items():
            if env.get(var, "").strip():
                values[field] = env[var].strip()
        values.update({k: v for k, v in overrides.items() if v is not None})
        if not values.get("model_repo"):
            raise ConfigError(
                "no encoder repo configured: set HTS_MODEL_REPO=owner/name (or pass --model-repo, or deploy with "
                "`hf-transfer-seg space deploy --model-repo ...`, which writes space_config.json)"
            )
        return cls(**_coerce(values))


def read_config_file(path: Path) -> dict[str, Any]:
    """The known fields of a ``space_config.json`` ({} when the file does not exist)."""
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is not valid JSON ({exc}); fix it or deploy the Space again") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a JSON object with keys {sorted(ENV_VARS)}")
    unknown = sorted(set(data) - set(ENV_VARS))
    if unknown:
        raise ConfigError(f"{path} has unknown keys {unknown}; valid keys: {sorted(ENV_VARS)}")
    return data


def _coerce(values: dict[str, Any]) -> dict[str, Any]:
    out = dict(values)
    for field, kind in (("max_side", int), ("max_megapixels", float)):
        if field in out:
            try:
                out[field] = kind(out[field])
            except (TypeError, ValueError) as exc:
                raise ConfigError(
                    f"{field} must be a number, got {out[field]!r} ({ENV_VARS[field]} or {CONFIG_FILE})"
                ) from exc
    return out
