"""The analysis table from a results dataset repo written by ``rank``: models instead of checkpoints.

One series per target (``"{target} (models)"``), one row per model that was scored, in the order of the
model SPECs (``epoch`` is that position: 0, 1, 2...; it only orders the rows). Predictor columns are the
rows of ``results.csv`` with a direction (``lower_is_better`` set): the robustness grid, RankMe,
alpha-ReQ gap, LogME, linear-probe Dice. Downstream Dice comes from ``results.csv`` rows with predictor
``dice`` when present, otherwise from each model's card at the ranked revision's branch head
(``hf_transfer_seg.downstream[<target>]``, where ``finetune`` records it). The direction of every
predictor comes from the file, so ``alpha_req_gap`` (lower is better) needs no flag.
"""

from __future__ import annotations

import logging

import pandas as pd

from hf_transfer_seg.errors import DataError

log = logging.getLogger(__name__)

SERIES_SUFFIX = " (models)"


def _bool(value) -> bool | None:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    return {"true": True, "1": True, "1.0": True, "false": False, "0": False, "0.0": False}.get(text)


def card_dice(repo_id: str, revision: str, target: str, *, frozen: bool = False) -> float | None:
    """Mean downstream Dice recorded in a model's card (branch head of ``revision``), or None."""
    from hf_transfer_seg.cards.data import get_namespace
    from hf_transfer_seg.cards.schema import DOWNSTREAM, downstream_key, number
    from hf_transfer_seg.hub import read_card

    try:
        card, _ = read_card(repo_id, revision)
    except Exception as exc:  # noqa: BLE001 - a card we cannot read has no Dice for us
        log.info("no card for %s@%s: %s", repo_id, revision, exc)
        return None
    entry = (get_namespace(card.data, DOWNSTREAM, {}) or {}).get(downstream_key(target, frozen)) or {}
    return number(entry.get("dice_mean"))


def table_from_results(
    results: pd.DataFrame, target: str | None = None, *, frozen: bool = False, read_cards: bool = True
) -> tuple[pd.DataFrame, list[str]]:
    """The report table (series, epoch, dice, model, revision, sha, predictors...) and the lower-is-better predictors."""
    from hf_transfer_seg.report.table import check_table

    df = results.copy()
    if target is not None:
        df = df[df["target"] == target]
    if df.empty:
        targets = ", ".join(sorted(results["target"].dropna().astype(str).unique())) or "none"
        raise DataError(f"the results repo has no rows for target {target!r} (targets there: {targets})")
    df = df[df["status"].astype(str) == "ok"]
    df = df.assign(direction=df["lower_is_better"].map(_bool))
    dice_rows = df[df["predictor"] == "dice"]
    predictors = df[df["direction"].notna() & (df["predictor"] != "dice")]
    lower = sorted(predictors.loc[predictors["direction"].astype(bool), "predictor"].unique())
    rows = []
    for tgt, group in predictors.groupby("target", sort=True):
        models = list(dict.fromkeys(group["model"]))
        for position, model in enumerate(models):
            mine = group[group["model"] == model]
            first = mine.iloc[0]
            row = {"series": f"{tgt}{SERIES_SUFFIX}", "epoch": float(position), "model": model,
                   "revision": first["revision"], "sha": first["sha"]}
            row.update({p: float(v) for p, v in zip(mine["predictor"], mine["value"])})
            dice = dice_rows[(dice_rows["model"] == model) & (dice_rows["target"] == tgt)]["value"]
            row["dice"] = float(dice.iloc[0]) if len(dice) else (
                card_dice(first["repo_id"], str(first["revision"]), tgt, frozen=frozen) if read_cards else None
            )
            rows.append(row)
    if not rows:
        raise DataError("the results repo has no scored model (every row failed or was skipped)")
    table = check_table(pd.DataFrame(rows), "results repo")
    n_dice = int(table["dice"].notna().sum())
    log.info("results repo: %d models, %d with downstream Dice", len(table), n_dice)
    return table, lower


def load_results_table(repo_id: str, target: str | None = None, *, frozen: bool = False) -> tuple[pd.DataFrame, list[str], str]:
    """:func:`table_from_results` of dataset ``repo_id``'s ``results.csv``, and the commit it was read at."""
    from hf_transfer_seg.hub.results_repo import read_results

    results, sha = read_results(repo_id)
    if results.empty:
        raise DataError(f"dataset {repo_id} has no results yet; run `hf-transfer-seg rank ... --results-repo {repo_id}` first")
    table, lower = table_from_results(results, target, frozen=frozen)
    return table, lower, sha
