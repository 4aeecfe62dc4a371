"""Score checkpoint revisions of a Hub repo: download by sha, prefetch the next one, write the cards.

Pipeline per revision ``i``: a background thread downloads revision ``i + 1`` (only ``config.json``,
``model.safetensors`` and ``README.md``: pickle files are never downloaded) and builds its encoder
while revision ``i`` runs its forward passes; a second background thread commits revision ``i - 1``'s
card. Under ``accelerate launch`` the revisions are split over the processes, each process writes the
cards of its own revisions, and the main process writes main's summary after gathering the results.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from huggingface_hub import HfApi
from tqdm.auto import tqdm

from hf_transfer_seg.cards.schema import HEADLINE
from hf_transfer_seg.errors import ConfigError, HubError, WeightsError
from hf_transfer_seg.hub import RevisionInfo
from hf_transfer_seg.models.checkpoint import download_checkpoint
from hf_transfer_seg.redact import redact
from hf_transfer_seg.scoring.features import load_scoring_encoder
from hf_transfer_seg.scoring.plan import ScoringPlan
from hf_transfer_seg.scoring.scorer import RevisionScore, score_loaded

log = logging.getLogger(__name__)

_FAILURES = (WeightsError, HubError, OSError, RuntimeError, ValueError, KeyError)
# Failures that say something about this machine and the flags, not about the checkpoint: never recorded in a card.
_RUN_FAILURES = ("OutOfMemoryError", "CUDA out of memory", "DefaultCPUAllocator: can't allocate memory",
                 "not enough memory", "CUDA error", "no kernel image is available")


def raise_if_run_failure(result: RevisionScore, *, batch_size: int, device) -> None:
    """A revision that 'failed' because the device ran out of memory (or its driver failed) is not a broken
    checkpoint: stop with a ConfigError naming the fix instead of recording it as the checkpoint's failure."""
    if result.ok or not result.reason:
        return
    if any(marker in result.reason for marker in _RUN_FAILURES):
        raise ConfigError(
            f"scoring {result.revision} on {device} failed for a reason of this machine, not of the checkpoint "
            f"({result.reason[:200]}); lower --batch-size (now {batch_size}) or --image-size, or choose another "
            "--device, and run the command again. Nothing was recorded for this revision."
        )


@dataclass
class Fetched:
    revision: RevisionInfo
    loaded: torch.nn.Module | BaseException


def fetch_revision(repo_id: str, revision: RevisionInfo, *, cache_dir: str | Path | None = None, api: HfApi | None = None) -> Fetched:
    """Download ``revision`` by sha and build its encoder; any failure is returned, not raised."""
    api = api or HfApi()
    try:
        folder = download_checkpoint(repo_id, revision.sha, what=revision.name, cache_dir=cache_dir, api=api)
    except WeightsError as exc:  # no safetensors: the reason names the revision already
        return Fetched(revision, exc)
    except _FAILURES as exc:
        return Fetched(revision, WeightsError(f"{revision.name}: {redact(exc)}"))
    try:
        return Fetched(revision, load_scoring_encoder(folder))
    except _FAILURES as exc:
        return Fetched(revision, WeightsError(f"{revision.name}: {redact(exc)}"))


def score_revisions(
    repo_id: str,
    revisions: list[RevisionInfo],
    plan: ScoringPlan,
    *,
    headline: str = HEADLINE,
    batch_size: int = 32,
    device: str | torch.device = "cpu",
    precision: str = "fp32",
    progress: bool = True,
    prefetch: bool = True,
    cache_dir: str | Path | None = None,
    on_result: Callable[[RevisionScore], None] | None = None,
) -> list[RevisionScore]:
    """Score every revision on ``plan`` (one download + two batched forward passes each), in order."""
    api = HfApi()
    results: list[RevisionScore] = []
    if not revisions:
        return results
    bar = tqdm(revisions, desc=f"score {plan.target_key}", unit="rev", disable=not progress)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefetch") as pool:
        fetch = lambda rev: fetch_revision(repo_id, rev, cache_dir=cache_dir, api=api)  # noqa: E731
        upcoming: Future | None = pool.submit(fetch, revisions[0]) if prefetch else None
        for i, revision in enumerate(bar):
            fetched = upcoming.result() if upcoming is not None else fetch(revision)
            upcoming = pool.submit(fetch, revisions[i + 1]) if prefetch and i + 1 < len(revisions) else None
            bar.set_postfix_str(revision.name)
            result = score_loaded(
                fetched.loaded,
                plan,
                revision=revision.name,
                epoch=revision.epoch,
                sha=revision.sha,
                headline=headline,
                batch_size=batch_size,
                device=device,
                precision=precision,
                progress=progress,
                desc=revision.name,
            )
            del fetched
            raise_if_run_failure(result, batch_size=batch_size, device=device)
            results.append(result)
            if on_result is not None:
                on_result(result)
    return results


def distributed_state():
    """Accelerate's process state under ``accelerate launch`` with several processes, else None."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    from accelerate import PartialState

    # Without GPUs, accelerate only forms a (gloo) process group when told to run on CPU.
    return PartialState(cpu=not torch.cuda.is_available())


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
