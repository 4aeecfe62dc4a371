"""The analysis table: one row per (series, checkpoint) with ``series``, ``epoch``, ``dice`` and predictors.

From a CSV (results from anywhere) or from the cards of a repository's checkpoint revisions. Every
numeric column other than ``series``/``epoch``/``dice`` is a candidate predictor. Directions are never
guessed from names: the tool's own columns have known ones (:mod:`hf_transfer_seg.selection`), any
other column's direction must be declared (``--lower-is-better`` / ``--higher-is-better``).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from hf_transfer_seg.cards import schema
from hf_transfer_seg.cards.schema import downstream_key, number
from hf_transfer_seg.errors import ConfigError, DataError
from hf_transfer_seg.metrics.baselines import best_baseline
from hf_transfer_seg.report import trivial

log = logging.getLogger(__name__)

REQUIRED = ("series", "epoch", "dice")
# columns a card-built table carries that are not predictors
NOT_PREDICTORS = {"dice_std", "num_seeds", "pretrain_synthetic", "target_synthetic", "synthetic", "revision", "sha", "seed",
                  "pretraining_run", trivial.COLUMN, trivial.NAME_COLUMN}  # the trivial floor (report.trivial) is never a predictor


def collapse_seeds(df: pd.DataFrame, source: str = "table") -> pd.DataFrame:
    """A long table (one row per seed: a ``seed`` column, several rows per (series, epoch)) -> one row per
    checkpoint: ``dice`` = the seeds' mean, ``dice_std`` = their SD (ddof 1), ``num_seeds``; predictors are
    averaged (they are per checkpoint, the same for every seed), text columns keep their first value."""
    if "seed" not in df.columns or not df.duplicated(["series", "epoch"]).any():
        return df
    dupes = df.duplicated(["series", "epoch", "seed"]).sum()
    if dupes:
        raise DataError(f"{source}: {dupes} duplicated (series, epoch, seed) row(s); one row per seed of a checkpoint")
    numeric = [c for c in df.columns if c not in ("series", "epoch", "seed") and pd.api.types.is_numeric_dtype(df[c])
               and not pd.api.types.is_bool_dtype(df[c])]  # flags (e.g. frozen) are kept, not averaged
    text = [c for c in df.columns if c not in numeric and c not in ("series", "epoch", "seed")]
    groups = df.groupby(["series", "epoch"], sort=True)
    out = groups[numeric].mean()
    out["dice_std"] = groups["dice"].std(ddof=1)
    out["num_seeds"] = groups["dice"].count()
    for col in text:
        out[col] = groups[col].first()
    return out.reset_index()


def check_finite(df: pd.DataFrame, source: str = "table", columns=None) -> None:
    """Refuse infinite values (a score of ``inf`` is a failed computation, not a very bad checkpoint)."""
    cols = [c for c in (columns if columns is not None else df.columns) if c in df.columns and c != "series"
            and pd.api.types.is_numeric_dtype(df[c])]
    if not cols:
        return
    values = df[cols].to_numpy(dtype=float, na_value=np.nan)
    bad = np.isinf(values)
    if bad.any():
        rows, where = np.nonzero(bad)
        col, row = cols[where[0]], df.iloc[rows[0]]
        more = f" ({int(bad.sum())} infinite values in all, in column(s) {', '.join(sorted({cols[j] for j in where})[:5])})" if bad.sum() > 1 else ""
        raise DataError(f"{source}: column {col!r} is infinite at series {row['series']!r}, epoch {row['epoch']:g}{more}; "
                        "scores must be finite numbers: blank a value that could not be computed (it is then left out), never inf")


def check_table(df: pd.DataFrame, source: str = "table") -> pd.DataFrame:
    """Validate and normalise the column types of an analysis table (seeds collapsed, infinities refused)."""
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise DataError(
            f"{source} lacks column(s) {', '.join(missing)}; a report table needs one row per (series, checkpoint) "
            "with columns series, epoch, dice and one numeric column per predictor (or one row per seed with a seed column)"
        )
    df = df.copy()
    df["series"] = df["series"].astype(str)
    for col in ("epoch", "dice"):
        df[col] = pd.to_numeric(df[col], errors="coerce")
    bad_epochs = df["epoch"].isna().sum()
    if bad_epochs:
        raise DataError(f"{source}: {bad_epochs} row(s) have no numeric epoch")
    check_finite(df, source, ["epoch", "dice"])
    df = trivial.check_column(df, source)
    df = collapse_seeds(df, source)
    dupes = df.duplicated(["series", "epoch"]).sum()
    if dupes:
        raise DataError(f"{source}: {dupes} duplicated (series, epoch) row(s); one row per checkpoint of a series "
                        "(or add a seed column: one row per seed)")
    return df.sort_values(["series", "epoch"]).reset_index(drop=True)


def predictor_columns(df: pd.DataFrame, exclude=()) -> list[str]:
    """Numeric columns that are candidate predictors."""
    out = []
    for col in df.columns:
        if col in REQUIRED or col in NOT_PREDICTORS or col in exclude:
            continue
        if pd.api.types.is_numeric_dtype(df[col]) and not pd.api.types.is_bool_dtype(df[col]):
            if df[col].notna().any():
                out.append(col)
            continue
        if pd.api.types.is_bool_dtype(df[col]) or set(df[col].dropna().unique()) <= {True, False, "True", "False"} and df[col].notna().any() \
                and not pd.api.types.is_numeric_dtype(df[col]):
            continue  # a flag (e.g. frozen), not a score
        values = pd.to_numeric(df[col], errors="coerce")
        if values.notna().any() and (df[col].isna() | values.notna()).all():
            out.append(col)
    return out


def load_csv(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"table {path} does not exist")
    try:
        df = pd.read_csv(path)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise DataError(f"cannot read {path} as CSV: {exc}") from exc
    for col in predictor_columns(df):
        df[col] = pd.to_numeric(df[col], errors="coerce")
    df = check_table(df, str(path))
    check_finite(df, str(path))
    return df


def rows_from_card(data, *, series: str, revision: str, epoch: float, sha: str, target_key: str, frozen: bool = False, score_key: str | None = None) -> dict:
    """One table row from a revision card's metadata (``hf_transfer_seg`` mapping)."""
    from hf_transfer_seg.cards import get_namespace

    ours = get_namespace(data)
    row: dict = {"series": series, "revision": revision, "sha": sha, "epoch": epoch}
    down = (ours.get(schema.DOWNSTREAM) or {}).get(downstream_key(target_key, frozen)) or {}
    row["dice"] = number(down.get("dice_mean"))
    row["dice_std"] = number(down.get("dice_std"))
    row["num_seeds"] = len(down.get("seeds") or []) or None
    floors = down.get("baselines")  # the constant predictions on the same images (report.trivial); a card is untrusted
    floors = {k: number(v) for k, v in floors.items() if not isinstance(v, bool)} if isinstance(floors, dict) else None
    name, floor = best_baseline(floors)
    row[trivial.COLUMN], row[trivial.NAME_COLUMN] = floor, (name if floor is not None else None)
    training = ours.get(schema.TRAINING) or {}
    row["top1"] = number(training.get("top1", training.get("imagenet_top1")))
    row["pretrain_synthetic"] = training.get("synthetic") if "synthetic" in training else None
    row["target_synthetic"] = down.get("synthetic") if "synthetic" in down else None
    for config, entry in ((ours.get(schema.ROBUSTNESS) or {}).get(score_key or target_key) or {}).items():
        if schema.is_ok(entry):
            row[f"robustness:{config}"] = number(entry.get("score"))
    extra = (ours.get(schema.TRANSFERABILITY) or {}).get(target_key) or {}
    for name in ("logme", "linear_probe_dice"):
        if name in extra:
            row[name] = number(extra.get(name))
    return row


def table_from_cards(repo_ids: list[str], target_key: str, *, frozen: bool = False, revisions: str = "all", score_key: str | None = None) -> pd.DataFrame:
    """Analysis table from the cards of every checkpoint revision of each repository (one series per repo)."""
    from tqdm.auto import tqdm

    from hf_transfer_seg import hub

    from hf_transfer_seg.cards.shape import BadCard

    rows = []
    for repo_id in repo_ids:
        infos = hub.select_revisions(repo_id, revisions)
        for info in tqdm(infos, desc=f"read cards of {repo_id}", unit="rev"):
            try:
                card = hub.card_at_sha(repo_id, info.sha)
            except BadCard as exc:  # an untrusted sidecar: skip that revision, say why, go on
                log.warning("skipped %s@%s: %s", repo_id, info.name, exc)
                continue
            row = rows_from_card(card.data, series=repo_id + (schema.FROZEN_SUFFIX if frozen else ""), revision=info.name,
                                 epoch=info.epoch, sha=info.sha, target_key=target_key, frozen=frozen, score_key=score_key)
            row["pretraining_run"] = repo_id  # the independent unit (the report's default --cluster-by)
            rows.append(row)
    if not rows:
        raise DataError(f"no checkpoint revisions in {', '.join(repo_ids)}")
    df = pd.DataFrame(rows)
    return check_table(df, "cards")
