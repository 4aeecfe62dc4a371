"""Latency of one 512×512 segmentation through the running Space, beside the bare model forward.

    python benchmarks/space_latency.py [--arch resnet18] [--repeats 10]

Everything is real and local: a local hub (in a thread of this process) holds an encoder revision of
``--arch``, scored by the scoring code and fine-tuned for one short epoch by the fine-tuning code
(default U-Net decoder). The app runs as ``hf-transfer-seg space run`` in its own process, as a user
would run it, and is called over HTTP with ``gradio_client`` (upload, queue, inference, overlay and
mask PNG encoding, download of the outputs). The bare forward is ``model(x)`` on the same 512×512
image, loaded from the same commit, timed inside its own clean process (as the app's server is). The two are timed alternately (so that both see
the same load on a shared machine); medians after warm-up; the ratio app / bare is printed (goal on
CPU: at most 1.5).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "spaces" / "segmentation-demo" / "examples" / "mni152-z092.png"
SIZE = 512


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# The bare forward runs in its own clean process too (like the app's server), loaded from the same commit;
# it times ``model(x)`` itself and answers each "go" with the milliseconds it took.
BARE_WORKER = """
import sys, time, torch
from hf_transfer_seg.finetune import load_segmentation_model
from hf_transfer_seg.space.inputs import read_input_image
model = load_segmentation_model(sys.argv[1], revision=sys.argv[2])
x = read_input_image(sys.argv[3]).tensor[None]
for _ in sys.stdin:
    with torch.inference_mode():
        start = time.perf_counter()
        model(x)
        print((time.perf_counter() - start) * 1000, flush=True)
"""


def _interleaved_medians(a, b, repeats: int, warmup: int = 2, samples: dict | None = None) -> tuple[float, float]:
    """Median milliseconds of ``a`` and of ``b``, called alternately after ``warmup`` calls of each.

    ``b`` may report its own time in ``samples["bare"]`` (then collected in ``samples["bare_samples"]``).
    """
    times: tuple[list[float], list[float]] = ([], [])
    reported: list[float] = []
    for i in range(warmup + repeats):
        for fn, out in ((a, times[0]), (b, times[1])):
            start = time.perf_counter()
            fn()
            if i >= warmup:
                out.append(time.perf_counter() - start)
                if fn is b and samples is not None and "bare" in samples:
                    reported.append(float(samples["bare"]))
    if samples is not None:
        samples["bare_samples"] = reported
    return statistics.median(times[0]) * 1000, statistics.median(times[1]) * 1000


def _prepare(repo: str, arch: str, tmp: Path) -> tuple[str, str]:
    """Encoder revision -> score -> one-epoch fine-tune -> pushed U-Net; returns (seg repo, sha)."""
    import timm

    from hf_transfer_seg import hub
    from hf_transfer_seg.data.registry import load_target
    from hf_transfer_seg.finetune import FinetuneConfig, finetune
    from hf_transfer_seg.finetune.push import push_segmentation_model, record_downstream
    from hf_transfer_seg.models.checkpoint import save_checkpoint
    from hf_transfer_seg.scoring.pipeline import run_score

    model = timm.create_model(arch, num_classes=10)
    hub.push_revision(save_checkpoint(model, tmp / "ck", data_config={"mean": [0.5] * 3, "std": [0.25] * 3}), repo, 1)
    run_score(repo, "skimage-retina", num_images=8, image_size=64, batch_size=8, progress=False)
    config = FinetuneConfig(encoder_repo=repo, revision="epoch-0001", epochs=1, batch_size=4, image_size=64, eval_every=1)
    result = finetune(config, target=load_target("mni152-tissue", limit=4), progress=False)
    push = push_segmentation_model(result, f"{repo}-unet")
    record_downstream(result, seg_push=push)
    return push["repo"], push["sha"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="resnet18", help="timm encoder of the U-Net (default resnet18)")
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="space-latency-"))
    port = _free_port()
    # huggingface_hub reads these when imported: set them first
    os.environ.update(HF_ENDPOINT=f"http://127.0.0.1:{port}", HF_HOME=str(tmp / "hf-home"), HF_HUB_DISABLE_PROGRESS_BARS="1")
    os.environ.update(GRADIO_ANALYTICS_ENABLED="False", GRADIO_TEMP_DIR=str(tmp / "gradio"))
    for name in ("HF_TOKEN", "HF_HUB_OFFLINE"):
        os.environ.pop(name, None)

    import torch
    from gradio_client import Client, handle_file
    from PIL import Image

    from hf_transfer_seg.localhub import local_hub

    image_path = tmp / "brain-512.png"
    with Image.open(EXAMPLE) as img:
        img.convert("L").resize((SIZE, SIZE), Image.BICUBIC).save(image_path)

    with local_hub(tmp / "hub", port=port):
        repo = "bench/space-latency"
        print(f"preparing {args.arch} encoder, score and U-Net on a local hub ...", flush=True)
        seg_repo, seg_sha = _prepare(repo, args.arch, tmp)

        log = tmp / "app.log"
        cmd = [sys.executable, "-m", "hf_transfer_seg", "space", "run", "--model-repo", repo, "--port", "0"]
        with open(log, "w") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        try:
            url = None
            deadline = time.monotonic() + 300
            while url is None and time.monotonic() < deadline and proc.poll() is None:
                for line in log.read_text(errors="replace").splitlines():
                    if "Segmentation demo running on" in line:
                        url = line[line.index("http://") :].split()[0]
                time.sleep(0.5)
            if url is None:
                print(log.read_text(errors="replace")[-3000:], file=sys.stderr)
                return 1
            client = Client(url, verbose=False)
            bare = subprocess.Popen(
                [sys.executable, "-c", BARE_WORKER, seg_repo, seg_sha, str(image_path)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
            )  # fmt: skip
            outputs = {}

            def through_app() -> None:
                outputs["last"] = client.predict(handle_file(str(image_path)), api_name="/segment")
                outputs.setdefault("server_ms", []).append(outputs["last"][2]["inference_ms"])

            def bare_forward() -> None:
                bare.stdin.write("go\n")
                outputs["bare"] = bare.stdout.readline().strip()

            # interleaved, so that both see the same load on a shared machine
            app_ms, _ = _interleaved_medians(through_app, bare_forward, args.repeats, samples=outputs)
            bare_ms = statistics.median(outputs["bare_samples"])
            bare.stdin.close()
            bare.wait(timeout=30)
        finally:
            proc.terminate()
            proc.wait(timeout=30)

    _, mask_path, _ = outputs["last"]
    with Image.open(mask_path) as mask:
        assert mask.size == (SIZE, SIZE), mask.size
    shutil.rmtree(tmp, ignore_errors=True)
    print(f"threads per process: {torch.get_num_threads()}; U-Net on {args.arch}")
    print(f"bare model forward {SIZE}x{SIZE}:                 {bare_ms:8.1f} ms (median of {args.repeats})")
    server_ms = statistics.median(outputs["server_ms"][-args.repeats :])
    print(f"app via HTTP (gradio_client /segment) {SIZE}x{SIZE}: {app_ms:8.1f} ms (median of {args.repeats}; its own forward: {server_ms:.1f} ms)")
    print(f"app overhead beyond its own forward (upload, queue, decode, overlay + mask PNGs, 4 downloads): {app_ms - server_ms:.1f} ms")
    print(f"ratio app / bare: {app_ms / bare_ms:.2f}  (goal <= 1.5)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
