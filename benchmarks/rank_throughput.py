"""Ranking K Hub models with one `rank` process vs scoring them one at a time with `score`, same images.

K timm encoders (random init, different seeds) are pushed to a local hub started here, each as its own repo
with one checkpoint branch ``epoch-0001``. Then, whole processes, alternating, ``--repeats`` times:

(a) ``hf-transfer-seg rank --models R1@epoch-0001 ... RK@epoch-0001 --target T --results-repo ...``: one process,
    the images decoded and both views jittered once for all models, the next model downloaded and built while
    the current one runs, the grid + RankMe + alpha-ReQ per model, results.csv and its card written;
(b) ``hf-transfer-seg score --repo-id Rk --target T`` once per model: K processes, each importing torch,
    decoding the images, jittering the views, scoring, and writing the revision card and main's summary.

Both use the same seed, number of images and input size, so the views and negatives are the same: the headline
scores of (a) and (b) must agree (checked). Prints the best wall-clock and child-CPU time of each and a/b
(goal <= 0.8).

    .venv/bin/python benchmarks/rank_throughput.py                      # resnet18, K=4, 32 images at 128 px
    .venv/bin/python benchmarks/rank_throughput.py --model test_resnet --image-size 64 --repeats 1   # quick
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

from _hub_env import PORT as _PORT, TMP as _TMP  # noqa: E402 - sets HF_* before huggingface_hub is imported

_ROOT = Path(__file__).resolve().parents[1]

HEADLINE = "cosine_m0.5_L-1_flat"


def push_models(model_name: str, k: int, size: int) -> list[str]:
    import timm
    import torch

    from hf_transfer_seg import hub
    from hf_transfer_seg.models.checkpoint import save_checkpoint

    repos = []
    for i in range(k):
        torch.manual_seed(1000 + i)
        data = {"input_size": (3, size, size), "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}
        folder = save_checkpoint(timm.create_model(model_name, num_classes=10), _TMP / f"m{i}", data_config=data)
        repo = f"bench/{model_name}-{i}"
        hub.push_revision(folder, repo, 1)
        repos.append(repo)
    return repos


def _run(args: list[str], env: dict, cache: Path) -> tuple[float, float]:
    """Wall-clock and child CPU seconds of one CLI process with a fresh download cache."""
    env = dict(env, HF_HOME=str(cache))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "hf_transfer_seg", *args], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{args[0]} failed:\n{proc.stderr[-3000:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--k", type=int, default=4, help="models")
    parser.add_argument("--num-images", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--target", default="skimage-retina")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    from hf_transfer_seg.localhub import local_hub

    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in [str(_ROOT), os.environ.get("PYTHONPATH", "")] if p))
    common = ["--target", args.target, "--num-images", str(args.num_images), "--seed", "0", "--no-progress"]
    try:
        with local_hub(_TMP / "hub-root", port=_PORT):
            repos = push_models(args.model, args.k, args.image_size)
            print(f"# {args.k} models ({args.model}, random init), {args.num_images} images at {args.image_size} px, "
                  f"target {args.target}, {os.cpu_count()} CPUs, whole processes")
            rank_args = ["rank", "--models", *[f"{r}@epoch-0001" for r in repos], "--results-repo", "bench/ranking", *common]
            times_a, times_b = [], []
            for r in range(args.repeats):
                ta = _run(rank_args, env, _TMP / f"cache-a{r}")
                tb = [0.0, 0.0]
                for i, repo in enumerate(repos):
                    t = _run(["score", "--repo-id", repo, "--image-size", str(args.image_size), *common], env, _TMP / f"cache-b{r}-{i}")
                    tb = [tb[0] + t[0], tb[1] + t[1]]
                times_a.append(ta)
                times_b.append(tuple(tb))
                print(f"  run {r + 1} (wall / child CPU s): rank {ta[0]:.2f} / {ta[1]:.2f}, {args.k} x score {tb[0]:.2f} / {tb[1]:.2f}")

            from hf_transfer_seg.cards.data import get_namespace
            from hf_transfer_seg.hub import read_card
            from hf_transfer_seg.hub.results_repo import read_results

            df, _ = read_results("bench/ranking")
            for repo in repos:  # same views and negatives: the same headline score either way
                ours = df[(df["model"] == f"{repo}@epoch-0001") & (df["predictor"] == f"robustness:{HEADLINE}")]["value"].iloc[0]
                card, _ = read_card(repo, "epoch-0001")
                theirs = next(iter(get_namespace(card.data, "robustness").values()))[HEADLINE]["score"]
                assert abs(ours - theirs) < 1e-4, (repo, ours, theirs)
            a, b = min(t[0] for t in times_a), min(t[0] for t in times_b)
            ca, cb = min(t[1] for t in times_a), min(t[1] for t in times_b)
            print(f"(b) {args.k} x score, one process per model: wall {b:.2f} s, CPU {cb:.2f} s")
            print(f"(a) rank, one process for all {args.k}:      wall {a:.2f} s, CPU {ca:.2f} s  (also RankMe, alpha-ReQ, results repo)")
            print(f"ratio a/b: wall {a / b:.3f}, CPU {ca / cb:.3f}  (goal <= 0.8); headline scores agree to 1e-4")
    finally:
        shutil.rmtree(_TMP, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
