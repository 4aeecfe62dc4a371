"""Run the local Hub: in the foreground (``hf-transfer-seg hub serve``) or in a background thread.

``with local_hub(root) as endpoint:`` starts uvicorn on a free loopback port (or the given one) in a
daemon thread, waits until it accepts connections, yields ``http://127.0.0.1:PORT`` and stops the
server when the block exits. Point the genuine client at it with ``HF_ENDPOINT=<endpoint>`` (set
before ``huggingface_hub`` is imported: it reads the variable at import time).
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

from hf_transfer_seg.errors import LocalHubError
from hf_transfer_seg.localhub import budget

log = logging.getLogger(__name__)


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP matters: asyncio only sets TCP_NODELAY on accepted sockets whose proto says
    # TCP, and without it every response waits ~40 ms for a delayed ACK (Nagle).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(LISTEN_BACKLOG)
    except OSError as exc:
        sock.close()
        raise LocalHubError(f"cannot listen on {host}:{port}: {exc.strerror or exc}. Choose another --port.") from exc
    return sock


def endpoint_url(sock: socket.socket) -> str:
    """The URL a client on this machine uses to reach ``sock`` (wildcard addresses become loopback)."""
    host, port = sock.getsockname()[:2]
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is not None and address.is_unspecified:
        host = "::1" if address.version == 6 else "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


LISTEN_BACKLOG = 1024  # connections the kernel queues for accept(): a connect flood must not drop a client's SYN

# connection guards (see :mod:`.protocol`); the keyword arguments of local_hub() and serve() override them
HEADER_TIMEOUT = 10.0  # seconds from opening (or a request's first byte) to a complete request head
KEEP_ALIVE_TIMEOUT = 30.0  # seconds an idle connection stays open between requests
MAX_CONNECTIONS_PER_CLIENT = 256  # open connections per client (all of loopback is one client: see .budget)
MAX_CONNECTIONS = budget.MAX_CONNECTIONS  # open connections in all (lowered to fit the open-file limit)
RESERVED_CONNECTIONS = 256  # slots waiting connections cannot take (at most a quarter of the total; see .budget)


def _make_server(root: str | Path, *, token: str | None, verbose: bool, http: str = "auto",
                 header_timeout: float | None = HEADER_TIMEOUT, keep_alive_timeout: float = KEEP_ALIVE_TIMEOUT,
                 max_connections_per_client: int | None = MAX_CONNECTIONS_PER_CLIENT,
                 max_connections: int | None = MAX_CONNECTIONS, reserved_connections: int = RESERVED_CONNECTIONS,
                 **app_kwargs):
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn, but SIGINT/SIGTERM end :func:`serve` with a normal return instead of re-raising."""

        @contextlib.contextmanager
        def capture_signals(self):
            if threading.current_thread() is not threading.main_thread():
                yield
                return

            def handle(sig, frame):
                if self.should_exit and sig == signal.SIGINT:
                    self.force_exit = True  # second Ctrl-C: stop waiting for open connections
                self.should_exit = True

            previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

    from hf_transfer_seg.localhub.app import create_app
    from hf_transfer_seg.localhub.limits import MAX_HEADER_BYTES
    from hf_transfer_seg.localhub.protocol import http_protocol

    root = Path(root)
    if root.exists() and not root.is_dir():
        raise LocalHubError(f"local hub root {root} exists and is not a folder")
    try:
        app = create_app(root, token=token, **app_kwargs)
    except (OSError, RuntimeError) as exc:
        raise LocalHubError(f"cannot use {root} as the local hub root: {exc}") from exc
    config = uvicorn.Config(
        app,
        log_config=None,
        log_level="info" if verbose else "warning",
        access_log=verbose,
        lifespan="off",
        # "auto": the httptools parser when it is installed (much less CPU per request and per body
        # chunk than the pure-Python h11), else h11
        http=http_protocol(http, header_timeout=header_timeout, max_per_client=max_connections_per_client,
                           max_connections=max_connections, reserved=reserved_connections),
        h11_max_incomplete_event_size=MAX_HEADER_BYTES,
        server_header=False,
        timeout_keep_alive=keep_alive_timeout,
        timeout_graceful_shutdown=5,
    )
    return Server(config)


@contextlib.contextmanager
def local_hub(
    root: str | Path,
    port: int | None = None,
    token: str | None = None,
    *,
    host: str = "127.0.0.1",
    verbose: bool = False,
    startup_timeout: float = 30.0,
    http: str = "auto",
    **app_kwargs,
) -> Iterator[str]:
    """Serve the repositories under ``root`` in a background thread; yield the endpoint URL.

    ``port=None`` picks a free port. With ``token``, every request must carry ``Authorization:
    Bearer <token>`` (the client sends ``HF_TOKEN``). Extra keyword arguments go to
    :func:`hf_transfer_seg.localhub.app.create_app` (e.g. ``commits_page_size``, ``lfs_uploads``).
    ``http`` picks uvicorn's HTTP parser ("auto", "httptools" or "h11"). ``header_timeout``,
    ``keep_alive_timeout``, ``max_connections_per_client``, ``max_connections`` and ``reserved_connections``
    guard the connections (:mod:`.protocol`, :mod:`.budget`; None turns the header timeout or a cap off);
    ``body_idle_seconds``, ``body_min_rate`` and ``body_grace_seconds`` the request bodies
    (:class:`~.limits.BodyTimeouts`).
    """
    server = _make_server(root, token=token, verbose=verbose, http=http, **app_kwargs)
    sock = _bind(host, port or 0)
    url = endpoint_url(sock)
    failure: list[BaseException] = []

    def run() -> None:
        try:
            server.run(sockets=[sock])
        except BaseException as exc:  # noqa: BLE001 - reported to the starting thread
            failure.append(exc)

    thread = threading.Thread(target=run, name=f"localhub-{url}", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + startup_timeout
        while not server.started:
            if failure or not thread.is_alive():
                raise LocalHubError(f"the local hub on {url} failed to start: {failure[0] if failure else 'exited'}")
            if time.monotonic() > deadline:
                raise LocalHubError(f"the local hub on {url} did not start within {startup_timeout:.0f}s")
            time.sleep(0.005)
        log.debug("local hub serving %s on %s", root, url)
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        if thread.is_alive():  # connections that would not close: stop waiting for them
            server.force_exit = True
            thread.join(timeout=5)
        sock.close()


def serve(
    root: str | Path,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    token: str | None = None,
    verbose: bool = False,
    announce: Callable[[str], None] | None = None,
    http: str = "auto",
    **app_kwargs,
) -> int:
    """Serve in the foreground until SIGINT/SIGTERM; ``announce`` receives the URL once listening."""
    server = _make_server(root, token=token, verbose=verbose, http=http, **app_kwargs)
    sock = _bind(host, port)
    url = endpoint_url(sock)
    if announce is None:
        print(url, flush=True)
    else:
        announce(url)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    return 0


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def warn_if_exposed(host: str, token: str | None) -> None:
    if not token and not _is_loopback(host):
        print(
            f"warning: serving on {host} without --token: anyone who can reach this address can read and "
            "write every repository",
            file=sys.stderr,
        )
