"""A results dataset repo: ``results.csv`` with one row per model x target x predictor, plus a card.

Written by ``rank`` (and read by ``report --results-repo`` and the Space). Every write is
read-modify-commit: read ``results.csv`` at the branch head sha, merge the new rows into it (a row is
keyed by ``model``, ``target`` and ``predictor``; a newer row replaces an older one, other rows stay),
render the card and plot from the merged table, commit with ``parent_commit=<that sha>``; on HTTP
409/412 (a concurrent writer committed first) start again. Nothing another run wrote is ever lost.
"""

from __future__ import annotations

import io
import logging
import random
import time
from typing import Callable

import pandas as pd
from huggingface_hub import CommitOperationAdd, HfApi, hf_hub_download
from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, RepositoryNotFoundError

from hf_transfer_seg.errors import CardConflictError, DataError, HubError
from hf_transfer_seg.redact import redact
from hf_transfer_seg.hub.retry import with_retries
from hf_transfer_seg.hub.revisions import branch_sha

log = logging.getLogger(__name__)

RESULTS_FILE = "results.csv"
KEY = ["model", "target", "predictor"]
COLUMNS = [
    "model",  # the SPEC as given: repo_id or repo_id@revision
    "repo_id",
    "revision",
    "sha",  # the commit the model was resolved to
    "family",  # timm / transformers
    "target",
    "predictor",  # e.g. robustness:cosine_m0.5_L-1_flat, rankme, alpha_req_gap, logme, linear_probe_dice, dice
    "value",
    "ci_low",
    "ci_high",
    "lower_is_better",
    "tie",  # headline rows: best / tied / worse (paired bootstrap against the best model)
    "status",  # ok / failed / skipped
    "reason",
    "input_size",
    "num_images",
    "seed",
    "code_version",
    "updated",
]

Render = Callable[[pd.DataFrame], dict[str, bytes]]


def empty_table() -> pd.DataFrame:
    return pd.DataFrame(columns=COLUMNS)


def normalise(df: pd.DataFrame) -> pd.DataFrame:
    """Columns in order (missing ones empty, unknown ones kept after them), numeric columns numeric."""
    df = df.copy()
    for col in COLUMNS:
        if col not in df.columns:
            df[col] = None
    extra = [c for c in df.columns if c not in COLUMNS]
    df = df[COLUMNS + extra]
    for col in ("value", "ci_low", "ci_high"):
        df[col] = pd.to_numeric(df[col], errors="coerce")
    return df


def merge_rows(old: pd.DataFrame, new: pd.DataFrame) -> pd.DataFrame:
    """``old`` with every row of ``new`` added, replacing the row with the same model, target and predictor."""
    old, new = normalise(old), normalise(new)
    if new.duplicated(KEY).any():
        raise ValueError("new results have duplicated (model, target, predictor) rows")
    keys = set(map(tuple, new[KEY].astype(str).values.tolist()))
    kept = old[[tuple(k) not in keys for k in old[KEY].astype(str).values.tolist()]] if len(old) else old
    frames = [f for f in (kept, new) if len(f)]
    merged = pd.concat(frames, ignore_index=True) if frames else empty_table()
    return normalise(merged).sort_values(KEY, kind="stable").reset_index(drop=True)


def _read_at(repo_id: str, sha: str) -> pd.DataFrame:
    try:
        path = with_retries(
            lambda: hf_hub_download(repo_id, RESULTS_FILE, revision=sha, repo_type="dataset"),
            what=f"download {RESULTS_FILE} of {repo_id}@{sha[:10]}",
        )
    except EntryNotFoundError:
        return empty_table()
    try:
        return normalise(pd.read_csv(path, dtype={"sha": str, "revision": str}, keep_default_na=True))
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"{RESULTS_FILE} of dataset {repo_id} is not a readable CSV ({exc}); fix or remove it") from exc


def read_results(repo_id: str, revision: str = "main", *, api: HfApi | None = None) -> tuple[pd.DataFrame, str]:
    """``results.csv`` of a results dataset repo and the commit sha it was read from."""
    api = api or HfApi()
    try:
        sha = branch_sha(repo_id, revision, repo_type="dataset", api=api)
    except RepositoryNotFoundError as exc:
        raise HubError(f"results dataset {repo_id} not found ({redact(exc)}); check --results-repo and HF_ENDPOINT / HF_TOKEN") from exc
    return _read_at(repo_id, sha), sha


def _csv_bytes(df: pd.DataFrame) -> bytes:
    buf = io.StringIO()
    df.to_csv(buf, index=False)
    return buf.getvalue().encode()


def _is_conflict(exc: BaseException) -> bool:
    status = getattr(getattr(exc, "response", None), "status_code", None)
    return isinstance(exc, HfHubHTTPError) and status in (409, 412)


def upsert_results(
    repo_id: str,
    rows: pd.DataFrame,
    *,
    render: Render | None = None,
    commit_message: str = "rank: update results",
    attempts: int = 12,
    api: HfApi | None = None,
) -> tuple[pd.DataFrame, str]:
    """Merge ``rows`` into ``results.csv`` of dataset ``repo_id`` (created if missing), with the card from
    ``render(merged)`` (path -> bytes) in the same commit; return the merged table and the commit sha."""
    api = api or HfApi()
    with_retries(lambda: api.create_repo(repo_id, repo_type="dataset", exist_ok=True), what=f"create dataset {repo_id}")
    for attempt in range(1, attempts + 1):
        sha = branch_sha(repo_id, "main", repo_type="dataset", api=api)
        merged = merge_rows(_read_at(repo_id, sha), rows)
        files = {RESULTS_FILE: _csv_bytes(merged), **(render(merged) if render else {})}
        operations = [CommitOperationAdd(path, data) for path, data in files.items()]
        try:
            info = with_retries(
                lambda: api.create_commit(
                    repo_id, operations=operations, commit_message=commit_message, repo_type="dataset", parent_commit=sha
                ),
                what=f"commit {RESULTS_FILE} of {repo_id}",
            )
        except HfHubHTTPError as exc:
            if not _is_conflict(exc):
                raise
            delay = min(2.0, 0.05 * 2 ** min(attempt, 6)) * (0.5 + random.random())
            log.debug("%s changed under us (attempt %d); retrying", repo_id, attempt)
            time.sleep(delay)
            continue
        return merged, (info.oid if info is not None else sha)
    raise CardConflictError(
        f"gave up writing {RESULTS_FILE} of {repo_id} after {attempts} attempts: other writers kept committing "
        "first. Nothing was lost; run the command again."
    )
