"""``hf-transfer-seg demo``: the whole loop on embedded defaults, offline."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="run the whole loop (pretrain -> score -> fine-tune -> report -> Space) on embedded defaults",
        description="Keeps everything in WORKDIR (default $HF_TRANSFER_SEG_HOME/demo, else "
        "$XDG_CACHE_HOME/hf-transfer-seg/demo, else ~/.cache/hf-transfer-seg/demo: outside the source tree; the path is "
        "printed first). Starts a local hub in WORKDIR/hub (or uses HF_ENDPOINT/HF_TOKEN when set), pretrains a small "
        "encoder on scikit-learn's bundled real digits with 2 processes (top-1 rises from chance), scores every "
        "revision, fine-tunes the best-scored and the last revision with two seeds each, writes the report (its "
        "headline verdict ends the summary), deploys the Space and launches it. Re-running reuses finished work.",
    )
    p.add_argument("--workdir", type=Path, default=None,
                   help="where everything is kept (default: $HF_TRANSFER_SEG_HOME/demo or ~/.cache/hf-transfer-seg/demo)")
    p.add_argument("--no-launch", action="store_true", help="do not launch the Space at the end")
    p.add_argument("--small", action="store_true", help="tiny settings (about two minutes; used by the tests)")
    p.add_argument("--namespace", default="demo", help="owner of the repos the demo creates")
    p.add_argument("--num-processes", type=int, default=2, help="pretraining processes (accelerate launch)")
    p.add_argument("--score-target", default=None, help="target of the robustness score (default mni152-tissue, the images the U-Net is fine-tuned on)")
    p.add_argument("--port", type=int, default=7860, help="port of the launched Space")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hf_transfer_seg.demo import DemoSettings, run_demo

    common = dict(
        launch=not args.no_launch, namespace=args.namespace,
        num_processes=args.num_processes, port=args.port,
    )
    if args.workdir is not None:
        common["workdir"] = args.workdir
    if args.score_target:
        common["score_target"] = args.score_target
    settings = DemoSettings.small(**common) if args.small else DemoSettings(**common)
    run_demo(settings)
    return 0
