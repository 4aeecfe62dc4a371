"""Sidecars are untrusted input: hostile revision cards and grid files on the real local hub.

Each hostile revision (a grid JSON nested 200,000 deep, a ``grid_file`` outside the repository, a mapping that
is a list or a string...) is skipped by the report's cards mode and by the Space's selection with one clean
message naming it and the cause; the good revisions beside it are read as before; nothing outside the
repository is requested.
"""

from __future__ import annotations

import json
import logging

import pytest
import yaml
from huggingface_hub import CommitOperationAdd, HfApi

TARGET = "t"
HEADLINE = "cosine_m0.5_L-1_flat"
GRID = f"robustness/grid_{TARGET}.json"


def _ours(epoch: int) -> dict:
    return {
        "training": {"epoch": epoch, "top1": 10.0 * epoch},
        "robustness": {TARGET: {HEADLINE: {"score": 0.1 * epoch, "status": "ok"}}},
        "robustness_targets": {TARGET: {"description": "test", "grid_file": GRID}},
        "downstream": {TARGET: {"dice_mean": 0.5 + 0.01 * epoch}},
    }


def _good_grid(epoch: int) -> bytes:
    return json.dumps({"format": 1, "target": TARGET, "robustness": {HEADLINE: {"score": 0.1 * epoch, "per_image": [0.1, 0.2]}}}).encode()


# name -> (change to the card's mapping, grid file bytes or None for the good one)
HOSTILE = {
    "grid-nested-200000": (lambda o: o, b"[" * 200_000 + b"]" * 200_000),
    "grid-int-5000-digits": (lambda o: o, b'{"robustness": {"x": {"score": ' + b"7" * 5000 + b"}}}"),
    "grid-file-dotdot-passwd": (lambda o: o["robustness_targets"][TARGET].update(grid_file="../../../../etc/passwd"), None),
    "grid-file-absolute": (lambda o: o["robustness_targets"][TARGET].update(grid_file="/etc/passwd"), None),
    "grid-file-other-repo": (lambda o: o["robustness_targets"][TARGET].update(grid_file="../../other/repo/x"), None),
    "grid-file-a-list": (lambda o: o["robustness_targets"][TARGET].update(grid_file=["a"]), None),
    "robustness-a-list": (lambda o: o.update(robustness=[1, 2]), None),
    "robustness-target-a-string": (lambda o: o["robustness"].update({TARGET: "high"}), None),
    "robustness-targets-a-list": (lambda o: o.update(robustness_targets=[TARGET]), None),
    "downstream-a-list": (lambda o: o.update(downstream=["x"]), None),
    "training-a-string": (lambda o: o.update(training="done"), None),
}
GOOD_EPOCHS = (1, 2, 3)


def _card(ours) -> str:
    """A README.md whose front matter holds ``ours`` as the hf_transfer_seg mapping (also used by
    benchmarks/inputs_hostile.py, which imports this module's cases without the modules they test)."""
    meta = {"library_name": "timm", "hf_transfer_seg": ours}
    return "---\n" + yaml.safe_dump(meta, sort_keys=False) + "---\n# test\n"


@pytest.fixture(scope="module")
def hostile_repo(hub_endpoint):
    api = HfApi(endpoint=hub_endpoint)
    repo = "test-org/hostile-sidecars"
    api.create_repo(repo, exist_ok=True)
    api.create_commit(repo, operations=[CommitOperationAdd("README.md", _card({}).encode())], commit_message="main")
    revisions = {}
    cases = [(e, f"good-{e}", lambda o: o, None) for e in GOOD_EPOCHS]
    cases += [(10 + i, name, change, grid) for i, (name, (change, grid)) in enumerate(HOSTILE.items())]
    for epoch, name, change, grid in cases:
        branch = f"epoch-{epoch:04d}"
        ours = _ours(epoch)
        change(ours)
        api.create_branch(repo, branch=branch, exist_ok=True)
        ops = [CommitOperationAdd("README.md", _card(ours).encode()), CommitOperationAdd(GRID, grid or _good_grid(epoch))]
        api.create_commit(repo, operations=ops, commit_message=name, revision=branch)
        revisions[branch] = name
    return repo, revisions


def test_the_report_cards_mode_skips_each_hostile_revision_with_one_message(hostile_repo, caplog):
    from hf_transfer_seg.report.table import table_from_cards

    repo, revisions = hostile_repo
    with caplog.at_level(logging.WARNING, logger="hf_transfer_seg.report.table"):
        table = table_from_cards([repo], TARGET)
    assert sorted(table["revision"]) == [f"epoch-{e:04d}" for e in GOOD_EPOCHS]
    assert list(table.sort_values("epoch")[f"robustness:{HEADLINE}"]) == pytest.approx([0.1, 0.2, 0.3])
    skipped = [r.getMessage() for r in caplog.records if r.getMessage().startswith("skipped ")]
    hostile = [b for b, n in revisions.items() if not n.startswith("good")]
    assert len(skipped) == len(hostile) == len(HOSTILE)
    for branch in hostile:
        line = next(m for m in skipped if f"@{branch}:" in m)
        assert "not usable" in line and "\n" not in line and len(line) < 600


def test_the_report_command_ends_cleanly_beside_hostile_revisions(hostile_repo, tmp_path, capfd, caplog, fresh_logging):
    from hf_transfer_seg.cli import main

    repo, _ = hostile_repo
    with caplog.at_level(logging.WARNING):
        code = main(["report", "--repo-id", repo, "--target", TARGET, "--output", str(tmp_path / "r"), "--bootstrap", "50"])
    err = capfd.readouterr().err
    said = "\n".join(r.getMessage() for r in caplog.records)
    assert code in (0, 2) and "Traceback" not in err + said, err[-3000:]
    assert said.count("skipped test-org/hostile-sidecars@") == len(HOSTILE)
    assert "/etc/passwd" in said and "must be relative" in said and "'..' components" in said


def test_the_space_selection_skips_each_hostile_revision_and_says_why(hostile_repo):
    from hf_transfer_seg.space.config import SpaceConfig
    from hf_transfer_seg.space.selection import select

    repo, revisions = hostile_repo
    selection = select(SpaceConfig(model_repo=repo))
    skipped = [n for n in selection.notices if n.startswith("revision ") and " skipped: " in n]
    assert len(skipped) == len(HOSTILE)
    for branch, name in revisions.items():
        said = [n for n in skipped if n.startswith(f"revision {branch} ")]
        assert len(said) == (0 if name.startswith("good") else 1), (branch, name, selection.notices)
    assert {r.revision for r in selection.rows} == {f"epoch-{e:04d}" for e in GOOD_EPOCHS}


@pytest.mark.parametrize("path", ["../../../../etc/passwd", "/etc/passwd", "../../other/repo/x", "a/./b", "a//b",
                                  "x/.git/config", "a\\b", "a\x00b", "", "a/", 7, "x" * 5000])
def test_grid_file_follows_the_upload_path_rule(path):
    from hf_transfer_seg.cards.shape import card_problems
    from hf_transfer_seg.localhub.names import BadRequest, check_path
    from hf_transfer_seg.repo_paths import RepoPathError, check_repo_path

    with pytest.raises(RepoPathError) as ours:
        check_repo_path(path)
    with pytest.raises(BadRequest) as hub:  # the local hub refuses the same path as an upload, with the same words
        check_path(path)
    assert str(ours.value) == str(hub.value)
    problems = card_problems({"robustness_targets": {TARGET: {"grid_file": path}}})
    assert len(problems) == 1 and "grid_file" in problems[0]


def test_plain_relative_paths_pass():
    from hf_transfer_seg.cards.shape import card_problems
    from hf_transfer_seg.repo_paths import check_repo_path

    assert check_repo_path(GRID) == GRID
    assert card_problems(_ours(1)) == []


def test_the_bounded_json_loader():
    from hf_transfer_seg import safe_json

    with pytest.raises(safe_json.JSONLimitError, match="deeper"):
        safe_json.loads("[" * 200_000 + "]" * 200_000)
    with pytest.raises(safe_json.JSONLimitError, match="65 levels"):
        safe_json.loads("[" * 65 + "]" * 65)
    with pytest.raises(safe_json.JSONLimitError, match="bytes"):
        safe_json.loads(b" " * 100 + b"{}", max_bytes=50)
    with pytest.raises(safe_json.JSONLimitError, match="digits"):
        safe_json.loads("1" * 5000)
    with pytest.raises(ValueError, match="NaN"):
        safe_json.loads('{"x": NaN}')
    assert safe_json.loads('{"a": "[[[[", "b": [1, 2.5, null]}') == {"a": "[[[[", "b": [1, 2.5, None]}
    assert safe_json.loads("[" * 64 + "]" * 64) is not None
