"""Hostile and careless command lines end in ONE clean line (exit 2, the flag and the fix named, no traceback),
before any work; and the scoring layer never records an input error as a property of a checkpoint.

Most cases run ``hf_transfer_seg.cli.main`` in this process (argument errors happen while parsing); a few run
real processes, which also prove that no torch import happened before the error. Issue 19 items 6, 7, 8 and
issue 20 item 8. Run with ``-s`` for the tally.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import huggingface_hub  # noqa: F401 - imported now: its log handler binds to the real stderr, not a test's capture
import pytest

from hf_transfer_seg.cli import main as cli_main

ROOT = Path(__file__).resolve().parents[1]
TALLY = {"tried": 0, "clean": 0}


pytestmark = pytest.mark.usefixtures("fresh_logging")


@pytest.fixture(scope="module", autouse=True)
def _report_tally():
    yield
    print(f"\nbad command lines tried: {TALLY['tried']}, clean errors: {TALLY['clean']}")


def _errors(stderr: str) -> list[str]:
    return re.findall(r"(?:^|[\r\]|])error: [^\n]*", stderr, flags=re.M)


def _assert_clean(code, out: str, err: str, *words: str) -> str:
    text = out + err
    errors = _errors(err)
    clean = code == 2 and "Traceback" not in text and len(errors) == 1 and all(w in errors[0] for w in words)
    TALLY["tried"] += 1
    TALLY["clean"] += bool(clean)
    assert clean, (code, words, text[-2500:])
    return errors[0]


# ---------------------------------------------------------------------------------------------------
# argument values: refused while parsing (in process)

PRETRAIN = ["pretrain", "--encoder", "test_resnet", "--dataset", "synthetic", "--epochs", "1"]
FINETUNE = ["finetune", "--encoder-folder", "nowhere", "--target", "mni152-tissue"]
SCORE = ["score", "--repo-id", "local/encoder"]
RANK = ["rank", "--models", "local/encoder", "--target", "skimage-retina"]
REPORT = ["report", "--table", "no-such.csv", "--output", "report-out"]

NUMERIC = [
    # pretrain
    *[(PRETRAIN, "--seed", v) for v in ("nan", "-1", "1e3", "99999999999999999999", "4294967296")],
    *[(PRETRAIN, "--lr", v) for v in ("nan", "inf", "-1", "0", "1e9")],
    *[(PRETRAIN, "--warmup-epochs", v) for v in ("nan", "-inf", "-1", "1e300")],
    *[(PRETRAIN, "--min-lr", v) for v in ("nan", "inf", "-1e-3")],
    *[(PRETRAIN, "--drop-path", v) for v in ("nan", "-0.1", "1", "7")],
    *[(PRETRAIN, "--num-workers", v) for v in ("-1", "1e9", "100000", "nan")],
    *[(PRETRAIN, "--num-classes", v) for v in ("0", "1", "-5", "1000000000")],
    *[(PRETRAIN, "--epochs", v) for v in ("inf", "nan")],
    # pretrain's live scoring: the same bounds as `score`'s flags
    *[(PRETRAIN, "--score-num-images", v) for v in ("0", "-3", "nan", "99999999999999999999")],
    *[(PRETRAIN, "--score-image-size", v) for v in ("0", "1000000")],
    *[(PRETRAIN, "--score-batch-size", v) for v in ("0", "nan")],
    *[(PRETRAIN, "--score-seed", v) for v in ("-1", "nan")],
    *[(PRETRAIN, "--score-device", v) for v in ("meta", "nonsense")],
    *[(PRETRAIN, "--early-stop-patience", v) for v in ("0", "-1", "nan")],
    *[(PRETRAIN, "--early-stop-min-delta", v) for v in ("nan", "-1", "inf")],
    # finetune / sweep
    *[(FINETUNE, "--num-classes", v) for v in ("1", "-3", "inf")],
    *[(FINETUNE, "--resize-longest", v) for v in ("0", "-1", "nan", "1000000000")],
    *[(FINETUNE, "--window", v) for v in ("nan,40", "inf,0", "0,40", "-400,40", "400,nan", "400", "400,40,2", "no-such-window", "")],
    *[(FINETUNE, "--intensity-range", v) for v in ("0,inf", "nan,1", "5,1", "3,3", "a,b", "1")],
    *[(FINETUNE, "--lr", v) for v in ("nan", "-0.1")],
    *[(FINETUNE, "--num-workers", v) for v in ("-1", "nan")],
    *[(FINETUNE, "--val-fraction", v) for v in ("0", "1", "nan")],
    *[(FINETUNE, "--seed", v) for v in ("-1", "nan")],
    (["sweep", "--repo-id", "local/encoder"], "--revisions", ",,,"),
    # score
    *[(SCORE, "--seed", v) for v in ("nan", "-1")],
    *[(SCORE, "--window", v) for v in ("nan,40", "0,40")],
    *[(SCORE, "--intensity-range", v) for v in ("0,inf", "-inf,0")],
    *[(SCORE, "--revisions", v) for v in (",,,", "", " , ", "nan", "inf", "-1", "epoch-0001,,2", "../main")],
    *[(SCORE, "--device", v) for v in ("nonsense", "meta", "cpu:3", "cuda:x", "")],
    *[(SCORE, "--num-images", v) for v in ("0", "nan")],
    *[(SCORE, "--image-size", v) for v in ("0", "1000000")],
    # rank
    *[(RANK, "--seed", v) for v in ("nan", "-2")],
    *[(RANK, "--device", v) for v in ("meta", "nonsense")],
    (RANK, "--image-size", "100000"),
    (RANK, "--batch-size", "0"),
    *[(c, "--view-draws", v) for c in (SCORE, RANK) for v in ("0", "33", "nan")],
    # report (type= validators only)
    *[(REPORT, "--bootstrap", v) for v in ("-1", "nan", "1000000000")],
    *[(REPORT, "--tolerance", v) for v in ("nan", "-0.1", "2", "inf")],
    (REPORT, "--seed", "-1"),
    (REPORT, "--patience", "0"),
    *[(REPORT, "--max-loss", v) for v in ("-0.5", "nan", "inf", "-inf", "x")],
    # others
    (["push-pending", "--output-dir", "x", "--repo-id", "local/x"], "--attempts", "0"),
    (["push-pending", "--output-dir", "x", "--repo-id", "local/x"], "--retry-delay", "nan"),
    (["space", "run", "--model-repo", "local/x"], "--max-megapixels", "nan"),
    (["space", "run", "--model-repo", "local/x"], "--max-side", "-1"),
    *[(["demo"], "--num-processes", v) for v in ("0", "-2", "nan")],
    *[(["demo"], "--port", v) for v in ("99999", "-1", "nan")],
]


@pytest.mark.parametrize("prefix, flag, value", NUMERIC, ids=[f"{p[0]} {f} {v}" for p, f, v in NUMERIC])
def test_bad_flag_values_are_one_clean_line_naming_the_flag(prefix, flag, value, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = cli_main([*prefix, f"{flag}={value}"])
    captured = capsys.readouterr()
    line = _assert_clean(code, captured.out, captured.err, f"argument {flag}")
    assert "--help" in line  # where to read the valid values


def test_cuda_index_beyond_the_visible_gpus_is_refused(capsys):
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    code = cli_main([*SCORE, "--device", "cuda:99"])
    captured = capsys.readouterr()
    _assert_clean(code, captured.out, captured.err, "argument --device", "cuda:99", str(count) if count else "no cuda")


BAD_REPO_IDS = ["local/é", "local/encoder ", " local/encoder", "../x", "", "a/b/c", "local/enc\nx", "local/..", "local/-x", "/x", "local/"]


@pytest.mark.parametrize("bad", BAD_REPO_IDS, ids=[repr(b) for b in BAD_REPO_IDS])
@pytest.mark.parametrize("command", ["score", "rank", "finetune", "sweep", "push-pending", "space"])
def test_repo_ids_the_client_rejects_are_one_clean_line(command, bad, capsys, tmp_path):
    argv = {
        "score": ["score", "--repo-id", bad],
        "rank": ["rank", "--target", "skimage-retina", "--models", bad],
        "finetune": ["finetune", "--encoder-repo", bad],
        "sweep": ["sweep", "--repo-id", bad],
        "push-pending": ["push-pending", "--output-dir", str(tmp_path), "--repo-id", bad],
        "space": ["space", "deploy", "--model-repo", "local/x", "--target", "t", "--space-id", bad],
    }[command]
    code = cli_main(argv)
    captured = capsys.readouterr()
    _assert_clean(code, captured.out, captured.err, "argument --")
    assert "HFValidationError" not in captured.err


@pytest.mark.parametrize("spec, words", [
    ("local/enc@", ["nothing after '@'"]),
    ("local/enc@../../x", ["'../../x' is not a branch"]),
    ("local/enc@a b", ["not a branch"]),
    ("local/enc@x@y", ["not a branch"]),
    ("local/é@main", ["not a valid Hub repo id"]),
])
def test_model_specs_with_a_bad_revision_are_refused(spec, words, capsys):
    code = cli_main(["rank", "--target", "skimage-retina", "--models", "local/ok", spec])
    captured = capsys.readouterr()
    _assert_clean(code, captured.out, captured.err, "argument --models", *words)


def test_paths_that_cannot_be_read_or_written(capsys, tmp_path):
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    cases = [
        (["score", "--repo-id", "local/x", "--target", "/dev/zero"], "--target"),
        (["rank", "--models", "local/x", "--target", "/dev/null"], "--target"),
        (["finetune", "--encoder-folder", "x", "--target", "/dev/zero"], "--target"),
        (["report", "--table", "t.csv", "--output", str(a_file)], "--output"),
        (["report", "--table", "t.csv", "--output", str(a_file / "inside")], "--output"),
        (["report", "--table", "t.csv", "--output", ""], "--output"),
        (["finetune", "--encoder-folder", "x", "--output-dir", str(a_file)], "--output-dir"),
        ([*PRETRAIN, "--output-dir", str(a_file / "out")], "--output-dir"),
        (["hub", "serve", "--root", ""], "--root"),
        (["hub", "serve", "--root", str(a_file)], "--root"),
    ]
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    cases.append((["score", "--repo-id", "local/x", "--target", str(fifo)], "--target"))  # reading it would hang
    for argv, flag in cases:
        code = cli_main(argv)
        captured = capsys.readouterr()
        _assert_clean(code, captured.out, captured.err, f"argument {flag}")


# ---------------------------------------------------------------------------------------------------
# real processes: one line on stderr, and the error came before torch was imported

_PROBE = r'''
import json, sys
from hf_transfer_seg.cli import main
code = main(json.loads(sys.argv[1]))
print("TORCH_IMPORTED" if "torch" in sys.modules else "NO_TORCH")
sys.exit(code)
'''


@pytest.mark.parametrize("argv", [
    [*SCORE, "--window", "nan,40"],
    [*SCORE, "--intensity-range", "0,inf"],
    ["score", "--repo-id", "local/é"],
    ["rank", "--target", "skimage-retina", "--models", "local/enc@../../x"],
    [*PRETRAIN, "--lr", "nan"],
    [*REPORT, "--bootstrap", "-1"],
    ["hub", "serve", "--root", ""],
], ids=lambda a: " ".join(a[:1] + a[-2:]))
def test_real_process_exits_2_with_one_line_before_importing_torch(argv, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", _PROBE, json.dumps(argv)], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=120)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    _assert_clean(done.returncode, done.stdout, done.stderr, "argument --")
    assert len(lines) == 1, done.stderr
    assert "NO_TORCH" in done.stdout, "torch was imported before the argument error"


# ---------------------------------------------------------------------------------------------------
# the scoring layer: an input error is never recorded as a property of a checkpoint


def _checkpoint(folder: Path, *, collapse: bool = False) -> Path:
    import timm
    import torch

    from hf_transfer_seg.models.checkpoint import save_checkpoint

    torch.manual_seed(0)
    model = timm.create_model("test_resnet", num_classes=10)
    if collapse:  # every conv zero and every BatchNorm a constant: the output ignores the image
        with torch.no_grad():
            for name, p in model.named_parameters():
                p.zero_()
                if name.endswith("bias") and ".bn" in name or name.startswith("bn1.bias"):
                    p.fill_(1.0)
    data = {"input_size": (3, 32, 32), "mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25), "crop_pct": 1.0}
    return save_checkpoint(model, folder, data_config=data)


def test_a_non_finite_window_never_marks_a_good_checkpoint_failed(hub_endpoint, repo_id, tmp_path):
    """Bypassing the CLI's parse-time check (a library call): the plan refuses NaN inputs before any
    checkpoint is scored, so the good revision's card does not say 'diverged training or broken weights'."""
    from medical_data import write_nifti

    from hf_transfer_seg import hub
    from hf_transfer_seg.cards.data import get_namespace
    from hf_transfer_seg.errors import HfTransferSegError
    from hf_transfer_seg.scoring.pipeline import run_score

    hub.push_revision(_checkpoint(tmp_path / "good"), repo_id, 1)
    volume, _ = write_nifti(tmp_path)
    with pytest.raises(HfTransferSegError) as info:
        run_score(repo_id, str(volume), num_images=8, image_size=32, batch_size=8, device="cpu", progress=False,
                  target_options={"window": "nan,40"})
    assert "window" in str(info.value).lower() or "nan" in str(info.value).lower()
    card, _ = hub.read_card(repo_id, "epoch-0001")
    assert get_namespace(card.data, "robustness") in (None, {}), "an input error was written into the checkpoint's card"


def test_an_intensity_range_that_blanks_every_image_is_refused(hub_endpoint, repo_id, tmp_path, capsys):
    """A finite range far wider than the data maps every pixel to 0: was scored 0.5000 silently."""
    from medical_data import write_nifti

    from hf_transfer_seg import hub

    hub.push_revision(_checkpoint(tmp_path / "good"), repo_id, 1)
    volume, _ = write_nifti(tmp_path)
    code = cli_main(["score", "--repo-id", repo_id, "--target", str(volume), "--intensity-range=0,1e30",
                     "--num-images", "8", "--image-size", "32", "--batch-size", "8", "--device", "cpu", "--no-progress"])
    captured = capsys.readouterr()
    _assert_clean(code, captured.out, captured.err, "constant")


def test_score_that_scored_nothing_exits_non_zero(hub_endpoint, repo_id, tmp_path, capsys):
    from hf_transfer_seg import hub

    folder = _checkpoint(tmp_path / "bad")
    config = json.loads((folder / "config.json").read_text())
    config["architecture"] = "no_such_architecture"
    (folder / "config.json").write_text(json.dumps(config))
    hub.push_revision(folder, repo_id, 1)
    code = cli_main(["score", "--repo-id", repo_id, "--target", "skimage-retina", "--num-images", "8", "--image-size", "32",
                     "--batch-size", "8", "--device", "cpu", "--no-progress", "--dry-run"])
    captured = capsys.readouterr()
    _assert_clean(code, captured.out, captured.err, "no revision", "epoch-0001")


# ---------------------------------------------------------------------------------------------------
# rank: nothing scored (19.6), a collapsed model (20.8)


def test_rank_with_no_model_that_could_be_scored_names_each_and_exits_2(hub_endpoint, tmp_path, capsys):
    from huggingface_hub import HfApi

    pickled = f"bad-{tmp_path.name[-12:]}/pickled".replace("_", "-")
    HfApi().create_repo(pickled, exist_ok=True)
    folder = tmp_path / "pickled"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"architecture": "test_resnet"}))
    (folder / "pytorch_model.bin").write_bytes(b"never unpickled")
    HfApi().upload_folder(repo_id=pickled, folder_path=str(folder))
    code = cli_main(["rank", "--models", "local/none", "local/enc@no-such-branch", pickled, "--target", "skimage-retina",
                     "--num-images", "8", "--no-progress", "--device", "cpu"])
    captured = capsys.readouterr()
    line = _assert_clean(code, captured.out, captured.err, "no model could be scored", "local/none", pickled)
    assert "local/enc@no-such-branch" in line and "skipped" in line and "KeyError" not in captured.err


def test_rank_flags_a_collapsed_model_and_says_the_resolution(hub_endpoint, tmp_path, capsys):
    from huggingface_hub import HfApi

    from hf_transfer_seg.hub.results_repo import read_results

    api, ns = HfApi(), f"rank-{tmp_path.name[-10:]}".replace("_", "-")
    for name, collapse in (("good", False), ("collapsed", True)):
        api.create_repo(f"{ns}/{name}", exist_ok=True)
        api.upload_folder(repo_id=f"{ns}/{name}", folder_path=str(_checkpoint(tmp_path / name, collapse=collapse)))
    code = cli_main(["rank", "--models", f"{ns}/good", f"{ns}/collapsed", "--target", "skimage-retina", "--num-images", "8",
                     "--batch-size", "8", "--no-progress", "--device", "cpu", "--results-repo", f"{ns}/ranking"])
    captured = capsys.readouterr()
    assert code == 0, captured.err[-3000:]
    out = captured.out
    # one resolution for every model, chosen from the target (skimage-retina: 224 px), never a model's pretraining size
    assert "Resolution 224 px: chosen from the target" in out and "config records" not in out
    assert f"`{ns}/collapsed`" in out and "collapsed: every image has the same score 0.5000" in out
    assert f"Ranking by the score (best first): `{ns}/good`." in out
    df, _ = read_results(f"{ns}/ranking")
    head = df[(df["model"] == f"{ns}/collapsed") & df["predictor"].str.startswith("robustness:cosine_m0.5_L-1")]
    assert set(head["status"]) == {"collapsed"} and head["value"].notna().all()
    assert df[df["model"] == f"{ns}/good"]["status"].eq("ok").all()
    # --image-size: every model at that size, and the output says so
    code = cli_main(["rank", "--models", f"{ns}/good", "--target", "skimage-retina", "--num-images", "8", "--image-size", "48",
                     "--batch-size", "8", "--no-progress", "--device", "cpu"])
    captured = capsys.readouterr()
    assert code == 0, captured.err[-3000:]
    assert "Resolution: 48 px (--image-size)" in captured.out


def test_disagreeing_predictors_are_named():
    import pandas as pd

    from hf_transfer_seg.scoring.rank_results import disagreement_lines

    table = pd.DataFrame({
        "status": ["ok", "ok", "ok"], "value": [0.1, 0.2, 0.3], "rankme": [5.0, 10.0, 20.0],
        "alpha_req_gap": [0.1, 0.2, 0.3], "logme": [0.3, 0.2, 0.1], "linear_probe_dice": [0.2, 0.5, 0.9],
    }, index=["a", "b", "c"])
    (line,) = disagreement_lines(table)
    assert "label-aware and label-free" in line and "robustness score `a`" in line and "RankMe `c`" in line
    assert "linear-probe-dice `c`" in line and "RankMe -1.00" in line and "logme +1.00" in line
    agree = table.assign(rankme=[20.0, 10.0, 5.0], linear_probe_dice=[0.9, 0.5, 0.2])
    assert disagreement_lines(agree) == []


def test_out_of_memory_is_the_runs_failure_not_the_checkpoints():
    """A revision that 'failed' with the device out of memory stops the run with the fix; it is not recorded."""
    from hf_transfer_seg.errors import ConfigError
    from hf_transfer_seg.scoring.runner import raise_if_run_failure
    from hf_transfer_seg.scoring.scorer import RevisionScore

    oom = RevisionScore("epoch-0001", 1.0, "a" * 40, status="failed",
                        reason="OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 GiB")
    with pytest.raises(ConfigError, match="--batch-size \\(now 512\\)"):
        raise_if_run_failure(oom, batch_size=512, device="cuda:0")
    broken = RevisionScore("epoch-0002", 2.0, "b" * 40, status="failed", reason="the encoder's features are NaN/Inf")
    raise_if_run_failure(broken, batch_size=512, device="cuda:0")  # a checkpoint's own failure: recorded as before


@pytest.mark.parametrize("bad", ["local/é", "../x", "a/b/c", "local/x--y"])
def test_a_repo_id_flag_without_a_parse_check_still_ends_cleanly(bad, capsys, tmp_path):
    """report.py (another helper's module) keeps its plain --repo-id: the Hub client's HFValidationError is mapped
    to the same one clean line by cli.failures, not a traceback."""
    code = cli_main(["report", "--repo-id", bad, "--target", "t", "--output", str(tmp_path / "r")])
    captured = capsys.readouterr()
    _assert_clean(code, captured.out, captured.err, "refused a repository id", "owner/name")
