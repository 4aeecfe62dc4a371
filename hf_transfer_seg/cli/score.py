"""``hf-transfer-seg score``: rank checkpoint revisions with the label-free robustness score."""

from __future__ import annotations

import argparse

from hf_transfer_seg.cards.schema import HEADLINE, MAX_VIEW_DRAWS, VIEW_DRAWS
from hf_transfer_seg.cli import argtypes as T


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "score",
        help="score every checkpoint revision on target images and record it in the revision cards",
        description=(
            "Download each checkpoint revision (branches epoch-NNNN) by sha, compute the robustness score "
            "(two colour-jittered views, triplet hinge; lower is better) for the whole configuration grid, "
            "write it into that revision's model card, and update main's summary table and plot. "
            "Run under `accelerate launch -m hf_transfer_seg score ...` to spread revisions over processes."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--repo-id", required=True, type=T.repo_id, help="model repo whose epoch-NNNN branches are scored")
    p.add_argument(
        "--target",
        default="skimage-retina",
        type=T.target_spec,
        help="target images: a folder (recursive; mask folders skipped), a NIfTI volume, a DICOM series folder, an "
        "nnU-Net raw / MSD folder (imagesTr only; labels never read), a Hub dataset id with an Image or Nifti column, "
        "or 'skimage-retina' (the fundus photograph shipped with scikit-image, tiled; works offline)",
    )
    from hf_transfer_seg.cli.finetune import add_volume_args

    add_volume_args(p, labelled=False)
    p.add_argument("--revisions", default="all", type=T.revision_list, help="'all' or a comma list of branch names / epochs, e.g. epoch-0005,20")
    p.add_argument("--num-images", type=T.bounded_int(4, T.MAX_COUNT), default=256, help="images drawn (with the seed) from the target")
    p.add_argument("--seed", type=T.bounded_int(0, T.MAX_SEED), default=0, help="one seed for image subset, jitter of both views, negatives, bootstrap")
    p.add_argument("--batch-size", type=T.bounded_int(1, 65536), default=32, help="images per forward pass (both views go together)")
    p.add_argument("--config", default=HEADLINE, help="headline configuration {distance}_m{margin}_L{level}_{flat|pooled}")
    p.add_argument("--image-size", type=T.bounded_int(16, T.MAX_IMAGE_SIDE), default=None,
                   help="images are resized (shorter side) and centre-cropped to this (default: chosen from the target, "
                   "its median shorter side rounded down to a multiple of 32 within 64-224 px; the output says which)")
    p.add_argument("--view-draws", type=T.bounded_int(1, MAX_VIEW_DRAWS), default=VIEW_DRAWS,
                   help="independent draws of colour-jittered views and negatives per image: the score averages them "
                   "and the tie test resamples them, so a tie verdict does not hang on one --seed (cost: one pass each)")
    p.add_argument("--jitter", choices=("image", "batch"), default="image", help="'batch' reproduces the reference code's one draw per batch")
    p.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default=None, help="forward precision (default: bf16 on GPU, fp32 on CPU)")
    p.add_argument("--device", default=None, type=T.device_spec, help="torch device (default: the accelerate process device, else cuda if available)")
    p.add_argument("--split", default="train", help="split of a Hub dataset target")
    p.add_argument("--image-column", default=None, help="image column of a Hub dataset target (default: the first non-mask image column)")
    p.add_argument("--target-synthetic", action="store_true", help="declare that the target images are synthetic (cards say so)")
    p.add_argument("--prefer", choices=("lowest", "earliest-tied"), default="lowest",
                   help="which revision main's card calls best: the lowest score, or the earliest revision statistically "
                   "tied with it (paired test on per-image values; cheaper, cf. 'shorter pretraining often transfers better')")
    p.add_argument("--dry-run", action="store_true", help="score and print the table but write nothing to the Hub")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def _quiet_libraries() -> None:
    """One progress bar of ours instead of a request log line and a download bar per file."""
    import logging

    from hf_transfer_seg.logs import quiet_libraries

    if logging.getLogger("hf_transfer_seg").isEnabledFor(logging.DEBUG):
        return
    quiet_libraries("timm")
    from huggingface_hub.utils import disable_progress_bars

    disable_progress_bars()


def run(args: argparse.Namespace) -> int:
    from hf_transfer_seg.scoring.pipeline import ScoresNotRecorded, run_score

    _quiet_libraries()

    try:
        outcome = _score(args, run_score)
    except ScoresNotRecorded as exc:  # print what was computed, then the clean error (exit 2)
        if exc.outcome.is_main:
            print(exc.outcome.report())
        raise
    if outcome.is_main:
        print(outcome.report())
        if any(not r.ok for r in outcome.results):
            print("Failed revisions were recorded as failed in their cards.")
        if not any(r.ok for r in outcome.results):  # a run that scored nothing is not a success
            from hf_transfer_seg.errors import WeightsError

            raise WeightsError(
                f"no revision of {args.repo_id} could be scored ({len(outcome.results)} tried): "
                + ("; ".join(f"{r.revision}: {r.reason}" for r in outcome.results) or "none selected")
                + ". Fix the checkpoints named (or choose other --revisions) and run the command again."
            )
    return 0


def _score(args: argparse.Namespace, run_score):
    return run_score(
        args.repo_id,
        args.target,
        revisions=args.revisions,
        num_images=args.num_images,
        seed=args.seed,
        batch_size=args.batch_size,
        config=args.config,
        image_size=args.image_size,
        jitter=args.jitter,
        precision=args.precision,
        device=args.device,
        split=args.split,
        image_column=args.image_column,
        target_synthetic=args.target_synthetic,
        write=not args.dry_run,
        progress=not args.no_progress,
        prefer=args.prefer,
        target_options={"slice_axis": args.slice_axis, "window": args.window, "intensity_range": args.intensity_range},
        view_draws=args.view_draws,
    )
