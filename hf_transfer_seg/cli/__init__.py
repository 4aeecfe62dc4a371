"""The ``hf-transfer-seg`` command: one entry point, one module per subcommand.

Each subcommand module defines ``add_parser(subparsers)`` which registers its parser and sets
``func`` to a callable taking the parsed namespace and returning an exit code. Modules are
imported lazily, so ``hf-transfer-seg hub serve`` does not pay for importing torch.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import traceback

from hf_transfer_seg import __version__
from hf_transfer_seg.errors import HfTransferSegError

# subcommand name -> module under hf_transfer_seg.cli that registers it
SUBCOMMANDS = {
    "hub": "hub",
    "pretrain": "pretrain",
    "push-pending": "pretrain",
    "score": "score",
    "rank": "rank",
    "finetune": "finetune",
    "sweep": "finetune",
    "predict": "predict",
    "report": "report",
    "space": "space",
    "demo": "demo",
    "launch": "launch",
}


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    from hf_transfer_seg.cli.argtypes import Parser

    parser = Parser(
        prog="hf-transfer-seg",
        description="Pretrain -> score -> fine-tune -> demo, with every checkpoint a Hub revision.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    _add_license(parser, None)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    # Only import the module the user asked for (plus all of them for --help).
    wanted = next((a for a in (argv or []) if not a.startswith("-")), None)
    modules = [SUBCOMMANDS[wanted]] if wanted in SUBCOMMANDS else sorted(set(SUBCOMMANDS.values()))
    for name in dict.fromkeys(modules):
        try:
            module = importlib.import_module(f"hf_transfer_seg.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"hf_transfer_seg.cli.{name}":
                raise
            continue  # subcommand not built yet
        module.add_parser(sub)
    for command in sub.choices.values():  # `--license` is accepted after the subcommand too (`score ... --license mit`)
        if "-" in command.prefix_chars:  # not `launch`: its options all belong to accelerate (it passes them through)
            _add_license(command, argparse.SUPPRESS)
    return parser


def _add_license(parser: argparse.ArgumentParser, default) -> None:
    """``--license ID`` on ``parser`` (the top level: default None; a subcommand: SUPPRESS, so it only overrides
    the top-level value when given), checked while parsing (``argtypes.license_id``)."""
    from hf_transfer_seg.cli.argtypes import license_id

    if any("--license" in action.option_strings for action in parser._actions):
        return
    parser.add_argument("--license", metavar="ID", type=license_id, default=default,
                        help="license of every repo this command pushes (a Hub identifier such as apache-2.0, or "
                        "other:NAME); also HF_TRANSFER_SEG_LICENSE; default: stated in each card (hf_transfer_seg.cards.license)")


# (command, dest) -> argparse type, for flags of modules that another helper owns (report.py: its --output)
_PATH_FLAGS = {("report", "output"): "output_dir"}


def _check_paths(args: argparse.Namespace) -> str | None:
    """The one-line error of a path flag checked after parsing (see ``_PATH_FLAGS``), None when all are fine."""
    from hf_transfer_seg.cli import argtypes

    for (command, dest), check in _PATH_FLAGS.items():
        value = getattr(args, dest, None)
        if getattr(args, "command", None) != command or value is None:
            continue
        try:
            getattr(argtypes, check)(value)
        except argparse.ArgumentTypeError as exc:
            flag = "--" + dest.replace("_", "-")
            return f"error: argument {flag}: {exc} (see `hf-transfer-seg {command} --help`)"
    return None


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    try:  # a bad flag value: one line "error: argument --flag: ..." (argtypes.Parser), exit 2, before any work
        args = parser.parse_args(argv)
    except SystemExit as exc:  # also --help / --version (0): a code, so in-process callers get one too
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    if getattr(args, "license", None):  # checked while parsing; the environment carries it to every card builder,
        from hf_transfer_seg.cards.license import ENV  # also in processes this one starts

        os.environ[ENV] = args.license
    from hf_transfer_seg.cli.argtypes import check_environment

    problem = _check_paths(args) or check_environment()  # every source of a value is checked before any work
    if problem:
        print(problem, file=sys.stderr)
        return 2
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from hf_transfer_seg.logs import quiet_libraries

    quiet_libraries()
    from hf_transfer_seg._lazy import lean_imports

    lean_imports()  # MONAI and evaluate without the optional libraries no command uses (seconds per process)
    from hf_transfer_seg.redact import install_log_redaction

    install_log_redaction()
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except HfTransferSegError as exc:
        if args.verbose:
            traceback.print_exc()
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - a failed Hub request ends every command the same way
        from hf_transfer_seg.cli.failures import explain

        message = explain(exc)
        if message is None:
            raise
        if args.verbose:
            traceback.print_exc()
        print(f"error: {message} (Run with -v for the traceback.)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
