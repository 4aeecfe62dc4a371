"""What ``rank`` writes: rows of ``results.csv``, the results repo's card and plot, model-card entries.

Rows (see :mod:`hf_transfer_seg.hub.results_repo`): per model and target, every configuration of the
robustness grid (``robustness:{config}``, lower is better, with its bootstrap interval), ``rankme`` and
``alpha_req_gap`` (label-free), ``logme`` and ``linear_probe_dice`` when the target has masks, and the
raw ``alpha_req`` (information, no direction). A model that failed or was skipped gets one row for the
headline with its status and reason. The card is rendered from the *merged* table, so it always shows
every model any run has ranked.
"""

from __future__ import annotations

import datetime as _dt
import logging
import math
from typing import Any

import pandas as pd
from huggingface_hub import DatasetCard, DatasetCardData, ModelCard
from huggingface_hub.errors import HfHubHTTPError

from hf_transfer_seg.cards.data import get_namespace, set_namespace
from hf_transfer_seg.cards.license import apply_license, choose_license
from hf_transfer_seg.cards import schema
from hf_transfer_seg.hub import redact, update_card
from hf_transfer_seg.scoring.rank import RankOutcome, directions
from hf_transfer_seg.version import code_version

log = logging.getLogger(__name__)

CARD_KEY = schema.MODEL_RANKING  # hf_transfer_seg.model_ranking[target] in a ranked model's card
EXPLAIN = (
    "Robustness score (Hidy, Bakos and Lukács, arXiv 2410.18677; **lower is better**) of each encoder on the "
    "same images, colour-jittered views and negatives (common random numbers), each model at its own input "
    "size and normalisation; 95% bootstrap interval. *tie*: paired bootstrap of the per-image difference to "
    "the best model; `tied` when its interval reaches 0. RankMe (Garrido et al., ICML 2023; higher is better) "
    "and alpha-ReQ as |alpha - 1| (Agrawal et al., NeurIPS 2022; lower is better) are label-free, from the "
    "same forward passes; LogME and linear-probe Dice (higher is better) need masks."
)


def plot_path(target: str) -> str:
    return schema.plot_path("rank", target)


_num = schema.number


def outcome_rows(outcome: RankOutcome) -> pd.DataFrame:
    """Rows of ``results.csv`` for one run."""
    plan = outcome.plan
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    lower = directions()
    rows = []
    for r in outcome.results:
        common = {
            "model": r.spec.spec, "repo_id": r.spec.repo_id, "revision": r.spec.revision, "sha": r.spec.sha,
            "family": r.family, "target": outcome.target, "status": r.status, "reason": r.reason,
            "input_size": r.input_size, "num_images": plan.num_images, "seed": plan.seed,
            "code_version": code_version(), "updated": now,
        }
        if not r.ok:
            rows.append({**common, "predictor": f"robustness:{outcome.headline}", "lower_is_better": True})
            continue
        for name, s in r.scores.items():
            row = {**common, "predictor": f"robustness:{name}", "value": s.score, "ci_low": s.ci_low, "ci_high": s.ci_high, "lower_is_better": True}
            if name == outcome.headline:
                row["tie"] = r.tie.get("tie")
            rows.append(row)
        for name, value in r.predictors.items():
            rows.append({**common, "predictor": name, "value": _num(value), "lower_is_better": lower.get(name)})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------- card


def _fmt(x: Any, digits: int = 4) -> str:
    x = _num(x)  # floats only: an int-valued float still gets its decimals
    return schema.fmt(x, digits)


def _text(x: Any) -> str:
    return "" if x is None or (isinstance(x, float) and not math.isfinite(x)) else str(x)


def target_table(df: pd.DataFrame, target: str, headline: str) -> tuple[pd.DataFrame, list[str]]:
    """One row per model of ``target`` (headline and predictors side by side), ranked; and its markdown."""
    sub = df[df["target"] == target]
    head = sub[sub["predictor"] == f"robustness:{headline}"].set_index("model")
    wide = sub[~sub["predictor"].str.startswith("robustness:")].pivot_table(index="model", columns="predictor", values="value", aggfunc="first")
    table = head.join(wide, how="left")
    table["_ok"] = table["status"].eq("ok")
    table = table.sort_values(["_ok", "value"], ascending=[False, True], na_position="last")
    lines = [
        f"### Target `{target}` — headline `{headline}`",
        "",
        "| rank | model | commit | family | input | score | 95% interval | tie | RankMe | alpha-ReQ gap | LogME | linear-probe Dice | status |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    rank = 0
    for model, row in table.iterrows():
        ok = row["status"] == "ok"
        rank += ok
        status = "ok" if ok else f"{row['status']}: {_text(row.get('reason'))}".replace("|", "/")
        size = _num(row.get("input_size"))
        lines.append(
            f"| {rank if ok else '–'} | `{model}` | {_text(row.get('sha'))[:10] or '–'} | {_text(row.get('family')) or '–'} | "
            f"{int(size) if size else '–'} | {_fmt(row.get('value'))} | [{_fmt(row.get('ci_low'))}, {_fmt(row.get('ci_high'))}] | "
            f"{row.get('tie') if isinstance(row.get('tie'), str) else '–'} | {_fmt(row.get('rankme'), 1)} | {_fmt(row.get('alpha_req_gap'), 3)} | "
            f"{_fmt(row.get('logme'), 3)} | {_fmt(row.get('linear_probe_dice'), 3)} | {status} |"
        )
    ranked = [f"`{m}`" for m, row in table.iterrows() if row["status"] == "ok"]
    sizes = sorted({int(s) for s in table["input_size"].dropna().astype(float)})
    lines += ["", f"Ranking by the score (best first): {' > '.join(ranked) if ranked else 'no model scored'}."]
    if len(sizes) > 1:
        lines.append(f"Input sizes differ between models ({', '.join(map(str, sizes))} px): each model saw the same views resized to its own size.")
    if table["tie"].eq("tied").any():
        lines.append("Models marked `tied` cannot be told apart from the best on these images; more images (`--num-images`) may separate them.")
    return table, lines


def plot_png(table: pd.DataFrame, target: str, headline: str) -> bytes:
    from hf_transfer_seg.plotting import new_figure, png_bytes

    ok = table[table["status"] == "ok"].iloc[::-1]
    fig, ax = new_figure((6.5, 0.45 * max(len(ok), 2) + 1.2), dpi=110)
    y = range(len(ok))
    low = (ok["value"] - ok["ci_low"]).clip(lower=0)
    high = (ok["ci_high"] - ok["value"]).clip(lower=0)
    ax.errorbar(ok["value"], list(y), xerr=[low, high], fmt="o", capsize=3)
    ax.set_yticks(list(y), [str(m) for m in ok.index], fontsize=8)
    ax.set_xlabel(f"robustness score {headline} (lower is better)")
    ax.set_title(f"Encoders on {target}", fontsize=10)
    ax.grid(alpha=0.3)
    return png_bytes(fig)


def render(headline: str):
    """``render(merged) -> {path: bytes}``: README.md and one plot per target, for :func:`upsert_results`."""

    def _render(df: pd.DataFrame) -> dict[str, bytes]:
        files: dict[str, bytes] = {}
        body = ["# Encoder ranking (hf-transfer-seg rank)", "", EXPLAIN, ""]
        for target in sorted(df["target"].dropna().unique()):
            table, lines = target_table(df, target, headline)
            body += lines + ["", f"![{target}]({plot_path(target)})", ""]
            if (table["status"] == "ok").any():
                files[plot_path(target)] = plot_png(table, target, headline)
        body += [
            "`results.csv` holds one row per model x target x predictor (the whole score grid with intervals, "
            "each model's resolved commit sha). `hf-transfer-seg report --results-repo THIS_REPO` tests the "
            "predictors against downstream Dice.",
        ]
        data = DatasetCardData(tags=["hf-transfer-seg", "model-ranking", "transferability"], pretty_name="Encoder ranking")
        card = DatasetCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(body) + "\n")
        card = apply_license(card, choose_license())  # the --license setting, else other/not-set, stated in the card
        files["README.md"] = str(card).encode()
        return files

    return _render


# ------------------------------------------------------------------------------------ model cards


def _can_commit_to(revision: str) -> bool:
    return not (len(revision) == 40 and all(c in "0123456789abcdef" for c in revision.lower()))


def write_model_cards(outcome: RankOutcome, results_repo: str | None) -> list[str]:
    """Record each ranked model's scores in its own card (``hf_transfer_seg.model_ranking[target]``) where the
    user can write; a line per model saying what happened."""
    notes = []
    for r in outcome.results:
        if not r.ok:
            continue
        if not _can_commit_to(r.spec.revision):
            notes.append(f"{r.spec.spec}: not written (a commit sha is not a branch)")
            continue
        s = r.scores.get(outcome.headline)
        entry = {
            "headline": outcome.headline, "score": s.score if s else None, "ci_low": s.ci_low if s else None,
            "ci_high": s.ci_high if s else None, "tie": r.tie.get("tie"), "rank": r.tie.get("rank"),
            "models_ranked": sum(x.ok for x in outcome.results), "scored_sha": r.spec.sha,
            "input_size": r.input_size, **{k: _num(v) for k, v in r.predictors.items()},
            **outcome.plan.facts(), "results_repo": results_repo, "code_version": code_version(),
        }

        def edit(card: ModelCard, e=entry) -> ModelCard:
            ranking = get_namespace(card.data, CARD_KEY, {}) or {}
            ranking[outcome.target] = e
            set_namespace(card.data, CARD_KEY, ranking)
            return card

        try:
            update_card(r.spec.repo_id, r.spec.revision, edit, commit_message=f"rank: scores on {outcome.target}")
            notes.append(f"{r.spec.spec}: card updated")
        except HfHubHTTPError as exc:
            status = getattr(getattr(exc, "response", None), "status_code", None)
            if status in (401, 403):
                notes.append(f"{r.spec.spec}: not written (no write access)")
            else:
                notes.append(f"{r.spec.spec}: not written ({redact(exc)})")
        except Exception as exc:  # noqa: BLE001 - one card does not stop the others
            notes.append(f"{r.spec.spec}: not written ({redact(exc)})")
    return notes
