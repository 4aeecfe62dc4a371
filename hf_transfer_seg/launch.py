"""Start the project's multi-process commands with Accelerate's launcher, without racing for a port.

``hf-transfer-seg launch [accelerate launch options] -- COMMAND ...`` runs ``accelerate launch ... -m hf_transfer_seg
COMMAND ...`` in this process (Accelerate's own parser and launcher, torchrun underneath) and adds what they lack:

* **One machine: the launcher owns its port.** Accelerate turns ``--main_process_port 0`` into a port number it
  finds free, releases it and hands it to torchrun, whose store binds it later; a busy host takes the port in
  between (``EADDRINUSE``; the demo's old ``_free_port()`` did the same). Here torchrun runs ``--standalone``
  instead: its agent binds port 0 itself and passes the store it owns to the workers, so there is nothing to race
  for. An explicit ``--main_process_port`` is honoured, and run standalone again when that port is taken.
* **Several machines: checked before anything starts.** The machine rank must lie inside the machine count; the
  main machine must own ``main_process_ip`` and have the port free; the others wait (``--wait-main`` seconds) for
  the main machine's port to answer. Each problem is one line naming the address, port and fix, exit 2.
* **FSDP**: a pretrain run asking for FSDP is checked before start-up (``pretrain.sharding.check_request``, passed in by ``cli/launch.py``).
* A rendezvous that still fails (port taken between the check and the bind, main machine gone) is one line naming
  the address and port, exit 2; a launched command that fails keeps its own message and exit code (its processes
  printed it), without torchrun's failure report.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import socket
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable
from pathlib import Path

from hf_transfer_seg.errors import ConfigError, HfTransferSegError

log = logging.getLogger(__name__)
WAIT_MAIN_SECONDS = 300.0  # a machine other than the main one waits this long for the main machine's port (cli.launch.WAIT_MAIN)


class RendezvousError(HfTransferSegError):
    """The processes could not meet at the main process's address and port."""


@dataclass
class Topology:
    """What the launch options and the config file say together (command line first)."""

    distributed_type: str
    num_processes: int
    num_machines: int
    machine_rank: int
    main_process_ip: str | None
    main_process_port: int | None  # None: not given anywhere
    port_on_command_line: bool
    fsdp: dict  # the fsdp_* settings: the config file's fsdp_config, then the command line's


def _read_config(path: str | None) -> dict:
    if not path:
        return {}
    from hf_transfer_seg.safe_yaml import load as load_yaml

    try:
        data = load_yaml(Path(path).read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read the Accelerate config {path}: {exc.strerror or exc}; pass an existing --config_file") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} is not an Accelerate config (a YAML mapping); create one with `accelerate config`")
    return data


def topology(args: argparse.Namespace, given: list[str] = ()) -> Topology:
    """The run's shape from Accelerate's parsed launch options (``given``: as typed) and their config file."""
    config = _read_config(args.config_file)
    fsdp = dict(config.get("fsdp_config") or {})
    fsdp.update({k: v for k, v in vars(args).items() if k.startswith("fsdp_") and f"--{k}" in given})

    def pick(name: str, default=None):
        value = getattr(args, name, None)
        return value if value is not None else config.get(name, default)

    kind = str(config.get("distributed_type", "NO"))
    if getattr(args, "use_fsdp", False):
        kind = "FSDP"
    elif getattr(args, "multi_gpu", False) and kind == "NO":
        kind = "MULTI_GPU"
    try:
        num_machines = int(pick("num_machines", 1))
        machine_rank = int(pick("machine_rank", 0))
        num_processes = int(pick("num_processes", 1))
        port = pick("main_process_port")
        port = int(port) if port is not None else None
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"a launch option is not a whole number ({exc}); fix it in {args.config_file or 'the command line'}") from None
    return Topology(kind, num_processes, num_machines, machine_rank, pick("main_process_ip"), port,
                    getattr(args, "main_process_port", None) is not None, fsdp)


def _is_local_address(ip: str) -> bool:
    try:
        infos = socket.getaddrinfo(ip, None, type=socket.SOCK_STREAM)
    except socket.gaierror:
        return False
    for family, _, _, _, address in infos:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((address[0], 0))
                return True
            except OSError:
                continue
    return False


def _port_taken(ip: str, port: int) -> bool:
    """Whether another process listens on ``port`` (on any address: torchrun's store binds all of them)."""
    for host in {"0.0.0.0", ip}:
        with socket.socket() as sock:
            try:
                sock.bind((host, port))
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    return True
    return False


def _reachable(ip: str, port: int, wait: float) -> bool:
    deadline = time.monotonic() + wait
    while True:
        try:
            with socket.create_connection((ip, port), timeout=min(5.0, max(0.5, wait))):
                return True
        except OSError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.5)


def check_topology(topo: Topology, *, wait_main: float = WAIT_MAIN_SECONDS) -> None:
    """Refuse, in one line, a launch whose processes could never meet (before anything starts)."""
    if topo.num_machines < 1 or topo.num_processes < 1:
        raise ConfigError(f"num_machines ({topo.num_machines}) and num_processes ({topo.num_processes}) must be at least 1")
    if not 0 <= topo.machine_rank < topo.num_machines:
        raise ConfigError(
            f"machine rank {topo.machine_rank} is outside the {topo.num_machines} machine(s) of this launch (ranks 0 to "
            f"{topo.num_machines - 1}); pass --machine_rank 0 on the main machine and 1..{topo.num_machines - 1} on the others"
        )
    if topo.num_processes % topo.num_machines:
        raise ConfigError(
            f"num_processes {topo.num_processes} is the total over all machines and must be a multiple of num_machines "
            f"{topo.num_machines}; pass --num_processes machines x processes per machine"
        )
    if topo.num_machines == 1:
        return
    ip, port = topo.main_process_ip, topo.main_process_port
    if not ip or port in (None, 0):
        raise ConfigError(
            "a launch over several machines needs the main machine's address and a fixed port: pass --main_process_ip "
            "and --main_process_port (the same on every machine)"
        )
    where = f"{ip}:{port}"
    if topo.machine_rank == 0:
        if not _is_local_address(ip):
            raise ConfigError(
                f"main_process_ip {ip} is not an address of this machine, and machine rank 0 runs the main process there; "
                "pass --main_process_ip with this machine's address (reachable from the others), or --machine_rank of this machine"
            )
        if _port_taken(ip, port):
            raise ConfigError(f"port {port} on {ip} is taken by another process; pass a free --main_process_port on every machine")
    elif not _reachable(ip, port, wait_main):
        raise ConfigError(
            f"the main process at {where} cannot be reached (waited {wait_main:g}s); start machine rank 0 first, check "
            "--main_process_ip and that the port is open between the machines, or raise --wait-main"
        )


def _rendezvous_problem(exc: BaseException) -> str | None:
    """'in use' / 'unreachable' when ``exc`` (or its cause) is a failed rendezvous, else None."""
    seen = exc
    while seen is not None:
        text = f"{type(seen).__name__}: {seen}"
        if "EADDRINUSE" in text or "address already in use" in text.lower() or "another process is utilizing" in text:
            return "in use"
        if type(seen).__name__ in ("DistNetworkError", "DistStoreError", "RendezvousTimeoutError", "RendezvousConnectionError"):
            return "unreachable"
        seen = seen.__cause__ or seen.__context__
    return None


_PEER_LOST = ("Connection reset by peer", "Connection closed by peer", "Broken pipe", "Socket Timeout", "NCCL communicator was aborted")


def peer_lost(exc: BaseException) -> str | None:
    """What went wrong, when ``exc`` is a collective failing because another process (or its machine) went away."""
    import re

    text = str(exc)
    if type(exc).__name__ == "DistNetworkError":
        return text.splitlines()[0][:160] if text else "DistNetworkError"
    if not isinstance(exc, RuntimeError):
        return None
    found = re.search(r"(\w+ error \[[^\]]*\]:\d+: )?(" + "|".join(map(re.escape, _PEER_LOST)) + ")", text)
    return found.group(0) if found else None


def _run_accelerate(args: argparse.Namespace) -> int:
    from accelerate.commands.launch import launch_command
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    try:
        launch_command(args)
    except ChildFailedError as exc:
        codes = sorted({f.exitcode for f in exc.failures.values()})
        return next((c for c in codes if c > 0), 1)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1
    return 0


def launch(launch_args: list[str], command: list[str], *, wait_main: float = WAIT_MAIN_SECONDS,
           check_command: Callable[[list[str], Any], None] | None = None) -> int:
    """``accelerate launch LAUNCH_ARGS -m hf_transfer_seg COMMAND`` in this process; the exit code of the command.
    ``check_command(command, topology)`` runs before anything starts (the CLI passes the stage's own checks, e.g.
    pretraining's FSDP request: this shared layer imports no stage)."""
    from accelerate.commands.launch import launch_command_parser

    if not command:
        raise ConfigError("nothing to launch: put the hf-transfer-seg command after `--`, e.g. `-- pretrain --epochs 1`")
    parser = launch_command_parser()
    try:
        args = parser.parse_args([*launch_args, "-m", "hf_transfer_seg", *command])
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2
    topo = topology(args, launch_args)
    check_topology(topo, wait_main=wait_main)
    if check_command is not None:
        check_command(command, topo)
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)  # children print their own errors
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    single = topo.num_machines == 1
    if single and not topo.port_on_command_line:
        args.standalone = True  # torchrun's agent binds port 0 itself and owns it: nothing to race for
        args.main_process_port = None
    for attempt in (1, 2):
        try:
            return _run_accelerate(args)
        except Exception as exc:  # noqa: BLE001 - a failed rendezvous becomes one line; anything else propagates
            problem = _rendezvous_problem(exc)
            if problem is None:
                raise
            port = topo.main_process_port if not getattr(args, "standalone", False) else "chosen by torchrun"
            if single and problem == "in use" and attempt == 1:
                log.warning("port %s was taken before torchrun could bind it; launching again on a port torchrun owns", port)
                args.standalone, args.main_process_port = True, None
                continue
            where = f"{topo.main_process_ip or '127.0.0.1'}:{port}"
            if problem == "in use":
                raise RendezvousError(
                    f"rendezvous failed: port {port} at {where} is taken by another process; pass a free "
                    "--main_process_port (the same on every machine)"
                ) from None
            raise RendezvousError(
                f"rendezvous failed at {where} ({type(exc).__name__}); check that machine rank 0 runs and that port "
                f"{port} is open between the machines, then start every machine again (--resume continues the run)"
            ) from None
    return 1  # not reached


def command(launch_args: list[str], hf_args: list[str]) -> list[str]:
    """The argv that runs ``hf-transfer-seg launch`` in a fresh interpreter (the demo, tests, benchmarks)."""
    return [sys.executable, "-m", "hf_transfer_seg", "launch", *launch_args, "--", *hf_args]
