"""The one YAML loader for text that came from a repository (model-card front matter, validate-yaml).

``yaml.safe_load`` builds no arbitrary objects, but it still recurses once per nesting level (a
3,000-deep card raises RecursionError) and expands aliases by reference (a few hundred bytes of
``&a``/``*a`` lines become millions of nodes once serialized to JSON). :func:`load` bounds both:
nesting depth, alias count and the size of the document with every alias expanded; self-referencing
aliases are refused. Every refusal is a :class:`yaml.YAMLError`, like any other bad YAML.

Reading cost is bounded too: a README front matter larger than :data:`MAX_FRONT_MATTER_BYTES` is
refused before it is parsed, and a document of more than :data:`MAX_DOC_NODES` nodes is refused
while it is composed (a 3.9 MB flat list used to cost every ``repo_info`` seconds and gigabytes).
One number policy for every form YAML 1.1 writes a number in (decimal, ``0x`` hex, ``0``/``0o`` octal,
``0b`` binary, base 60 ``1:20:30``, underscores anywhere, and floats with an exponent or in base 60): the
size of its value is bounded from the text alone, before Python converts it (``int()`` refuses more than
4,300 digits with a ValueError, base-60 floats overflow): an integer whose value needs more than
:data:`MAX_INT_DIGITS` decimal digits, or a float of magnitude 10^(:data:`MAX_FLOAT_EXPONENT` + 2) or more
(no double holds it), is refused with a :class:`YAMLLimitError` naming the path of the value
(``model-index[0].results[0].metrics[0].value``). A value its tag cannot hold (``!!int abc``, a date
``2001-13-45``) is refused the same way instead of escaping as a ValueError.

The events come from libyaml's C parser when PyYAML was built with it (about 4x faster than the
pure-Python scanner on a 0.8 MB card: 0.54 s against 2.4 s measured), composed and constructed by
PyYAML's Python classes so the limits above apply; without libyaml the pure-Python parser is used.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.events import AliasEvent
from yaml.resolver import Resolver

from hf_transfer_seg.errors import DataError

MAX_DEPTH = 64
MAX_ALIASES = 256
MAX_NODES = 200_000  # nodes of the document with every alias expanded
MAX_DOC_NODES = 100_000  # nodes as written (scalars, lists, mappings); real model-index cards hold a few 10,000
# README front matter: the Hub holds cards with several hundred KB of metadata (large model-index
# blocks) and refuses a non-LFS file over 10 MiB; 1 MiB keeps every real card and bounds the cost
MAX_FRONT_MATTER_BYTES = 1 << 20
MAX_INT_DIGITS = 400  # decimal digits of an integer's value: a longer one is beyond any double (1.8e308) anyway
MAX_FLOAT_EXPONENT = 308  # floats past 1e310 are infinite as doubles (refused; 1e309 loads as inf, as before)
INT_TAG, FLOAT_TAG, STR_TAG = "tag:yaml.org,2002:int", "tag:yaml.org,2002:float", "tag:yaml.org,2002:str"
# same pattern as huggingface_hub.repocard.REGEX_YAML_BLOCK
YAML_BLOCK = re.compile(r"^(\s*---(?:\r\n|\r|\n))([\S\s]*?)((?:\r\n|\r|\n)---[ \t]*(\r\n|\n|$))")


class YAMLLimitError(yaml.YAMLError):
    """The YAML is well-formed but too deep, has too many aliases, or expands too far."""


class CardYAMLError(DataError):
    """A model card's YAML front matter cannot be read (invalid, or over the limits above)."""


def _digits(text: str, base: int) -> float:
    """Decimal digits the value of ``text`` (digits in ``base``, leading zeros ignored) needs at most."""
    return len(text.lstrip("0")) * math.log10(base)


def _magnitude(literal: str) -> float:
    """log10 of the largest magnitude a YAML number literal (int or float, any form) can have, read from its
    text alone (never converted): the decimal digits of its integer part, plus the exponent."""
    text = literal.replace("_", "").strip().lstrip("+-").lower()
    if ":" in text:  # base 60: the first group is decimal, every further group one digit in base 60
        first, *rest = text.split(":")
        return _digits(first, 10) + len(rest) * math.log10(60)
    for prefix, base in (("0b", 2), ("0x", 16), ("0o", 8)):
        if text.startswith(prefix):
            return _digits(text[2:], base)
    mantissa, _, exponent = text.partition("e")
    whole = mantissa.partition(".")[0]
    if not exponent and "." not in mantissa and whole.startswith("0"):
        return _digits(whole, 8)  # YAML 1.1 octal: 0777
    try:
        power = int(exponent) if len(exponent.lstrip("+-")) <= 6 else (-1e9 if exponent.startswith("-") else 1e9)
    except ValueError:  # not a number at all: the constructor says so
        power = 0
    return _digits(whole, 10) + power


def _number_problem(node: yaml.ScalarNode) -> str | None:
    """Why the number in ``node`` is refused, or None (see the module doc)."""
    if node.tag == INT_TAG:
        digits = _magnitude(node.value)
        if digits > MAX_INT_DIGITS:
            return (f"an integer of up to {digits:,.0f} decimal digits; numbers must be finite and integers at "
                    f"most {MAX_INT_DIGITS} digits long")
    elif node.tag == FLOAT_TAG and _magnitude(node.value) > MAX_FLOAT_EXPONENT + 2:
        return (f"a number beyond 1e{MAX_FLOAT_EXPONENT + 2} ({len(node.value):,} characters); numbers must be "
                "finite and at most 1.8e308 in magnitude")
    return None


def _path_text(path: list) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(the document)"


class _Limits:
    """Composer hooks shared by both loaders: depth, alias count, node count, expanded size, numbers."""

    def _init_limits(self):
        self._depth = 0
        self._aliases = 0
        self._nodes = 0
        self._path: list = []  # keys and indices from the document to the node being composed

    def compose_node(self, parent, index):
        if self.check_event(AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                raise YAMLLimitError(f"more than {MAX_ALIASES} aliases (*name)")
            return Composer.compose_node(self, parent, index)
        self._nodes += 1
        if self._nodes > MAX_DOC_NODES:
            raise YAMLLimitError(f"more than {MAX_DOC_NODES} nodes (values, lists and mappings)")
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise YAMLLimitError(f"nested deeper than {MAX_DEPTH} levels")
        if parent is None:
            step = None
        elif isinstance(index, yaml.Node):  # the value of a mapping key
            step = str(index.value)[:80] if isinstance(index, yaml.ScalarNode) else "(key)"
        else:  # a sequence item (its index), or a mapping key (None)
            step = index if isinstance(index, int) and not isinstance(index, bool) else "(key)"
        if step is not None:
            self._path.append(step)
        try:
            return Composer.compose_node(self, parent, index)
        finally:
            self._depth -= 1
            if step is not None:
                self._path.pop()

    def compose_scalar_node(self, anchor):
        node = Composer.compose_scalar_node(self, anchor)
        if node.tag != STR_TAG:  # numbers, dates, booleans...: their path, for the constructor's errors too
            node.path = _path_text(self._path)
            problem = _number_problem(node)
            if problem:
                raise YAMLLimitError(f"{node.path}: {problem}")
        return node

    def get_single_node(self):
        node = Composer.get_single_node(self)
        if node is not None and self._aliases:
            _check_expanded(node)
        return node


class _BoundedConstructor(SafeConstructor):
    def construct_object(self, node, deep=False):
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, TypeError, AttributeError, ArithmeticError):
            # a value its tag cannot hold (!!int abc, !!float abc, a date 2001-13-45): PyYAML lets the
            # conversion's own error escape
            where = getattr(node, "path", None) or f"line {node.start_mark.line + 1}"
            text = str(node.value)[:40] if isinstance(node, yaml.ScalarNode) else type(node).__name__
            raise YAMLLimitError(f"{where}: {text!r} cannot be read as {node.tag.rsplit(':', 1)[-1]}") from None


class _PyLoader(_Limits, yaml.reader.Reader, yaml.scanner.Scanner, yaml.parser.Parser, Composer,
                _BoundedConstructor, Resolver):
    """Pure-Python parser (PyYAML without libyaml)."""

    def __init__(self, stream):
        yaml.reader.Reader.__init__(self, stream)
        yaml.scanner.Scanner.__init__(self)
        yaml.parser.Parser.__init__(self)
        Composer.__init__(self)
        _BoundedConstructor.__init__(self)
        Resolver.__init__(self)
        self._init_limits()


try:
    from yaml._yaml import CParser
except ImportError:  # PyYAML built without libyaml
    _LimitedLoader = _PyLoader
else:
    class _CLoader(_Limits, CParser, Composer, _BoundedConstructor, Resolver):
        """libyaml's C parser produces the events; PyYAML's Python composer (with the limits) builds the nodes."""

        def __init__(self, stream):
            CParser.__init__(self, stream)
            Composer.__init__(self)
            _BoundedConstructor.__init__(self)
            Resolver.__init__(self)
            self._init_limits()

        # CParser has C versions of the composer: use the Python ones (they call the hooks above)
        get_single_node = _Limits.get_single_node
        compose_document = Composer.compose_document
        compose_scalar_node = _Limits.compose_scalar_node
        compose_sequence_node = Composer.compose_sequence_node
        compose_mapping_node = Composer.compose_mapping_node
        check_node = Composer.check_node
        get_node = Composer.get_node

    _LimitedLoader = _CLoader


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


def is_finite_number(value) -> bool:
    """False for NaN and infinities (``.nan``, ``.inf``, ``1e309``); True otherwise."""
    return not isinstance(value, float) or math.isfinite(value)


def front_matter(text: str) -> dict | None:
    """The YAML front matter of a README.md as a dict; None without a block (or when it is not a mapping).

    A block larger than :data:`MAX_FRONT_MATTER_BYTES` raises :class:`YAMLLimitError` unread."""
    match = YAML_BLOCK.search(text)
    if not match:
        return None
    block = match.group(2)
    if len(block) > MAX_FRONT_MATTER_BYTES or len(block.encode("utf-8", "surrogatepass")) > MAX_FRONT_MATTER_BYTES:
        raise YAMLLimitError(f"YAML front matter larger than {MAX_FRONT_MATTER_BYTES // 1024} KiB "
                             f"({len(block.encode('utf-8', 'surrogatepass')) // 1024} KiB)")
    data = load(block)
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
