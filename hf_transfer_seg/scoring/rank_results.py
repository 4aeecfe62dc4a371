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

from hf_transfer_seg.cards.dataset_ref import hide_local_paths
from hf_transfer_seg.cards.data import get_namespace, set_namespace
from hf_transfer_seg.cards.license import apply_license, choose_license
from hf_transfer_seg.cards import schema
from hf_transfer_seg.cards.render import replace_section
from hf_transfer_seg.hub import redact, update_card
from hf_transfer_seg.scoring.rank import LABEL_AWARE, SIZE_SOURCES, RankOutcome, directions
from hf_transfer_seg.version import code_version

log = logging.getLogger(__name__)

CARD_KEY = schema.MODEL_RANKING  # hf_transfer_seg.model_ranking[target] in a ranked model's card
EXPLAIN = (
    "Robustness score (Hidy, Bakos and Lukács, arXiv 2410.18677; **lower is better**) of each encoder on the "
    "same images, colour-jittered views and negatives (common random numbers), at one resolution chosen from "
    "the target (or --image-size), each model with its own normalisation; 95% bootstrap interval. *tie*: paired "
    "bootstrap of the per-image difference to the best model, resampling images (volumes or blocks of slices for "
    "volume targets) and the draws of views; `tied` when its interval reaches 0. RankMe (Garrido et al., ICML 2023; higher is better) "
    "and alpha-ReQ as |alpha - 1| (Agrawal et al., NeurIPS 2022; lower is better) are label-free, from the "
    "same forward passes; LogME and linear-probe Dice (higher is better) need masks."
)


def plot_path(target: str) -> str:
    return schema.plot_path("rank", target)


_num = schema.number
_DIFFERENCE = {"mean": "", "ci_low": "_ci_low", "ci_high": "_ci_high"}  # headline rows: paired difference to the best
TRIVIAL_PROBE = "linear_probe_dice_trivial"  # Dice of a constant prediction on the same validation masks
PROBE_MARGIN = 0.02  # a probe within this of the constant prediction's Dice has learnt nothing from the encoder
NOT_RANKED = {"collapsed": "collapsed (the embeddings do not depend on the image; the score is the margin, not a measurement)",
              "degenerate": "degenerate (the deepest feature map is below 2x2 at this resolution)"}


def size_words(outcome: RankOutcome, r) -> str | None:
    """Why ``r`` was scored at its input size (the target-chosen size states the target's median side)."""
    if r.size_source == "target":
        return outcome.plan.size_source
    return SIZE_SOURCES.get(r.size_source) if r.size_source else None


def outcome_rows(outcome: RankOutcome) -> pd.DataFrame:
    """Rows of ``results.csv`` for one run."""
    plan = outcome.plan
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    lower = directions()
    rows = []
    for r in outcome.results:
        common = {
            "model": r.spec.spec, "repo_id": r.spec.repo_id, "revision": r.spec.revision, "sha": r.spec.sha,
            "family": r.family, "target": outcome.target, "status": r.status, "reason": hide_local_paths(r.reason),
            "input_size": r.input_size, "input_size_source": size_words(outcome, r),
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
                diff = r.tie.get("difference") or {}
                row.update({f"difference{suffix}": diff.get(key) for key, suffix in _DIFFERENCE.items()})
            rows.append(row)
        for name, value in r.predictors.items():
            rows.append({**common, "predictor": name, "value": _num(value), "lower_is_better": lower.get(name)})
        if "linear_probe_dice" in r.predictors and outcome.probe_baseline is not None:  # information: no direction
            rows.append({**common, "predictor": TRIVIAL_PROBE, "value": _num(outcome.probe_baseline), "lower_is_better": None})
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
    for col in ("value", "ci_low", "ci_high", "tie", "reason", "input_size", "sha", "family", "difference",
                "difference_ci_low", "difference_ci_high"):
        if col not in sub.columns:  # a table of failed models only has no value columns
            sub[col] = None
    head = sub[sub["predictor"] == f"robustness:{headline}"].set_index("model")
    wide = sub[~sub["predictor"].str.startswith("robustness:")].pivot_table(index="model", columns="predictor", values="value", aggfunc="first")
    wide = wide.reindex(columns=sorted(set(wide.columns) | {TRIVIAL_PROBE}))
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
    flagged = table["status"].isin(list(NOT_RANKED)).any()
    nothing = "none: every scored model is flagged below" if flagged else "no model scored"
    lines += ["", f"Ranking by the score (best first): {' > '.join(ranked) if ranked else nothing}."]
    lines += resolution_lines(table)
    for status, why in NOT_RANKED.items():
        flagged = [f"`{m}`" for m, row in table.iterrows() if row["status"] == status]
        if flagged:
            lines.append(f"Not ranked, never named best, {why}: {', '.join(flagged)}.")
    trivial = trivial_probe_line(table)
    if trivial:
        lines.append(trivial)
    lines += disagreement_lines(table)
    if table["tie"].eq("tied").any():
        lines.append("Models marked `tied` cannot be told apart from the best on these images; more images (`--num-images`) may separate them.")
    verdict = separation_line(table)
    if verdict:
        lines.append(verdict)
    return table, lines


def _probe_at_trivial(table: pd.DataFrame) -> bool:
    """True when every ranked model's linear-probe Dice is within PROBE_MARGIN of a constant prediction's."""
    ok = table[table["status"] == "ok"]
    if ok.empty or "linear_probe_dice" not in ok.columns:
        return False
    dice = pd.to_numeric(ok["linear_probe_dice"], errors="coerce")
    if TRIVIAL_PROBE not in ok.columns:  # results from before the trivial row was recorded: no floor to compare with
        return False
    floor = pd.to_numeric(ok[TRIVIAL_PROBE], errors="coerce")
    return bool(dice.notna().any() and (dice.isna() | (dice <= floor.fillna(0.0) + PROBE_MARGIN)).all())


def trivial_probe_line(table: pd.DataFrame) -> str | None:
    if not _probe_at_trivial(table):
        return None
    floor = pd.to_numeric(table[TRIVIAL_PROBE], errors="coerce").dropna()
    at = f" ({_fmt(float(floor.iloc[0]), 3)}, every pixel one class)" if len(floor) else ""
    return ("Linear-probe Dice is at the trivial baseline" + at + " for every model: the probe learnt nothing from any "
            "encoder (often a resolution too small for the structures), so it names no best model.")


def separation_line(table: pd.DataFrame) -> str | None:
    """The sentence saying that nothing tells the models apart, when that is so (else None)."""
    ok = table[table["status"] == "ok"]
    if len(ok) < 2:
        return None
    score_separates = ok["tie"].eq("worse").any()
    others = [c for c in ("rankme", "alpha_req_gap", "logme", "linear_probe_dice") if c in ok.columns
              and pd.to_numeric(ok[c], errors="coerce").nunique() > 1 and not (c == "linear_probe_dice" and _probe_at_trivial(table))]
    if score_separates:
        return None
    if not others:
        return ("No predictor separates the models: the score ties every model with the best and no other predictor "
                "varies between them; no model can be called best on this target.")
    return ("The score does not separate the models (every model is tied with the best); only "
            + ", ".join(o.replace("_", "-") for o in others) + " orders them.")


def resolution_lines(table: pd.DataFrame) -> list[str]:
    """At what resolution the models were scored, and why (one size for every model, chosen from the target)."""
    scored = table[table["status"].isin(["ok", "collapsed", "degenerate"])]
    sizes = scored["input_size"].map(_num).dropna()
    if sizes.empty:
        return []
    why = scored["input_size_source"] if "input_size_source" in scored.columns else pd.Series(dtype=object)
    reasons = sorted({str(w) for w in why.dropna()})
    values = sorted({int(s) for s in sizes})
    lines = [f"Resolution: {', '.join(map(str, values))} px ({'; '.join(reasons) or 'not recorded'}). "
             "Every model saw the same images and views, resized (antialiased) to its size."]
    if len(values) > 1:
        lines.append(f"Input sizes differ between models ({', '.join(map(str, values))} px): a model that accepts only "
                     "its own size saw the same views resized to it.")
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
    if _probe_at_trivial(table):
        columns.pop("linear-probe-dice", None)  # a probe at the trivial baseline for every model names no best
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
    """Each ranked model's paired difference to the best model with its 95% interval (what `tie` is read from)."""
    from hf_transfer_seg.plotting import new_figure, paired_difference_axes, png_bytes

    ok = table[table["status"] == "ok"].iloc[::-1]
    fig, ax = new_figure((6.5, 0.45 * max(len(ok), 2) + 1.4), dpi=110)
    best = next((str(m) for m, row in ok.iterrows() if row.get("tie") == "best"), None)
    rows = []
    for _, row in ok.iterrows():
        mean, low, high = (_num(row.get(c)) for c in ("difference", "difference_ci_low", "difference_ci_high"))
        diff = {"mean": mean, "ci_low": low, "ci_high": high} if None not in (mean, low, high) else None
        rows.append({"difference": diff, "tied": row.get("tie") == "tied", "is_best": row.get("tie") == "best"})
    paired_difference_axes(ax, [str(m) for m in ok.index], rows, best=str(best), horizontal=True)
    ax.set_xlabel(f"paired difference of {headline} to the best model (lower is better)")
    ax.set_title(f"Encoders on {target}", fontsize=10)
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


CARD_SECTION = "model-ranking"
_PREDICTOR_COLUMNS = (("rankme", "RankMe", 1), ("alpha_req_gap", "alpha-ReQ gap", 3), ("logme", "LogME", 3),
                      ("linear_probe_dice", "linear-probe Dice", 3))


def _rounded(value: Any) -> Any:
    """A card value with floats at 6 significant digits (a card is read by people: no 17-digit floats)."""
    if isinstance(value, float):
        return float(f"{value:.6g}") if math.isfinite(value) else None
    return value


def ranking_section(ranking: dict[str, dict]) -> str:
    """Markdown of a ranked model's ``model-ranking`` section: one row per target it was ranked on."""
    lines = ["## Encoder ranking (hf-transfer-seg rank)", "",
             "Robustness score of this model on each target (**lower is better**; 95% bootstrap interval), its place "
             "among the models ranked with it and the label-free / label-aware predictors from the same run.", "",
             "| target | headline | score | 95% interval | rank | tie | input | " + " | ".join(c[1] for c in _PREDICTOR_COLUMNS) + " |",
             "|---" * (7 + len(_PREDICTOR_COLUMNS)) + "|"]
    for target, e in sorted(ranking.items()):
        e = e or {}
        place = f"{e.get('rank')} of {e.get('models_ranked')}" if e.get("rank") else "–"
        size = f"{e.get('input_size')} px" if e.get("input_size") else "–"
        lines.append(
            f"| {target} | `{e.get('headline', '–')}` | {_fmt(e.get('score'))} | [{_fmt(e.get('ci_low'))}, {_fmt(e.get('ci_high'))}] | "
            f"{place} | {_text(e.get('tie')) or '–'} | {size} | " + " | ".join(_fmt(e.get(k), d) for k, _, d in _PREDICTOR_COLUMNS) + " |"
        )
    sources = sorted({str(e.get("results_repo")) for e in ranking.values() if (e or {}).get("results_repo")})
    if sources:
        lines += ["", "All models of each run, with the whole score grid: dataset " + ", ".join(f"`{x}`" for x in sources) + "."]
    return "\n".join(lines)


def write_model_cards(outcome: RankOutcome, results_repo: str | None) -> list[str]:
    """Record each ranked model's scores in its own card (``hf_transfer_seg.model_ranking[target]``) where the
    user can write; a line per model saying what happened."""
    notes = []
    for r in outcome.results:
        if r.status in NOT_RANKED:
            notes.append(f"{r.spec.spec}: not written ({r.status}: {r.reason})")
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
            "input_size": r.input_size, "input_size_source": size_words(outcome, r), **{k: _num(v) for k, v in r.predictors.items()},
            **outcome.plan.facts(), "results_repo": results_repo, "code_version": code_version(),
        }

        entry = {k: _rounded(v) for k, v in entry.items()}

        def edit(card: ModelCard, e=entry) -> ModelCard:
            ranking = get_namespace(card.data, CARD_KEY, {}) or {}
            ranking[outcome.target] = e
            set_namespace(card.data, CARD_KEY, ranking)
            card.text = replace_section(card.text or f"# {r.spec.repo_id}\n", CARD_SECTION, ranking_section(ranking))
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
