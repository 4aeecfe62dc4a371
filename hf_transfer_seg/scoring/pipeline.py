"""``hf-transfer-seg score`` as a function: select revisions, plan, score, write cards and main's summary."""

from __future__ import annotations

import logging
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import torch
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

from hf_transfer_seg.cards.schema import HEADLINE
from hf_transfer_seg.data.registry import resolve_target
from hf_transfer_seg.errors import HfTransferSegError, HubError
from hf_transfer_seg.hub import check_write_access, select_revisions
from hf_transfer_seg.redact import redact
from hf_transfer_seg.scoring.card import best_line, per_image_of, ties_test, summary_entry, summary_rows, summary_table, write_revision_card, write_summary
from hf_transfer_seg.scoring.configs import parse_config
from hf_transfer_seg.scoring.plan import VIEW_DRAWS, ScoringPlan, build_plan
from hf_transfer_seg.scoring.runner import default_device, distributed_state, score_revisions
from hf_transfer_seg.scoring.scorer import RevisionScore

log = logging.getLogger(__name__)


def _check_write_access(repo_id: str) -> None:
    """Fail before hours of scoring when the token cannot write the cards.

    ``check_write_access`` creates and deletes one shared scratch branch; when another scorer deletes it
    between our create and delete, our delete answers 404 although we could write: that is a pass.
    """
    try:
        check_write_access(repo_id)
    except HfHubHTTPError as exc:
        if getattr(getattr(exc, "response", None), "status_code", None) != 404:
            raise
        log.debug("scratch branch of the write check was removed by a concurrent writer; write access confirmed")


@dataclass
class ScoreOutcome:
    plan: ScoringPlan
    results: list[RevisionScore]  # every revision (gathered from all processes on the main process)
    summary: dict | None = None  # main's robustness_summary entry for the target (main process only)
    is_main: bool = True
    num_processes: int = 1
    errors: list[str] = field(default_factory=list)
    config: str = HEADLINE

    def report(self) -> str:
        """The results as the ``score`` command prints them (also when some could not be written)."""
        plan = self.plan
        lines = [f"\nRobustness score on {plan.target_key} ({plan.num_images} images, {plan.image_size} px, seed {plan.seed}, "
                 f"{self.config}; lower is better)", f"Resolution {plan.image_size} px: {plan.size_source}.",
                 f"Ties: {ties_test(plan)}.\n", self.table()]
        if self.num_processes > 1:
            lines.append(f"\n{len(self.results)} revisions scored by {self.num_processes} processes.")
        failed = [r for r in self.results if not r.ok]
        if failed:
            lines.append(f"\n{len(failed)} revision(s) failed: " + "; ".join(f"{r.revision}: {r.reason}" for r in failed))
        return "\n".join(lines)

    def table(self) -> str:
        if self.summary is None:
            return ""
        return f"{summary_table(self.summary)}\n\n{best_line(self.plan.target_key, self.summary)}"


def run_score(
    repo_id: str,
    target: str,
    *,
    revisions: str = "all",
    num_images: int = 256,
    seed: int = 0,
    batch_size: int = 32,
    config: str = HEADLINE,
    image_size: int | None = None,
    jitter: str = "image",
    precision: str | None = None,
    device: str | None = None,
    split: str = "train",
    image_column: str | None = None,
    target_synthetic: bool = False,
    write: bool = True,
    progress: bool = True,
    prefer: str = "lowest",
    target_options: dict | None = None,
    view_draws: int = VIEW_DRAWS,
) -> ScoreOutcome:
    """Score the chosen revisions of ``repo_id`` on ``target`` and record the results (see the ``score`` command)."""
    parse_config(config)  # an unknown name fails before any download
    state = distributed_state()
    is_main = state is None or state.is_main_process
    try:
        chosen = select_revisions(repo_id, revisions)
    except RepositoryNotFoundError as exc:
        raise HubError(f"repository {repo_id} not found ({redact(exc)}); check --repo-id and HF_ENDPOINT / HF_TOKEN") from exc
    if write and is_main:
        _check_write_access(repo_id)
    plan = build_plan(
        resolve_target(target, split=split, image_column=image_column, synthetic=target_synthetic, **(target_options or {})),
        num_images=num_images,
        seed=seed,
        image_size=image_size,
        jitter=jitter,
        jitter_batch_size=batch_size,
        progress=progress and is_main,
        view_draws=view_draws,
    )
    run_device = torch.device(device) if device else (state.device if state is not None else default_device())
    precision = precision or ("bf16" if run_device.type == "cuda" else "fp32")
    if state is not None:
        mine = chosen[state.process_index :: state.num_processes]  # interleaved: epochs spread evenly
    else:
        mine = chosen

    writes: list[tuple[RevisionScore, Future]] = []
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="card-writer") as writer:

        def on_result(result: RevisionScore) -> None:
            if write:
                writes.append((result, writer.submit(write_revision_card, repo_id, plan, result)))

        results = score_revisions(
            repo_id,
            mine,
            plan,
            headline=config,
            batch_size=batch_size,
            device=run_device,
            precision=precision,
            progress=progress,
            on_result=on_result,
        )
        training: dict[str, dict] = {}
        errors: list[str] = []
        for result, future in writes:
            try:
                training[result.revision] = future.result()
            except Exception as exc:  # noqa: BLE001 - reported together below
                errors.append(f"card of {result.revision}: {redact(exc)}")

    if state is not None:
        from accelerate.utils import gather_object

        gathered = gather_object([(results, training, errors)])
        results = sorted((r for part in gathered for r in part[0]), key=lambda r: r.epoch or 0.0)
        training = {k: v for part in gathered for k, v in part[1].items()}
        errors = [e for part in gathered for e in part[2]]
    outcome = ScoreOutcome(
        plan=plan, results=results, is_main=is_main, errors=errors, num_processes=state.num_processes if state else 1,
        config=config,
    )
    if is_main:
        rows = summary_rows(results, training)
        values = per_image_of(results, plan)
        outcome.summary = summary_entry(plan, config, rows, values, prefer)
        if write:
            try:
                outcome.summary = write_summary(repo_id, plan, config, rows, per_image=values, prefer=prefer)
            except (HfTransferSegError, HfHubHTTPError) as exc:  # the scores are kept: reported below
                errors.append(f"main's summary: {redact(exc)}")
    if state is not None:
        state.wait_for_everyone()
    if errors:
        raise ScoresNotRecorded(
            "could not record every score: " + "; ".join(errors) + ". The scores above were computed and every "
            "other card was written; fix what is named and run the command again for those revisions.",
            outcome,
        )
    return outcome


class ScoresNotRecorded(HubError):
    """Some cards could not be written; ``outcome`` holds every score computed (the CLI prints them)."""

    def __init__(self, message: str, outcome: ScoreOutcome):
        super().__init__(message)
        self.outcome = outcome
