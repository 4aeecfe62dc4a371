"""``hf-transfer-seg demo`` end to end (small settings, no launch): every artefact lands in the local hub."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


# what must not appear in the demo's output on its defaults (library noise included)
NOISE = ("WARNING", "Warning", "warn(", "Missing keys", "Unexpected keys", "deprecated", "Deprecat")


def _run_demo(workdir: Path | None, *, home: Path | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("HF_ENDPOINT", "HF_TOKEN")}  # the demo starts its own hub
    if home is not None:
        env["HF_TRANSFER_SEG_HOME"] = str(home)
    if cwd is not None:  # run from elsewhere: the package must come from this checkout, not from cwd
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(Path(__file__).resolve().parents[1]), env.get("PYTHONPATH")) if p)
    where = ["--workdir", str(workdir)] if workdir is not None else []
    return subprocess.run(
        [sys.executable, "-m", "hf_transfer_seg", "demo", "--small", "--no-launch", *where],
        env=env, capture_output=True, text=True, timeout=1200, cwd=cwd,
    )


def test_the_default_workdir_is_a_cache_folder_outside_the_source_tree(monkeypatch, tmp_path):
    """huggingface_hub's convention: an environment variable, else $XDG_CACHE_HOME, else ~/.cache."""
    from hf_transfer_seg.demo import DemoSettings, default_workdir

    monkeypatch.setenv("HF_TRANSFER_SEG_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_workdir() == DemoSettings().workdir == tmp_path / "home" / "demo"
    monkeypatch.delenv("HF_TRANSFER_SEG_HOME")
    assert default_workdir() == tmp_path / "xdg" / "hf-transfer-seg" / "demo"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    assert default_workdir() == tmp_path / "user" / ".cache" / "hf-transfer-seg" / "demo"
    assert DemoSettings(workdir=tmp_path / "mine").workdir == tmp_path / "mine"


def test_the_checkout_ignores_the_old_in_tree_demo_folder():
    root = Path(__file__).resolve().parents[1]
    if not (root / ".git").exists():
        pytest.skip("not a git checkout")
    done = subprocess.run(["git", "check-ignore", "-q", "hf-transfer-seg-demo/summary.json"], cwd=root)
    assert done.returncode == 0


def test_the_demo_asks_its_score_target_for_the_images_it_has(tmp_path, capsys):
    """Its defaults ask for 64 images; mni152-tissue has 59: the demo asks for 59 (scoring would warn otherwise)."""
    from hf_transfer_seg.data.registry import resolve_target
    from hf_transfer_seg.demo import Demo, DemoSettings

    settings = DemoSettings(workdir=tmp_path)
    available = len(resolve_target(settings.score_target))
    assert available < settings.score_images  # the case this is about
    assert Demo(settings)._score_images() == available
    assert f"has {available} images: scoring with all of them" in capsys.readouterr().out
    assert Demo(DemoSettings.small(workdir=tmp_path))._score_images() == DemoSettings.small().score_images


@pytest.mark.slow
def test_demo_runs_the_whole_loop_and_reuses_finished_work(tmp_path):
    # run as a user would, without --workdir, from a folder standing in for a fresh checkout: nothing lands there
    checkout, home = tmp_path / "checkout", tmp_path / "home"
    checkout.mkdir()
    first = _run_demo(None, home=home, cwd=checkout)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    workdir = home / "demo"
    assert f"Working folder: {workdir}" in first.stdout and not list(checkout.iterdir())
    noise = [line for line in (first.stdout + first.stderr).splitlines() if any(n in line for n in NOISE)]
    assert not noise, noise
    summary = json.loads((workdir / "summary.json").read_text())

    revisions = summary["revisions"]
    assert [r["revision"] for r in revisions] == ["epoch-0000.5", "epoch-0001", "epoch-0001.5"]
    assert all(isinstance(r["score"], float) and len(r["sha"]) == 40 for r in revisions)
    best = min(revisions, key=lambda r: r["score"])
    assert summary["best_revision"] == best["revision"]
    assert summary["segmentation"]["best"]["encoder_revision"] == best["revision"]
    assert 0.0 < summary["segmentation"]["best"]["dice"] <= 1.0
    assert "digits" in summary["data"]["pretraining"] and "real" in summary["data"]["pretraining"]
    assert "real" in summary["data"]["segmentation_target"]
    assert all(isinstance(r["top1"], float) for r in revisions)  # validation top-1 of each revision, shown beside its score
    assert Path(summary["report"]).is_file() and (Path(summary["report"]).parent / "report.json").is_file()
    assert set(summary["stages"]) >= {"pretrain", "score", "finetune_best", "report", "space"}
    assert len({s["encoder_revision"] for s in summary["segmentation"].values()}) == len(summary["segmentation"]) == 2
    assert all(len(s["dice_per_seed"]) == 2 for s in summary["segmentation"].values())  # two seeds: noise can be stated
    report = json.loads((Path(summary["report"]).parent / "report.json").read_text())
    headline = report["predictors"]["robustness:cosine_m0.5_L-1_flat"]
    # one series of two fine-tuned checkpoints: the report must not claim anything either way
    assert headline["headline"] and headline["verdict"] == "insufficient_evidence"
    assert report["noise"]["known"] and {r["rule"] for r in report["selection"]} >= {"fixed_fraction", "last", "oracle"}
    assert "<- best" in first.stdout and "wall time" in first.stdout
    # the plan comes first, with an ETA, and is refined as stages finish
    assert first.stdout.index("==> Plan") < first.stdout.index("==> Pretraining") and "remaining ~" in first.stdout
    assert "--- plan: remaining" in first.stdout and "this machine:" in first.stdout
    assert first.stdout.rstrip().splitlines()[-1].startswith("verdict") and "insufficient evidence" in first.stdout.rstrip().splitlines()[-1]

    # Every artefact is in the hub the demo left in workdir/hub: open it again and look with the client.
    code = f"""
import json, sys
from hf_transfer_seg.localhub import local_hub
with local_hub({str(workdir / 'hub')!r}) as endpoint:
    import os; os.environ['HF_ENDPOINT'] = endpoint
    from huggingface_hub import HfApi
    from hf_transfer_seg.hub import read_card
    from hf_transfer_seg.cards import get_namespace
    api = HfApi()
    s = json.load(open({str(workdir / 'summary.json')!r}))
    enc = s['encoder_repo']
    main, _ = read_card(enc, 'main')
    rev, _ = read_card(enc, s['best_revision'])
    out = dict(
        branches=sorted(b.name for b in api.list_repo_refs(enc).branches),
        main_files=sorted(api.list_repo_files(enc)),
        summary_best=get_namespace(main.data, 'robustness_summary')['mni152-tissue']['best_revision'],
        rev_scored='mni152-tissue' in get_namespace(rev.data, 'robustness'),
        rev_downstream=sorted(get_namespace(rev.data, 'downstream') or {{}}),
        seg_files=sorted(api.list_repo_files(s['segmentation']['best']['repo_id'])),
        space_files=sorted(api.list_repo_files(s['space_id'], repo_type='space')),
    )
    print(json.dumps(out))
"""
    env = {k: v for k, v in os.environ.items() if k != "HF_ENDPOINT"}
    found = json.loads(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1])
    assert {"epoch-0000.5", "epoch-0001", "epoch-0001.5", "main"} <= set(found["branches"])
    assert "model.safetensors" in found["main_files"] and "plots/robustness_mni152-tissue.png" in found["main_files"]
    assert found["summary_best"] == summary["best_revision"] and found["rev_scored"]
    assert found["rev_downstream"] == ["mni152-tissue"]
    assert {"model.safetensors", "config.json", "README.md"} <= set(found["seg_files"])
    assert {"app.py", "README.md", "requirements.txt"} <= set(found["space_files"])

    # Same workdir again: nothing is redone.
    second = _run_demo(workdir)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    again = json.loads((workdir / "summary.json").read_text())
    assert len([s for s in again["stages"] if s.startswith("finetune_")]) == 2
    for stage in [s for s in again["stages"] if s in ("pretrain", "score") or s.startswith("finetune")]:
        assert again["stages"][stage]["reused"], stage
    assert [r["sha"] for r in again["revisions"]] == [r["sha"] for r in revisions]


def test_the_plan_refines_its_eta_from_measured_stages():
    from hf_transfer_seg.demo_plan import PER_UNIT, STARTUP, Plan

    plan = Plan()
    plan.add("pretrain", "pretrain", "pretrain", 100, "steps")
    plan.add("ft0", "finetune", "U-Net 0", 50, "steps")
    plan.add("ft1", "finetune", "U-Net 1", 50, "steps")
    first = plan.estimate(plan.get("ft1"))
    assert first == STARTUP["finetune"] + 50 * PER_UNIT["finetune"]  # the reference machine's rate
    reference_pretrain = STARTUP["pretrain"] + 100 * PER_UNIT["pretrain"]
    plan.finish("pretrain", 2 * reference_pretrain)  # this machine: twice as slow so far
    assert plan.speed == 2 and plan.estimate(plan.get("ft1")) == 2 * first
    plan.finish("ft0", 300.0)  # a measured fine-tune: its own rate from now on
    assert plan.estimate(plan.get("ft1")) == pytest.approx(300.0)  # same size, same start-up share
    assert plan.lines()[1].strip().endswith("done in 5 min") and "remaining ~" in plan.lines()[-1]
    plan.finish("ft1", 0.5, reused=True)  # reused: costs nothing, teaches nothing
    assert plan.remaining() == 0 and "reused" in plan.lines()[2]


def test_finetune_steps_become_whole_epochs_and_a_bad_value_is_one_line(tmp_path, capsys):
    from hf_transfer_seg.cli import main
    from hf_transfer_seg.demo import Demo, DemoSettings

    demo = Demo(DemoSettings.small(workdir=tmp_path, finetune_steps=100, launch=False))
    tmp_path.mkdir(exist_ok=True)
    plan = demo._make_plan()
    per_epoch = demo._seg_steps_per_epoch()  # cached in the workdir
    assert demo.seg_epochs == max(1, round(100 / per_epoch))
    assert plan.get("finetune_best_seed0").units == demo.seg_epochs * per_epoch
    assert (tmp_path / "plan-cache.json").is_file()
    capsys.readouterr()
    assert main(["demo", "--finetune-steps", "0", "--no-launch", "--workdir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--finetune-steps" in err[0]


def test_an_interrupted_finetune_is_continued_with_resume(tmp_path):
    """The demo passes --resume to a fine-tune whose output folder holds the per-epoch state of an interrupted run
    (the fine-tune's resume/ folder), and only then. The commands are recorded instead of run (a subclass of the
    demo: the fine-tune itself is tested with its own --resume)."""
    from hf_transfer_seg.demo import Demo, DemoSettings

    class Recording(Demo):
        commands: list = []

        def _run(self, *args, accelerate=False):
            self.commands.append(args)
            out = Path(args[args.index("--output-dir") + 1])
            out.mkdir(parents=True, exist_ok=True)
            (out / "metrics.json").write_text(json.dumps({"encoder": {"revision": "epoch-0001"}}))

    demo = Recording(DemoSettings.small(workdir=tmp_path, launch=False, seeds="0,1"))
    (tmp_path / "finetune-best" / "seed1" / "resume" / "epoch-0001").mkdir(parents=True)
    demo.finetune("best", "epoch-0001")
    by_seed = {c[c.index("--seed") + 1]: c for c in demo.commands}
    assert "--resume" not in by_seed["0"] and "--resume" in by_seed["1"]
    assert "--push-to" in by_seed["0"] and "--push-to" not in by_seed["1"]
