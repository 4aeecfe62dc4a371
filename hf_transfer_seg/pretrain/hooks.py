"""Hook point of the pretraining loop: ``on_checkpoint`` callbacks.

A callback is any callable ``on_checkpoint(folder, epoch, revision) -> dict | None``. It runs on the main
process only, at every scheduled checkpoint, after ``folder`` holds the complete timm checkpoint
(``config.json`` + ``model.safetensors``; the folder is temporary, do not keep its path) and before the card is
written and the revision is pushed. The dict it returns may hold:

- ``stop`` (bool) and ``stop_reason`` (str): end training after this checkpoint (all processes stop; the state
  is saved, so ``--resume`` could still continue);
- ``eval_results``: a list of ``huggingface_hub.EvalResult`` upserted into the card's model-index;
- ``sections``: ``{name: markdown}`` managed sections of the revision card to set (e.g. ``robustness``);
- ``card_edit``: a callable ``edit(card: ModelCard) -> ModelCard | None`` (or a list of them) applied to the
  rendered revision card last, e.g. ``LiveScorer.card_edit()``;
- any other key: deep-merged into the card's ``hf_transfer_seg`` mapping (e.g. ``{"robustness": {...}}``).

The command line builds the callbacks (``hf_transfer_seg.cli.pretrain`` adds the live-scoring flags and passes
the callbacks they make to ``run_pretraining``): this module defines only the protocol, so the pretraining stage
imports no other stage; the callbacks' results reach the card through the keys above.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Protocol

log = logging.getLogger(__name__)


class CheckpointCallback(Protocol):
    def __call__(self, folder: Path, epoch: float, revision: str) -> dict[str, Any] | None: ...


def run_callbacks(
    callbacks: list[Callable], folder: Path, epoch: float, revision: str, facts: dict[str, Any] | None = None
) -> tuple[dict[str, Any], bool, str | None]:
    """Merged metadata of every callback, whether one asked to stop, and why. A callback with
    ``wants_context = True`` is also given ``facts`` (the checkpoint's training facts) and ``merged`` (what the
    callbacks before it returned), e.g. the early-stop rule reading top-1 or the live score."""
    merged: dict[str, Any] = {}
    stop, reason = False, None
    for callback in callbacks:
        if getattr(callback, "wants_context", False):
            result = callback(folder, epoch, revision, facts=dict(facts or {}), merged=merged) or {}
        else:
            result = callback(folder, epoch, revision) or {}
        result = dict(result)
        if result.pop("stop", False):
            stop = True
            reason = result.pop("stop_reason", None) or reason or f"requested by {getattr(callback, '__name__', callback)!s}"
        else:
            result.pop("stop_reason", None)
        for key, value in result.items():
            if key in ("eval_results", "card_edit"):
                values = value if isinstance(value, (list, tuple)) else [value]
                merged.setdefault(key, []).extend(v for v in values if v is not None)
            elif isinstance(value, dict) and isinstance(merged.get(key), dict):
                merged[key] = {**merged[key], **value}
            else:
                merged[key] = value
    return merged, stop, reason
