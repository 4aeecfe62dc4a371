"""The one YAML loader for text that came from a repository (model-card front matter, validate-yaml).

``yaml.safe_load`` builds no arbitrary objects, but it still recurses once per nesting level (a
3,000-deep card raises RecursionError) and expands aliases by reference (a few hundred bytes of
``&a``/``*a`` lines become millions of nodes once serialized to JSON). :func:`load` bounds both:
nesting depth, alias count and the size of the document with every alias expanded; self-referencing
aliases are refused. Every refusal is a :class:`yaml.YAMLError`, like any other bad YAML.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from yaml.events import AliasEvent

from hf_transfer_seg.errors import DataError

MAX_DEPTH = 64
MAX_ALIASES = 256
MAX_NODES = 200_000  # nodes of the document with every alias expanded
# same pattern as huggingface_hub.repocard.REGEX_YAML_BLOCK
YAML_BLOCK = re.compile(r"^(\s*---(?:\r\n|\r|\n))([\S\s]*?)((?:\r\n|\r|\n)---[ \t]*(\r\n|\n|$))")


class YAMLLimitError(yaml.YAMLError):
    """The YAML is well-formed but too deep, has too many aliases, or expands too far."""


class CardYAMLError(DataError):
    """A model card's YAML front matter cannot be read (invalid, or over the limits above)."""


class _LimitedLoader(yaml.SafeLoader):
    def __init__(self, stream):
        super().__init__(stream)
        self._depth = 0
        self._aliases = 0

    def compose_node(self, parent, index):
        if self.check_event(AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                raise YAMLLimitError(f"more than {MAX_ALIASES} aliases (*name)")
            return super().compose_node(parent, index)
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise YAMLLimitError(f"nested deeper than {MAX_DEPTH} levels")
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def get_single_node(self):
        node = super().get_single_node()
        if node is not None and self._aliases:
            _check_expanded(node)
        return node


def _check_expanded(root: yaml.Node) -> None:
    """Count the nodes of ``root`` with aliases expanded (memoized per node: linear time); refuse cycles."""
    sizes: dict[int, int] = {}
    active: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        children = []
        if isinstance(node, yaml.SequenceNode):
            children = node.value
        elif isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        if done:
            active.discard(key)
            sizes[key] = 1 + sum(sizes[id(c)] for c in children)
            if sizes[key] > MAX_NODES:
                raise YAMLLimitError(f"aliases expand to more than {MAX_NODES} nodes")
            continue
        if key in sizes:
            continue
        if key in active:
            raise YAMLLimitError("an alias refers to the node that contains it")
        active.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in children if id(c) not in sizes)


def load(text: str) -> Any:
    """``yaml.safe_load`` with the limits above; any problem raises :class:`yaml.YAMLError`."""
    try:
        return yaml.load(text, Loader=_LimitedLoader)  # noqa: S506 - a SafeLoader subclass
    except RecursionError:  # not expected with the depth limit; kept so no input can escape as one
        raise YAMLLimitError("nested too deeply") from None


def front_matter(text: str) -> dict | None:
    """The YAML front matter of a README.md as a dict; None without a block (or when it is not a mapping)."""
    match = YAML_BLOCK.search(text)
    if not match:
        return None
    data = load(match.group(2))
    return data if isinstance(data, dict) else None


def describe(exc: yaml.YAMLError) -> str:
    """One line saying what is wrong (PyYAML's messages span several lines)."""
    return " ".join(str(exc).split())[:500]


def load_card(source: str | Path, *, where: str = "README.md"):
    """A ``huggingface_hub.ModelCard`` from a file path or text, its front matter checked first.

    Raises :class:`CardYAMLError` naming ``where`` and the fix when the YAML is invalid or hostile.
    """
    from huggingface_hub import ModelCard

    text = Path(source).read_text(encoding="utf-8", errors="replace") if isinstance(source, Path) else source
    try:
        front_matter(text)
    except yaml.YAMLError as exc:
        raise CardYAMLError(
            f"the model card {where} has YAML front matter that cannot be read ({describe(exc)}). Fix or "
            "remove the block between the '---' lines of that README.md (e.g. in the Hub's web editor) "
            "and run the command again."
        ) from None
    return ModelCard(text)
