"""``hf-transfer-seg rank``: rank any Hub encoders on your own images, into a results dataset repo."""

from __future__ import annotations

import argparse

from hf_transfer_seg.cards.schema import HEADLINE, MAX_VIEW_DRAWS, VIEW_DRAWS
from hf_transfer_seg.cli import argtypes as T


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "rank",
        help="rank Hub encoders (timm, transformers, your own revisions) on target images; write a results repo",
        description=(
            "Score every model given (owner/name or owner/name@revision; timm Hub repos and transformers vision "
            "backbones; safetensors only, pickle-only repos are skipped) on the same images, views and negatives: "
            "the whole robustness grid with bootstrap intervals and a paired tie analysis, RankMe and alpha-ReQ "
            "(label-free) from the same forward passes, LogME and linear-probe Dice when the target has masks. "
            "With --results-repo the rows go into that dataset repo's results.csv (created if missing; re-runs "
            "add or update rows) with a card, a plot and the ranking."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--models", nargs="+", required=True, type=T.model_spec, metavar="SPEC", help="Hub repo ids, optionally @revision")
    p.add_argument("--target", required=True, type=T.target_spec, help="target images: a folder, a Hub dataset id, mni152-tissue or skimage-retina")
    p.add_argument("--results-repo", default=None, type=T.repo_id, metavar="OWNER/NAME", help="dataset repo for results.csv and the card")
    p.add_argument("--num-images", type=T.bounded_int(4, T.MAX_COUNT), default=256, help="images drawn (with the seed) from the target")
    p.add_argument("--seed", type=T.bounded_int(0, T.MAX_SEED), default=0, help="one seed for image subset, views, negatives, bootstrap, split")
    p.add_argument("--write-cards", action="store_true", help="also record the scores in the cards of the models you can write")
    p.add_argument("--batch-size", type=T.bounded_int(1, 65536), default=32, help="images per forward pass (both views go together)")
    p.add_argument("--config", default=HEADLINE, help="headline configuration of the ranking")
    p.add_argument("--image-size", type=T.bounded_int(16, T.MAX_IMAGE_SIDE), default=None, help="score every model at this size (default: chosen from the target, its median shorter side rounded down to "
                   "a multiple of 32 within 64-224 px, never a model's pretraining size; the output says which)")
    p.add_argument("--view-draws", type=T.bounded_int(1, MAX_VIEW_DRAWS), default=VIEW_DRAWS,
                   help="independent draws of views and negatives per image: averaged, and resampled by the tie test")
    p.add_argument("--no-masks", action="store_true", help="leave out LogME and linear-probe Dice even when the target has masks")
    p.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default=None, help="forward precision (default: bf16 on GPU, fp32 on CPU)")
    p.add_argument("--device", default=None, type=T.device_spec, help="torch device (default: cuda if available)")
    p.add_argument("--split", default="train", help="split of a Hub dataset target")
    p.add_argument("--image-column", default=None, help="image column of a Hub dataset target")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hf_transfer_seg.cli.score import _quiet_libraries
    from hf_transfer_seg.scoring.card import ties_test
    from hf_transfer_seg.scoring.rank import run_rank
    from hf_transfer_seg.scoring.rank_results import outcome_rows, render, target_table, write_model_cards

    _quiet_libraries()
    if args.results_repo:
        from hf_transfer_seg.hub.results_repo import ensure_results_repo

        ensure_results_repo(args.results_repo)
    outcome = run_rank(
        args.models, args.target, num_images=args.num_images, seed=args.seed, batch_size=args.batch_size,
        headline=args.config, image_size=args.image_size, device=args.device, precision=args.precision,
        split=args.split, image_column=args.image_column, use_masks=not args.no_masks, progress=not args.no_progress,
        view_draws=args.view_draws,
    )
    rows = outcome_rows(outcome)
    table = rows
    if args.results_repo:
        from hf_transfer_seg.hub.results_repo import upsert_results

        try:
            table, sha = upsert_results(args.results_repo, rows, render=render(args.config), commit_message=f"rank {len(outcome.results)} models on {outcome.target}")
        except Exception as exc:  # nothing is lost: the rows stay on disk for the next attempt
            from pathlib import Path

            from hf_transfer_seg.errors import HubError
            from hf_transfer_seg.redact import redact

            saved = Path(f"rank-results-{outcome.plan.target_key.replace('/', '_').replace(':', '_')}.csv").resolve()
            rows.to_csv(saved, index=False)
            raise HubError(
                f"could not write the results to {args.results_repo} ({redact(exc)}); the {len(rows)} rows are saved in "
                f"{saved}: upload them with huggingface_hub or run the command again"
            ) from exc
    plan = outcome.plan
    print(f"\nRanking on {outcome.target} ({plan.num_images} images, {plan.image_size} px, seed {plan.seed}, {args.config}; "
          "lower is better)")
    print(f"Resolution {plan.image_size} px: {plan.size_source}.\nTies: {ties_test(plan)}.\n")
    print("\n".join(target_table(rows, outcome.target, args.config)[1]))
    if not outcome.label_aware and not args.no_masks:
        print("\nThe target has no masks: LogME and linear-probe Dice are left out.")
    if args.results_repo:
        print(f"\nresults: dataset {args.results_repo} @ {sha} ({len(table)} rows, {table['model'].nunique()} models)")
    if args.write_cards:
        for line in write_model_cards(outcome, args.results_repo):
            print(f"  card {line}")
    return 0
