"""Score one checkpoint folder on a plan: the whole grid, intervals, and the facts a card records."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from hf_transfer_seg.cards.dataset_ref import hide_local_paths
from hf_transfer_seg.cards.schema import HEADLINE
from hf_transfer_seg.errors import HfTransferSegError, WeightsError
from hf_transfer_seg.redact import redact
from hf_transfer_seg.scoring.configs import parse_config
from hf_transfer_seg.scoring.features import load_scoring_encoder, plan_distances
from hf_transfer_seg.scoring.grid import ConfigScore, grid_scores
from hf_transfer_seg.scoring.plan import ScoringPlan
from hf_transfer_seg.version import code_version

log = logging.getLogger(__name__)


def _sig(x: float, digits: int = 6) -> float:
    return float(f"{x:.{digits}g}") if math.isfinite(x) else x


@dataclass
class RevisionScore:
    """The outcome of scoring one revision (or one local checkpoint folder)."""

    revision: str | None
    epoch: float | None
    sha: str | None
    headline: str = HEADLINE
    status: str = "ok"  # "ok" or "failed"
    reason: str | None = None
    scores: dict[str, ConfigScore] = field(default_factory=dict)
    num_levels: int = 0
    seconds: float = 0.0
    per_image: list[float] | None = None  # the headline's per-image values (mean over the view draws), in the plan's image order
    per_image_draws: list[list[float]] | None = None  # the same for every draw of views ``[draws][M]`` (for paired ties)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def headline_score(self) -> ConfigScore | None:
        return self.scores.get(self.headline)

    def entries(self, plan: ScoringPlan) -> dict[str, dict]:
        """``robustness[target][config]`` entries for a card: the whole grid, or the headline marked failed."""
        common = {**plan.facts(), "code_version": code_version()}
        if not self.ok:
            return {self.headline: {"score": None, "ci_low": None, "ci_high": None, **common, "status": "failed", "reason": hide_local_paths(self.reason)}}
        out = {
            name: {"score": _sig(s.score), "ci_low": _sig(s.ci_low), "ci_high": _sig(s.ci_high), **common, "status": "ok"}
            for name, s in self.scores.items()
        }
        if self.per_image is not None and self.headline in out:
            out[self.headline]["per_image"] = [_sig(v) for v in self.per_image]
        return out


def score_model(
    model: torch.nn.Module,
    plan: ScoringPlan,
    *,
    headline: str = HEADLINE,
    batch_size: int = 32,
    device: str | torch.device = "cpu",
    precision: str = "fp32",
    progress: bool = False,
    desc: str = "score",
    per_image: list | None = None,
) -> tuple[dict[str, ConfigScore], int]:
    """Scores of every configuration (and the number of feature levels) of a loaded encoder; the
    headline's per-image values of each draw of views are appended to ``per_image`` when a list is given."""
    distances = plan_distances(
        model, plan, batch_size=batch_size, device=device, precision=precision, progress=progress, desc=desc
    )
    config = parse_config(headline, distances.num_levels)  # the headline must exist for this encoder
    if per_image is not None:
        per_image.extend(distances.draw_values(config).tolist())
    return grid_scores(distances, plan.weights), distances.num_levels


def score_loaded(
    loaded: torch.nn.Module | BaseException,
    plan: ScoringPlan,
    *,
    revision: str | None = None,
    epoch: float | None = None,
    sha: str | None = None,
    headline: str = HEADLINE,
    **kwargs,
) -> RevisionScore:
    """Score an encoder, or record why it could not be loaded; a bad checkpoint never raises."""
    result = RevisionScore(revision=revision, epoch=epoch, sha=sha, headline=headline)
    start = time.perf_counter()
    try:
        if isinstance(loaded, BaseException):
            raise loaded
        values: list[list[float]] = []
        result.scores, result.num_levels = score_model(loaded, plan, headline=headline, per_image=values, **kwargs)
        if values:
            result.per_image_draws = values
            result.per_image = [sum(column) / len(column) for column in zip(*values)]
    except (WeightsError, OSError) as exc:
        result.status, result.reason = "failed", redact(exc)
        log.warning("%s failed: %s", revision or "checkpoint", result.reason)
    except HfTransferSegError:
        raise  # a configuration problem (unknown level...): not the revision's fault
    except (RuntimeError, ValueError, KeyError) as exc:  # e.g. timm cannot build the architecture
        result.status, result.reason = "failed", redact(f"{type(exc).__name__}: {exc}")
        log.warning("%s failed: %s", revision or "checkpoint", result.reason)
    result.seconds = time.perf_counter() - start
    return result


def score_folder(folder: str | Path, plan: ScoringPlan, **kwargs) -> RevisionScore:
    """Load the checkpoint in ``folder`` (safetensors only) and score it; failures are recorded, not raised.

    ``seconds`` of the result covers loading and scoring.
    """
    start = time.perf_counter()
    try:
        loaded: torch.nn.Module | BaseException = load_scoring_encoder(folder)
    except (WeightsError, OSError, RuntimeError, ValueError, KeyError) as exc:
        loaded = exc
    result = score_loaded(loaded, plan, **kwargs)
    result.seconds = time.perf_counter() - start
    return result
