"""Live scoring during pretraining: score each checkpoint folder as it is written, stop when it stops improving.

The pretraining loop owns everything else; this only needs a checkpoint folder (timm Hub format)::

    scorer = LiveScorer("skimage-retina", num_images=64, seed=0, patience=3)
    ...
    folder = save_checkpoint(model, out / revision_name(epoch), ...)
    metadata = scorer(folder, epoch, revision_name(epoch))   # merge into the card's hf_transfer_seg mapping
    edit = scorer.card_edit()                                 # or apply the whole card edit (section, model-index)
    if scorer.should_stop: ...                                # no improvement for `patience` checkpoints

The plan (images, views, negatives, bootstrap) is drawn once in the constructor, so every checkpoint
is scored on the same views (common random numbers) and a bad target fails before training starts.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from hf_transfer_seg.cards import schema
from hf_transfer_seg.cards.schema import HEADLINE
from hf_transfer_seg.data.unlabelled import ImageTarget
from hf_transfer_seg.data.registry import resolve_target
from hf_transfer_seg.errors import ConfigError
from hf_transfer_seg.cards.grid import GRID_FILE, card_configs, grid_bytes, target_info
from hf_transfer_seg.scoring.card import revision_card_edit
from hf_transfer_seg.scoring.configs import parse_config
from hf_transfer_seg.scoring.plan import build_plan
from hf_transfer_seg.scoring.runner import default_device
from hf_transfer_seg.scoring.scorer import RevisionScore, score_folder

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LivePoint:
    epoch: float
    revision: str | None
    score: float | None  # None when the checkpoint could not be scored
    seconds: float


class LiveScorer:
    """Scores checkpoint folders on one target with one plan; tracks the best and early stopping."""

    def __init__(
        self,
        target: str | ImageTarget = "skimage-retina",
        num_images: int = 64,
        seed: int = 0,
        config: str = HEADLINE,
        patience: int | None = None,
        *,
        image_size: int = 224,
        batch_size: int = 32,
        device: str | torch.device | None = None,
        precision: str | None = None,
        min_delta: float = 0.0,
        progress: bool = False,
    ):
        if patience is not None and patience < 1:
            raise ConfigError(f"--early-stop-patience must be >= 1 checkpoint, got {patience}")
        parse_config(config)
        self.config = config
        self.patience = patience
        self.min_delta = float(min_delta)
        self.batch_size = batch_size
        self.device = torch.device(device) if device else default_device()
        self.precision = precision or ("bf16" if self.device.type == "cuda" else "fp32")
        self.progress = progress
        start = time.perf_counter()
        image_target = resolve_target(target) if isinstance(target, str) else target
        # one draw of views: a live score watches the trend during pretraining at the least cost; `score` afterwards
        # draws several for its tie test
        self.plan = build_plan(image_target, num_images=num_images, seed=seed, image_size=image_size, progress=progress,
                               view_draws=1)
        self.setup_seconds = time.perf_counter() - start
        self.history: list[LivePoint] = []
        self.last: RevisionScore | None = None
        self.best: LivePoint | None = None
        self.since_best = 0

    @property
    def target_key(self) -> str:
        return self.plan.target_key

    def __call__(self, folder: str | Path, epoch: float, revision: str | None = None) -> dict:
        """Score the checkpoint in ``folder``; return the ``hf_transfer_seg`` card metadata to merge.

        The returned mapping is ``{"robustness": {target: {config: entry, ...}}, "robustness_targets": {...}}``
        (the same entries ``hf-transfer-seg score`` writes in the card: headline and favoured configurations); the
        whole grid is written to ``folder/robustness/grid_<target>.json``, pushed with the checkpoint. A checkpoint that cannot be scored (NaN
        features, no safetensors) gives a ``status: failed`` entry and counts as no improvement.
        """
        result = score_folder(
            folder,
            self.plan,
            revision=revision,
            epoch=float(epoch),
            headline=self.config,
            batch_size=self.batch_size,
            device=self.device,
            precision=self.precision,
            progress=self.progress,
            desc=f"score epoch {epoch:g}",
        )
        self.last = result
        headline = result.headline_score
        point = LivePoint(float(epoch), revision, headline.score if headline else None, result.seconds)
        self.history.append(point)
        if point.score is not None and (self.best is None or point.score < self.best.score - self.min_delta):
            self.best, self.since_best = point, 0
        else:
            self.since_best += 1
        log.info(
            "robustness %s on %s at epoch %g: %s (%.1fs; best %s)",
            self.config,
            self.target_key,
            epoch,
            f"{point.score:.4f}" if point.score is not None else f"failed ({result.reason})",
            result.seconds,
            f"{self.best.score:.4f} at epoch {self.best.epoch:g}" if self.best else "none",
        )
        entries = result.entries(self.plan)
        info = target_info(self.plan.target_description, self.plan.target_synthetic, self.target_key)
        if result.ok:  # the whole grid goes with the checkpoint (``folder`` is what gets pushed); the card keeps the headline
            path = Path(folder) / info[GRID_FILE]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(grid_bytes(self.target_key, entries))
        else:
            info.pop(GRID_FILE)
        return {
            schema.ROBUSTNESS: {self.target_key: card_configs(entries, self.config)},
            schema.ROBUSTNESS_TARGETS: {self.target_key: info},
        }

    def card_edit(self, model_name: str = "model"):
        """An edit for :func:`hf_transfer_seg.hub.update_card` or a local ``ModelCard`` recording the last score
        (YAML entries, model-index results, the ``robustness`` section)."""
        if self.last is None:
            raise ConfigError("no checkpoint has been scored yet; call the scorer on a checkpoint folder first")
        return revision_card_edit(self.plan, self.last, model_name, {})

    @property
    def should_stop(self) -> bool:
        """True once ``patience`` checkpoints in a row brought no improvement of the headline score."""
        if self.patience is None:
            return False
        from hf_transfer_seg.selection import Patience  # the report's rule object: the same decision offline and live

        values = [p.score if p.score is not None else float("inf") for p in self.history]
        return Patience(self.patience, self.min_delta).should_stop([p.epoch for p in self.history], values, 0.0)

    @property
    def last_seconds(self) -> float:
        return self.history[-1].seconds if self.history else 0.0
