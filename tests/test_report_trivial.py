"""Issue 26 item 1 in the report: every series' Dice beside the best trivial prediction on the same images.

Constructed tables whose floors are known (some series do not beat theirs; a table without the column), bad
floor values refused in one line, and cards written by the real fine-tuning helpers on the local hub.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from hf_transfer_seg.errors import DataError
from hf_transfer_seg.report.table import check_table, predictor_columns, rows_from_card
from hf_transfer_seg.report.write import write_report

EPOCHS = [1, 2, 5, 10, 20]
SCORE = "robustness:cosine_m0.5_L-1_flat"
FAILING = {"s1": 0.873, "s3": 0.95}  # series whose last Dice (0.86, 0.80) does not beat the floor


def _table(floor: bool = True) -> pd.DataFrame:
    """Four series, Dice rising to 0.80-0.86; s1 and s3 sit below their trivial floor, s0 and s2 above it."""
    rng = np.random.default_rng(0)
    rows = []
    for s, last in enumerate([0.85, 0.86, 0.83, 0.80]):
        dice = np.linspace(last - 0.2, last, len(EPOCHS))
        for e, d in zip(EPOCHS, dice):
            row = {"series": f"s{s}", "run": f"r{s}", "epoch": e, "dice": d, SCORE: -d + rng.normal(0, 0.01)}
            if floor:
                row["trivial_dice"] = FAILING.get(f"s{s}", 0.30)
            rows.append(row)
    return pd.DataFrame(rows)


def _report(df: pd.DataFrame, out) -> tuple[dict, str]:
    write_report(check_table(df), out, source="test", n_boot=50, plots=False, cluster_by=["run"])
    return json.loads((out / "report.json").read_text()), (out / "report.md").read_text()


def test_series_below_their_trivial_floor_are_named_and_warned_at_the_top(tmp_path):
    report, md = _report(_table(), tmp_path)
    floor = report["trivial_baseline"]
    assert floor["recorded"] and floor["n_series"] == 4 and floor["n_not_beating"] == 2
    assert floor["not_beating"] == ["s1", "s3"]
    assert floor["series"]["s1"] == {"epoch": 20.0, "dice": pytest.approx(0.86), "trivial_dice": 0.873, "trivial_baseline": None,
                                     "beats": False}
    assert floor["series"]["s0"]["beats"] and floor["series"]["s0"]["trivial_dice"] == 0.30
    # every checkpoint of s1 (0.66..0.86 < 0.873) and s3 (< 0.95) is at or below; none of s0/s2 (>= 0.63 > 0.30)
    assert floor["n_checkpoints_at_or_below"] == 10 and floor["n_checkpoints"] == 20
    assert "trivial_dice" not in report["predictors"]  # the floor is never a predictor

    lines = md.splitlines()
    assert lines[2].startswith("> **Warning: Dice here is not evidence of learning:")  # right under the title
    assert "2 of 4 series" in lines[2] and "s1 (Dice 0.86 vs trivial 0.873)" in lines[2] and "s3 (Dice 0.8 vs trivial 0.95)" in lines[2]
    baselines = md.split("## Baselines")[1].split("## Selection rules")[0]
    assert "Training length alone" in baselines and "the last checkpoint beats it in 2 of 4 series; not in 2: s1, s3" in baselines
    assert "| s1 | 20 | 0.8600 | 0.8730 | **no** |" in baselines and "| s0 | 20 | 0.8500 | 0.3000 | yes |" in baselines
    assert baselines.index("| s3 |") < baselines.index("| s0 |")  # failures first


def test_every_series_above_its_floor_gives_no_warning(tmp_path):
    df = _table()
    df["trivial_dice"] = 0.1
    report, md = _report(df, tmp_path)
    assert report["trivial_baseline"]["n_not_beating"] == 0 and report["trivial_baseline"]["warning"] is None
    assert "not evidence of learning" not in md and "beats it in 4 of 4 series;" in md


def test_a_table_without_the_column_says_so_in_one_line(tmp_path):
    report, md = _report(_table(floor=False), tmp_path)
    assert report["trivial_baseline"] == {"recorded": False, "text": "trivial baselines not recorded"}
    assert md.count("trivial baselines not recorded") == 1 and "not evidence of learning" not in md
    assert "best trivial Dice" not in md  # no empty table


def test_seeds_collapse_keeps_the_floor_and_a_missing_last_floor_falls_back_to_the_series():
    df = _table()
    long = pd.concat([df.assign(seed=0), df.assign(seed=1, dice=df["dice"] + 0.01)])
    long.loc[(long["series"] == "s1") & (long["epoch"] == 20), "trivial_dice"] = np.nan  # not stored at the last one
    table = check_table(long)
    assert "trivial_dice" not in predictor_columns(table) and "num_seeds" in table
    from hf_transfer_seg.report.trivial import trivial_floor

    floor = trivial_floor(table)
    assert floor["series"]["s1"]["trivial_dice"] == pytest.approx(0.873)  # the series' recorded floor (same images)
    assert floor["series"]["s1"]["dice"] == pytest.approx(0.865) and floor["not_beating"] == ["s1", "s3"]

    table.loc[table["series"] == "s3", "trivial_dice"] = np.nan  # a series whose cards predate the floor
    floor = trivial_floor(table)
    assert floor["n_series_without"] == 1 and "s3" not in floor["series"] and floor["not_beating"] == ["s1"]
    from hf_transfer_seg.report.trivial import markdown_lines

    assert "(1 series without a recorded floor)" in markdown_lines(floor)[0]


@pytest.mark.parametrize("value, message", [
    ("high", "column 'trivial_dice' holds 1 non-numeric value(s) (first: 'high')"),
    (87.3, "column 'trivial_dice' reaches 87.3 while every dice is at most 1"),
])
def test_bad_floor_values_are_one_line_and_exit_2(tmp_path, value, message):
    df = _table().astype({"trivial_dice": object})
    df.loc[3, "trivial_dice"] = value
    df.to_csv(tmp_path / "t.csv", index=False)
    done = subprocess.run([sys.executable, "-m", "hf_transfer_seg", "report", "--table", str(tmp_path / "t.csv"), "--output",
                           str(tmp_path / "o"), "--no-plots"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "Traceback" not in done.stderr and message in done.stderr, done.stderr[-2000:]
    assert not (tmp_path / "o").exists()  # nothing half-written
    with pytest.raises(DataError, match="trivial_dice"):
        check_table(df)


def _entry(fraction_foreground: float, dice: float) -> dict:
    """A downstream entry as fine-tuning writes it: real baselines from masks, through run_record's helpers."""
    from hf_transfer_seg.finetune.push import baseline_dice, merge_run
    from hf_transfer_seg.metrics import baselines

    ref = (np.arange(100).reshape(10, 10) < 100 * fraction_foreground).astype(np.int64)
    metrics = baselines.attach({"dice_mean": dice}, [ref], 2, ["background", "cells"])
    run = {"seed": 0, "dice": dice, "baselines": baseline_dice(metrics), "distance_unit": "px at 10x10 (HxW)"}
    return merge_run(None, run, recipe={"epochs": 1}, target={"key": "t"})


def _card_data(entry: dict):
    from huggingface_hub import ModelCardData

    from hf_transfer_seg.cards import set_namespace

    data = ModelCardData(library_name="timm")
    set_namespace(data, "downstream", {"t": entry})
    return data


def test_rows_from_card_carry_the_best_trivial_dice_and_its_name():
    def row(entry):
        return rows_from_card(_card_data(entry), series="a", revision="epoch-0001", epoch=1, sha="x", target_key="t")

    got = row(_entry(0.75, 0.70))
    assert got["trivial_dice"] == pytest.approx(2 * 75 / 175) and got["trivial_baseline"] in ("all_foreground", "majority_class")
    old = row({"dice_mean": 0.7})
    assert old["trivial_dice"] is None and old["trivial_baseline"] is None  # cards written before the floor existed
    hostile = row({"dice_mean": 0.7, "baselines": {"all_foreground": True, "majority_class": "0.9", "all_background": [1]}})
    assert hostile["trivial_dice"] == 0.9 and hostile["trivial_baseline"] == "majority_class"  # a bool is not a Dice
    assert row({"dice_mean": 0.7, "baselines": ["x"]})["trivial_dice"] is None


@pytest.fixture(scope="module")
def card_repos(hub_endpoint):
    """Two encoder repos whose revision cards hold downstream entries written by the fine-tuning helpers: on
    "cells" the foreground is 75 % of the pixels (all-foreground Dice 0.857, above every U-Net), on "vessels" 20 %."""
    from huggingface_hub import CommitOperationAdd, HfApi, ModelCard

    from hf_transfer_seg.finetune.push import apply_downstream

    api = HfApi(endpoint=hub_endpoint)
    repos = {}
    for name, fraction, dice in (("cells", 0.75, [0.60, 0.70, 0.80]), ("vessels", 0.20, [0.50, 0.60, 0.70])):
        repo = f"test-org/trivial-{name}"
        api.create_repo(repo, exist_ok=True)
        for epoch, d in enumerate(dice, start=1):
            branch = f"epoch-{epoch:04d}"
            api.create_branch(repo, branch=branch, exist_ok=True)
            card = apply_downstream(ModelCard("---\nlibrary_name: timm\n---\n# encoder\n"), "t", _entry(fraction, d), model_name=repo)
            api.create_commit(repo, operations=[CommitOperationAdd("README.md", str(card).encode())], commit_message=branch,
                              revision=branch)
        repos[name] = repo
    return repos


def test_cards_mode_reads_the_floor_from_the_hub_and_warns(card_repos, tmp_path, capsys, fresh_logging):
    from hf_transfer_seg.cli import main

    code = main(["report", "--repo-id", card_repos["cells"], "--repo-id", card_repos["vessels"], "--target", "t", "--output", str(tmp_path / "r"),
                 "--bootstrap", "50", "--no-plots"])
    out, err = capsys.readouterr()
    assert code == 0, err[-2000:]
    floor = json.loads((tmp_path / "r" / "report.json").read_text())["trivial_baseline"]
    assert floor["not_beating"] == [card_repos["cells"]] and floor["n_series"] == 2
    assert floor["series"][card_repos["cells"]]["trivial_dice"] == pytest.approx(2 * 75 / 175)
    assert floor["series"][card_repos["vessels"]]["trivial_dice"] == pytest.approx(2 * 20 / 120)
    assert floor["series"][card_repos["cells"]]["trivial_baseline"] in ("all_foreground", "majority_class")
    assert "warning: Dice here is not evidence of learning: the last checkpoint of 1 of 2 series" in out
    assert (tmp_path / "r" / "report.md").read_text().splitlines()[2].startswith("> **Warning: Dice here is not evidence")


def test_the_report_reads_cards_without_importing_torch():
    code = ("import sys; import hf_transfer_seg.report.table, hf_transfer_seg.report.write, hf_transfer_seg.metrics.baselines; "
            "print('torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.stdout.strip() == "False", done.stderr[-2000:]


def test_mains_downstream_summary_shows_the_floor_and_warns_when_nothing_beats_it(card_repos):
    """The main card's summary, built from the same cards (table_from_cards -> summary_entry -> main_section)."""
    from hf_transfer_seg.report.summary import main_section, summary_entry
    from hf_transfer_seg.report.table import table_from_cards

    cells = summary_entry(table_from_cards([card_repos["cells"]], "t"), "t")
    assert [r["trivial_dice"] for r in cells["rows"]] == pytest.approx([2 * 75 / 175] * 3)
    text = main_section({"t": cells})
    assert "| epoch-0003 | 3 | 0.8000 |  | 0.8571 (" in text and "best trivial Dice" in text
    assert "**Warning:** Dice here is not evidence of learning: the best Dice (0.8000) does not beat" in text
    vessels = main_section({"t": summary_entry(table_from_cards([card_repos["vessels"]], "t"), "t")})
    assert "0.3333 (" in vessels and "Warning" not in vessels
    old = main_section({"t": {"rows": [{"revision": "epoch-0001", "epoch": 1.0, "sha": "abc", "dice_mean": 0.5}],
                              "best_revision": "epoch-0001", "best_dice": 0.5}})
    assert "| epoch-0001 | 1 | 0.5000 |  | n/a |" in old and "Warning" not in old  # summaries written before the floor
