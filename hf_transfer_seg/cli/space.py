"""``hf-transfer-seg space deploy|run``: the Gradio segmentation demo as a Hugging Face Space."""

from __future__ import annotations

import argparse

from hf_transfer_seg.cli import argtypes as T


def _common(parser: argparse.ArgumentParser, *, target_required: bool) -> None:
    parser.add_argument("--model-repo", required=True, type=T.repo_id, help="encoder repo whose revisions were pretrained and scored")
    parser.add_argument(
        "--target",
        required=target_required,
        default=None,
        help="robustness target key that ranks the revisions (as passed to `score --target`)"
        + ("" if target_required else "; default: the only one scored"),
    )
    parser.add_argument("--seg-repo", default=None, type=T.repo_id, help="segmentation repo to serve (default: the one fine-tuned from the best revision)")
    parser.add_argument("--seg-revision", default=None, help="branch, tag or sha of --seg-repo (default: main, pinned to its sha)")
    parser.add_argument("--max-side", type=T.bounded_int(16, 65536), default=None, help="downscale larger images to this many pixels on the longest side (1024)")
    parser.add_argument("--max-megapixels", type=T.finite_float(0.0, 10_000.0, lo_open=True), default=None, help="refuse images larger than this (40)")
    parser.add_argument("--results-repo", default=None, type=T.repo_id, help="dataset repo written by `rank`: its model ranking is shown in the Leaderboard tab")


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "space",
        help="the Gradio segmentation demo: deploy it as a Space, or run it locally",
        description="A Gradio app that segments images with the U-Net fine-tuned from the best-scored revision.",
    )
    actions = parser.add_subparsers(dest="space_action", metavar="ACTION")

    deploy = actions.add_parser(
        "deploy",
        help="create or update a Space repo with the app, its configuration and the project source",
        description="Create OWNER/NAME (repo type space) if needed and commit app.py, README.md, requirements.txt, "
        "examples, space_config.json and a copy of the hf_transfer_seg source. Works against HF_ENDPOINT "
        "(the Hub or a local hub).",
    )
    deploy.add_argument("--space-id", required=True, type=T.repo_id, help="OWNER/NAME of the Space")
    _common(deploy, target_required=True)
    deploy.add_argument("--private", action="store_true", help="create the Space private")
    deploy.add_argument("--no-variables", action="store_true", help="do not mirror the configuration into Space variables")
    deploy.set_defaults(func=_deploy)

    run = actions.add_parser(
        "run",
        help="run the app locally and print its URL",
        description="Run the Space's app in this process (HF_ENDPOINT / HF_TOKEN as for every command) until Ctrl-C.",
    )
    _common(run, target_required=False)
    run.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    run.add_argument("--port", type=T.port, default=7860, help="port (default: 7860; 0 picks a free one)")
    run.set_defaults(func=_run)
    parser.set_defaults(func=lambda args: parser.print_help() or 2)


def _config(args: argparse.Namespace):
    from hf_transfer_seg.space.config import SpaceConfig

    return SpaceConfig.load(
        None,
        env={},  # flags only: what the user typed is what is deployed
        model_repo=args.model_repo,
        target=args.target,
        seg_repo=args.seg_repo,
        seg_revision=args.seg_revision,
        max_side=args.max_side,
        max_megapixels=args.max_megapixels,
        results_repo=args.results_repo,
    )


def _deploy(args: argparse.Namespace) -> int:
    from hf_transfer_seg.space.deploy import deploy

    result = deploy(args.space_id, _config(args), private=args.private, set_variables=not args.no_variables)
    print(f"Space {result.space_id} updated at commit {result.sha} ({len(result.files)} files)")
    print(f"Space variables: {result.variables}")
    print(result.url)
    return 0


def _run(args: argparse.Namespace) -> int:
    import socket

    from hf_transfer_seg.errors import ConfigError
    from hf_transfer_seg.space.deploy import space_dir
    from hf_transfer_seg.space.server import create_demo, launch_kwargs

    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port must be between 0 and 65535, got {args.port}")
    config = _config(args)
    port = args.port
    if port == 0:
        with socket.socket() as s:
            s.bind((args.host, 0))
            port = s.getsockname()[1]
    demo = create_demo(config, space_dir())
    try:
        demo.launch(**launch_kwargs(server_name=args.host, server_port=port, prevent_thread_lock=True, quiet=True))
    except OSError as exc:
        raise ConfigError(f"cannot listen on {args.host}:{port} ({exc}); choose another --port, or --port 0 for a free one") from exc
    print(f"Segmentation demo running on {demo.local_url}  (Ctrl-C to stop)", flush=True)
    try:
        demo.block_thread()
    except KeyboardInterrupt:
        pass
    finally:
        demo.close()
    return 0
