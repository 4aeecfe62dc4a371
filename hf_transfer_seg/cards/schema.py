"""The card schema: the one contract between the stages.

The stages never call each other; they talk through model cards. Pretraining writes a revision's
``training`` facts, scoring adds ``robustness``, fine-tuning adds ``downstream``, and the report and
the Space read them back. This module names every key of our ``hf_transfer_seg`` mapping, every
managed section, the model-index entries (as huggingface_hub ``EvalResult``s, in the spirit of its
``repocard_data.py``), the score configuration names, the plot paths committed next to the cards and
the small helpers that read values back. It imports neither torch nor any stage.

Layout of the mapping (``card.data.hf_transfer_seg``)::

    revision card (branch epoch-NNNN)          main's card
      training: {epoch, imagenet_top1, ...}      checkpoints: [{revision, epoch, sha, ...}]
      robustness: {target: {config: entry}}      latest_revision: "epoch-NNNN"
        (headline + favoured configs in YAML; the whole grid in robustness/grid_<target>.json, see cards.grid)
      robustness_targets: {target: {..., grid_file}}  robustness_summary: {target: {config, rows, best_*}}
      downstream: {downstream_key: entry}        downstream_summary: {downstream_key: {rows, best_*}}
      transferability: {target: {logme, ...}}

A pushed segmentation model's card holds ``base``, ``target``, ``recipe``, ``seed``, ``metrics``,
``split``, ``synthetic`` and ``code_version``.
"""

from __future__ import annotations

import math
import re
from typing import Any

from hf_transfer_seg.cards.dataset_ref import eval_dataset

NAMESPACE = "hf_transfer_seg"

# ------------------------------------------------------------------ keys of the hf_transfer_seg mapping
# revision card
TRAINING = "training"
ROBUSTNESS = "robustness"
ROBUSTNESS_TARGETS = "robustness_targets"
DOWNSTREAM = "downstream"
TRANSFERABILITY = "transferability"
MODEL_RANKING = "model_ranking"  # written by `rank --write-cards`: {target: {headline, score, rank, rankme, ...}}
# main's card
CHECKPOINTS = "checkpoints"
LATEST_REVISION = "latest_revision"
ROBUSTNESS_SUMMARY = "robustness_summary"
DOWNSTREAM_SUMMARY = "downstream_summary"
# a segmentation model's card
BASE = "base"
TARGET = "target"
RECIPE = "recipe"
SEED = "seed"
METRICS = "metrics"
SPLIT = "split"
SYNTHETIC = "synthetic"
CODE_VERSION = "code_version"

# ------------------------------------------------------------------------------- managed sections
SECTION_TRAINING = "training"
SECTION_CHECKPOINTS = "checkpoints"
SECTION_ROBUSTNESS = "robustness"
SECTION_DOWNSTREAM = "downstream"

# ------------------------------------------------------------------------ score configuration names
# ``{distance}_m{margin}_L{level}_{flat|pooled}``; parsed by hf_transfer_seg.scoring.configs.
HEADLINE = "cosine_m0.5_L-1_flat"
# Independent draws of colour-jittered views and negatives per score (scoring/plan.py), so that a tie verdict survives
# another seed: on the DRIVE training images (benchmarks/tie_stability.py, 64 px, 5 view seeds, 10 revision pairs) the
# share of pairs with one verdict under every seed was 30 % with one draw, 40 % with 3, 80 % with 8 and 90 % with 16
# (mean agreement of two seeds 66 / 74 / 92 / 96 %); on the MNI152 target (59 slices of one brain, resampled in 15
# blocks) every pair kept one verdict under every setting. Each draw costs one more pair of forward passes and, after
# the first, 1/4 of the first draw's memory (uint8 views: 75 MB for 256 images at 224 px).
VIEW_DRAWS = 16
MAX_VIEW_DRAWS = 32
# Configurations the paper's tables favour, recorded in model-index next to the headline.
HIGHLIGHTS = (HEADLINE, "inv_pearson_m0.5_L-1_flat", "cosine_m0.5_L-2_flat")
# prefixes of the analysis-table columns holding robustness scores (``robustness:<config>``)
SCORE_PREFIXES = ("robustness", "score")

# ---------------------------------------------------------------------------- model-index entries
ROBUSTNESS_METRIC = "robustness-score"
ROBUSTNESS_TASK = "image-feature-extraction"
SEGMENTATION_TASK = "image-segmentation"
CLASSIFICATION_TASK = "image-classification"
FROZEN_SUFFIX = "@frozen"
OK_STATUSES = ("ok", "done", "complete", "completed")


def robustness_result(target_key: str, config: str, score: float):
    """The model-index entry of one robustness score (lower is better); None when the target is no Hub dataset."""
    from huggingface_hub import EvalResult

    if eval_dataset(target_key) is None:
        return None
    return EvalResult(
        task_type=ROBUSTNESS_TASK,
        task_name="Label-free robustness score (lower is better)",
        **eval_dataset(target_key),
        metric_type=ROBUSTNESS_METRIC,
        metric_name=f"robustness score {config}",
        metric_value=score,
        metric_config=config,
    )


def segmentation_result(target_key: str, metric_type: str, value: float, *, frozen: bool):
    """The model-index entry of a validation Dice / IoU / HD95 of a U-Net on ``target_key`` (None: no Hub dataset)."""
    from huggingface_hub import EvalResult

    if eval_dataset(target_key) is None:
        return None
    return EvalResult(
        task_type=SEGMENTATION_TASK, **{**eval_dataset(target_key), "dataset_split": "validation"},
        metric_type=metric_type, metric_value=float(value), metric_config=metric_config(frozen),
    )


def accuracy_result(dataset: str, name: str, value: float):
    """The model-index entry of a pretraining checkpoint's validation accuracy (``top-1``/``top-5``, percent);
    None when the pretraining data is no Hub dataset."""
    from huggingface_hub import EvalResult

    if eval_dataset(dataset) is None:
        return None
    return EvalResult(
        task_type=CLASSIFICATION_TASK, **{**eval_dataset(dataset), "dataset_split": "validation"},
        metric_type="accuracy", metric_name=name, metric_value=float(value),
    )


def downstream_key(target_key: str, frozen: bool) -> str:
    """Key of a fine-tuning result in ``hf_transfer_seg.downstream``: the target key, ``@frozen`` for frozen runs."""
    return f"{target_key}{FROZEN_SUFFIX}" if frozen else target_key


def metric_config(frozen: bool) -> str:
    """``metric_config`` of a segmentation result: which encoder regime produced it."""
    return "frozen-encoder" if frozen else "fine-tuned-encoder"


def is_ok(entry: Any) -> bool:
    """Whether a score entry of the card records a finished score (not a failure)."""
    return isinstance(entry, dict) and str(entry.get("status", "ok")).lower() in OK_STATUSES


# ------------------------------------------------------------------------------- files next to cards


def safe_file_key(key: str) -> str:
    """A target key made safe for a file name (``plots/robustness_<file_key>.png``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", key).strip("_") or "target"


def grid_path(key: str) -> str:
    """Path, on a revision's branch, of the whole robustness grid of target ``key`` (``hf_transfer_seg.cards.grid``)."""
    return f"robustness/grid_{safe_file_key(key)}.json"


def plot_path(kind: str, key: str) -> str:
    """Path in main's repo of a summary plot committed with the card: ``plots/<kind>_<safe key>.png``.

    ``kind`` is :data:`ROBUSTNESS` (score vs epoch, by scoring) or :data:`DOWNSTREAM` (Dice vs epoch, by the report).
    """
    return f"plots/{kind}_{safe_file_key(key)}.png"


# ---------------------------------------------------------------------------- reading values back


def number(value: Any) -> float | None:
    """A card value as a finite float, or None (missing, not a number, NaN or infinite)."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def fmt(value: Any, digits: int = 4, *, missing: str = "–") -> str:
    """A number for a card table: ``digits`` decimals, ``missing`` when absent or not finite; ints as is."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    x = number(value)
    return missing if x is None else f"{x:.{digits}f}"
