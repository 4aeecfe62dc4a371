"""``hf-transfer-seg demo``: the whole loop on embedded defaults, offline, on a laptop CPU.

local hub -> pretrain on scikit-learn's bundled real digits (2 processes, 6 revisions; top-1 rises from
chance) -> score every revision (ties with the best tested on paired per-image values) -> fine-tune the
best-scored and the last revision with two seeds each -> report (whose headline verdict ends the
summary) -> deploy the Space. It prints its plan with an ETA per stage first (``demo_plan``), refined as stages
finish; with launching on, the Space is served as soon as the first U-Net is pushed and refreshed when the
others and the report are done. Every stage is the same command a user
would run (a subprocess of ``python -m hf_transfer_seg``), so the demo shows the real tool and
nothing in it is special-cased. Re-running with the same ``--workdir`` reuses finished work, and a fine-tune
interrupted (Ctrl-C) continues after its last finished epoch (the fine-tune's ``--resume``).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

from hf_transfer_seg.cards import schema
from hf_transfer_seg.cards.schema import HEADLINE
from hf_transfer_seg.demo_plan import Plan, pretrain_steps
from hf_transfer_seg.errors import HfTransferSegError
from hf_transfer_seg.resources import resource_path

HOME_ENV = "HF_TRANSFER_SEG_HOME"


def default_workdir() -> Path:
    """Where the demo keeps its hub, checkpoints and report unless ``--workdir`` says otherwise: outside any
    source tree, the way huggingface_hub picks its cache (``HF_HOME``, else ``$XDG_CACHE_HOME/huggingface``, else
    ``~/.cache/huggingface``): ``$HF_TRANSFER_SEG_HOME/demo``, else ``$XDG_CACHE_HOME/hf-transfer-seg/demo``, else
    ``~/.cache/hf-transfer-seg/demo``."""
    home = os.environ.get(HOME_ENV)
    if not home:
        cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        home = os.path.join(cache, "hf-transfer-seg")
    return Path(os.path.expanduser(home)) / "demo"


@dataclass
class DemoSettings:
    """Sizes of the demo. The defaults take under ten minutes on a 2-core CPU (README has the figure).

    Pretraining LR: 2e-3 at batch 64, not the paper's linear scaling (4e-3 x 64 / 4096 = 6e-5, which does not
    move a randomly initialised ResNet in 100 steps); the card records the LR and the deviation."""

    workdir: Path = field(default_factory=default_workdir)
    namespace: str = "demo"
    encoder: str = "resnet18"
    num_processes: int = 2
    dataset: str = "digits"
    image_size: int = 32
    train_size: int | None = None  # digits: all 1,497 training images
    val_size: int | None = None  # digits: the fixed 300-image validation split
    batch_size: int = 64
    lr: float = 2e-3
    epochs: float = 4
    checkpoint_epochs: str = "0.1,0.5,1,2,3,4"
    seeds: str = "0,1"
    score_target: str = "mni152-tissue"
    score_images: int = 64
    score_image_size: int = 128
    # view draws per score: `score` defaults to 16 (90 % of DRIVE revision pairs keep their tie verdict across view
    # seeds); the demo's quick tour uses 4, a quarter of the scoring time, and its "Ties:" line says what was resampled
    score_view_draws: int = 4
    seg_target: str = "mni152-tissue"
    seg_epochs: int = 8
    seg_image_size: int = 128
    seg_batch_size: int = 8
    seg_limit: int = 48
    finetune_steps: int | None = None  # optimizer steps per U-Net, rounded to whole epochs (None: seg_epochs)
    launch: bool = True
    port: int = 7860

    @classmethod
    def small(cls, **overrides: Any) -> "DemoSettings":
        """Settings for tests: the same stages in about a minute or two."""
        values = dict(
            encoder="test_resnet", image_size=32, train_size=96, val_size=32, batch_size=16, epochs=1.5,
            checkpoint_epochs="0.5,1,1.5", score_images=8, score_image_size=64, score_view_draws=2, seg_epochs=2,
            seg_image_size=64, seg_batch_size=4, seg_limit=12,
        )
        values.update(overrides)
        return cls(**values)

    @property
    def encoder_repo(self) -> str:
        return f"{self.namespace}/{self.encoder}-{self.dataset}"

    @property
    def space_id(self) -> str:
        return f"{self.namespace}/segmentation-demo"

    def seg_repo(self, label: str) -> str:
        return f"{self.namespace}/{self.encoder}-{self.seg_target}-{label}"


@dataclass
class Stage:
    name: str
    seconds: float = 0.0
    reused: bool = False
    detail: dict = field(default_factory=dict)


def _say(message: str) -> None:
    print(f"\n==> {message}", flush=True)


class Demo:
    def __init__(self, settings: DemoSettings):
        self.s = settings
        self.workdir = Path(settings.workdir).resolve()
        self.stages: dict[str, Stage] = {}
        self.summary_path = self.workdir / "summary.json"
        self.plan: Plan | None = None
        self.seg_epochs = settings.seg_epochs
        self.space_process: subprocess.Popen | None = None

    # -- the plan and its ETA ------------------------------------------------------------------
    def _seg_steps_per_epoch(self) -> int:
        """Optimizer steps of one fine-tuning epoch, from the fine-tune's own split and crop count (cached in
        the workdir: loading the target takes seconds)."""
        cache = self.workdir / "plan-cache.json"
        key = f"{self.s.seg_target}|{self.s.seg_image_size}|{self.s.seg_batch_size}|{self.s.seg_limit}"
        known = json.loads(cache.read_text()) if cache.is_file() else {}
        if key not in known:
            from hf_transfer_seg.finetune.config import FinetuneConfig
            from hf_transfer_seg.finetune.loop import prepare_target
            from hf_transfer_seg.finetune.tiles import crops_per_image

            config = FinetuneConfig(target=self.s.seg_target, image_size=self.s.seg_image_size,
                                    batch_size=self.s.seg_batch_size, limit=self.s.seg_limit)
            _, train, _, _ = prepare_target(config)
            crops = len(train.samples) * crops_per_image(train.samples, self.s.seg_image_size)
            known[key] = crops // self.s.seg_batch_size if crops > self.s.seg_batch_size else 1  # the loader drops the last
            cache.write_text(json.dumps(known))
        return int(known[key])

    def _make_plan(self) -> Plan:
        per_epoch = self._seg_steps_per_epoch()
        if self.s.finetune_steps:
            self.seg_epochs = max(1, round(self.s.finetune_steps / per_epoch))
        plan = Plan()
        revisions = len(self.s.checkpoint_epochs.split(","))
        plan.add("pretrain", "pretrain", f"pretrain {self.s.encoder} on {self.s.dataset} ({self.s.num_processes} processes)",
                 pretrain_steps(self.s.train_size or 1497, self.s.batch_size, self.s.epochs), "steps")
        plan.add("score", "score", f"score {revisions} revisions on {self.s.score_target} ({self.s.score_view_draws} view draws)",
                 revisions * self.s.score_images * self.s.score_view_draws, "revision x image x view-draw triples")
        seeds = [s.strip() for s in str(self.s.seeds).split(",") if s.strip()]
        for n, label in enumerate(("best", "second")):
            for seed in seeds:
                first = n == 0 and seed == seeds[0]
                plan.add(f"finetune_{label}_seed{seed}", "finetune",
                         f"U-Net from the {label if label == 'best' else 'last/worst'} revision, seed {seed}",
                         self.seg_epochs * per_epoch, f"steps ({self.seg_epochs} x {per_epoch})",
                         note="<- the Space goes up here" if first and self.s.launch else "")
        plan.add("report", "report", "report", 1, "")
        plan.add("space", "space", "deploy the Space" + (" and serve it" if self.s.launch else ""), 1, "")
        return plan

    def _finished(self, key: str, seconds: float, reused: bool) -> None:
        if self.plan is None:
            return
        self.plan.finish(key, seconds, reused=reused)
        left = [s for s in self.plan.stages if s.seconds is None]
        if left:
            print(f"\n--- plan: {self.plan.lines()[-1].strip()}; next: {left[0].title} ~{_seconds(self.plan.estimate(left[0]))}",
                  flush=True)

    # -- plumbing -------------------------------------------------------------------------------
    def _run(self, *args: str, accelerate: bool = False) -> None:
        """Run one hf-transfer-seg command like a user would; stream its output; fail loudly."""
        if accelerate:  # hf-transfer-seg launch: torchrun binds the rendezvous port itself, nothing to race for
            from hf_transfer_seg.launch import command

            config = resource_path("accelerate_configs") / "multi_gpu.yaml"
            cmd = command(["--config_file", str(config), "--num_processes", str(self.s.num_processes), "--mixed_precision", "no"], list(args))
        else:
            cmd = [sys.executable, "-m", "hf_transfer_seg", *args]
        print("$ hf-transfer-seg " + " ".join(args), flush=True)
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        done = subprocess.run(cmd, env=env)
        if done.returncode != 0:
            raise HfTransferSegError(
                f"demo stage failed: `hf-transfer-seg {' '.join(args)}` exited {done.returncode} (output above). "
                f"Fix the cause and run the demo again with the same --workdir ({self.workdir}): finished stages are reused."
            )

    @contextlib.contextmanager
    def _stage(self, name: str, title: str) -> Iterator[Stage]:
        _say(title)
        stage = Stage(name)
        start = time.perf_counter()
        yield stage
        stage.seconds = round(time.perf_counter() - start, 1)
        self.stages[name] = stage
        if self.plan is not None and name in {s.key for s in self.plan.stages}:
            self._finished(name, stage.seconds, stage.reused)

    @contextlib.contextmanager
    def _hub(self) -> Iterator[str]:
        """The Hub to use: HF_ENDPOINT when the user set one, else a local hub in ``workdir/hub``."""
        if os.environ.get("HF_ENDPOINT"):
            yield os.environ["HF_ENDPOINT"]
            return
        from hf_transfer_seg.localhub import local_hub

        with local_hub(self.workdir / "hub") as endpoint:
            # Set before anything imports huggingface_hub (it reads HF_ENDPOINT once, at import).
            os.environ["HF_ENDPOINT"] = endpoint
            try:
                yield endpoint
            finally:
                os.environ.pop("HF_ENDPOINT", None)

    # -- stages ---------------------------------------------------------------------------------
    def pretrain(self) -> list:
        from hf_transfer_seg.hub import list_revisions, revision_name
        from huggingface_hub.errors import RepositoryNotFoundError

        wanted = [revision_name(float(e)) for e in self.s.checkpoint_epochs.split(",")]
        with self._stage("pretrain", f"Pretraining {self.s.encoder} on {_describe_dataset(self.s.dataset)} with "
                         f"{self.s.num_processes} processes; checkpoints at epochs {self.s.checkpoint_epochs}") as st:
            try:
                have = {r.name for r in list_revisions(self.s.encoder_repo)}
            except RepositoryNotFoundError:
                have = set()
            if set(wanted) <= have:
                st.reused = True
                print(f"all {len(wanted)} revisions already on the hub; reusing them")
            else:
                out = self.workdir / "pretrain"
                resume = ["--resume"] if (out / "state").exists() or any(out.glob("state*")) else []
                sizes = [*(["--train-size", str(self.s.train_size)] if self.s.train_size else []),
                         *(["--val-size", str(self.s.val_size)] if self.s.val_size else [])]
                self._run(
                    "pretrain", "--encoder", self.s.encoder, "--dataset", self.s.dataset, "--recipe", "simple",
                    "--image-size", str(self.s.image_size), *sizes, "--batch-size", str(self.s.batch_size),
                    "--lr", str(self.s.lr), "--epochs", str(self.s.epochs), "--checkpoint-epochs", self.s.checkpoint_epochs,
                    "--num-workers", "0", "--repo-id", self.s.encoder_repo, "--output-dir", str(out), *resume,
                    accelerate=self.s.num_processes > 1,
                )
        revisions = [r for r in list_revisions(self.s.encoder_repo) if r.name in wanted]
        st.detail = {"revisions": len(revisions)}
        return revisions

    def score(self, revisions: list) -> dict:
        from hf_transfer_seg.cards import get_namespace
        from hf_transfer_seg.hub import read_card

        with self._stage("score", f"Scoring {len(revisions)} revisions on {self.s.score_target}") as st:
            missing = []
            for rev in revisions:
                card, _ = read_card(self.s.encoder_repo, rev.name)
                entries = (get_namespace(card.data, schema.ROBUSTNESS, {}) or {}).get(self.s.score_target, {})
                if (entries.get(HEADLINE) or {}).get("status", "ok") != "ok" or HEADLINE not in entries:
                    missing.append(rev.name)
            if not missing:
                st.reused = True
                print("every revision already carries its score; reusing them")
            else:
                num_images = self._score_images()
                self._run(
                    "score", "--repo-id", self.s.encoder_repo, "--target", self.s.score_target,
                    "--revisions", ",".join(missing), "--num-images", str(num_images),
                    "--image-size", str(self.s.score_image_size), "--view-draws", str(self.s.score_view_draws), "--seed", "0",
                )
        main, _ = read_card(self.s.encoder_repo, "main")
        summary = (get_namespace(main.data, schema.ROBUSTNESS_SUMMARY, {}) or {}).get(self.s.score_target)
        if not summary or not summary.get("best_revision"):
            raise HfTransferSegError(f"scoring wrote no best revision for {self.s.score_target} into main's card")
        return summary

    def _score_images(self) -> int:
        """``score_images``, or every image of the score target when it has fewer (asking for more than a target
        holds makes scoring warn; the demo asks for what its target has)."""
        from hf_transfer_seg.data.registry import resolve_target

        available = len(resolve_target(self.s.score_target))
        if available < self.s.score_images:
            print(f"{self.s.score_target} has {available} images: scoring with all of them")
        return min(self.s.score_images, available)

    def finetune(self, label: str, revision: str) -> list[dict]:
        """Fine-tune from ``revision`` once per seed (so the report can state the seed noise); seed 0 is pushed."""
        seeds = [int(s) for s in str(self.s.seeds).split(",") if s.strip()]
        with self._stage(f"finetune_{label}", f"Fine-tuning U-Nets from the {label} revision ({revision}) on "
                         f"{self.s.seg_target}, seeds {', '.join(map(str, seeds))}") as st:
            reused = []
            for seed in seeds:
                start = time.perf_counter()
                out = self.workdir / f"finetune-{label}" / f"seed{seed}"
                metrics_file = out / "metrics.json"
                if metrics_file.is_file() and (json.loads(metrics_file.read_text()).get("encoder") or {}).get("revision") == revision:
                    print(f"{metrics_file} exists for {revision}; reusing it")
                    reused.append(seed)
                else:
                    push = ["--push-to", self.s.seg_repo(label)] if seed == seeds[0] else []
                    # the state the fine-tune saves after each epoch (its resume/ folder): an interrupted run continues
                    resume = ["--resume"] if (out / "resume").is_dir() else []
                    if resume:
                        print(f"{out} holds an interrupted fine-tune: continuing after its last finished epoch")
                    self._run(
                        "finetune", "--encoder-repo", self.s.encoder_repo, "--revision", revision,
                        "--target", self.s.seg_target, "--epochs", str(self.seg_epochs),
                        "--image-size", str(self.s.seg_image_size), "--batch-size", str(self.s.seg_batch_size),
                        "--limit", str(self.s.seg_limit), "--eval-every", str(max(1, self.seg_epochs)),
                        "--seed", str(seed), *push, "--output-dir", str(out), *resume,
                    )
                key = f"finetune_{'best' if label == 'best' else 'second'}_seed{seed}"
                self._finished(key, round(time.perf_counter() - start, 1), seed in reused)
                if label == "best" and seed == seeds[0]:
                    self._serve("the first U-Net is pushed")
            st.reused = len(reused) == len(seeds)
        return [json.loads((self.workdir / f"finetune-{label}" / f"seed{s}" / "metrics.json").read_text()) for s in seeds]

    def report(self) -> Path:
        out = self.workdir / "report"
        with self._stage("report", "Writing the report: did the score predict Dice?"):
            self._run(
                "report", "--repo-id", self.s.encoder_repo, "--target", self.s.seg_target,
                "--score-target", self.s.score_target, "--output", str(out),
            )
        return out / "report.md"

    def deploy(self) -> None:
        with self._stage("space", f"Deploying the Space {self.s.space_id}"):
            self._deploy()

    def _deploy(self) -> None:
        self._run(
            "space", "deploy", "--space-id", self.s.space_id, "--model-repo", self.s.encoder_repo,
            "--target", self.s.score_target, "--seg-repo", self.s.seg_repo("best"),
        )

    def _serve(self, why: str, *, deploy: bool = True) -> None:
        """(Re)deploy the Space and (re)start serving it in the background (when launching is on): it shows what
        the cards say now. Its output goes to ``workdir/space.log``."""
        if not self.s.launch:
            return
        _say(f"{'Refreshing' if self.space_process else 'Launching'} the Space: {why}")
        if deploy:
            self._deploy()
        self._stop_space()
        log = open(self.workdir / "space.log", "ab")  # noqa: SIM115 - owned by the server process
        self.space_process = subprocess.Popen([
            sys.executable, "-m", "hf_transfer_seg", "space", "run", "--model-repo", self.s.encoder_repo,
            "--target", self.s.score_target, "--seg-repo", self.s.seg_repo("best"), "--port", str(self.s.port),
        ], stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONUNBUFFERED="1"))
        print(f"Space: http://127.0.0.1:{self.s.port} (starting; log {self.workdir / 'space.log'}); the demo goes on", flush=True)

    def _stop_space(self) -> None:
        if self.space_process is not None and self.space_process.poll() is None:
            self.space_process.terminate()
            try:
                self.space_process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.space_process.kill()
        self.space_process = None

    # -- the whole story ------------------------------------------------------------------------
    def run(self) -> dict:
        self.workdir.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        print(f"Working folder: {self.workdir} (hub, checkpoints, report; --workdir or ${HOME_ENV} to move it)", flush=True)
        self.plan = self._make_plan()
        _say("Plan")
        print("\n".join(self.plan.lines()), flush=True)
        try:
            with self._hub() as endpoint:
                local = (self.workdir / "hub").is_dir() and endpoint.startswith("http://127.0.0.1")
                print(f"Hub: {endpoint}" + (f" (local hub, root {self.workdir / 'hub'})" if local else ""))
                revisions = self.pretrain()
                scores = self.score(revisions)
                rows = sorted((r for r in scores.get("rows", []) if r.get("score") is not None), key=lambda r: r["score"])
                seg = {}
                for label, revision in _contrast(rows, revisions).items():
                    seg[label] = self.finetune(label, revision)
                    if label != "best":
                        self._serve(f"the U-Nets from the {label} revision are done", deploy=True)
                report = self.report()
                self.report_json = json.loads((report.parent / "report.json").read_text())
                self.deploy()
                summary = self._summary(endpoint, local, revisions, scores, seg, report, started)
                self._print(summary)
                if self.s.launch:
                    self._serve("the report is done", deploy=False)  # deployed just above
                    _say(f"The Space is served on http://127.0.0.1:{self.s.port} (Ctrl-C to stop)")
                    try:
                        self.space_process.wait()
                    except KeyboardInterrupt:  # the end of a finished demo, not an interruption
                        print("\nSpace stopped", flush=True)
        finally:
            self._stop_space()
        return summary

    def _summary(self, endpoint, local, revisions, scores, seg, report, started) -> dict:
        by_revision = {r["revision"]: r for r in scores.get("rows", [])}
        rep = getattr(self, "report_json", {}) or {}
        summary = {
            "hub": {"endpoint": endpoint, "root": str(self.workdir / "hub") if local else None},
            "data": {
                "pretraining": _describe_dataset(self.s.dataset),
                "scoring_target": _describe_target(self.s.score_target),
                "segmentation_target": _describe_target(self.s.seg_target),
            },
            "encoder_repo": self.s.encoder_repo,
            "pretraining_lr": {"lr": self.s.lr, "batch_size": self.s.batch_size,
                               "paper_linear_scaling": 4e-3 * self.s.batch_size / 4096},
            "revisions": [
                {
                    # the commit that was scored (later card commits move the branch, never the weights)
                    "revision": r.name, "epoch": r.epoch, "sha": (by_revision.get(r.name) or {}).get("sha") or r.sha,
                    "head_sha": r.sha,
                    "top1": (by_revision.get(r.name) or {}).get("top1"),
                    "score": (by_revision.get(r.name) or {}).get("score"),
                    "ci": [(by_revision.get(r.name) or {}).get("ci_low"), (by_revision.get(r.name) or {}).get("ci_high")],
                    "tied_with_best": (by_revision.get(r.name) or {}).get("tied_with_best"),
                }
                for r in revisions
            ],
            "score_config": scores.get("config", HEADLINE),
            "best_revision": scores.get("best_revision"),
            "best_sha": scores.get("best_sha"),
            "tied_with_best": scores.get("tied_with_best") or [],
            "segmentation": {
                label: {
                    "repo_id": self.s.seg_repo(label),
                    "encoder_revision": (runs[0].get("encoder") or {}).get("revision"),
                    # the commit of encoder_revision fine-tuning downloaded: after scoring's card commit, so it differs
                    # from revisions[].sha (the scored commit) by card-only commits (the Space checks the weights match)
                    "encoder_downloaded_commit": (runs[0].get("encoder") or {}).get("sha"),
                    "dice_per_seed": [(m.get("metrics") or {}).get("dice_mean") for m in runs],
                    "dice": _mean([(m.get("metrics") or {}).get("dice_mean") for m in runs]),
                }
                for label, runs in seg.items()
            },
            "space_id": self.s.space_id,
            "report": str(report),
            # the baselines, the headline score's and top-1's rules (report.md has every predictor's)
            "report_selection": [{k: r.get(k) for k in ("predictor", "rule", "online", "params", "dice_lost_vs_last",
                                                          "dice_lost_vs_oracle", "epochs_saved", "chosen_epoch_mean")}
                                 for r in rep.get("selection") or []
                                 if r.get("predictor") in ("epoch", "top1", rep.get("headline"))],
            "headline_verdict": rep.get("headline_sentence"),
            "stages": {name: asdict(stage) for name, stage in self.stages.items()},
            "wall_seconds": round(time.perf_counter() - started, 1),
        }
        self.summary_path.write_text(json.dumps(summary, indent=2))
        return summary

    def _print(self, summary: dict) -> None:
        _say("Summary")
        lr = summary["pretraining_lr"]
        print(f"encoder repo  {summary['encoder_repo']}  (pretrained on {summary['data']['pretraining']}; LR {lr['lr']:g} at "
              f"batch {lr['batch_size']}, not the paper's linear scaling {lr['paper_linear_scaling']:.2g})")
        print(f"{'revision':<16}{'epoch':>7}  {'short sha':<12}{'top-1':>7}{'score':>9}")
        for r in summary["revisions"]:
            mark = "  <- best" if r["revision"] == summary["best_revision"] else "  = tied with best" if r.get("tied_with_best") else ""
            score = f"{r['score']:.4f}" if r["score"] is not None else "failed"
            top1 = f"{r['top1']:.1f}%" if isinstance(r.get("top1"), (int, float)) else "n/a"
            print(f"{r['revision']:<16}{r['epoch']:>7g}  {r['sha'][:10]:<12}{top1:>7}{score:>9}{mark}")
        ties = [t for t in summary["tied_with_best"] if t != summary["best_revision"]]
        print(f"ties          {', '.join(ties)} cannot be told apart from the best (paired test on the same images and views)"
              if ties else "ties          no other revision is tied with the best (paired test on the same images and views)")
        for label, s in summary["segmentation"].items():
            per_seed = ", ".join(f"{d:.4f}" for d in s["dice_per_seed"] if isinstance(d, (int, float)))
            dice = f"{s['dice']:.4f}" if isinstance(s["dice"], (int, float)) else "n/a"
            print(f"U-Net from the {label} revision ({s['encoder_revision']}): Dice {dice} (seeds: {per_seed})  -> {s['repo_id']}")
        if summary["report_selection"]:
            print(f"selection     {'predictor':<33} {'rule':<31} {'kind':<10} {'lost vs last':>12} {'saved':>6}  (report.md has all)")
            for r in summary["report_selection"]:
                params = ",".join(f"{k}={v:g}" for k, v in (r.get("params") or {}).items() if isinstance(v, (int, float)))
                lost = f"{r['dice_lost_vs_last']:+.4f}" if r.get("dice_lost_vs_last") is not None else "n/a"
                saved = f"{r['epochs_saved']:.0%}" if r.get("epochs_saved") is not None else "n/a"
                rule = r["rule"] + (f"({params})" if params else "")
                print(f"              {r['predictor']:<33} {rule:<31} {'online' if r['online'] else 'hindsight':<10} {lost:>12} {saved:>6}")
        print(f"report        {summary['report']}")
        print(f"space         {summary['space_id']}")
        times = ", ".join(f"{k} {v['seconds']:.0f}s" + (" (reused)" if v["reused"] else "") for k, v in summary["stages"].items())
        print(f"wall time     {summary['wall_seconds']:.0f}s ({times})")
        print(f"summary       {self.summary_path}")
        if summary.get("headline_verdict"):
            print(f"verdict       {summary['headline_verdict']}")


def _seconds(value: float) -> str:
    return f"{value:.0f} s" if value < 90 else f"{value / 60:.0f} min"


def _mean(values: list) -> float | None:
    values = [float(v) for v in values if isinstance(v, (int, float))]
    return sum(values) / len(values) if values else None


def _contrast(rows: list[dict], revisions: list) -> dict[str, str]:
    """Revisions to fine-tune: the best-scored and the last (what "always train to the end" would use); when
    they are the same revision, the worst-scored instead of the last, so two checkpoints are compared."""
    ordered = [r.name for r in revisions]
    best = rows[0]["revision"]
    if best != ordered[-1]:
        return {"best": best, "last": ordered[-1]}
    return {"best": best, "worst": rows[-1]["revision"]} if rows[-1]["revision"] != best else {"best": best}


_DATASETS = {
    "digits": "real: scikit-learn's bundled handwritten digits (1,797 8x8 images, 10 classes)",
    "synthetic": "synthetic: generated ring images (not ImageNet)",
}


def _describe_dataset(name: str) -> str:
    return f"{name} ({_DATASETS.get(name, 'user data')})"


_KNOWN_TARGETS = {
    "mni152-tissue": "real: axial slices of the MNI152 brain template with grey/white-matter maps (shipped in nilearn)",
    "mni152-wm": "real: axial slices of the MNI152 brain template with its white-matter map (shipped in nilearn)",
    "skimage-retina": "real: tiles of the CC0 fundus photograph shipped in scikit-image",
}


def _describe_target(key: str) -> str:
    return f"{key} ({_KNOWN_TARGETS.get(key, 'user data')})"


def run_demo(settings: DemoSettings) -> dict:
    return Demo(settings).run()
