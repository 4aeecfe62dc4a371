"""``hf-transfer-seg demo``: the whole loop on embedded defaults, offline."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hf_transfer_seg.cli import argtypes as T


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
    p.add_argument("--num-processes", type=T.bounded_int(1, 1024), default=2, help="pretraining processes (accelerate launch)")
    p.add_argument("--score-target", default=None, help="target of the robustness score (default mni152-tissue, the images the U-Net is fine-tuned on)")
    p.add_argument("--port", type=T.port, default=7860, help="port of the launched Space")
    p.add_argument("--finetune-steps", type=T.bounded_int(1, 1_000_000), default=None,
                   help="optimizer steps per U-Net, rounded to whole epochs (default: 8 epochs, 112 steps; the four "
                        "U-Nets are most of the demo's time)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hf_transfer_seg.demo import DemoSettings, run_demo

    common = dict(
        launch=not args.no_launch, namespace=args.namespace,
        num_processes=args.num_processes, port=args.port, finetune_steps=args.finetune_steps,
    )
    if args.workdir is not None:
        common["workdir"] = args.workdir
    if args.score_target:
        common["score_target"] = args.score_target
    settings = DemoSettings.small(**common) if args.small else DemoSettings(**common)
    try:
        run_demo(settings)
    except KeyboardInterrupt:
        print("\ninterrupted: run the same command again (same --workdir) to go on: finished stages are reused and an "
              "interrupted fine-tune continues after its last finished epoch", file=sys.stderr)
        return 130
    return 0
