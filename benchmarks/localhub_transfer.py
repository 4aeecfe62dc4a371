"""Upload + download of a large safetensors file through the local Hub, beside a plain file copy.

    python benchmarks/localhub_transfer.py [--size-mb 100] [--in-process] [--http auto|h11|httptools]

The server runs in its own process (as ``hf-transfer-seg hub serve`` would; ``--in-process`` runs it
in a thread of this process instead). The genuine client uploads with ``HfApi.upload_file`` and
downloads with ``hf_hub_download`` into an empty cache, twice:

* ``regular``: the server as it runs by default and the client as installed (``hf_xet`` present).
  Preupload answers uploadMode "regular", so the bytes travel base64-encoded inside the NDJSON commit.
* ``lfs``: the server with ``lfs_uploads=True`` and the client with Xet disabled
  (``HF_HUB_DISABLE_XET``): the client hashes the file (sha256), asks the LFS batch API, PUTs the raw
  bytes, then commits an ``lfsFile`` line. huggingface_hub sends every "lfs" file through Xet when
  ``hf_xet`` is importable, and this server does not speak Xet, so this mode needs Xet off.

The same bytes are copied twice with ``shutil.copyfile`` for reference, and the ratio
``(upload + download) / (copy + copy)`` is printed per mode, with a breakdown of the client's upload
(timed by wrapping the client's own functions) and the floors: hashlib's sha256 over the file (the
client always computes it in lfs mode) and the server's one pass (sha1 + sha256 + Adler-32).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import functools
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path


def _make_safetensors(path: Path, size_mb: float) -> int:
    import numpy as np
    from safetensors.numpy import save_file

    rng = np.random.default_rng(0)
    total = int(size_mb * 1e6) // 4
    sizes = [total // 4] * 3 + [total - 3 * (total // 4)]
    tensors = {f"layer{i}.weight": rng.standard_normal(n, dtype=np.float32) for i, n in enumerate(sizes)}
    save_file(tensors, str(path))
    return path.stat().st_size


def _sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _cpu_seconds(pid: int | None) -> float:
    """CPU time (user + system) used so far by process ``pid`` (this process when None)."""
    if pid is None:
        times = os.times()
        return times.user + times.system
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    # utime, stime, and the children's (the git commands the server runs)
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def _server(root: Path, in_process: bool, http: str, lfs_uploads: bool):
    """Yield (endpoint, server pid or None when in-process)."""
    if in_process:
        from hf_transfer_seg.localhub import local_hub

        with local_hub(root, http=http, lfs_uploads=lfs_uploads) as endpoint:
            yield endpoint, None
        return
    code = ("import sys; from hf_transfer_seg.localhub import serve; "
            "serve(sys.argv[1], port=0, http=sys.argv[2], lfs_uploads=sys.argv[3] == '1')")
    proc = subprocess.Popen([sys.executable, "-c", code, str(root), http, "1" if lfs_uploads else "0"],
                            stdout=subprocess.PIPE, text=True)
    try:
        endpoint = proc.stdout.readline().strip()
        if not endpoint.startswith("http"):
            raise SystemExit(f"the hub server did not start (exit status {proc.poll()})")
        yield endpoint, proc.pid
    finally:
        proc.terminate()
        proc.wait(timeout=30)


class _Timers:
    """Wall time spent inside some of the client's functions (wrapped in their modules)."""

    def __init__(self):
        self.seconds: dict[str, float] = collections.defaultdict(float)
        self.undo: list = []

    def wrap(self, module, name: str, label: str) -> None:
        original = getattr(module, name)

        @functools.wraps(original)
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds[label] += time.perf_counter() - start

        setattr(module, name, timed)
        self.undo.append((module, name, original))

    def restore(self) -> None:
        for module, name, original in reversed(self.undo):
            setattr(module, name, original)
        self.undo.clear()


def _one_pass_floor(path: Path) -> tuple[float, float]:
    """(sha256 alone, sha1 + sha256 + Adler-32) over the file, read from the page cache."""
    data = path.read_bytes()
    start = time.perf_counter()
    hashlib.sha256(data).digest()
    sha256 = time.perf_counter() - start
    start = time.perf_counter()
    hashlib.sha1(data).digest()
    hashlib.sha256(data).digest()
    zlib.adler32(data)
    server = time.perf_counter() - start
    return sha256, server


def _run_mode(mode: str, tmp: Path, source: Path, args) -> dict:
    import huggingface_hub
    from huggingface_hub import _commit_api, constants, hf_hub_download, lfs

    lfs_mode = mode == "lfs"
    constants.HF_HUB_DISABLE_XET = lfs_mode  # read on every upload by is_xet_available()
    timers = _Timers()
    timers.wrap(lfs, "sha_fileobj", "client sha256 of the file")
    timers.wrap(_commit_api, "_fetch_upload_modes", "preupload request")
    timers.wrap(_commit_api, "post_lfs_batch_info", "LFS batch request")
    timers.wrap(_commit_api, "_upload_lfs_files", "PUT of the raw bytes (server hashes + stores as it arrives)")
    timers.wrap(_commit_api, "_send_commit", "commit request (base64 + JSON + POST in regular mode)")
    result: dict = {"mode": mode}
    try:
        with _server(tmp / f"hub-root-{mode}", args.in_process, args.http, lfs_mode) as (endpoint, server_pid):
            api = huggingface_hub.HfApi(endpoint=endpoint)
            repo_id = f"bench/transfer-{mode}"
            api.create_repo(repo_id)

            def cpu() -> list[float]:
                return [_cpu_seconds(None), _cpu_seconds(server_pid) if server_pid else 0.0]

            cpu_start = cpu()
            start = time.perf_counter()
            info = api.upload_file(path_or_fileobj=str(source), path_in_repo="model.safetensors", repo_id=repo_id)
            result["upload"] = time.perf_counter() - start
            cpu_up = cpu()
            result["breakdown"] = dict(timers.seconds)
            timers.restore()

            start = time.perf_counter()
            downloaded = hf_hub_download(repo_id, "model.safetensors", cache_dir=tmp / f"cache-{mode}",
                                         endpoint=endpoint)
            result["download"] = time.perf_counter() - start
            cpu_down = cpu()
            if _sha256(downloaded) != _sha256(source):
                raise SystemExit(f"{mode}: downloaded bytes differ from the uploaded file")
            Path(downloaded).unlink()

            # a second upload of the same bytes: the client skips it (preupload tells it the file is there)
            start = time.perf_counter()
            again = api.upload_file(path_or_fileobj=str(source), path_in_repo="model.safetensors", repo_id=repo_id)
            result["again"] = time.perf_counter() - start
            result["again_skipped"] = again.oid == info.oid
    finally:
        timers.restore()
    result["cpu_up"] = [b - a for a, b in zip(cpu_start, cpu_up)]
    result["cpu_down"] = [b - a for a, b in zip(cpu_up, cpu_down)]
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=float, default=100.0, help="size of the safetensors file (MB, 10^6 bytes)")
    parser.add_argument("--in-process", action="store_true", help="run the server in a thread of this process")
    parser.add_argument("--http", default="auto", choices=["auto", "h11", "httptools"],
                        help="uvicorn's HTTP parser (auto: httptools when installed)")
    parser.add_argument("--modes", default="regular,lfs", help="comma-separated: regular, lfs")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="localhub-bench-") as tmp:
        tmp = Path(tmp)
        source = tmp / "model.safetensors"
        size = _make_safetensors(source, args.size_mb)
        mb = size / 1e6

        copies = []
        for i in range(2):
            start = time.perf_counter()
            shutil.copyfile(source, tmp / f"copy{i}.safetensors")
            copies.append(time.perf_counter() - start)
        for i in range(2):
            (tmp / f"copy{i}.safetensors").unlink()
        sha256_floor, server_floor = _one_pass_floor(source)

        # huggingface_hub reads these when imported
        os.environ["HF_HOME"] = str(tmp / "hf-home")
        os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
        os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
        os.environ.pop("HF_TOKEN", None)
        os.environ.setdefault("HF_ENDPOINT", "http://127.0.0.1:9")  # replaced per mode
        results = [_run_mode(mode.strip(), tmp, source, args) for mode in args.modes.split(",") if mode.strip()]

    server = "in-process thread" if args.in_process else "separate process"
    print(f"file: {mb:.1f} MB safetensors; server: {server}; uvicorn http={args.http}")
    for i, seconds in enumerate(copies, 1):
        print(f"plain copy {i}: {seconds:.3f} s ({mb / seconds:.0f} MB/s)")
    print(f"floor, client: hashlib.sha256 over the file: {sha256_floor:.3f} s ({mb / sha256_floor:.0f} MB/s)")
    print(f"floor, server: sha1 + sha256 + Adler-32 over the file: {server_floor:.3f} s")

    def cpu_text(used: list[float]) -> str:
        if args.in_process:
            return f"CPU {used[0]:.2f} s client+server"
        return f"CPU {used[0]:.2f} s client, {used[1]:.2f} s server"

    for res in results:
        mode = res["mode"]
        how = ("base64 inside the commit" if mode == "regular"
               else "LFS batch + PUT of the raw bytes, client with HF_HUB_DISABLE_XET")
        print(f"[{mode}] {how}")
        print(f"  upload (HfApi.upload_file): {res['upload']:.3f} s ({mb / res['upload']:.0f} MB/s; "
              f"{cpu_text(res['cpu_up'])})")
        for label, seconds in res["breakdown"].items():
            if seconds >= 0.0005:
                print(f"    {label}: {seconds:.3f} s")
        print(f"  download (hf_hub_download): {res['download']:.3f} s ({mb / res['download']:.0f} MB/s; "
              f"{cpu_text(res['cpu_down'])})")
        print(f"  same upload again: {res['again']:.3f} s ({'skipped' if res['again_skipped'] else 'NOT skipped'})")
        ratio = (res["upload"] + res["download"]) / sum(copies)
        print(f"  ratio (upload + download) / (2 x copy): {ratio:.1f}x (goal <= 3x)")
    print(f"load average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
