"""Card text: Jinja templates from ``model_cards/`` and managed sections that tools rewrite.

A managed section is Markdown between ``<!-- hf-transfer-seg:NAME -->`` and
``<!-- /hf-transfer-seg:NAME -->``. Rewriting it leaves the rest of the card, including edits
people made by hand, untouched.
"""

from __future__ import annotations

import re

from huggingface_hub import ModelCard, ModelCardData

from hf_transfer_seg.resources import resource_path


def template_path(name: str):
    """Path of a template in ``model_cards/`` (``encoder_revision.md``...)."""
    path = resource_path("model_cards") / name
    if not path.is_file():
        raise FileNotFoundError(f"model card template {name!r} not found in {path.parent}")
    return path


def render_card(template: str, data: ModelCardData, **variables) -> ModelCard:
    """Render ``model_cards/<template>`` with ``data`` as its YAML block and ``variables`` for the text."""
    return ModelCard.from_template(data, template_path=str(template_path(template)), **variables)


def _markers(name: str) -> tuple[str, str]:
    return f"<!-- hf-transfer-seg:{name} -->", f"<!-- /hf-transfer-seg:{name} -->"


def replace_section(text: str, name: str, markdown: str) -> str:
    """``text`` with managed section ``name`` set to ``markdown`` (appended at the end if absent)."""
    start, end = _markers(name)
    block = f"{start}\n{markdown.strip()}\n{end}"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.DOTALL)
    if pattern.search(text):
        return _one_heading(pattern.sub(lambda _: block, text, count=1), start, markdown)
    return text.rstrip() + "\n\n" + block + "\n"


def _one_heading(text: str, start: str, markdown: str) -> str:
    """When the section brings its own heading (``## Robustness score``), the template's placeholder heading of the
    same level right above the section (``## Robustness``) goes: a card never shows two headings in a row."""
    own = re.match(r"\s*(#{1,6}) ", markdown)
    if not own:
        return text
    placeholder = re.compile(r"(?m)^" + own.group(1) + r" [^\n]*\n\s*(?=" + re.escape(start) + ")")
    return placeholder.sub("", text, count=1)


def get_section_text(text: str, name: str) -> str | None:
    """Markdown of managed section ``name``, or None when the card has none."""
    start, end = _markers(name)
    match = re.search(re.escape(start) + r"\n?(.*?)\n?" + re.escape(end), text, re.DOTALL)
    return match.group(1) if match else None
