"""``hf-transfer-seg pretrain`` and ``hf-transfer-seg push-pending``.

Several processes: ``hf-transfer-seg launch --config_file accelerate_configs/<cfg>.yaml -- pretrain ...`` (no port
races, launch checks; :mod:`hf_transfer_seg.launch`) or ``accelerate launch --config_file ... -m hf_transfer_seg pretrain ...``.
"""

from __future__ import annotations

import argparse
import logging
import os

from hf_transfer_seg.cli import argtypes as T

log = logging.getLogger(__name__)


def _num(name: str):
    """The argparse type of a numeric option: its range from the one table of ranges (pretrain.config.BOUNDS),
    against which recipe-file values are checked too."""
    from hf_transfer_seg.pretrain.config import BOUNDS, FIELDS

    lo, hi, lo_open, hi_open = BOUNDS[name]
    if "int" in str(FIELDS[name].type) and "float" not in str(FIELDS[name].type):
        return T.bounded_int(int(lo) + lo_open, int(hi) - hi_open)
    return T.finite_float(lo, hi, lo_open=lo_open, hi_open=hi_open)


def _add_pretrain_options(p: argparse.ArgumentParser) -> None:
    S = argparse.SUPPRESS  # only flags given on the command line override the recipe file
    flag = argparse.BooleanOptionalAction
    p.add_argument("--config", dest="config_file", default=None, help="YAML recipe file holding any of these options")
    g = p.add_argument_group("model and recipe")
    g.add_argument("--encoder", default=S, help="timm architecture supporting features_only, randomly initialised (default resnet50)")
    g.add_argument("--recipe", choices=("simple", "advanced"), default=S, help="paper recipe (default simple)")
    g.add_argument("--drop-path", type=_num("drop_path"), default=S, help="stochastic depth (default 0.1 advanced, 0 simple)")
    g.add_argument("--normalize", choices=("none", "imagenet"), default=S,
                   help="input normalisation recorded in pretrained_cfg; 'none' = divide by 255 only, as the paper (default)")
    g = p.add_argument_group("data")
    g.add_argument("--dataset", default=S,
                   help="'synthetic' (default, generated offline), a folder train/<class>/* + val/<class>/*, a saved dataset, or a Hub dataset id")
    g.add_argument("--dataset-config", default=S, help="configuration name of a Hub dataset")
    g.add_argument("--train-split", default=S, help="train split of a Hub dataset (default train)")
    g.add_argument("--val-split", default=S, help="validation split (default: validation, val, valid or test)")
    g.add_argument("--image-column", default=S, help="image column (default: detected)")
    g.add_argument("--label-column", default=S, help="label column (default: detected)")
    g.add_argument("--streaming", action=flag, default=S, help="stream a Hub dataset (ImageNet scale)")
    g.add_argument("--num-classes", type=_num("num_classes"), default=S, help="classes (default: from the dataset; synthetic 10)")
    g.add_argument("--train-size", type=_num("train_size"), default=S, help="use at most this many training images (synthetic default 2560)")
    g.add_argument("--val-size", type=_num("val_size"), default=S, help="use at most this many validation images")
    g.add_argument("--image-size", type=_num("image_size"), default=S, help="training crop size (default 224)")
    g.add_argument("--num-workers", type=_num("num_workers"), default=S, help="loader workers per process (default: the cores available per process)")
    g.add_argument("--data-path", choices=("fast", "legacy", "dali"), default=S,
                   help="fast (default): libjpeg-turbo uint8 decode, normalise/erase on the device; legacy: PIL + float "
                   "tensors; dali: NVIDIA DALI decodes and crops (simple recipe, image folders; pip install -e '.[dali]')")
    g.add_argument("--decode", choices=("cpu", "gpu"), default=S,
                   help="where JPEGs are decoded (default cpu); gpu: nvJPEG batch decode on CUDA (with dali: its "
                   "'mixed' decoder), simple recipe")
    g = p.add_argument_group("schedule")
    g.add_argument("--epochs", type=_num("epochs"), default=S, help="training length in epochs (default 300)")
    g.add_argument("--checkpoint-epochs", default=S,
                   help="comma list of epochs to push as revisions, fractions allowed (default the paper's "
                        "1,2,5,10,20,30,40,50,75,100,125,150,175,200,250,300 up to --epochs, plus --epochs)")
    g.add_argument("--batch-size", type=_num("batch_size"), default=S, help="GLOBAL batch: processes x per-process batch x --grad-accum (default 256)")
    g.add_argument("--grad-accum", type=_num("grad_accum"), default=S, help="gradient accumulation steps (default 1)")
    g.add_argument("--lr", type=_num("lr"), default=S, help="peak LR (default 4e-3 x batch/4096)")
    g.add_argument("--min-lr", type=_num("min_lr"), default=S, help="final cosine LR (default 1e-6)")
    g.add_argument("--warmup-epochs", type=_num("warmup_epochs"), default=S,
                   help="linear warm-up (default: the paper's 20 of 300 epochs kept in proportion, epochs/15, at most 20)")
    g.add_argument("--weight-decay", type=_num("weight_decay"), default=S, help="AdamW weight decay (default 0.05)")
    g.add_argument("--clip-grad", type=_num("clip_grad"), default=S, help="clip the gradient norm (default off)")
    g.add_argument("--early-stop", default=S, metavar="RULE",
                   help="stop with an online selection rule (the report's rule objects): patience=N (live robustness score, "
                   "needs --score-target), top1:threshold=X, top1:patience=N, epoch:fixed_fraction=F")
    g = p.add_argument_group("hub and output")
    g.add_argument("--repo-id", default=S, type=T.repo_id, help="model repo receiving one branch per checkpoint (none: keep them local)")
    g.add_argument("--private", action=flag, default=S, help="create the repo private")
    g.add_argument("--output-dir", default=S, type=T.output_dir, help="checkpoints, pending pushes and training state (default pretrain-output)")
    g.add_argument("--push-attempts", type=_num("push_attempts"), default=S, help="push rounds before a checkpoint is left pending (default 3)")
    g.add_argument("--push-retry-delay", type=_num("push_retry_delay"), default=S, help="seconds before the second round, doubling (default 30)")
    g = p.add_argument_group("execution")
    g.add_argument("--resume", action=flag, default=S, help="continue the run saved in --output-dir")
    g.add_argument("--seed", type=_num("seed"), default=S, help="seed of data order, augmentation and init (default 0)")
    g.add_argument("--compile", action=flag, default=S, help="torch.compile the model")
    g.add_argument("--channels-last", action=flag, default=S, help="channels_last memory format (faster on GPUs)")
    g.add_argument("--log-every", type=_num("log_every"), default=S, help="steps between progress-bar loss updates (default 50)")


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "pretrain",
        help="pretrain a timm encoder; push every scheduled checkpoint as a Hub revision epoch-NNNN",
        description="Pretrain a timm encoder by classification (the paper's simple or advanced recipe) with "
        "Accelerate; every scheduled checkpoint becomes branch epoch-NNNN of --repo-id with its own model card. "
        "For several processes: accelerate launch --config_file accelerate_configs/<cfg>.yaml -m hf_transfer_seg pretrain ...",
    )
    _add_pretrain_options(p)
    from hf_transfer_seg.scoring import live_cli  # live scoring: its flags, and its callbacks in run_pretrain

    live_cli.add_arguments(p)
    p.set_defaults(func=run_pretrain)

    q = subparsers.add_parser(
        "push-pending",
        help="push checkpoints a run could not deliver (left in <output-dir>/pending/)",
        description="Push every checkpoint waiting in <output-dir>/pending/ to --repo-id, oldest first. A revision "
        "already confirmed is never pushed twice.",
    )
    q.add_argument("--output-dir", required=True, help="the pretraining --output-dir")
    q.add_argument("--repo-id", required=True, type=T.repo_id, help="model repo to push to")
    q.add_argument("--attempts", type=T.bounded_int(1, 100), default=3, help="push rounds per checkpoint (default 3)")
    q.add_argument("--retry-delay", type=T.finite_float(0.0, 86_400.0), default=10.0, help="seconds before the second round, doubling")
    q.set_defaults(func=run_push_pending)


def _overrides(args: argparse.Namespace) -> dict:
    from hf_transfer_seg.pretrain.config import FIELDS

    # --license (before or after the subcommand) is None when not given: then the recipe file's, else the variable's
    return {k: v for k, v in vars(args).items() if k in FIELDS and not (k == "license" and v is None)}


def run_pretrain(args: argparse.Namespace) -> int:
    from hf_transfer_seg.pretrain.config import build_config
    from hf_transfer_seg.pretrain.early_stop import make_early_stop
    from hf_transfer_seg.pretrain.loop import run_pretraining
    from hf_transfer_seg.scoring import live_cli

    from hf_transfer_seg.disk import check_writable_dir
    from hf_transfer_seg.errors import HubError

    from hf_transfer_seg.cards.license import ENV as LICENSE_ENV
    from hf_transfer_seg.pretrain.publisher import delivery_hint

    config = build_config(_overrides(args), args.config_file)  # every option checked, whatever its source
    check_writable_dir(config.output_dir)
    if config.license:  # the cards read the setting from the environment (so do processes started from here)
        os.environ[LICENSE_ENV] = config.license
    callbacks = live_cli.make_callbacks(args, config) + make_early_stop(config.early_stop, config, args)
    try:
        result = run_pretraining(config, callbacks)
    except RuntimeError as exc:
        from hf_transfer_seg.launch import RendezvousError, peer_lost
        from hf_transfer_seg.pretrain.state import latest_state

        what = peer_lost(exc)
        if what is None:
            raise
        saved = latest_state(config.output_dir)
        raise RendezvousError(  # one line, exit 2; the staged checkpoints and the saved state are kept
            f"lost the connection to another training process (it or its machine stopped: {what}). "
            f"{'The state of ' + saved.name + ' is saved; start' if saved else 'Start'} every machine again with --resume"
        ) from None
    if result.exit_code:
        return result.exit_code
    if result.causes or (config.repo_id and result.pending):  # a push or a card failed: the cause, and the command
        why = "; ".join(f"{r}: {c}" for r, c in result.causes.items()) or "their pushes did not finish"
        what = (f"{len(result.pending)} checkpoint(s) could not be pushed and are still pending: {', '.join(result.pending)}"
                if config.repo_id else f"{len(result.causes)} checkpoint(s) are staged without their full card: "
                f"{', '.join(result.causes)}")
        raise HubError(
            f"{what} ({why}). They are safe in {config.output_dir}/pending; "
            f"{delivery_hint(config.output_dir, config.repo_id, result.causes)}."
        )
    where = f"{config.repo_id} (branches {', '.join(result.revisions)})" if config.repo_id else f"{config.output_dir}/pending"
    if result.revisions:
        log.info("done: step %d, %d checkpoint(s) in %s", result.global_step, len(result.revisions), where)
    return 0


def run_push_pending(args: argparse.Namespace) -> int:
    from hf_transfer_seg.hub import check_write_access
    from hf_transfer_seg.cards.license import ENV as LICENSE_ENV
    from hf_transfer_seg.pretrain.publisher import (
        delivery_hint, list_pending, push_pending, relicense_pending, remove_leftover_staging, require_pushable,
    )

    require_pushable(args.output_dir)
    waiting = list_pending(args.output_dir)
    if waiting and getattr(args, "license", None):  # --license: the pending cards get it (e.g. after the Hub refused theirs)
        for name in relicense_pending(args.output_dir, os.environ.get(LICENSE_ENV) or args.license):
            print(f"{name}: license set to {args.license}")
    if not waiting:
        for branch in remove_leftover_staging(args.output_dir, args.repo_id):  # what an interrupted push left
            print(f"removed leftover staging branch {args.repo_id}@{branch}")
        print(f"nothing pending in {args.output_dir}")
        return 0
    check_write_access(args.repo_id)
    causes: dict[str, str] = {}
    pushed, failed = push_pending(args.output_dir, args.repo_id, attempts=args.attempts, delay=args.retry_delay, causes=causes)
    for name in pushed:
        print(f"pushed {args.repo_id}@{name}")
    for name in failed:
        print(f"still pending: {name} ({causes.get(name, 'not pushed')})")
    if failed:
        print(f"{len(failed)} checkpoint(s) still in {args.output_dir}/pending: {delivery_hint(args.output_dir, args.repo_id, causes)}")
    return 1 if failed else 0
