"""Scores into cards: each revision's own card, and main's summary (table, plot, best revision).

Revision card (branch ``epoch-NNNN``): ``hf_transfer_seg.robustness[target][config]`` for the headline
and a few favoured configurations, the whole grid with per-image values in ``robustness/grid_<target>.json``
committed with the card (:mod:`hf_transfer_seg.cards.grid`), model-index ``robustness-score`` results for
the headline and favoured configurations when the target is a Hub dataset, and the managed section ``robustness``. Main's card: ``hf_transfer_seg.robustness_summary[target]``,
the managed section ``robustness`` with one table per target, and ``plots/robustness_<target>.png``
committed in the same commit. All edits go through :func:`hf_transfer_seg.hub.update_card`
(parent_commit + retry), so concurrent scorers lose nothing.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from huggingface_hub import HfApi, ModelCard

from hf_transfer_seg.cards import schema
from hf_transfer_seg.cards.data import eval_results_by, get_namespace, set_namespace, upsert_eval_result
from hf_transfer_seg.cards.dataset_ref import hide_local_paths
from hf_transfer_seg.cards.grid import GRID_FILE, card_configs, grid_bytes, target_info
from hf_transfer_seg.cards.license import apply_license, choose_license
from hf_transfer_seg.cards.render import replace_section
from hf_transfer_seg.cards.schema import HIGHLIGHTS, fmt as _fmt
from hf_transfer_seg.errors import CardConflictError
from hf_transfer_seg.hub import read_card, update_card
from hf_transfer_seg.scoring.plan import ScoringPlan
from hf_transfer_seg.scoring.scorer import RevisionScore
from hf_transfer_seg.scoring.ties import pick, ties_with_best

log = logging.getLogger(__name__)

SECTION = schema.SECTION_ROBUSTNESS
METRIC_TYPE = schema.ROBUSTNESS_METRIC
EXPLAIN = (
    "Label-free robustness score (Hidy, Bakos and Lukács, arXiv 2410.18677): two colour-jittered views of "
    "each target image go through the encoder; the score is the mean triplet hinge "
    "max(0, d(view1, view2) - d(view1, other image) + margin). **Lower is better.**"
)


def per_image_path(key: str) -> str:
    """Main's file of per-image headline values (``{revision: {sha, plan, values}}``) used to pair revisions."""
    return f"robustness/per_image_{schema.safe_file_key(key)}.json"


def per_image_of(results: list[RevisionScore], plan: ScoringPlan) -> dict[str, dict]:
    """Per-image headline values of freshly scored revisions, keyed by revision, with the plan they share."""
    out = {}
    for r in results:
        if r.ok and r.per_image:
            out[r.revision] = {"sha": r.sha, "plan": plan.key(), "values": [float(f"{v:.6g}") for v in r.per_image],
                               "units": plan.units}
            if r.per_image_draws and len(r.per_image_draws) > 1:
                out[r.revision]["draws"] = [[float(f"{v:.6g}") for v in draw] for draw in r.per_image_draws]
    return out


def _synthetic_words(flag: Any) -> str:
    return {True: "synthetic", False: "real"}.get(flag, "unknown (not recorded)")


# --------------------------------------------------------------------------- revision card


def revision_section(namespace: dict) -> str:
    """Markdown of a revision card's ``robustness`` section, from its ``hf_transfer_seg`` mapping."""
    robustness = namespace.get(schema.ROBUSTNESS) or {}
    targets = namespace.get(schema.ROBUSTNESS_TARGETS) or {}
    training = namespace.get(schema.TRAINING) or {}
    lines = ["## Robustness score", "", EXPLAIN, ""]
    lines.append(f"This checkpoint was pretrained on {_synthetic_words(training.get('synthetic'))} data.")
    lines += ["", "| target | configuration | score | 95% interval | images | seed | size | status |", "|---|---|---|---|---|---|---|---|"]
    for target_key, configs in robustness.items():
        shown = [c for c in HIGHLIGHTS if c in configs] + [
            c for c, e in configs.items() if c not in HIGHLIGHTS and (e or {}).get("status") == "failed"
        ]
        for config in shown:
            e = configs[config] or {}
            status = e.get("status", "ok") if e.get("status") != "failed" else f"failed: {e.get('reason', '')}"
            interval = f"[{_fmt(e.get('ci_low'))}, {_fmt(e.get('ci_high'))}]" if e.get("ci_low") is not None else "–"
            lines.append(
                f"| {target_key} | `{config}` | {_fmt(e.get('score'))} | {interval} | {e.get('num_images', '–')} | "
                f"{e.get('seed', '–')} | {e.get('image_size', '–')} | {status} |"
            )
    lines.append("")
    for target_key, info in targets.items():
        lines.append(f"- Target `{target_key}`: {info.get('description', '')} ({_synthetic_words(info.get('synthetic'))} images).")
    files = ", ".join(f"`{info[GRID_FILE]}`" for info in targets.values() if isinstance(info, dict) and info.get(GRID_FILE))
    lines.append(
        "\nThe whole grid (every level x cosine / l2 / inv_pearson x margins 0-1 x flat / pooled, with intervals, and "
        f"the headline's per-image values) is in {files or 'the card metadata under `hf_transfer_seg.robustness`'} "
        "on this branch; the metadata keeps the headline and the configurations above."
    )
    return "\n".join(lines)


def revision_card_edit(plan: ScoringPlan, result: RevisionScore, model_name: str, seen: dict):
    """A pure edit of a revision card recording ``result``; ``seen['training']`` gets the card's training facts."""

    def edit(card: ModelCard) -> ModelCard:
        data = card.data
        robustness = get_namespace(data, schema.ROBUSTNESS, {}) or {}
        entries = dict(robustness.get(plan.target_key) or {})
        entries.update(result.entries(plan))
        targets = get_namespace(data, schema.ROBUSTNESS_TARGETS, {}) or {}
        has_file = result.ok or bool((targets.get(plan.target_key) or {}).get(GRID_FILE))
        # the YAML keeps the headline and favoured configs; the whole grid is the file write_revision_card commits
        # with this card (grid.grid_bytes). A failure on an older card whose grid is only in its YAML keeps it there.
        robustness[plan.target_key] = card_configs(entries, result.headline) if has_file else entries
        set_namespace(data, schema.ROBUSTNESS, robustness)
        targets[plan.target_key] = target_info(plan.target_description, plan.target_synthetic, plan.target_key)
        if not has_file:
            targets[plan.target_key].pop(GRID_FILE)
        set_namespace(data, schema.ROBUSTNESS_TARGETS, targets)
        if not getattr(data, "library_name", None):
            data.library_name = "timm"
        configs = [result.headline] + [c for c in HIGHLIGHTS if c != result.headline]
        if result.ok:
            for config in configs:
                if config in result.scores:
                    upsert_eval_result(data, schema.robustness_result(plan.target_key, config, entries[config]["score"]), model_name=model_name)
        else:  # a stale score must not contradict the failed entry
            stale = eval_results_by(data, metric_type=METRIC_TYPE, dataset_name=plan.target_key)
            if stale:
                data.eval_results = [r for r in data.eval_results if r not in stale] or None
        namespace = get_namespace(data)
        card.text = replace_section(card.text or "", SECTION, revision_section(namespace))
        if not data.license:
            card = apply_license(card, choose_license())
        seen["training"] = namespace.get(schema.TRAINING) or {}
        return card

    return edit


def grid_files_of(plan: ScoringPlan, result: RevisionScore) -> dict[str, bytes]:
    """``{robustness/grid_<target>.json: bytes}`` of a scored revision ({} for a failure: the file keeps the last grid,
    and the card's failed headline overrides it for readers)."""
    if not result.ok:
        return {}
    return {schema.grid_path(plan.target_key): grid_bytes(plan.target_key, result.entries(plan))}


def write_revision_card(repo_id: str, plan: ScoringPlan, result: RevisionScore, *, api: HfApi | None = None) -> dict:
    """Commit ``result`` into the card of its revision's branch; return that card's ``training`` facts."""
    seen: dict = {}
    status = "failed" if not result.ok else f"{result.headline}={_fmt(result.headline_score.score)}"
    update_card(
        repo_id,
        result.revision,
        revision_card_edit(plan, result, repo_id.split("/")[-1], seen),
        commit_message=f"Robustness score on {plan.target_key} ({status})",
        extra_files=grid_files_of(plan, result),
        api=api,
    )
    return seen.get("training") or {}


# --------------------------------------------------------------------------- main's summary


def summary_rows(results: list[RevisionScore], training: dict[str, dict]) -> list[dict]:
    """Table rows of main's summary for freshly scored revisions."""
    rows = []
    for r in results:
        facts = training.get(r.revision) or {}
        s = r.headline_score if r.ok else None
        row = {
            "revision": r.revision,
            "epoch": r.epoch,
            "sha": r.sha,
            "score": s.score if s else None,
            "ci_low": s.ci_low if s else None,
            "ci_high": s.ci_high if s else None,
            "status": r.status,
        }
        if r.reason:
            row["reason"] = hide_local_paths(r.reason)
        top1 = facts.get("top1", facts.get("imagenet_top1"))
        if top1 is not None:
            row["top1"] = top1
        if facts.get("synthetic") is not None:
            row["synthetic"] = bool(facts["synthetic"])
        rows.append({k: (round(v, 6) if isinstance(v, float) and k not in ("epoch",) else v) for k, v in row.items()})
    return rows


def merge_rows(old: list[dict], new: list[dict]) -> list[dict]:
    """Old rows with the freshly scored revisions replaced or added, in epoch order."""
    by_revision = {row["revision"]: row for row in old or []}
    by_revision.update({row["revision"]: row for row in new})
    return sorted(by_revision.values(), key=lambda r: (float(r.get("epoch") or 0), r["revision"]))


def best_row(rows: list[dict]) -> dict | None:
    """The revision with the lowest headline score (ties: the earliest epoch)."""
    return pick(rows, "lowest")


def mark_ties(rows: list[dict], per_image: dict[str, dict] | None, seed: int = 0) -> list[dict]:
    """Rows with ``tied_with_best`` (True / False / None = unknown) from a paired test on per-image values."""
    lowest = best_row(rows)
    ties = ties_with_best(rows, lowest, per_image or {}, seed=seed)
    out = []
    for r in rows:
        r = {k: v for k, v in r.items() if k not in ("tied_with_best", "difference_vs_best")}
        t = ties.get(r["revision"]) or {}
        r["tied_with_best"] = t.get("tied")
        if t.get("difference"):
            r["difference_vs_best"] = {k: round(v, 6) for k, v in t["difference"].items()}
        out.append(r)
    return out


def ties_test(plan: ScoringPlan) -> str:
    """One line saying what the tie test resamples (recorded in main's summary and printed)."""
    views = (f"the {plan.view_draws} draws of views and negatives of each image" if plan.view_draws > 1
             else "one draw of views (--view-draws 1: the verdict may change with --seed)")
    return (f"paired bootstrap of the per-image headline differences resampling {plan.units_text} and {views}; "
            "tied when the 95% interval of the mean difference includes 0")


def summary_entry(plan: ScoringPlan, config: str, rows: list[dict], per_image: dict[str, dict] | None = None,
                  prefer: str = "lowest") -> dict:
    rows = mark_ties(rows, per_image, seed=plan.seed)
    lowest = best_row(rows)
    best = pick(rows, prefer)
    return {
        "config": config,
        "prefer": prefer,
        "best_revision": best["revision"] if best else None,
        "best_sha": best["sha"] if best else None,
        "best_score": best["score"] if best else None,
        "lowest_revision": lowest["revision"] if lowest else None,
        "tied_with_best": [r["revision"] for r in rows if r.get("tied_with_best")],
        "ties_test": ties_test(plan),
        "rows": rows,
        "num_images": plan.num_images,
        "seed": plan.seed,
        "image_size": plan.image_size,
        "image_size_source": plan.size_source,
        "view_draws": plan.view_draws,
        "target_description": plan.target_description,
        "target_synthetic": plan.target_synthetic,
    }


def summary_table(entry: dict) -> str:
    """The Markdown table of one target (also printed in the terminal)."""
    best = entry.get("best_revision")
    lines = ["| revision | epoch | top-1 (pretraining val) | score | 95% interval | |", "|---|---|---|---|---|---|"]
    for r in entry.get("rows") or []:
        top1 = r.get("top1", r.get("imagenet_top1"))
        if r.get("status", "ok") != "ok":
            reason = (r.get("reason") or "").replace("|", "/")
            score, interval = "failed", reason if len(reason) <= 140 else reason[:139] + "…"
        else:
            score, interval = _fmt(r.get("score")), f"[{_fmt(r.get('ci_low'))}, {_fmt(r.get('ci_high'))}]"
        mark = "**best**" if r["revision"] == best else "tied with best" if r.get("tied_with_best") else ""
        epoch = f"{float(r['epoch']):g}" if r.get("epoch") is not None else "–"
        lines.append(f"| {r['revision']} | {epoch} | {_fmt(top1, 2) if top1 is not None else '–'} | {score} | {interval} | {mark} |")
    return "\n".join(lines)


def best_line(target_key: str, entry: dict) -> str:
    if not entry.get("best_revision"):
        return f"No revision could be scored on `{target_key}`."
    how = "the earliest revision tied with the lowest score" if entry.get("prefer") == "earliest-tied" else "lowest score"
    line = (
        f"Best revision on `{target_key}`: **{entry['best_revision']}** (commit `{entry.get('best_sha') or ''}`), "
        f"{how} {_fmt(entry.get('best_score'))} with `{entry['config']}`."
    )
    others = [r for r in entry.get("tied_with_best") or [] if r != entry.get("lowest_revision")]
    if others:
        line += (f" Statistically tied with the lowest (paired test on the same images and views, {_resampled(entry)}): {', '.join(others)}; "
                 "the data do not single out one of them.")
    elif "tied_with_best" in entry:
        line += f" No other revision is tied with it (paired test on the same images and views, {_resampled(entry)})."
    return line


def _resampled(entry: dict) -> str:
    draws = entry.get("view_draws") or 1
    return f"{draws} draws of views" if draws > 1 else "one draw of views"


def main_section(summary: dict) -> str:
    """Markdown of main's ``robustness`` section: one table, plot and best revision per target."""
    lines = ["## Robustness score of the checkpoints", "", EXPLAIN]
    for target_key, entry in summary.items():
        recorded = {r.get("synthetic") for r in entry.get("rows") or [] if r.get("synthetic") is not None}
        pretrain = _synthetic_words(recorded.pop()) if len(recorded) == 1 else ("mixed" if recorded else "unknown (not recorded)")
        lines += [
            "",
            f"### Target `{target_key}` — `{entry.get('config')}`",
            "",
            f"Target images: {entry.get('target_description', '')} ({_synthetic_words(entry.get('target_synthetic'))} images; "
            f"{entry.get('num_images')} images at {entry.get('image_size')} px, seed {entry.get('seed')}). "
            f"Checkpoints pretrained on {pretrain} data.",
            "",
            summary_table(entry),
            "",
            best_line(target_key, entry),
            "",
            f"![Robustness score vs epoch on {target_key}]({schema.plot_path(schema.ROBUSTNESS, target_key)})",
        ]
    return "\n".join(lines)


def plot_png(target_key: str, entry: dict) -> bytes:
    """Score vs epoch (top) and each revision's paired difference to the lowest score with its 95% interval
    (bottom: what the tie verdict is read from), PNG bytes (matplotlib Agg)."""
    from hf_transfer_seg.plotting import new_figure, paired_difference_axes, png_bytes

    rows = [r for r in entry.get("rows") or [] if r.get("status", "ok") == "ok" and r.get("score") is not None]
    fig, ax = new_figure((6.4, 5.6))
    ax.remove()
    ax, low = fig.subplots(2, 1, sharex=True)
    lowest = entry.get("lowest_revision") or entry.get("best_revision")
    if rows:
        x = [float(r["epoch"]) for r in rows]
        ax.plot(x, [r["score"] for r in rows], marker="o", label="score (mean over images and view draws)")
        best = next((r for r in rows if r["revision"] == entry.get("best_revision")), None)
        if best:
            ax.plot([float(best["epoch"])], [best["score"]], marker="*", markersize=16, color="tab:red", linestyle="none",
                    label=f"best: {best['revision']} ({(best.get('sha') or '')[:10]})")  # fmt: skip
        ax.legend(loc="best", fontsize=8)
        paired = [{"difference": r.get("difference_vs_best"), "tied": r.get("tied_with_best"), "is_best": r["revision"] == lowest}
                  for r in rows]
        paired_difference_axes(low, x, paired, best=str(lowest))
        low.set_xlabel("pretraining epoch")
        low.set_ylabel(f"paired difference to {lowest}")
    else:
        ax.text(0.5, 0.5, "no revision could be scored", ha="center", va="center", transform=ax.transAxes)
        low.set_axis_off()
    ax.set_ylabel(f"score ({entry.get('config')})\nlower is better")
    ax.set_title(f"Robustness score on {target_key}", fontsize=10)
    ax.grid(alpha=0.3)
    return png_bytes(fig)


def _read_per_image(repo_id: str, path: str, sha: str) -> dict[str, dict]:
    """Main's per-image values at ``sha`` ({} when the file is absent: older summaries had none)."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    try:
        return json.loads(Path(hf_hub_download(repo_id, path, revision=sha)).read_text())
    except (EntryNotFoundError, ValueError, OSError) as exc:
        log.debug("no per-image values at %s@%s: %s", path, sha, exc)
        return {}


class _StaleSummary(Exception):
    """Another scorer changed this target's rows after we drew the plot: rebuild and retry."""


def write_summary(
    repo_id: str,
    plan: ScoringPlan,
    config: str,
    new_rows: list[dict],
    *,
    per_image: dict[str, dict] | None = None,
    prefer: str = "lowest",
    attempts: int = 8,
    api: HfApi | None = None,
) -> dict:
    """Merge ``new_rows`` into main's ``robustness_summary[target]`` and commit it with its plot and the
    per-image values (so ties are tested without re-scoring); return the entry."""
    key = plan.target_key
    values_path = per_image_path(key)
    for _ in range(attempts):
        card, sha = read_card(repo_id, "main", api=api)
        old = (get_namespace(card.data, schema.ROBUSTNESS_SUMMARY, {}) or {}).get(key) or {}
        old_rows = old.get("rows") or [] if old.get("config") == config else []
        values = {**(_read_per_image(repo_id, values_path, sha) if old_rows else {}), **(per_image or {})}
        rows = merge_rows(old_rows, new_rows)
        values = {rev: v for rev, v in values.items() if any(r["revision"] == rev for r in rows)}
        entry = summary_entry(plan, config, rows, values, prefer)
        png = plot_png(key, entry)

        def edit(card: ModelCard) -> ModelCard:
            summary = get_namespace(card.data, schema.ROBUSTNESS_SUMMARY, {}) or {}
            current = summary.get(key) or {}
            current_rows = current.get("rows") or [] if current.get("config") == config else []
            if current_rows != old_rows:
                raise _StaleSummary()
            summary[key] = entry
            set_namespace(card.data, schema.ROBUSTNESS_SUMMARY, summary)
            card.text = replace_section(card.text or f"# {repo_id}\n", SECTION, main_section(summary))
            if not card.data.license:  # a repo pushed by other tools: the stated default (or --license), never a change
                card = apply_license(card, choose_license())
            return card

        best = entry.get("best_revision") or "none"
        try:
            update_card(
                repo_id,
                "main",
                edit,
                commit_message=f"Robustness summary on {key}: best {best}",
                extra_files={schema.plot_path(schema.ROBUSTNESS, key): png,
                             values_path: json.dumps(values, sort_keys=True).encode()},
                api=api,
            )
            return entry
        except _StaleSummary:
            log.debug("summary rows of %s changed while plotting; rebuilding", key)
    raise CardConflictError(
        f"gave up writing main's robustness summary for {key} after {attempts} attempts: other scorers kept "
        "changing it. The revision cards hold every score; run the command again to rebuild the summary."
    )


__all__ = [
    "main_section",
    "plot_png",
    "revision_card_edit",
    "revision_section",
    "summary_rows",
    "summary_table",
    "write_revision_card",
    "write_summary",
]
