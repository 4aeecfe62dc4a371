"""The independent unit of the report: which series share a pretraining run.

Series fine-tuned from the same pretraining run share its checkpoints, so their Dice values are not
independent evidence about a predictor. Every test of the report runs over *clusters* of series; by
default a cluster is a pretraining run, found in this order:

1. ``--cluster-by COLS``: the named per-series column(s). Empty, unknown or a key that leaves one cluster is
   a :class:`~hf_transfer_seg.errors.ConfigError` (exit 2) naming the columns there are.
2. a ``pretraining_run`` column (what ``report --repo-id`` writes).
3. *inferred*: series whose pretraining-side columns (a top-1 column, and any column named with
   ``--pretraining-columns``) are identical at every epoch they share come from one run (the authors'
   table: top-1 is identical across the 6 series of a run). Never a coarser key by silent fallback.
4. the columns that name a run's parts (``model``, ``encoder``, ``pretraining_scheme`` ...), together,
   said so in the report ("from column names; no pretraining column to find the runs").
5. each series its own cluster, said so.

:func:`resolve` returns the mapping and a short description that the report's headline quotes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from hf_transfer_seg.errors import ConfigError

RUN_COLUMNS = ("pretraining_run",)  # a column naming the pretraining run
RUN_PARTS = ("model", "encoder", "pretraining_scheme", "scheme", "recipe")  # else these, together
TOP1_NAMES = ("top1", "imagenet_top1")
DECIMALS = 9  # values equal to this many decimals are "identical" (CSV round trips)


@dataclass
class Clusters:
    mapping: dict[str, str]  # series -> cluster label
    key: list[str]  # the columns used (or the pretraining columns the runs were inferred from)
    how: str  # "given", "run_column", "inferred", "run_parts", "series"
    description: str = ""
    columns: list[str] = field(default_factory=list)  # columns that are not predictors (the key itself)

    @property
    def n(self) -> int:
        return len(set(self.mapping.values()))


def _columns_text(df: pd.DataFrame) -> str:
    return ", ".join(map(str, df.columns))


def per_series(df: pd.DataFrame, columns: list[str], flag: str) -> dict[str, str]:
    """series -> label from per-series columns (each series needs exactly one value of each)."""
    out: dict[str, list[str]] = {str(s): [] for s in sorted(df["series"].astype(str).unique())}
    for col in columns:
        for name, group in df.groupby("series", sort=True):
            values = {str(v) for v in group[col].dropna()}
            if len(values) != 1:
                raise ConfigError(f"{flag} {col}: series {name!r} has {len(values)} values of {col} "
                                  f"({', '.join(sorted(values)[:5]) or 'none'}); a cluster column needs exactly one value per series "
                                  "(name a per-series column such as the pretraining run)")
            out[str(name)].append(values.pop())
    return {s: " / ".join(v) for s, v in out.items()}


def top1_columns(df: pd.DataFrame) -> list[str]:
    return [c for c in df.columns if c in TOP1_NAMES or str(c).endswith(":top1")]


MERGE_MAX = 400  # signature groups up to which runs with gaps (a checkpoint missing in one series) are merged


def infer_runs(df: pd.DataFrame, columns: list[str]) -> dict[str, str] | None:
    """series -> run label: series whose ``columns`` agree at every epoch they share (at least 2) are one run
    (a series missing a checkpoint stays in its run). None when no series has a value of any of the columns."""
    values: dict[str, dict] = {}
    d = df.sort_values("epoch")  # at an epoch given twice, the later row's value counts
    epochs = d["epoch"].round(DECIMALS).to_numpy(dtype=float)
    numbers = {col: pd.to_numeric(d[col], errors="coerce").round(DECIMALS).to_numpy(dtype=float, na_value=np.nan) for col in columns}
    codes, names = pd.factorize(d["series"], sort=True)  # whole columns at once, then each series' rows
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(len(names) + 1))
    for s, name in enumerate(names):
        rows = order[bounds[s]:bounds[s + 1]]
        known = {}
        for col, v in numbers.items():
            m = ~np.isnan(v[rows])
            known.update(zip(((col, e) for e in epochs[rows][m].tolist()), v[rows][m].tolist()))
        values[str(name)] = known
    if not any(values.values()):
        return None
    groups: dict[tuple, list[str]] = {}
    for s in sorted(values):
        groups.setdefault(tuple(sorted(values[s].items())), []).append(s)
    keys = list(groups)
    parent = list(range(len(keys)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    if len(keys) <= MERGE_MAX:
        dicts = [dict(k) for k in keys]
        for i in range(len(keys)):
            for j in range(i + 1, len(keys)):
                shared = dicts[i].keys() & dicts[j].keys()
                if len({e for _, e in shared}) >= 2 and all(dicts[i][k] == dicts[j][k] for k in shared):
                    parent[root(j)] = root(i)
    members: dict[int, list[str]] = {}
    for i, k in enumerate(keys):
        members.setdefault(root(i), []).extend(groups[k])
    out = {}
    for n, (_, series) in enumerate(sorted(members.items(), key=lambda kv: min(kv[1]))):
        first = min(series)
        for s in series:
            out[s] = f"run {n + 1} ({first})"
    return out


def resolve(df: pd.DataFrame, cluster_by: list[str] | None, pretraining_columns: list[str] | None = None) -> Clusters:
    """The clusters of ``df`` (see the module docstring); ConfigError for a bad key."""
    series = sorted(df["series"].astype(str).unique())
    if cluster_by is not None:
        if cluster_by == ["none"]:
            return Clusters({s: s for s in series}, [], "series",
                            f"none: each of {len(series)} series is its own cluster (--cluster-by none)")
        if not cluster_by or not all(c.strip() for c in cluster_by):
            raise ConfigError(f"--cluster-by is empty; name the per-series column(s) of the pretraining run, one of: {_columns_text(df)} "
                              "(or leave the flag out: the runs are found from the pretraining columns; 'none' treats every series as independent)")
        missing = [c for c in cluster_by if c not in df.columns]
        if missing:
            raise ConfigError(f"--cluster-by {', '.join(missing)}: not a column of the table; its columns are: {_columns_text(df)}")
        mapping = per_series(df, cluster_by, "--cluster-by")
        if len(series) > 1 and len(set(mapping.values())) < 2:
            raise ConfigError(f"--cluster-by {', '.join(cluster_by)} puts all {len(series)} series in one cluster: no test over "
                              f"clusters is possible; name a column that tells the pretraining runs apart (columns: {_columns_text(df)}) "
                              "or leave --cluster-by out to find the runs from the pretraining columns")
        return Clusters(mapping, list(cluster_by), "given", f"{', '.join(cluster_by)} (given)", list(cluster_by))
    for col in RUN_COLUMNS:
        if col in df.columns:
            return Clusters(per_series(df, [col], "cluster column"), [col], "run_column", f"pretraining runs (column {col})", [col])
    named = list(pretraining_columns or [])
    missing = [c for c in named if c not in df.columns]
    if missing:
        raise ConfigError(f"--pretraining-columns {', '.join(missing)}: not a column of the table; its columns are: {_columns_text(df)}")
    pre = named + [c for c in top1_columns(df) if c not in named]
    if pre:
        mapping = infer_runs(df, pre)
        if mapping is not None:
            return Clusters(mapping, pre, "inferred", f"pretraining runs inferred from {', '.join(pre)} (identical at every epoch within a run)")
    parts = [c for c in RUN_PARTS if c in df.columns]
    if parts:
        return Clusters(per_series(df, parts, "cluster column"), parts, "run_parts",
                        f"{', '.join(parts)} (from column names; no top-1 or pretraining column to find the runs, "
                        "pass --cluster-by or --pretraining-columns if a run is finer)", parts)
    return Clusters({s: s for s in series}, [], "series",
                    "none: each series is its own cluster (no run, top-1 or pretraining column; pass --cluster-by if series share a run)")


def check_varies_within_runs(df: pd.DataFrame, mapping: dict[str, str], predictors: list[str], flag: str) -> None:
    """A declared predictor constant within every run (cluster) cannot rank checkpoints: ConfigError."""
    runs = df["series"].astype(str).map(mapping)
    names = [p for p in dict.fromkeys(predictors) if p in df.columns and p != "epoch"]
    if not names:
        return
    v = df[names]  # every predictor at once: one groupby, not one per column
    text = [c for c, numeric in zip(names, v.dtypes.map(pd.api.types.is_numeric_dtype)) if not numeric]
    if text:
        v = v.assign(**{c: pd.to_numeric(v[c], errors="coerce") for c in text})
    v = v.astype(float)
    grouped = v.groupby(runs)
    spread = (grouped.max() - grouped.min()).fillna(0.0)  # a run without a value: no spread
    constant = (spread <= 0).all(axis=0) & (v.notna().sum(axis=0) >= 2)
    for p in names:
        if constant[p]:
            raise ConfigError(f"predictor {p!r} ({flag}) is constant within every pretraining run: it cannot rank the checkpoints "
                              "of a run; drop it from the flag, or pass the per-checkpoint values")
