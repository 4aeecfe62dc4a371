"""``hf-transfer-seg finetune`` and ``hf-transfer-seg sweep``: U-Nets on checkpoint revisions."""

from __future__ import annotations

import argparse

from hf_transfer_seg.cli import argtypes as T


def _recipe_args(p: argparse.ArgumentParser) -> None:
    t = p.add_argument_group("target")
    t.add_argument(
        "--target", default="mni152-tissue", type=T.target_spec,
        help="segmentation target: 'mni152-tissue' (3 classes) or 'mni152-wm' (binary), real MNI152 slices shipped with "
        "nilearn (offline); a folder with images/ and masks/ (or DRIVE's images/ + 1st_manual/ [+ mask/ field of view]); "
        "an nnU-Net raw / MSD folder (dataset.json, imagesTr/, labelsTr/); a NIfTI volume or a DICOM series folder "
        "with --labels; or a Hub dataset id with image and mask columns (Image or Nifti)",
    )
    t.add_argument("--target-key", default=None, help="key under which results are recorded (default: derived from --target, as the scorer does)")
    t.add_argument("--num-classes", type=T.bounded_int(2, T.MAX_CLASSES), default=None, help="number of classes incl. background (default: inferred; 0/255 masks are binary)")
    t.add_argument("--mask-dir", default=None, help="mask folder inside a folder target (default: masks/, labels/, 1st_manual/ ...)")
    t.add_argument("--fov-dir", default=None, help="field-of-view folder (pixels outside are not scored; default: mask/ when labels are elsewhere)")
    t.add_argument("--split", default="train", help="split of a Hub dataset target")
    t.add_argument("--image-column", default=None, help="image column of a Hub dataset target")
    t.add_argument("--mask-column", default=None, help="mask column of a Hub dataset target")
    t.add_argument("--resize-longest", type=T.bounded_int(16, 65536), default=None, help="downscale images so the longer side is at most this (default: keep size)")
    t.add_argument("--limit", type=T.bounded_int(1, T.MAX_COUNT), default=None, help="use at most this many images (volumes: slices, spread over the cases)")
    add_volume_args(t, labelled=True)
    t.add_argument("--foreground-values", default=None, type=_int_list,
                   help="raw mask values of the classes of interest, comma separated: the first becomes class 1, the next "
                   "class 2...; every other value is background (e.g. 0 for ISBI-2012, whose membranes are stored as 0 "
                   "and cell interiors as 255). Default: the masks' own class indices (0/255 masks: 255 is foreground)")
    t.add_argument("--class-names", default=None, type=_name_list,
                   help="comma-separated class names, background first (e.g. background,membrane); shown in cards, "
                   "metrics and the Space's legend")
    t.add_argument("--val-fraction", type=T.finite_float(0.0, 1.0, lo_open=True, hi_open=True), default=0.2, help="fraction of images held out for validation")
    t.add_argument("--split-seed", type=T.bounded_int(0, T.MAX_SEED), default=0, help="seed of the train/validation split (kept fixed across seeds and revisions)")
    r = p.add_argument_group("recipe (paper defaults)")
    r.add_argument("--freeze-encoder", action="store_true", help="train the decoder only (encoder weights and BatchNorm statistics fixed)")
    r.add_argument("--frozen-batchnorm-train", action="store_true",
                   help="with --freeze-encoder, leave the encoder's BatchNorm in train mode (reproduces the paper's runs)")
    r.add_argument("--epochs", type=T.bounded_int(1, 100_000), default=150)
    r.add_argument("--batch-size", type=T.bounded_int(1, 65536), default=24)
    r.add_argument("--lr", type=T.finite_float(0.0, 10.0, lo_open=True), default=0.05, help="SGD learning rate (poly(0.9) decay per step)")
    r.add_argument("--momentum", type=T.finite_float(0.0, 1.0, hi_open=True), default=0.9)
    r.add_argument("--weight-decay", type=T.finite_float(0.0, 10.0), default=1e-4)
    r.add_argument("--loss", choices=("soft-dice", "soft-dice+ce"), default="soft-dice", help="soft Dice over the batch, background included")
    r.add_argument("--image-size", type=T.bounded_int(32, T.MAX_IMAGE_SIDE), default=224, help="training crop and evaluation window (multiple of 32)")
    r.add_argument("--crops-per-image", type=T.bounded_int(1, 100_000), default=None, help="random crops per image per epoch (default: image area / crop area)")
    r.add_argument("--no-augment", action="store_true", help="no random flips / 90-degree rotations")
    r.add_argument("--eval-every", type=T.bounded_int(1, 100_000), default=10, help="validate every N epochs (always after the first and the last)")
    r.add_argument("--num-workers", type=T.bounded_int(0, T.MAX_WORKERS), default=0, help="DataLoader workers")
    r.add_argument("--mixed-precision", choices=("no", "fp16", "bf16"), default="no")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in str(text).split(",") if v.strip() != "")
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma list of integer mask values (e.g. 0 or 1,2)") from None
    if not values:
        raise argparse.ArgumentTypeError("no values given; list the raw mask values of the classes of interest (e.g. 0)")
    return values


def _name_list(text: str) -> tuple[str, ...]:
    names = tuple(v.strip() for v in str(text).split(","))
    if len(names) < 2 or any(not n for n in names) or len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"{text!r}: give one distinct, non-empty name per class, background first (e.g. background,membrane)")
    return names


def add_volume_args(group, *, labelled: bool) -> None:
    """Options of volumetric and raw-valued targets (NIfTI, DICOM, nnU-Net folders, 16-bit images)."""
    group.add_argument("--slice-axis", default=None,
                       help="volumes are cut into 2-D slices along this axis: axial (default, from the affine / DICOM "
                       "orientation), coronal, sagittal, or an array axis 0/1/2")
    if labelled:
        group.add_argument("--labels", default=None, help="label volume (NIfTI, on the image's voxel grid) of a NIfTI or DICOM target")
    group.add_argument("--window", default=None, type=T.window_spec,
                       help="CT window instead of fitted percentiles: soft-tissue, lung, bone, bone-wide, brain or WIDTH,LEVEL in HU")
    group.add_argument("--intensity-range", default=None, type=T.float_pair("LO,HI"),
                       help="fixed LO,HI intensity range instead of the 0.5-99.5 percentiles of the training cases")


def _config(args: argparse.Namespace, **overrides):
    from hf_transfer_seg.finetune.config import FinetuneConfig

    return FinetuneConfig(
        target=args.target, target_key=args.target_key, num_classes=args.num_classes, mask_dir=args.mask_dir,
        fov_dir=args.fov_dir, split=args.split, image_column=args.image_column, mask_column=args.mask_column,
        resize_longest=args.resize_longest, limit=args.limit, slice_axis=args.slice_axis, labels=args.labels,
        window=args.window, intensity_range=args.intensity_range, val_fraction=args.val_fraction, split_seed=args.split_seed,
        freeze_encoder=args.freeze_encoder, frozen_batchnorm_train=args.frozen_batchnorm_train, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
        momentum=args.momentum, weight_decay=args.weight_decay, loss=args.loss, image_size=args.image_size,
        crops_per_image=args.crops_per_image, augment=not args.no_augment, eval_every=args.eval_every,
        num_workers=args.num_workers, mixed_precision=args.mixed_precision,
        foreground_values=args.foreground_values, class_names=args.class_names, **overrides,
    )


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "finetune",
        help="fine-tune a U-Net on one checkpoint revision and record its Dice",
        description=(
            "Build a U-Net (segmentation_models_pytorch) on the encoder of one checkpoint revision (downloaded by "
            "commit sha, safetensors only), train it with the paper's recipe, evaluate Dice/IoU/HD95 on a seeded "
            "validation split, write the Dice into that revision's card, and optionally push the segmentation "
            "model. Works under `accelerate launch -m hf_transfer_seg finetune ...`."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--encoder-repo", default=None, type=T.repo_id, help="model repo holding the checkpoint revisions")
    p.add_argument("--revision", default="main", help="checkpoint revision (branch epoch-NNNN, tag or sha)")
    p.add_argument("--encoder-folder", default=None, help="a local timm checkpoint folder instead of a Hub revision")
    p.add_argument("--seed", type=T.bounded_int(0, T.MAX_SEED), default=0, help="training seed (decoder init, crops, order)")
    p.add_argument("--push-to", default=None, type=T.repo_id, help="push the segmentation model (weights + card) to this model repo")
    p.add_argument("--push-revision", default=None, help="branch of --push-to (default: main)")
    p.add_argument("--no-card", action="store_true", help="do not write the Dice into the encoder revision's card")
    p.add_argument("--output-dir", default=None, type=T.output_dir,
                   help="save the model, metrics.json, the validation predictions with validation/summary.json (per-case "
                   "metrics and trivial baselines), and the state after each epoch (for --resume) here")
    p.add_argument("--resume", action="store_true", help="continue the interrupted run whose state is in --output-dir")
    _recipe_args(p)
    p.set_defaults(func=run_finetune)

    s = subparsers.add_parser(
        "sweep",
        help="fine-tune every checkpoint revision with several seeds; record mean and spread of Dice in each card",
        description=(
            "For every selected checkpoint revision and seed: fine-tune, record the Dice in the revision's card "
            "(mean and std over seeds). Seeds already recorded with the same recipe are skipped, so a stopped sweep "
            "resumes. Also records LogME and linear-probe Dice per revision and main's downstream summary."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    s.add_argument("--repo-id", required=True, type=T.repo_id, help="model repo whose epoch-NNNN branches are fine-tuned")
    s.add_argument("--revisions", default="all", type=T.revision_list, help="'all' or a comma list of branch names / epochs")
    s.add_argument("--seeds", default="3", help="number of seeds (3 -> 0,1,2) or a comma list")
    s.add_argument("--push-to", default=None, type=T.repo_id, help="push every segmentation model to this repo, branch <revision>-seed<seed>")
    s.add_argument("--redo", action="store_true", help="fine-tune again even where the card already has that seed")
    s.add_argument("--no-transferability", action="store_true", help="skip LogME / linear-probe Dice")
    s.add_argument("--transfer-pixels", type=T.bounded_int(1, 10**7), default=2000, help="sampled pixels per class for LogME / linear probe")
    s.add_argument("--no-summary", action="store_true", help="do not update main's downstream summary")
    _recipe_args(s)
    s.set_defaults(func=run_sweep)


def run_finetune(args: argparse.Namespace) -> int:
    from pathlib import Path

    from accelerate import PartialState

    from hf_transfer_seg.finetune import resume
    from hf_transfer_seg.finetune.loop import finetune
    from hf_transfer_seg.finetune.outputs import write_outputs
    from hf_transfer_seg.finetune.push import check_push_target, push_segmentation_model, record_downstream
    from hf_transfer_seg.metrics.baselines import baselines_line

    config = _config(args, encoder_repo=args.encoder_repo, revision=args.revision, encoder_folder=args.encoder_folder,
                     seed=args.seed, output_dir=args.output_dir, resume=args.resume)
    config.validate()
    if args.push_to:
        check_push_target(args.push_to)  # fail now, not after training; no empty repo is left behind
    result = finetune(config, progress=not args.no_progress)
    if not PartialState().is_main_process:
        return 0
    seg = push_segmentation_model(result, args.push_to, revision=args.push_revision) if args.push_to else None
    card_sha = None if args.no_card else record_downstream(result, seg_push=seg)
    summary = result.summary()
    summary.update(pushed=seg, encoder_card_commit=card_sha)
    if args.output_dir:
        write_outputs(args.output_dir, result, summary)
        resume.clear(args.output_dir)  # results written (and pushed): the per-epoch state has served
    m = result.metrics

    def f(value, digits=4):
        return "n/a" if value is None else f"{value:.{digits}f}"

    print(
        f"\n{result.target['key']}: Dice {f(m['dice_mean'])}  IoU {f(m['iou_mean'])}  HD95 {f(m['hd95_mean'], 2)} "
        f"{m.get('distance_unit') or m.get('hd95_unit', 'px')}  "
        f"({m['num_images']} validation images; {result.train_images_per_second:.1f} train images/s)"
    )
    print(f"  {baselines_line(m)}")
    for warning in m.get("warnings") or []:
        print(f"  warning: {warning}")
    if m.get("dice_volume_mean") is not None:
        print(f"  per-volume Dice {f(m['dice_volume_mean'])} over {m['num_volumes']} validation volumes")
    for name, row in m["per_class"].items():
        print(f"  {name:>20}: Dice {f(row['dice'])}  IoU {f(row['iou'])}")
    if args.output_dir:
        print(f"validation predictions and per-case metrics: {Path(args.output_dir) / 'validation' / 'summary.json'}")
    if seg:
        print(f"pushed {seg['repo']}@{seg['revision']} (commit {seg['sha']}); load it with "
              f"hf_transfer_seg.finetune.load_segmentation_model({seg['repo']!r}" + (f", revision={seg['revision']!r})" if seg["revision"] != "main" else ")"))
    return 0


def run_sweep(args: argparse.Namespace) -> int:
    from hf_transfer_seg.finetune.sweep import parse_seeds, run_sweep as sweep

    config = _config(args, encoder_repo=args.repo_id)
    out = sweep(
        args.repo_id, config, revisions=args.revisions, seeds=parse_seeds(args.seeds), push_to=args.push_to,
        skip_done=not args.redo, transfer=not args.no_transferability, transfer_pixels=args.transfer_pixels,
        progress=not args.no_progress,
    )
    if not out.get("is_main", True):
        return 0
    if not args.no_summary:
        from hf_transfer_seg.report.summary import update_main_summary

        out["summary"] = update_main_summary(args.repo_id, out["target"], frozen=config.freeze_encoder)
    print(f"\nDice on {out['key']} per revision (this run's seeds; skipped {len(out['skipped'])} already recorded):")
    for revision, dice in out["revisions"].items():
        values = ", ".join(f"seed {s}: {d:.4f}" for s, d in dice.items() if d is not None) or "all seeds already recorded"
        print(f"  {revision}: {values}")
    if out.get("metrics"):
        from hf_transfer_seg.metrics.baselines import baselines_line

        print(f"  {baselines_line(out['metrics'])}")
        for warning in dict.fromkeys((out["metrics"].get("warnings") or [])):
            if "does not beat" not in warning:  # per run; the floor above is the same for every run
                print(f"  warning: {warning}")
    summary = out.get("summary")
    if summary and summary.get("best_revision"):
        print(f"best Dice: {summary['best_revision']} ({summary['best_dice']:.4f})")
    if out.get("failed"):
        from hf_transfer_seg.errors import WeightsError

        raise WeightsError(
            f"{len(out['failed'])} revision(s) could not be fine-tuned and were skipped (the others are recorded): "
            + "; ".join(f"{name}: {why}" for name, why in out["failed"].items())
        )
    return 0
