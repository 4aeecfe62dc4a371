"""Sweep: fine-tune every selected checkpoint revision with several seeds, record Dice in each card.

The target is loaded and split once (same validation images for every revision and seed). Each run
adds its seed to the revision card's downstream entry (mean and spread over seeds are recomputed),
so an interrupted sweep resumes where it stopped: seeds already recorded with the same recipe are
skipped. Optionally LogME and linear-probe Dice are recorded per revision. This stage writes revision cards only;
main's ``downstream_summary`` is rebuilt from them by the ``sweep`` command (``hf_transfer_seg.cli``), which wires
the sweep to the report stage, so this module imports no other stage.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from hf_transfer_seg.errors import WeightsError
from hf_transfer_seg.finetune.config import FinetuneConfig
from hf_transfer_seg.safe_yaml import CardYAMLError

log = logging.getLogger(__name__)


def _failed(out: dict, revision: str, exc: Exception, bar, runs_left: int) -> None:
    out["failed"][revision] = str(exc)
    log.warning("sweep: %s failed and is skipped: %s", revision, exc)
    bar.update(max(runs_left, 0))


def parse_seeds(spec: str | int) -> list[int]:
    """``3`` -> [0, 1, 2]; ``0,4,7`` -> [0, 4, 7]."""
    from hf_transfer_seg.errors import ConfigError

    text = str(spec).strip()
    try:
        if "," in text:
            seeds = [int(s) for s in text.split(",") if s.strip()]
        else:
            seeds = list(range(int(text)))
    except ValueError as exc:
        raise ConfigError(f"--seeds takes a count (3) or a comma list (0,1,2), got {spec!r}") from exc
    if not seeds:
        raise ConfigError("--seeds must give at least one seed")
    return seeds


def run_sweep(
    repo_id: str,
    base: FinetuneConfig,
    *,
    revisions: str = "all",
    seeds: list[int] = (0, 1, 2),
    push_to: str | None = None,
    skip_done: bool = True,
    transfer: bool = True,
    transfer_pixels: int = 2000,
    progress: bool = True,
) -> dict[str, Any]:
    """Fine-tune each revision of ``repo_id`` for each seed; return {revision: {seed: dice}} and more."""
    from accelerate import PartialState
    from tqdm.auto import tqdm

    from hf_transfer_seg import hub
    from hf_transfer_seg.finetune.loop import finetune, prepare_target, resolve_encoder
    from hf_transfer_seg.cards.schema import downstream_key
    from hf_transfer_seg.finetune.push import apply_transferability, push_segmentation_model, record_downstream, seeds_done

    base = dataclasses.replace(base, encoder_repo=repo_id, encoder_folder=None)
    base.validate()
    infos = hub.select_revisions(repo_id, revisions)
    target, train, val, split = prepare_target(base)
    key = downstream_key(target.key, base.freeze_encoder)
    recipe = base.recipe()
    is_main = PartialState().is_main_process  # under accelerate launch only the main process writes
    out: dict[str, Any] = {"is_main": is_main, "target": target.key, "key": key, "revisions": {}, "skipped": [], "transferability": {}, "failed": {}}
    bar = tqdm(total=len(infos) * len(seeds), desc=f"sweep {repo_id}", unit="run", disable=not (progress and is_main))
    for info in infos:
        try:
            card = hub.card_at_sha(repo_id, info.sha)
        except CardYAMLError as exc:  # recorded as failed; the sweep goes on
            _failed(out, info.name, exc, bar, len(seeds))
            continue
        done = seeds_done(card, key, recipe) if skip_done else set()
        dice: dict[int, float | None] = {}
        for seed in seeds:
            if seed in done:
                out["skipped"].append((info.name, seed))
                bar.update(1)
                continue
            config = dataclasses.replace(base, revision=info.name, seed=seed)
            try:
                result = finetune(config, target=target, progress=progress and is_main, nested=True)
            except WeightsError as exc:  # a bad checkpoint (config.json, weights): the other revisions go on
                _failed(out, info.name, exc, bar, len(seeds) - len(dice) - sum(s in done for s in seeds))
                break
            if is_main:
                seg = push_segmentation_model(result, push_to, revision=f"{info.name}-seed{seed}") if push_to else None
                record_downstream(result, seg_push=seg)
            dice[seed] = result.metrics.get("dice_mean")
            out.setdefault("metrics", {k: result.metrics.get(k) for k in ("baselines", "warnings")})
            bar.set_postfix(revision=info.name, seed=seed, dice=f"{dice[seed] or 0:.3f}")
            bar.update(1)
        if info.name in out["failed"]:
            continue
        out["revisions"][info.name] = dice
        if transfer and is_main:
            from hf_transfer_seg.baselines.transferability import transferability

            folder = resolve_encoder(dataclasses.replace(base, revision=info.name))["folder"]
            values = transferability(folder, train, val, pixels_per_class=transfer_pixels, seed=base.split_seed)
            values["split_seed"] = base.split_seed
            out["transferability"][info.name] = values
            hub.update_card(
                repo_id, info.name, lambda c, v=values: apply_transferability(c, target.key, v),
                commit_message=f"LogME and linear-probe Dice on {target.key}",
            )
    bar.close()
    out["split"] = split
    return out
