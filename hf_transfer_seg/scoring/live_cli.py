"""``hf-transfer-seg pretrain --score-target T [--early-stop-patience P]``: live scoring as a pretraining extension.

Wired by ``hf_transfer_seg.cli.pretrain``: ``add_arguments`` adds the flags to the ``pretrain`` parser and ``make_callbacks`` returns one ``on_checkpoint(folder, epoch, revision)``
callback that scores each checkpoint right after it is written (its card carries the score when
pushed) and asks the loop to stop once the headline score has not improved for P checkpoints.
No torch import at module level: this module is imported whenever the command line is parsed.
"""

from __future__ import annotations

import argparse
import logging
import os
from typing import Any

from hf_transfer_seg.cards.schema import HEADLINE

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from hf_transfer_seg.cli import argtypes as T  # the same bounds as `score`'s flags, checked while parsing

    g = parser.add_argument_group("live robustness scoring (each checkpoint is scored before it is pushed)")
    g.add_argument("--score-target", default=None, help="target images: 'skimage-retina', 'mni152-tissue', a folder or a Hub dataset id")
    g.add_argument("--score-num-images", type=T.bounded_int(4, T.MAX_COUNT), default=64, help="images scored per checkpoint (default 64)")
    g.add_argument("--score-seed", type=T.bounded_int(0, T.MAX_SEED), default=0, help="seed of the scoring plan (default 0)")
    g.add_argument("--score-config", default=HEADLINE, help=f"headline configuration (default {HEADLINE})")
    g.add_argument("--score-image-size", type=T.bounded_int(16, T.MAX_IMAGE_SIDE), default=224, help="scoring image size (default 224)")
    g.add_argument("--score-batch-size", type=T.bounded_int(1, 65536), default=32, help="scoring batch size (default 32)")
    g.add_argument("--score-device", type=T.device_spec, default=None, help="scoring device (default: cuda when available, else cpu)")
    g.add_argument(
        "--early-stop-patience",
        type=T.bounded_int(1, 10_000),
        default=None,
        help="stop pretraining after this many checkpoints without a better (lower) headline score",
    )
    g.add_argument("--early-stop-min-delta", type=T.finite_float(0.0), default=0.0, help="improvement smaller than this does not count")


class LiveScoringCallback:
    """The ``on_checkpoint`` callback: score, return card metadata and the card edit, ask to stop when due."""

    __name__ = "live robustness scoring"

    def __init__(self, args: argparse.Namespace, model_name: str):
        self.args = args
        self.model_name = model_name
        self.scorer = None

    def build(self) -> None:
        from hf_transfer_seg.scoring.live import LiveScorer

        a = self.args
        self.scorer = LiveScorer(
            a.score_target,
            num_images=a.score_num_images,
            seed=a.score_seed,
            config=a.score_config,
            patience=a.early_stop_patience,
            image_size=a.score_image_size,
            batch_size=a.score_batch_size,
            min_delta=a.early_stop_min_delta,
            device=a.score_device,
        )
        log.info("live scoring on %s: plan of %d images ready in %.1fs", self.scorer.target_key, self.scorer.plan.num_images, self.scorer.setup_seconds)

    def __call__(self, folder, epoch: float, revision: str) -> dict[str, Any]:
        if self.scorer is None:
            self.build()
        scorer = self.scorer
        out: dict[str, Any] = dict(scorer(folder, epoch, revision))
        out["card_edit"] = scorer.card_edit(self.model_name)
        if scorer.should_stop:
            best = scorer.best
            out["stop"] = True
            out["stop_reason"] = (
                f"the robustness score ({scorer.config}) on {scorer.target_key} has not improved for "
                f"{scorer.patience} checkpoint(s); best: epoch {best.epoch:g} ({best.revision}) at {best.score:.4f}"
                if best
                else f"no checkpoint could be scored on {scorer.target_key} in {scorer.patience} attempts"
            )
        return out


def make_callbacks(args: argparse.Namespace, config: Any) -> list:
    target = getattr(args, "score_target", None)
    patience = getattr(args, "early_stop_patience", None)
    if not target:
        if patience is not None:
            from hf_transfer_seg.errors import ConfigError

            raise ConfigError("--early-stop-patience needs --score-target: early stopping follows the robustness score")
        return []
    from hf_transfer_seg.scoring.configs import parse_config

    parse_config(args.score_config)
    repo_id = getattr(config, "repo_id", None) or "model"
    callback = LiveScoringCallback(args, repo_id.split("/")[-1])
    if os.environ.get("RANK", "0") == "0":  # the main process scores: fail now on a bad target, not after an epoch
        callback.build()
    return [callback]
