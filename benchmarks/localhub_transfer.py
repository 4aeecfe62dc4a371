"""Upload + download of a large safetensors file through the local Hub, beside a plain file copy.

    python benchmarks/localhub_transfer.py [--size-mb 100] [--in-process]

The server runs as ``hf-transfer-seg hub serve`` in its own process (as a user would run it; use
``--in-process`` to run it in a thread of this process instead). The genuine client uploads with
``HfApi.upload_file`` (regular mode: the bytes travel base64-encoded inside the NDJSON commit) and
downloads with ``hf_hub_download`` into an empty cache. The same bytes are copied twice with
``shutil.copyfile`` for reference, and the ratio ``(upload + download) / (copy + copy)`` is printed.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
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
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def _server(root: Path, in_process: bool):
    """Yield (endpoint, server pid or None when in-process)."""
    if in_process:
        from hf_transfer_seg.localhub import local_hub

        with local_hub(root) as endpoint:
            yield endpoint, None
        return
    proc = subprocess.Popen(
        [sys.executable, "-m", "hf_transfer_seg", "hub", "serve", "--root", str(root), "--port", "0"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        endpoint = proc.stdout.readline().strip()
        if not endpoint.startswith("http"):
            raise SystemExit(f"the hub server did not start (exit status {proc.poll()})")
        yield endpoint, proc.pid
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=float, default=100.0, help="size of the safetensors file (MB, 10^6 bytes)")
    parser.add_argument("--in-process", action="store_true", help="run the server in a thread of this process")
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

        with _server(tmp / "hub-root", args.in_process) as (endpoint, server_pid):
            # huggingface_hub reads these when imported
            os.environ["HF_ENDPOINT"] = endpoint
            os.environ["HF_HOME"] = str(tmp / "hf-home")
            os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
            os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
            os.environ.pop("HF_TOKEN", None)
            from huggingface_hub import HfApi, hf_hub_download

            api = HfApi()
            repo_id = "bench/transfer"
            api.create_repo(repo_id)

            cpu_start = [_cpu_seconds(None), _cpu_seconds(server_pid) if server_pid else 0.0]
            start = time.perf_counter()
            api.upload_file(path_or_fileobj=str(source), path_in_repo="model.safetensors", repo_id=repo_id)
            upload = time.perf_counter() - start
            cpu_up = [_cpu_seconds(None), _cpu_seconds(server_pid) if server_pid else 0.0]

            start = time.perf_counter()
            downloaded = hf_hub_download(repo_id, "model.safetensors", cache_dir=tmp / "cache")
            download = time.perf_counter() - start
            cpu_down = [_cpu_seconds(None), _cpu_seconds(server_pid) if server_pid else 0.0]

            if _sha256(downloaded) != _sha256(source):
                raise SystemExit("downloaded bytes differ from the uploaded file")

    server = "in-process thread" if args.in_process else "separate process"
    print(f"file: {mb:.1f} MB safetensors; server: {server}")
    for i, seconds in enumerate(copies, 1):
        print(f"plain copy {i}: {seconds:.3f} s ({mb / seconds:.0f} MB/s)")
    def cpu_text(before: list[float], after: list[float]) -> str:
        if args.in_process:
            return f"CPU {after[0] - before[0]:.2f} s client+server"
        return f"CPU {after[0] - before[0]:.2f} s client, {after[1] - before[1]:.2f} s server"

    print(f"upload (HfApi.upload_file): {upload:.3f} s ({mb / upload:.0f} MB/s; {cpu_text(cpu_start, cpu_up)})")
    print(f"download (hf_hub_download): {download:.3f} s ({mb / download:.0f} MB/s; {cpu_text(cpu_up, cpu_down)})")
    print(f"load average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    ratio = (upload + download) / sum(copies)
    print(f"ratio (upload + download) / (2 x copy): {ratio:.1f}x (goal <= 3x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
