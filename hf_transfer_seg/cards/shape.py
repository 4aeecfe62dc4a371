"""What a card read from a repository must look like before any stage uses it: sidecars are untrusted input.

A card's ``hf_transfer_seg`` mapping is written by our stages, but a repository can hold anything: a
``robustness_targets`` that is a list, a ``robustness[target]`` that is a string, a ``grid_file`` of
``../../../../etc/passwd``. :func:`card_problems` lists every such problem (the type each key must have, and
every ``grid_file`` checked by the repository-path rule uploads obey, :func:`hf_transfer_seg.repo_paths.check_repo_path`);
:func:`check_card` raises one :class:`BadCard` naming the card and its first problem, which readers (the report's
cards mode, the Space's selection) turn into "skipped, because ..." for that revision.
"""

from __future__ import annotations

from typing import Any

from hf_transfer_seg.cards import schema
from hf_transfer_seg.errors import DataError
from hf_transfer_seg.repo_paths import RepoPathError, check_repo_path

# key -> 1: a mapping; 2: a mapping whose every value is a mapping ({target: {...}})
MAPPINGS = {
    schema.TRAINING: 1, schema.BASE: 1, schema.TARGET: 1, schema.RECIPE: 1, schema.METRICS: 1, schema.SPLIT: 1,
    schema.ROBUSTNESS: 2, schema.ROBUSTNESS_TARGETS: 2, schema.DOWNSTREAM: 2, schema.TRANSFERABILITY: 2,
    schema.MODEL_RANKING: 2, schema.ROBUSTNESS_SUMMARY: 2, schema.DOWNSTREAM_SUMMARY: 2,
}
LISTS = (schema.CHECKPOINTS,)
GRID_FILE = "grid_file"  # key of robustness_targets[target] naming the grid JSON file (cards.grid uses it)


class BadCard(DataError):
    """A card whose ``hf_transfer_seg`` mapping does not have the shape the stages write; skip that revision."""


def _kind(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string"}.get(type(value), type(value).__name__)


def card_problems(ours: Any) -> list[str]:
    """Every shape problem of a card's ``hf_transfer_seg`` mapping (empty: usable)."""
    if ours is None:
        return []
    if not isinstance(ours, dict):
        return [f"{schema.NAMESPACE} is {_kind(ours)}, not a mapping"]
    problems = []
    for key, level in MAPPINGS.items():
        value = ours.get(key)
        if value is None:
            continue
        if not isinstance(value, dict):
            problems.append(f"{key} is {_kind(value)}, not a mapping")
            continue
        if level == 2:
            problems += [f"{key}.{k} is {_kind(v)}, not a mapping" for k, v in value.items() if v is not None and not isinstance(v, dict)]
    for key in LISTS:
        value = ours.get(key)
        if value is not None and not isinstance(value, list):
            problems.append(f"{key} is {_kind(value)}, not a list")
    targets = ours.get(schema.ROBUSTNESS_TARGETS)
    for target, info in (targets.items() if isinstance(targets, dict) else ()):
        if isinstance(info, dict) and info.get(GRID_FILE) is not None:
            try:
                check_repo_path(info[GRID_FILE])
            except RepoPathError as exc:
                problems.append(f"{schema.ROBUSTNESS_TARGETS}.{target}.{GRID_FILE}: {exc} (it must name a file inside the repository)")
    return problems


def check_card(data: Any, where: str) -> None:
    """Raise :class:`BadCard` naming ``where`` (``repo@sha``) and the first problem of ``data``'s mapping."""
    problems = card_problems(getattr(data, schema.NAMESPACE, None))
    if problems:
        more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
        raise BadCard(f"the card of {where} is not usable: {problems[0][:300]}{more}; fix or re-push that card")
