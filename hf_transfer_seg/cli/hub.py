"""``hf-transfer-seg hub serve``: run the local Hub server in the foreground."""

from __future__ import annotations

import argparse
import os
import sys

from hf_transfer_seg.cli import argtypes as T

TOKEN_ENV = "HF_TRANSFER_SEG_HUB_TOKEN"


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "hub",
        help="local Hugging Face Hub server (offline / air-gapped use, tests)",
        description="A local server speaking the Hugging Face Hub HTTP API, backed by bare git repositories.",
    )
    actions = parser.add_subparsers(dest="hub_action", metavar="ACTION")
    serve = actions.add_parser(
        "serve",
        help="serve a folder of repositories until Ctrl-C / SIGTERM",
        description=(
            "Serve the repositories under --root. Prints the endpoint URL on one line; point the huggingface_hub "
            "client, timm and transformers at it with HF_ENDPOINT=<url> (e.g. "
            "`HF_ENDPOINT=$(...) hf download org/name --revision epoch-0005`)."
        ),
    )
    serve.add_argument("--root", required=True, type=T.root_dir, help="folder holding the repositories (created if missing)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    serve.add_argument("--port", type=int, default=0, help="port to listen on (default: a free port)")
    serve.add_argument(
        "--token",
        default=None,
        help=f"require 'Authorization: Bearer TOKEN' on every request (default: ${TOKEN_ENV} if set, else open). "
        f"Prefer ${TOKEN_ENV}: a --token value is visible to other users in ps. Clients send it from HF_TOKEN.",
    )
    serve.add_argument(
        "--lfs-uploads",
        action="store_true",
        help="answer files of 1 MiB or more with LFS uploads (raw bytes instead of base64: about 4x faster for "
        "large checkpoints). Clients must then set HF_HUB_DISABLE_XET=1: huggingface_hub sends every LFS file "
        "through Xet whenever hf_xet is installed, which this server does not speak.",
    )
    serve.add_argument("--access-log", action="store_true", help="log every request (also with -v)")
    serve.set_defaults(func=_serve)
    parser.set_defaults(func=lambda args: _usage(parser))


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _serve(args: argparse.Namespace) -> int:
    from hf_transfer_seg.errors import ConfigError
    from hf_transfer_seg.localhub.server import serve, warn_if_exposed

    if args.token is not None:
        print(
            f"warning: --token is visible to every user of this machine (ps, /proc/PID/cmdline); set it in the "
            f"environment instead: {TOKEN_ENV}=... hf-transfer-seg hub serve ...",
            file=sys.stderr,
        )
    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port must be between 0 and 65535, got {args.port}")
    token = args.token if args.token is not None else os.environ.get(TOKEN_ENV) or None
    warn_if_exposed(args.host, token)
    return serve(
        args.root,
        host=args.host,
        port=args.port,
        token=token,
        verbose=bool(getattr(args, "verbose", False) or args.access_log),
        lfs_uploads=args.lfs_uploads,
    )
