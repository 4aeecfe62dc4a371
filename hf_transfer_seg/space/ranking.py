"""The Leaderboard tab's view of a results dataset repo written by ``hf-transfer-seg rank``.

Read once at start, pinned to the commit sha it was read at: one row per model of the chosen target,
ranked by the headline robustness score (lower is better), with RankMe and alpha-ReQ beside it, and
the repo's plot for that target when there is one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from huggingface_hub import hf_hub_download
from huggingface_hub.errors import EntryNotFoundError

from hf_transfer_seg.cards import schema
from hf_transfer_seg.hub import redact, with_retries

HEADLINE = f"robustness:{schema.HEADLINE}"  # the headline row `rank` writes
HEADERS = ["rank", "model", "commit", "input px", "score (lower is better)", "95% interval", "tie", "RankMe", "alpha-ReQ gap", "status"]


@dataclass
class RankingView:
    repo_id: str
    sha: str
    target: str
    rows: list[list[Any]]
    plot_path: Path | None = None


def _f(value: Any, digits: int = 4) -> str:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return "–"
    return f"{value:.{digits}f}" if math.isfinite(value) else "–"


def _s(value: Any) -> str:
    return "" if value is None or (isinstance(value, float) and not math.isfinite(value)) else str(value)


def load_ranking(repo_id: str, target: str | None, notices: list[str]) -> RankingView | None:
    """The ranking of ``target`` (default: the first one) in results repo ``repo_id``; None with a notice if unusable."""
    from hf_transfer_seg.hub.results_repo import read_results

    try:
        df, sha = read_results(repo_id)
    except Exception as exc:  # noqa: BLE001 - the Space still serves segmentation without it
        notices.append(f"results repo {repo_id} could not be read: {redact(exc)}")
        return None
    targets = sorted(df["target"].dropna().astype(str).unique())
    if not targets:
        notices.append(f"results repo {repo_id} has no results yet (`hf-transfer-seg rank --results-repo {repo_id}` writes them)")
        return None
    chosen = target if target in targets else targets[0]
    head = df[(df["target"] == chosen) & (df["predictor"] == HEADLINE)].copy()
    extra = df[(df["target"] == chosen) & df["predictor"].isin(["rankme", "alpha_req_gap"])]
    wide = extra.pivot_table(index="model", columns="predictor", values="value", aggfunc="first")
    head["_ok"] = head["status"].eq("ok")
    head = head.sort_values(["_ok", "value"], ascending=[False, True], na_position="last")
    rows, rank = [], 0
    for _, r in head.iterrows():
        ok = r["status"] == "ok"
        rank += ok
        more = wide.loc[r["model"]] if r["model"] in wide.index else {}
        size = r.get("input_size")
        rows.append([
            rank if ok else "–", r["model"], _s(r.get("sha"))[:10], _f(size, 0) if _f(size) != "–" else "–", _f(r["value"]),
            f"[{_f(r['ci_low'])}, {_f(r['ci_high'])}]" if ok else "–", _s(r.get("tie")) or "–",
            _f(more.get("rankme") if len(more) else None, 1), _f(more.get("alpha_req_gap") if len(more) else None, 3),
            "ok" if ok else f"{r['status']}: {_s(r.get('reason'))}",
        ])
    plot = None
    try:
        plot = Path(with_retries(
            lambda: hf_hub_download(repo_id, schema.plot_path("rank", chosen), revision=sha, repo_type="dataset"),
            what=f"download the ranking plot of {repo_id}",
        ))
    except EntryNotFoundError:
        pass
    return RankingView(repo_id=repo_id, sha=sha, target=chosen, rows=rows, plot_path=plot)
