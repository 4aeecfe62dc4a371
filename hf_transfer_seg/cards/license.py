"""The ``license`` of every repo hf-transfer-seg pushes: the ``--license`` setting, else a stated default.

The setting is ``hf-transfer-seg --license ID COMMAND ...`` or ``hf-transfer-seg COMMAND ... --license ID`` (a Hub
license identifier such as ``apache-2.0``, ``mit``, ``cc-by-4.0``; ``other`` with a name of your own through
``--license other:NAME``), the environment variable :data:`ENV`, or ``license:`` in a pretraining recipe file.
All three go through :func:`parse_license` when the command starts, so a value the Hub would refuse (``0``,
``nonsense!!``, ``other:x y``, a 5,000-character name) is refused at second 0, before anything is trained.
The command line puts the setting in :data:`ENV`, so processes it starts (``accelerate launch``) use it too.

Without a setting each kind of repo gets a default that the card states in its managed ``license`` section:

- encoder checkpoints trained on a built-in data set (``synthetic``, ``digits``): the license that data comes
  under (:data:`DATA_LICENSES`); on any other data, ``other`` named ``not-set``: the terms of trained weights
  depend on the pretraining data (ImageNet's are non-commercial research), which only the author knows;
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
MAX_NAME = 64  # characters of an ``other:NAME`` name; the Hub's own license ids are at most 40
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
# The license identifiers the Hub accepts in a card's ``license:`` (its model-card reference; the local hub's
# metadata rules, hf_transfer_seg.localhub.metadata_rules, refuse anything else with the same list).
HUB_LICENSES = frozenset("""
apache-2.0 mit openrail bigscience-openrail-m creativeml-openrail-m bigscience-bloom-rail-1.0 bigcode-openrail-m
afl-3.0 artistic-2.0 bsl-1.0 bsd bsd-2-clause bsd-3-clause bsd-3-clause-clear c-uda cc cc0-1.0 cc-by-2.0
cc-by-2.5 cc-by-3.0 cc-by-4.0 cc-by-sa-3.0 cc-by-sa-4.0 cc-by-nc-2.0 cc-by-nc-3.0 cc-by-nc-4.0 cc-by-nd-4.0
cc-by-nc-nd-3.0 cc-by-nc-nd-4.0 cc-by-nc-sa-2.0 cc-by-nc-sa-3.0 cc-by-nc-sa-4.0 cdla-sharing-1.0
cdla-permissive-1.0 cdla-permissive-2.0 wtfpl ecl-2.0 epl-1.0 epl-2.0 etalab-2.0 eupl-1.1 eupl-1.2 agpl-3.0
gfdl gpl gpl-2.0 gpl-3.0 lgpl lgpl-2.1 lgpl-3.0 isc h-research intel-research lppl-1.3c ms-pl apple-ascl
apple-amlr mpl-2.0 odc-by odbl openmdw-1.0 openrail++ osl-3.0 postgresql ofl-1.1 ncsa unlicense zlib pddl
lgpl-lr deepfloyd-if-license fair-noncommercial-research-license llama2 llama3 llama3.1 llama3.2 llama3.3
llama4 gemma unknown other
""".split())


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


def parse_license(value, source: str = "--license") -> tuple[str, str | None]:
    """``ID`` or ``other:NAME`` -> (license, license_name); a ConfigError naming ``source`` (the flag, the
    environment variable or the recipe file the value came from) and the fix when the Hub would refuse it.

    The one check of a license setting: the command line, :data:`ENV` and recipe files all call it at start."""
    from hf_transfer_seg.errors import ConfigError

    text = value.strip().lower() if isinstance(value, str) else ""
    lic, _, name = text.partition(":")
    shown = repr(value) if len(repr(value)) <= 80 else f"{repr(value)[:60]}... ({len(str(value)):,} characters)"
    shown = f"{source}{shown}" if source.endswith("=") else f"{source} {shown}".strip()
    fix = ("use a Hub license identifier such as apache-2.0, mit, bsd-3-clause, cc-by-4.0 (the list: "
           "https://huggingface.co/docs/hub/repositories-licenses), or other:NAME for a license of your own "
           f"(NAME: lowercase letters, digits, '.', '_', '-', at most {MAX_NAME} characters)")
    if not isinstance(value, str):
        raise ConfigError(f"{shown} is not a license identifier (a {type(value).__name__}); {fix}")
    if lic not in HUB_LICENSES:
        raise ConfigError(f"{shown} is not a license identifier the Hub accepts; {fix}")
    if name and lic != "other":
        raise ConfigError(f"{shown}: only 'other' takes a name after ':'; {fix}")
    if lic == "other" and name and (len(name) > MAX_NAME or not _NAME.match(name)):
        raise ConfigError(f"{shown}: the license name after 'other:' is not a valid name; {fix}")
    return lic, (name or None) if lic == "other" else None


# The license of each built-in data set, as a default for weights trained only on it. Sources, as checked:
# - synthetic: images generated by this package's code (hf_transfer_seg.data.classification), so the code's
#   license, apache-2.0 (pyproject.toml).
# - digits: scikit-learn's load_digits ships the data inside the scikit-learn package, distributed under its
#   BSD 3-Clause license (scikit-learn's COPYING, checked in the installed package); its DESCR says it is "a
#   copy of the test set of the UCI ML hand-written digits datasets" (E. Alpaydin, 1998) and names no other
#   license. (The UCI repository's page lists its datasets under CC BY 4.0; not checked from this machine.)
# - skimage-retina: scikit-image's retina.jpg, "made available under the Creative Commons CC0 1.0 Universal
#   Public Domain Dedication" (the docstring of skimage.data.retina, checked in the installed package).
# - mni152-tissue / mni152-wm: the MNI ICBM152 2009a template files nilearn ships (no license file of their own
#   in nilearn's data folder; nilearn itself is BSD-3-Clause). The MNI's ICBM 2009 templates come with a
#   permissive copyright notice (use, copy, modify and distribute, keeping the notice): not a Hub identifier,
#   hence ``other`` with a name. Stated from the McConnell Brain Imaging Centre's distribution, not checked here.
DATA_LICENSES: dict[str, tuple[str, str | None, str]] = {
    "synthetic": ("apache-2.0", None, "images generated by the hf-transfer-seg code (its license)"),
    "digits": ("bsd-3-clause", None, "scikit-learn's bundled digits (UCI optical recognition of handwritten "
               "digits), distributed under scikit-learn's BSD 3-Clause license"),
    "skimage-retina": ("cc0-1.0", None, "scikit-image's retina.jpg (Häggström 2014, CC0 1.0)"),
    "mni152-tissue": ("other", "mni-icbm152-2009", "the MNI ICBM152 2009a template (McConnell Brain Imaging "
                      "Centre copyright notice: use, copy, modify and distribute with the notice kept)"),
}
DATA_LICENSES["mni152-wm"] = DATA_LICENSES["mni152-tissue"]


def data_license(dataset: str | None) -> License | None:
    """The license of a built-in data set (:data:`DATA_LICENSES`), None for any other data."""
    known = DATA_LICENSES.get(str(dataset or "").strip().lower())
    if known is None:
        return None
    lic, name, what = known
    return License(lic, name, f"license of the built-in training data: {what}")


def choose_license(setting: str | None = None, *, base: str | None = None, base_name: str | None = None,
                   default: str | None = None, data: str | None = None) -> License:
    """The license of a repo: ``setting`` (or :data:`ENV`), else ``base`` (the base model's), else the license
    of ``data`` when it is a built-in data set, else ``default``, else ``other``/``not-set``."""
    setting = setting or os.environ.get(ENV) or None
    if setting:
        lic, name = parse_license(setting)
        return License(lic, name, "`--license` setting")
    if base:
        return License(base, base_name if base == "other" else None, "base model's card")
    known = data_license(data)
    if known is not None:
        return known
    if default:
        return License(default, None, "default for this kind of repo (the hf-transfer-seg code's license)")
    return License("other", UNSET_NAME, "default")


def apply_license(card, license: License):
    """``card`` (a ModelCard / DatasetCard / SpaceCard) with ``license`` in its YAML and its ``license`` section."""
    from hf_transfer_seg.cards.render import replace_section

    license.apply(card.data)
    card.text = replace_section(card.text or "", SECTION, license.markdown())
    return card
