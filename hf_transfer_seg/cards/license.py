"""The ``license`` of every repo hf-transfer-seg pushes: the ``--license`` setting, else a stated default.

The setting is ``hf-transfer-seg --license ID COMMAND ...`` (a Hub license identifier such as ``apache-2.0``,
``mit``, ``cc-by-4.0``; ``other`` with a name of your own through ``--license other:NAME``). The command line
puts it in the environment variable :data:`ENV`, so processes it starts (``accelerate launch``) use it too.

Without a setting each kind of repo gets a default that the card states in its managed ``license`` section:

- encoder checkpoints (revision and ``main`` cards): ``other`` named ``not-set``: the terms of trained
  weights depend on the pretraining data (ImageNet's are non-commercial research), which only the author knows;
- segmentation models: the license of the encoder they were fine-tuned from (their base model), else as above;
- results datasets of ``rank``: ``other`` named ``not-set``;
- the Space: ``apache-2.0``, the license of the hf-transfer-seg code it runs.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

ENV = "HF_TRANSFER_SEG_LICENSE"
SECTION = "license"
UNSET_NAME = "not-set"
CODE_LICENSE = "apache-2.0"  # hf-transfer-seg's own license (pyproject.toml)
_ID = re.compile(r"^[a-z0-9][a-z0-9.+-]*$")
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


@dataclass(frozen=True)
class License:
    license: str
    name: str | None  # license_name, for ``other``
    source: str  # "setting", "base model ...", "default"

    def apply(self, data) -> None:
        """Set ``license`` (and ``license_name`` for ``other``) on card data."""
        data.license = self.license
        if self.license == "other":
            data.license_name = self.name or UNSET_NAME
        elif getattr(data, "license_name", None) is not None:
            data.license_name = None

    def markdown(self) -> str:
        """The card's ``license`` section: what was chosen, why, and how to change it."""
        how = "set it with `hf-transfer-seg --license ID COMMAND ...` (e.g. `--license apache-2.0`) or edit `license:` in this card"
        if self.license == "other" and (self.name or UNSET_NAME) == UNSET_NAME:
            return (f"**License: not chosen** (`license: other`, `license_name: {UNSET_NAME}`). The terms of trained weights "
                    f"and results depend on the data they came from, which only their author knows: {how}.")
        shown = f"`{self.license}`" + (f" (`{self.name}`)" if self.license == "other" else "")
        return f"**License:** {shown}, from the {self.source}. To change it, {how}."


def parse_license(value: str) -> tuple[str, str | None]:
    """``ID`` or ``other:NAME`` -> (license, license_name); a ConfigError naming the fix when malformed."""
    from hf_transfer_seg.errors import ConfigError

    text = str(value).strip().lower()
    lic, _, name = text.partition(":")
    if not _ID.match(lic) or (name and (lic != "other" or not _NAME.match(name))):
        raise ConfigError(f"--license {value!r} is not a Hub license identifier; use e.g. apache-2.0, mit, cc-by-4.0, "
                          "or other:NAME for a license of your own")
    return lic, (name or None) if lic == "other" else None


def choose_license(setting: str | None = None, *, base: str | None = None, base_name: str | None = None,
                   default: str | None = None) -> License:
    """The license of a repo: ``setting`` (or :data:`ENV`), else ``base`` (the base model's), else ``default``,
    else ``other``/``not-set``."""
    setting = setting or os.environ.get(ENV) or None
    if setting:
        lic, name = parse_license(setting)
        return License(lic, name, "`--license` setting")
    if base:
        return License(base, base_name if base == "other" else None, "base model's card")
    if default:
        return License(default, None, "default for this kind of repo (the hf-transfer-seg code's license)")
    return License("other", UNSET_NAME, "default")


def apply_license(card, license: License):
    """``card`` (a ModelCard / DatasetCard / SpaceCard) with ``license`` in its YAML and its ``license`` section."""
    from hf_transfer_seg.cards.render import replace_section

    license.apply(card.data)
    card.text = replace_section(card.text or "", SECTION, license.markdown())
    return card
