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
from hf_transfer_seg.scoring.rank import LABEL_AWARE, SIZE_SOURCES, RankOutcome, directions
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
            "input_size": r.input_size, "input_size_source": SIZE_SOURCES.get(r.size_source) if r.size_source else None,
            "num_images": plan.num_images, "seed": plan.seed,
            "code_version": code_version(), "updated": now,
        }
        if not r.scored:  # failed / skipped: one row saying why (a collapsed model keeps its values, flagged)
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
    sub = df[df["target"] == target].copy()
    for col in ("value", "ci_low", "ci_high", "tie", "reason", "input_size", "sha", "family"):
        if col not in sub.columns:  # a table of failed models only has no value columns
            sub[col] = None
    head = sub[sub["predictor"] == f"robustness:{headline}"].set_index("model")
    wide = sub[~sub["predictor"].str.startswith("robustness:")].pivot_table(index="model", columns="predictor", values="value", aggfunc="first")
    table = head.join(wide, how="left")
    table["_ok"] = table["status"].eq("ok")
    table = table.sort_values(["_ok", "value"], ascending=[False, True], na_position="last")
    lines = [
        f"### Target `{target}` — headline `{headline}`",
        "",
        "| rank | model | commit (short) | family | input | score | 95% interval | tie | RankMe | alpha-ReQ gap | LogME | linear-probe Dice | status |",
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
    lines += ["", f"Ranking by the score (best first): {' > '.join(ranked) if ranked else 'no model scored'}."]
    lines += resolution_lines(table)
    collapsed = [f"`{m}`" for m, row in table.iterrows() if row["status"] == "collapsed"]
    if collapsed:
        lines.append(f"Not ranked, collapsed (the embeddings do not depend on the image; the score is the margin, not a "
                     f"measurement): {', '.join(collapsed)}.")
    lines += disagreement_lines(table)
    if table["tie"].eq("tied").any():
        lines.append("Models marked `tied` cannot be told apart from the best on these images; more images (`--num-images`) may separate them.")
    return table, lines


def resolution_lines(table: pd.DataFrame) -> list[str]:
    """At what resolution the models were scored, and why (a small size is easy to miss and changes the score)."""
    scored = table[table["status"].isin(["ok", "collapsed"])]
    sizes = scored["input_size"].map(_num).dropna()
    if sizes.empty:
        return []
    why = scored["input_size_source"] if "input_size_source" in scored.columns else pd.Series(dtype=object)
    reasons = sorted({str(w) for w in why.dropna()})
    values = sorted({int(s) for s in sizes})
    text = (f"Resolution: {', '.join(map(str, values))} px ({'; '.join(reasons) or 'each model at its own input size'}). "
            "Every model saw the same images and views, resized (antialiased) to its size.")
    if values[0] < 64 and not any("--image-size" in r for r in reasons):
        text += (f" {values[0]} px is the size the model's config records (what it was trained at); pass --image-size "
                 "to score every model at one larger size.")
    lines = [text]
    if len(values) > 1:
        lines.append(f"Input sizes differ between models ({', '.join(map(str, values))} px): each model saw the same "
                     "views resized to its own size.")
    return lines


def _best(table: pd.DataFrame, column: str, lower: bool) -> tuple[str | None, pd.Series]:
    values = pd.to_numeric(table[column], errors="coerce").dropna() if column in table.columns else pd.Series(dtype=float)
    if values.empty:
        return None, values
    return (values.idxmin() if lower else values.idxmax()), values


def disagreement_lines(table: pd.DataFrame) -> list[str]:
    """Where the robustness score, the label-free and the label-aware predictors order the ranked models
    differently: the best model of each, and Kendall's tau (oriented so +1 = same order) against the score."""
    ok = table[table["status"] == "ok"]
    if len(ok) < 2:
        return []
    lower = directions()
    columns = {"robustness score": ("value", True), "RankMe": ("rankme", lower.get("rankme", False)),
               "alpha-ReQ gap": ("alpha_req_gap", lower.get("alpha_req_gap", True)),
               **{name.replace("_", "-"): (name, LABEL_AWARE[name]) for name in LABEL_AWARE}}
    bests, orders = {}, {}
    for label, (column, low) in columns.items():
        best, values = _best(ok, column, low)
        if best is not None and len(values) == len(ok):
            bests[label] = best
            orders[label] = values if low else -values  # "lower is better" for every column
    if len(set(bests.values())) <= 1:
        return []
    head = orders.get("robustness score")
    taus = []
    if head is not None:
        for label, order in orders.items():
            if label != "robustness score":
                tau = head.corr(order, method="kendall")
                if pd.notna(tau):
                    taus.append(f"{label} {tau:+.2f}")
    aware = [k for k in bests if k.replace("-", "_") in LABEL_AWARE]
    kinds = "label-aware and label-free predictors" if aware else "the label-free predictors"
    line = (f"The predictors disagree on the order ({kinds}): best by " + ", ".join(f"{k} `{v}`" for k, v in bests.items()) + ".")
    if taus:
        line += " Kendall's tau with the score's order (+1 same, -1 reversed): " + ", ".join(taus) + "."
    return [line]


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
        if r.status == "collapsed":
            notes.append(f"{r.spec.spec}: not written (collapsed: {r.reason})")
            continue
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
            "input_size": r.input_size, "input_size_source": SIZE_SOURCES.get(r.size_source), **{k: _num(v) for k, v in r.predictors.items()},
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
