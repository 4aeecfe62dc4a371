"""The trivial-prediction floor of a report table: does each series' fine-tuned Dice beat a constant prediction?

Fine-tuning stores, beside every Dice, the Dice of all-background, all-foreground and majority-class
predictions on the same validation images (:mod:`hf_transfer_seg.metrics.baselines`). A table carries the
best of them per checkpoint as the optional column ``trivial_dice`` (cards mode fills it and names it in
``trivial_baseline``); it is never a predictor. Per series the floor is the value at the last checkpoint
with a Dice (the validation images are fixed by the split, so the floor is the same at every checkpoint;
where the last one lacks it, the series' highest recorded floor is used). A series whose last checkpoint
does not beat its floor (Dice <= floor, as in :func:`hf_transfer_seg.metrics.baselines.compare`) has a Dice
that is not evidence of learning, whatever a predictor says about it.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from hf_transfer_seg.cards.schema import number
from hf_transfer_seg.errors import DataError

COLUMN = "trivial_dice"
NAME_COLUMN = "trivial_baseline"
NOT_RECORDED = "trivial baselines not recorded"
MAX_ROWS = 8  # series listed in report.md's table (report.json holds every one)


def check_column(df: pd.DataFrame, source: str = "table") -> pd.DataFrame:
    """``df`` with ``trivial_dice`` numeric; refuse text in it, or a floor above 1 beside a Dice that is a fraction."""
    if COLUMN not in df.columns:
        return df
    values = pd.to_numeric(df[COLUMN], errors="coerce")
    bad = values.isna() & df[COLUMN].notna()
    if bad.any():
        raise DataError(f"{source}: column {COLUMN!r} holds {int(bad.sum())} non-numeric value(s) (first: {df.loc[bad, COLUMN].iloc[0]!r}); "
                        "give the best trivial prediction's Dice as a number, or leave it blank")
    dice = pd.to_numeric(df["dice"], errors="coerce")
    if values.max() > 1 and dice.max() <= 1:
        raise DataError(f"{source}: column {COLUMN!r} reaches {values.max():g} while every dice is at most 1; "
                        "give the trivial Dice in the same units as dice (both fractions, or both x100)")
    df[COLUMN] = values
    return df


def trivial_floor(df: pd.DataFrame) -> dict[str, Any]:
    """Per series: the last checkpoint's Dice beside its best trivial Dice, and the series that do not beat it."""
    if COLUMN not in df.columns or not pd.to_numeric(df[COLUMN], errors="coerce").notna().any():
        return {"recorded": False, "text": NOT_RECORDED}
    scored = df[df["dice"].notna()].sort_values(["series", "epoch"])
    floor = pd.to_numeric(scored[COLUMN], errors="coerce")
    last = scored.groupby("series", sort=True).tail(1).set_index("series")
    fallback = floor.groupby(scored["series"]).max()
    series: dict[str, dict[str, Any]] = {}
    for name, row in last.iterrows():
        value = number(row[COLUMN])
        value = number(fallback.get(name)) if value is None else value
        if value is None:
            continue
        dice = float(row["dice"])
        series[str(name)] = {"epoch": float(row["epoch"]), "dice": dice, "trivial_dice": value,
                             "trivial_baseline": row.get(NAME_COLUMN) if isinstance(row.get(NAME_COLUMN), str) else None,
                             "beats": dice > value}
    below = [n for n, s in series.items() if not s["beats"]]
    at_or_below = int((scored["dice"] <= floor).sum())
    out = {"recorded": True, "column": COLUMN, "n_series": len(series), "n_series_without": int(scored["series"].nunique()) - len(series),
           "n_not_beating": len(below), "not_beating": below, "n_checkpoints": int(floor.notna().sum()),
           "n_checkpoints_at_or_below": at_or_below, "series": series}
    out["warning"] = warning(out)
    return out


def _pair(name: str, s: dict[str, Any]) -> str:
    what = f" {s['trivial_baseline'].replace('_', '-')}" if s.get("trivial_baseline") else ""
    return f"{name} (Dice {s['dice']:.4g} vs trivial{what} {s['trivial_dice']:.4g})"


def warning(floor: dict[str, Any]) -> str | None:
    """One line when any series' last checkpoint does not beat its trivial floor; ``None`` otherwise."""
    below = floor.get("not_beating") or []
    if not below:
        return None
    named = ", ".join(_pair(n, floor["series"][n]) for n in below[:5]) + (f" and {len(below) - 5} more" if len(below) > 5 else "")
    return (f"Dice here is not evidence of learning: the last checkpoint of {len(below)} of {floor['n_series']} series does not beat "
            f"a constant prediction on the same images: {named}. Correlations with this Dice rank trivial outcomes; name the "
            "class of interest when fine-tuning (`--foreground-values`) or read these series as failures")


def markdown_lines(floor: dict[str, Any]) -> list[str]:
    """report.md's lines for the Baselines section: a short table (series that fail first), or one line when absent."""
    if not floor.get("recorded"):
        return [f"Trivial predictions: {NOT_RECORDED} (no `{COLUMN}` column), so Dice has no floor here.", ""]
    n, k = floor["n_series"], floor["n_not_beating"]
    lines = [f"Trivial-prediction floor (the best of all-background, all-foreground and majority class, on the same images): "
             f"the last checkpoint beats it in {n - k} of {n} series"
             + (f"; not in {k}: {', '.join(floor['not_beating'][:12])}{' ...' if k > 12 else ''}" if k else "")
             + (f" ({floor['n_series_without']} series without a recorded floor)" if floor["n_series_without"] else "")
             + f"; {floor['n_checkpoints_at_or_below']} of {floor['n_checkpoints']} checkpoints are at or below it.", ""]
    order = floor["not_beating"] + [s for s in floor["series"] if s not in floor["not_beating"]]
    lines += ["| series | last epoch | Dice (last) | best trivial Dice | beats it |", "|---|---|---|---|---|"]
    for name in order[:MAX_ROWS]:
        s = floor["series"][name]
        what = f" ({s['trivial_baseline'].replace('_', '-')})" if s.get("trivial_baseline") else ""
        lines.append(f"| {name} | {s['epoch']:g} | {s['dice']:.4f} | {s['trivial_dice']:.4f}{what} | {'yes' if s['beats'] else '**no**'} |")
    if len(order) > MAX_ROWS:
        lines.append(f"| ... {len(order) - MAX_ROWS} more series in report.json (`trivial_baseline`) | | | | |")
    return lines + [""]
