"""Card metadata: the YAML block of a card, edited as data.

Two places hold our facts:
- ``model-index`` results (through huggingface_hub's ``EvalResult``), which the Hub renders, only for data
  that is a Hub dataset (:mod:`.dataset_ref`): robustness scores, a segmentation model's Dice, top-1.
- the ``hf_transfer_seg`` mapping, machine-readable facts the tools read back (training facts of a
  checkpoint, score details such as intervals and seeds, the summary table of main).
"""

from __future__ import annotations

import copy
from typing import Any

from huggingface_hub import EvalResult, ModelCardData

from hf_transfer_seg.cards.dataset_ref import NOT_DATASET_IDS
from hf_transfer_seg.cards.schema import NAMESPACE


def get_namespace(data: ModelCardData, key: str | None = None, default: Any = None) -> Any:
    """Our mapping in the card metadata (a deep copy), or one key of it."""
    ours = copy.deepcopy(getattr(data, NAMESPACE, None) or {})
    if key is None:
        return ours
    return ours.get(key, default)


def set_namespace(data: ModelCardData, key: str, value: Any) -> None:
    """Set one key of our mapping, keeping the other keys."""
    ours = copy.deepcopy(getattr(data, NAMESPACE, None) or {})
    ours[key] = value
    setattr(data, NAMESPACE, ours)


def drop_results(data: ModelCardData, keep) -> None:
    """Keep only the model-index results for which ``keep(result)`` is true (no model-index when none is left)."""
    results = [r for r in (data.eval_results or []) if keep(r)]
    data.eval_results = results or None


def upsert_eval_result(data: ModelCardData, result: EvalResult | None, *, model_name: str | None = None) -> None:
    """Add ``result`` to the card's model-index, replacing an entry for the same task, dataset and metric.

    Two results are "the same entry" when everything but the value matches (task, dataset name,
    type, config and split, metric type and config): re-scoring replaces, other targets stay.
    ``result`` None (data with no Hub dataset id) adds nothing. Entries of older cards whose
    ``dataset.type`` is no dataset id (``custom``...) are removed either way.
    """
    drop_results(data, lambda r: r.dataset_type not in NOT_DATASET_IDS)
    if result is None:
        return
    results = list(data.eval_results or [])
    results = [r for r in results if not r.is_equal_except_value(result)]
    results.append(result)
    data.eval_results = results
    if not data.model_name:
        data.model_name = model_name or "model"


def eval_results_by(data: ModelCardData, *, metric_type: str, dataset_name: str | None = None) -> list[EvalResult]:
    """The card's model-index results of one metric type (and dataset name, when given)."""
    return [
        r
        for r in (data.eval_results or [])
        if r.metric_type == metric_type and (dataset_name is None or r.dataset_name == dataset_name)
    ]
