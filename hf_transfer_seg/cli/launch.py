"""``hf-transfer-seg launch [accelerate launch options] -- COMMAND ...`` (see :mod:`hf_transfer_seg.launch`)."""

from __future__ import annotations

import argparse

from hf_transfer_seg.errors import ConfigError

DESCRIPTION = """usage: hf-transfer-seg launch [accelerate launch options] [--wait-main SECONDS] -- COMMAND [ARGS]

`accelerate launch ... -m hf_transfer_seg COMMAND ARGS`, run in this process. On one machine torchrun binds the
rendezvous port itself (standalone), so no other process can take it first; on several machines the machine rank,
main address and port are checked before anything starts, and the machines other than rank 0 wait up to
--wait-main seconds (default 300) for the main process. A failed rendezvous is one line naming the port and the fix."""
WAIT_MAIN = 300.0  # hf_transfer_seg.launch.WAIT_MAIN_SECONDS, without importing torch to build the parser


def add_parser(subparsers) -> None:
    # every option belongs to `accelerate launch` (or is --wait-main, read in run_launch): none is parsed here
    p = subparsers.add_parser(
        "launch", add_help=False, prefix_chars="+",
        help="run an hf-transfer-seg command on several processes/machines (accelerate launch, without port races)",
        description=DESCRIPTION,
    )
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(func=run_launch)


def run_launch(args: argparse.Namespace) -> int:
    rest = list(args.rest)
    if "--" not in rest:
        if not rest or {"-h", "--help"} & set(rest):
            print(DESCRIPTION)
            return 0
        raise ConfigError("put `--` between the accelerate launch options and the command, e.g. `launch --num_processes 2 -- pretrain`")
    cut = rest.index("--")
    options, command = rest[:cut], rest[cut + 1:]
    wait = WAIT_MAIN
    if "--wait-main" in options:
        at = options.index("--wait-main")
        try:
            wait = float(options[at + 1])
        except (IndexError, ValueError):
            raise ConfigError("--wait-main needs a number of seconds, e.g. --wait-main 60") from None
        del options[at:at + 2]
    from hf_transfer_seg.launch import launch

    return launch(options, command, wait_main=wait, check_command=check_stage)


def check_stage(command: list[str], topology) -> None:
    """The launched stage's own start-up checks: a pretraining run asking for FSDP is checked before any process starts."""
    if command and command[0] == "pretrain" and topology.distributed_type == "FSDP":
        from hf_transfer_seg.pretrain.sharding import check_request

        check_request(command[1:], topology.fsdp)
